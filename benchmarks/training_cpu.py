"""CPU training speed: adasp's step against a peer-style step, side by side in one process.

The recipe (issue 21): ResNet-18 from scratch, 128×64 images, batch 64 (16 identities × 4),
cross-entropy (label smoothing 0.1) + Triplet (margin 0.3), Adam, 2 loader workers, on
synthetic pedestrian JPEGs (adasp's generator) in a temporary folder.

- **peer-style**: the usual loop: a standard ``DataLoader`` over a PIL + torchvision
  transform (resize, flip, pad, crop, to-tensor, normalise, random erasing), torch's default
  thread count, the per-tensor Adam, every loss term read with ``.item()`` each step, no
  compile;
- **adasp**: :class:`adasp.data.TrainLoader` and ``Trainer.train_step`` (loss values kept
  until a log step), with the CPU speed switches of each variant (``--variants``):
  ``default`` (none), ``cache`` (``data.cache_decoded``), ``fused`` (``optim.fused_cpu``),
  ``threads1`` (``train.intra_op_threads=1``), ``cpu-preset`` (what ``configs/cpu/`` use:
  the cache, fused Adam and ``train.reuse_host_memory``), ``preset-threads1`` (the preset
  with one intra-op thread: for a machine whose cores are busy with other work).

``train.reuse_host_memory`` is process-wide (glibc's heap settings), so it cannot differ
between loops of one process: ``--reuse-host-memory`` applies it to the whole run, the
peer-style loop included (it changes no value computed). Compare two runs, with and without,
for its effect; within a run the ratios then understate adasp's preset.

Both loaders live in the process all along (their workers prefetch while the other runs).
The variants run in blocks of ``--steps`` steps, interleaved, their order rotated every round,
for ``--rounds`` rounds; the table gives each variant's median images/s and the median of its
per-round ratio to the peer-style block of the same round (a shared, noisy machine slows
neighbouring blocks alike). A per-phase table (loader wait, forward, loss, backward and the rest,
optimizer) follows, and ``--profile`` adds torch.profiler's top operators per variant.

    python benchmarks/training_cpu.py                # ~3-4 min on 2 idle cores
    python benchmarks/training_cpu.py --quick        # a smoke test: tiny, seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

VARIANTS = {
    # name: (data.cache_decoded, optim.fused_cpu, train.intra_op_threads,
    #        train.reuse_host_memory)
    "default": (False, False, None, False),
    "cache": (True, False, None, False),
    "fused": (False, True, None, False),
    "threads1": (False, False, 1, False),
    "cpu-preset": (True, True, None, True),
    "preset-threads1": (True, True, 1, True),
}


@dataclass
class Phases:
    """Seconds per phase, summed over the timed steps."""

    loader: float = 0.0
    forward: float = 0.0
    loss: float = 0.0
    optimizer: float = 0.0
    step: float = 0.0  # the whole step, loader wait excluded
    rates: list[float] = field(default_factory=list)


class Timed(nn.Module):
    """Adds the wall time of each call of ``inner`` to ``phases.<name>``."""

    def __init__(self, inner: nn.Module, phases: Phases, name: str) -> None:
        super().__init__()
        self.inner, self.phases, self.name = inner, phases, name
        self.accepts_host_labels = getattr(inner, "accepts_host_labels", False)

    def forward(self, *args: Any) -> Any:
        start = time.perf_counter()
        with torch.profiler.record_function(self.name):
            out = self.inner(*args)
        setattr(
            self.phases, self.name, getattr(self.phases, self.name) + time.perf_counter() - start
        )
        return out


def time_optimizer(optimizer: torch.optim.Optimizer, owner: Any) -> None:
    """Adds the wall time of each ``optimizer.step`` to ``owner.phases.optimizer``."""
    started: list[float] = []

    def before(*_: Any) -> None:
        started.append(time.perf_counter())

    def after(*_: Any) -> None:
        owner.phases.optimizer += time.perf_counter() - started.pop()

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)


class PeerDataset(torch.utils.data.Dataset):
    """PIL decode + torchvision transform, as fast-reid's and torchreid's datasets do."""

    def __init__(self, samples, size: tuple[int, int]) -> None:
        import torchvision.transforms as T

        from adasp.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD

        self.samples = samples
        self.transform = T.Compose(
            [
                T.Resize(size),
                T.RandomHorizontalFlip(0.5),
                T.Pad(10),
                T.RandomCrop(size),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                T.RandomErasing(0.5, value=0),
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        sample = self.samples[index]
        with Image.open(sample.path) as image:
            return self.transform(image.convert("RGB")), sample.pid


def loss_config():
    from adasp.engine.config import LossConfig

    return LossConfig(name="triplet", weight=1.0, options={"triplet": {"margin": 0.3}})


def build_model(num_classes: int) -> nn.Module:
    from adasp.models import build_model as build

    torch.manual_seed(0)
    return build("resnet18", num_classes, pretrained=None, last_stride=1)


class PeerRunner:
    """The usual loop over a standard DataLoader."""

    def __init__(self, samples, num_classes, sampler, size, workers) -> None:
        from adasp.engine.builders import build_objective

        self.phases = Phases()
        self.threads = torch.get_num_threads()  # the default, captured before any change
        self.model = Timed(build_model(num_classes), self.phases, "forward")
        self.objective = Timed(build_objective(loss_config()), self.phases, "loss")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=3.5e-4, weight_decay=5e-4)
        time_optimizer(self.optimizer, self)
        loader = torch.utils.data.DataLoader(
            PeerDataset(samples, size), batch_sampler=sampler, num_workers=workers
        )
        self.batches = iter(loader)
        self.model.train()

    def step(self) -> None:
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        images, pids = next(self.batches)
        middle = time.perf_counter()
        outputs = self.model(images)
        total, parts = self.objective(outputs, pids)
        self.optimizer.zero_grad()
        total.backward()
        values = {name: value.item() for name, value in parts.items()}
        if not all(map(lambda v: v == v, values.values())):
            raise FloatingPointError("the loss became NaN")
        self.optimizer.step()
        self.phases.loader += middle - start
        self.phases.step += time.perf_counter() - middle


class AdaspRunner:
    """:class:`~adasp.data.TrainLoader` + ``Trainer.train_step`` with one variant's switches."""

    def __init__(self, variant, samples, num_classes, sampler, size, workers, folder) -> None:
        from adasp.data import TrainLoader, build_train_transform
        from adasp.engine.builders import build_objective, build_optimizer
        from adasp.engine.config import OptimConfig
        from adasp.engine.schedule import LRSchedule
        from adasp.engine.trainer import Trainer, TrainingSettings

        cache, fused, threads, _ = VARIANTS[variant]
        self.threads = threads or torch.get_num_threads()
        self.phases = Phases()
        model = Timed(build_model(num_classes), self.phases, "forward")
        objective = build_objective(loss_config(), check_finite=False)
        self.loader = TrainLoader(
            samples, sampler, build_train_transform(size), num_workers=workers, cache_decoded=cache
        )
        self.loader.set_epoch(0)
        optimizer = build_optimizer(OptimConfig(fused_cpu=fused), model)
        time_optimizer(optimizer, self)
        self.trainer = Trainer(
            model,
            Timed(objective, self.phases, "loss"),
            self.loader,
            optimizer,
            LRSchedule(iters_per_epoch=len(self.loader), epochs=1),
            settings=TrainingSettings(epochs=1, log_every=10**9),
            output_dir=tempfile.mkdtemp(prefix=f"run-{variant}-", dir=folder),
            device="cpu",
            progress=False,
        )
        self.trainer.net.train()
        self.batches = iter(self.loader)

    def step(self) -> None:
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        batch = next(self.batches)
        middle = time.perf_counter()
        self.trainer.train_step(batch)
        self.phases.loader += middle - start
        self.phases.step += time.perf_counter() - middle

    def close(self) -> None:
        self.trainer.read_losses()  # the divergence check reads here
        self.trainer.close()


