"""Training and inference throughput (images/s) of the model architectures, with and without
channels-last memory format.

Training = forward + cross-entropy on the logits + backward, in training mode; inference =
eval-mode forward under ``torch.no_grad``. The median over ``--repeats`` timed iterations
after ``--warmup`` untimed ones. On CUDA, ``--amp`` runs under float16 autocast (the
recipe's setting, and where channels-last pays off).

    python benchmarks/models.py [--device cuda] [--amp] [--arch resnet18 resnet50_ibn_a mgn]
        [--size 128x64 256x128] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from adasp.models import build_model, prepare_model


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def throughput(model, images, labels, train: bool, amp: bool, repeats: int, warmup: int) -> float:
    """Median images per second of one training step or one inference forward."""
    device = images.device
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():
        with autocast:
            out = model(images)
            logits = out["logits"]
            logits = logits if isinstance(logits, list) else [logits]
            loss = sum(F.cross_entropy(z.float(), labels) for z in logits)
        loss.backward()
        model.zero_grad(set_to_none=True)

    model.train(train)
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        if train:
            step()
        else:
            with torch.no_grad(), autocast:
                model(images)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return images.shape[0] / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", nargs="+", default=["resnet18", "resnet50_ibn_a"])
    parser.add_argument("--size", nargs="+", default=["128x64"], type=str)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    amp = args.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu, {torch.get_num_threads()} threads"
    print(f"device={device} ({name}) torch={torch.__version__} batch={args.batch} amp={amp}")
    print("| arch | size | channels_last | train img/s | inference img/s |")
    print("|---|---|---|---:|---:|")
    for arch in args.arch:
        for size in map(parse_size, args.size):
            torch.manual_seed(0)
            images = torch.randn(args.batch, 3, *size, device=device)
            labels = torch.randint(0, 100, (args.batch,), device=device)
            for channels_last in (False, True):
                model = prepare_model(build_model(arch, 100), device, channels_last=channels_last)
                timings = [
                    throughput(model, images, labels, train, amp, args.repeats, args.warmup)
                    for train in (True, False)
                ]
                print(
                    f"| {arch} | {size[0]}x{size[1]} | {channels_last} | "
                    f"{timings[0]:.1f} | {timings[1]:.1f} |"
                )


if __name__ == "__main__":
    main()
