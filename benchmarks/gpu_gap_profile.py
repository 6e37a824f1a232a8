"""Where the loader + step gap goes: one prepared call on a GPU machine (issue 21, §3).

On an H200 the CPU loader alone (4330 images/s) and the compiled step alone (2079) are each
fast enough, yet together they gave 1341 images/s (docs/performance.md, (b2)). This script
profiles the training process while the loader feeds the step, to find where the host time
goes: waiting for the next batch (``next``), the host-to-device copy (``to_device``), the
step's Python and kernel launches (``train_step``), and how busy the GPU is meanwhile.

For each variant (``--variants``): images/s of the step on pre-made device batches ("in
memory"), of the loader alone, and of the loader feeding the step; then the host time per
phase (ms per step) while fed, and the GPU's busy share (CUDA kernel time over wall time,
from torch.profiler). A Chrome trace of the fed steps is written per variant to ``--output``.

Variants: ``workers-N`` (CPU decode with N workers, pinned memory), ``nopin-N`` (the same
without pinned memory: the pin thread's share), ``gpu-decode-N`` (``data.decode=gpu``).

    python benchmarks/gpu_gap_profile.py --output gap/      # one GPU, ~5 min
    python benchmarks/gpu_gap_profile.py --smoke --output gap/   # tiny, on the CPU

Prepared on a CPU-only machine; not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_trainer(arch, num_classes, loader, device, folder, compile_model):
    from adasp.engine.builders import build_objective, build_optimizer
    from adasp.engine.config import LossConfig, OptimConfig
    from adasp.engine.schedule import LRSchedule
    from adasp.engine.trainer import Trainer, TrainingSettings
    from adasp.models import build_model, prepare_model

    torch.manual_seed(0)
    cuda = device.type == "cuda"
    model = prepare_model(
        build_model(arch, num_classes), device, channels_last=cuda, compile=compile_model and cuda
    )
    return Trainer(
        model,
        build_objective(LossConfig(), check_finite=False),
        loader,
        build_optimizer(OptimConfig(), model),
        LRSchedule(iters_per_epoch=len(loader), epochs=1),
        settings=TrainingSettings(
            epochs=1, amp="bf16" if cuda else "none", channels_last=cuda, log_every=10**9
        ),
        output_dir=tempfile.mkdtemp(prefix="run-", dir=folder),
        device=str(device),
        progress=False,
    )


def make_loader(variant: str, samples, size, batch, k, steps):
    from adasp.data import PKSampler, TrainLoader, build_train_transform
    from adasp.data.gpu_decode import BatchAugmentation, GPUDecodeTrainLoader

    kind, workers = variant.rsplit("-", 1)
    sampler = PKSampler(
        [s.pid for s in samples], batch_size=batch, num_instances=k, batches_per_epoch=steps
    )
    if kind == "gpu-decode":
        loader = GPUDecodeTrainLoader(
            samples, sampler, BatchAugmentation(size), num_workers=int(workers)
        )
    else:
        loader = TrainLoader(
            samples,
            sampler,
            build_train_transform(size),
            num_workers=int(workers),
            pin_memory=kind != "nopin" and torch.cuda.is_available(),
        )
    loader.set_epoch(0)
    return loader


def run_variant(variant: str, args, samples, num_classes, device, folder, out: Path) -> list[str]:
    from torch.profiler import ProfilerActivity, profile, record_function

    size, batch, k = tuple(args.size), args.batch, 4
    total = args.warmup + 3 * args.steps + 4
    loader = make_loader(variant, samples, size, batch, k, total)
    trainer = build_trainer(args.arch, num_classes, loader, device, folder, not args.no_compile)
    try:
        trainer.net.train()
        batches = iter(loader)
        # Loader alone (its workers prefetched while the trainer was built: drained first).
        for _ in range(args.warmup):
            next(batches)
        start = time.perf_counter()
        kept = [next(batches) for _ in range(args.steps)]
        loader_rate = args.steps * batch / (time.perf_counter() - start)
        # The step in memory: the loader's batches, already on the device.
        on_device = [loader.to_device(b, device) for b in kept]
        for b in on_device[: args.warmup]:
            trainer.train_step(dict(b))
        sync(device)
        start = time.perf_counter()
        for i in range(args.steps):
            trainer.train_step(dict(on_device[i % len(on_device)]))
        sync(device)
        memory_rate = args.steps * batch / (time.perf_counter() - start)
        # The loader feeding the step, timed then profiled.
        phases = {"next": 0.0, "to_device": 0.0, "train_step": 0.0}

        def fed_steps(count: int) -> None:
            for _ in range(count):
                t0 = time.perf_counter()
                with record_function("loader.next"):
                    b = next(batches)
                t1 = time.perf_counter()
                with record_function("loader.to_device"):
                    b = loader.to_device(b, device)
                t2 = time.perf_counter()
                with record_function("trainer.train_step"):
                    trainer.train_step(b)
                t3 = time.perf_counter()
                phases["next"] += t1 - t0
                phases["to_device"] += t2 - t1
                phases["train_step"] += t3 - t2

        sync(device)
        start = time.perf_counter()
        fed_steps(args.steps)
        sync(device)
        wall = time.perf_counter() - start
        fed_rate = args.steps * batch / wall
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            fed_steps(args.steps)
            sync(device)
        prof.export_chrome_trace(str(out / f"trace-{variant}.json"))
        events = prof.key_averages()
        device_us = sum(getattr(e, "self_device_time_total", 0.0) for e in events)
        with open(out / f"ops-{variant}.txt", "w") as table:
            sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            table.write(events.table(sort_by=sort, row_limit=40))
        busy = device_us / 1e6 / wall if device.type == "cuda" else float("nan")
        ms = {name: 1000 * seconds / args.steps for name, seconds in phases.items()}
        return [
            variant,
            f"{memory_rate:.0f}",
            f"{loader_rate:.0f}",
            f"{fed_rate:.0f}",
            f"{fed_rate / memory_rate:.2f}",
            f"{ms['next']:.1f}",
            f"{ms['to_device']:.1f}",
            f"{ms['train_step']:.1f}",
            f"{busy:.0%}" if busy == busy else "n/a (CPU)",
        ]
    finally:
        trainer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="folder for the tables")
    parser.add_argument("--smoke", action="store_true", help="tiny, on the CPU")
    parser.add_argument("--variants", nargs="+", default=None)
    parser.add_argument("--arch", default="resnet50_ibn_a")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 128])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    from adasp.data import build_dataset

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    cores = os.cpu_count() or 1
    if args.smoke:
        args.arch, args.size, args.batch, args.steps, args.warmup = "resnet18", [64, 32], 8, 2, 1
        args.no_compile = True
    variants = args.variants or (
        ["workers-1"]
        if args.smoke
        else [f"workers-{min(16, cores)}", "workers-6", f"nopin-{min(16, cores)}", "gpu-decode-6"]
    )
    args.output.mkdir(parents=True, exist_ok=True)
    header = [
        "variant",
        "in memory images/s",
        "loader alone images/s",
        "fed images/s",
        "fed / in memory",
        "next ms",
        "to_device ms",
        "train_step ms",
        "GPU busy",
    ]
    lines = [
        f"torch {torch.__version__}, {device}, {cores} CPUs, {args.arch}, "
        f"{args.size[0]}×{args.size[1]}, batch {args.batch}, {args.steps} steps per measure",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="gap-") as folder:
        ids, per_id = (8, 8) if args.smoke else (100, 24)
        data = build_dataset(
            "synthetic", Path(folder) / "data", num_identities=2 * ids, images_per_identity=per_id
        )
        for variant in variants:
            try:
                row = run_variant(
                    variant, args, data.train, data.num_train_pids, device, folder, args.output
                )
            except Exception as error:  # one failed variant must not lose the others
                row = [variant, f"error: {type(error).__name__}: {error}"[:200]]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
            (args.output / "gap.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