def timed_block(runner, steps: int, batch: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        runner.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME"
    )
    parser.add_argument("--profile", action="store_true", help="torch.profiler top operators")
    parser.add_argument(
        "--reuse-host-memory",
        action="store_true",
        help="train.reuse_host_memory for the whole process (every loop)",
    )
    args = parser.parse_args()
    from adasp.data import PKSampler, build_dataset
    from adasp.engine.cpu_speed import reuse_freed_host_memory

    if args.reuse_host_memory and not reuse_freed_host_memory():
        print("--reuse-host-memory: not glibc, not applied")

    size, batch, k = ((64, 32), 16, 4) if args.quick else ((128, 64), 64, 4)
    rounds, steps = (1, 1) if args.quick else (args.rounds, args.steps)
    warmup = 1 if args.quick else 2
    total_steps = warmup + rounds * steps + (2 if args.profile else 0) + 2
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs visible, default intra-op threads "
        f"{torch.get_num_threads()}, {args.workers} loader workers, batch {batch} ({batch // k}"
        f"×{k}), {size[0]}×{size[1]}, ResNet-18 from scratch, CE + Triplet, "
        f"reuse host memory: {'yes' if args.reuse_host_memory else 'no'}"
    )
    with tempfile.TemporaryDirectory(prefix="training-cpu-") as folder:
        start = time.perf_counter()
        ids, per_id = (8, 8) if args.quick else (64, 16)
        data = build_dataset(
            "synthetic", Path(folder) / "data", num_identities=2 * ids, images_per_identity=per_id
        )
        samples, num_classes = data.train, data.num_train_pids
        print(
            f"data: {len(samples)} training images, generated in {time.perf_counter() - start:.1f} s"
        )

        def sampler():
            return PKSampler(
                [s.pid for s in samples],
                batch_size=batch,
                num_instances=k,
                batches_per_epoch=total_steps,
            )

        runners: dict[str, Any] = {
            "peer-style": PeerRunner(samples, num_classes, sampler(), size, args.workers)
        }
        for name in args.variants:
            runners[f"adasp {name}"] = AdaspRunner(
                name, samples, num_classes, sampler(), size, args.workers, folder
            )
        try:
            for runner in runners.values():  # warm-up: workers started, first batches
                for _ in range(warmup):
                    runner.step()
                runner.phases = _reset(runner)
            names = list(runners)
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    runners[name].phases.rates.append(timed_block(runners[name], steps, batch))
                print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
            report(runners, batch, rounds * steps)
            arithmetic_ceiling(runners, batch, k, size, num_classes, quick=args.quick)
            if args.profile:
                profile(runners)
        finally:
            for runner in runners.values():
                if hasattr(runner, "close"):
                    runner.close()


