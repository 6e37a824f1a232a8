"""Forward+backward time of every metric loss against the floor, side by side.

The floor is the least any of these losses can cost: normalising the features, the B×B
similarity matmul and one log-sum-exp over it, forward and backward.

    python benchmarks/losses.py [--device cuda] [--batch 128 256 512] [--dim 256 1024 2048]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from adasp.losses import LOSSES, build_loss


def floor(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    x = F.normalize(features, dim=1)
    return torch.logsumexp(x @ x.T / 0.04, dim=1).mean()


def time_fn(fn, features, labels, device, repeats, warmup=3) -> float:
    """Median milliseconds of ``fn(features, labels).backward()``."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(warmup + repeats):
        f = features.detach().requires_grad_()
        sync()
        start = time.perf_counter()
        fn(f, labels).backward()
        sync()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--dim", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--instances", type=int, default=8, help="K instances per identity")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--losses", nargs="+", default=[n for n in LOSSES if n != "ce"])
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print("| loss | B | D | loss ms | floor ms | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    worst: dict[str, float] = {}
    for batch in args.batch:
        for dim in args.dim:
            features = torch.randn(batch, dim, device=device)
            labels = torch.arange(batch // args.instances, device=device).repeat_interleave(
                args.instances
            )
            labels = labels[torch.randperm(batch, device=device)]
            base = time_fn(floor, features, labels, device, args.repeats)
            for name in args.losses:
                ms = time_fn(build_loss(name), features, labels, device, args.repeats)
                ratio = ms / base
                worst[name] = max(worst.get(name, 0.0), ratio)
                print(f"| {name} | {batch} | {dim} | {ms:.3f} | {base:.3f} | {ratio:.2f} |")
    print()
    print("worst ratio to the floor: " + ", ".join(f"{k} {v:.2f}x" for k, v in worst.items()))


if __name__ == "__main__":
    main()