def _reset(runner) -> Phases:
    """Fresh phase counters, shared with the runner's timed wrappers."""
    phases = runner.phases
    phases.loader = phases.forward = phases.loss = phases.optimizer = phases.step = 0.0
    phases.rates.clear()
    return phases


def report(runners: dict[str, Any], batch: int, steps: int) -> None:
    peer = runners["peer-style"].phases.rates
    print("\n## Images/s (median over rounds) and ratio to the peer-style step")
    print("| loop | threads | images/s | × peer-style (median of per-round ratios) | rounds |")
    print("|---|---:|---:|---:|---:|")
    for name, runner in runners.items():
        rates = runner.phases.rates
        ratio = statistics.median(r / p for r, p in zip(rates, peer, strict=True))
        print(
            f"| {name} | {runner.threads} | {statistics.median(rates):.1f} | {ratio:.2f} | "
            f"{len(rates)} |"
        )
    print("\n## Per phase, ms per step (mean over the timed steps)")
    print("| loop | loader wait | forward | loss | backward + rest | optimizer | step |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runner in runners.items():
        p = runner.phases
        rest = p.step - p.forward - p.loss - p.optimizer
        cells = [p.loader, p.forward, p.loss, rest, p.optimizer, p.step]
        print(f"| {name} | " + " | ".join(f"{1000 * c / steps:.0f}" for c in cells) + " |")


def arithmetic_ceiling(
    runners: dict[str, Any],
    batch: int,
    k: int,
    size: tuple[int, int],
    num_classes: int,
    quick: bool,
) -> None:
    """How close each loop is to the most this CPU can do with the step's arithmetic.

    The step's floating-point operations (forward and backward of the model and the loss:
    convolutions and matrix products, counted by ``torch.utils.flop_counter``) per second,
    against a float32 matrix product (2048², the best of 5, at the peer's thread count) on
    the same cores: no loop running the same arithmetic can go faster than that product's
    rate, so ``sgemm / peer`` bounds what any loop-level change can gain.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from adasp.engine.builders import build_objective

    model, objective = build_model(num_classes), build_objective(loss_config())
    model.train()
    images = torch.randn(batch, 3, *size)
    pids = torch.arange(batch) // k
    with FlopCounterMode(display=False) as counter:
        total, _ = objective(model(images), pids)
        total.backward()
    flops = counter.get_total_flops()
    side = 256 if quick else 2048
    a, b = torch.randn(side, side), torch.randn(side, side)
    torch.set_num_threads(runners["peer-style"].threads)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    sgemm = 2 * side**3 / best / 1e9
    peer = flops * statistics.median(runners["peer-style"].phases.rates) / batch / 1e9
    print(
        f"\n## Arithmetic: {flops / 1e9:.1f} GFLOP per step (forward + backward); float32 "
        f"matrix product {side}² at {runners['peer-style'].threads} threads: {sgemm:.0f} GFLOP/s"
    )
    print("| loop | GFLOP/s | share of the matrix product's rate |")
    print("|---|---:|---:|")
    for name, runner in runners.items():
        rate = flops * statistics.median(runner.phases.rates) / batch / 1e9
        print(f"| {name} | {rate:.0f} | {rate / sgemm:.0%} |")
    print(
        f"The most any loop doing this arithmetic can reach here: {sgemm / peer:.2f}× the "
        "peer-style loop (the matrix product's rate over the peer's)."
    )


def profile(runners: dict[str, Any]) -> None:
    from torch.profiler import ProfilerActivity, profile

    for name, runner in runners.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                runner.step()
        print(f"\n## torch.profiler, {name}, 2 steps, top operators by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
