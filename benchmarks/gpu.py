"""One-call GPU benchmark: the loss, the training step, the loader and evaluation, one table.

Sections (each row is guarded: an error is printed in its row and the run goes on; rows that
would start after ``--budget-s`` seconds are marked "skipped (time budget)"):

(a)  the Sparse Pairwise loss (AdaSP; ``--losses`` adds SP-H / SP-LH) forward + backward against
     the floor of ``benchmarks/losses.py`` (the same function, imported from there), at
     B = 128/256/512/1024, D = 2048, in float32, bfloat16 and float16;
(b1) training images/s, steady state after warm-up, with pre-made batches on the GPU (P×K
     labels) so the model step is measured alone: :class:`adasp.engine.trainer.Trainer`'s
     ``train_step`` (sync-free) against a peer-style loop written here (eager float32, every
     loss term read with ``.item()`` each step, as fast-reid and torchreid do), same model and
     objective, same process;
(b2) the real loader: synthetic JPEGs through :class:`adasp.data.TrainLoader` with CPU decode
     workers, alone and feeding the compiled step, and GPU JPEG decode;
(c)  evaluation at VERI-WILD-large size and k-reciprocal re-ranking at MSMT17 size on the GPU:
     seconds and peak GPU memory (each in a child process, stopped at the time budget).

The table is printed and, with ``--output``, written as Markdown after every row (a run that
is killed still leaves what it measured).

    python benchmarks/gpu.py --output gpu.md [--budget-s 450] [--sections a b1 b2 c]
    python benchmarks/gpu.py --smoke --output tmp/gpu.md    # tiny, on the CPU, in seconds

Without CUDA the smoke version runs (tiny sizes, resnet18 at 64×32, two steps), through the
same code, so that the script cannot rot (``tests/benchmarks/test_gpu_benchmark.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

BENCH_DIR = Path(__file__).resolve().parent
SKIPPED = "skipped (time budget)"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def bench_module(name: str) -> Any:
    """A sibling benchmark script imported as a module (``benchmarks/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(f"adasp_bench_{name}", BENCH_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the CPU smoke run."""

    loss_batches: tuple[int, ...] = (128, 256, 512, 1024)
    loss_dim: int = 2048
    loss_instances: int = 8  # K, as benchmarks/losses.py
    loss_repeats: int = 50
    loss_warmup: int = 5
    archs: tuple[str, ...] = ("resnet50_ibn_a", "mgn")
    image_size: tuple[int, int] = (256, 128)
    #: (batch, K): 64 = 16×4 and 128 = 32×4
    batches: tuple[tuple[int, int], ...] = ((64, 4), (128, 4))
    num_classes: int = 751
    train_warmup: int = 8
    train_steps: int = 40
    compile_warmup: int = 6
    synthetic_ids: int = 100  # half of them train
    synthetic_images_per_id: int = 24
    loader_batches: int = 100  # timed, after the warm-up batches
    loader_warmup: int | None = None  # None: workers × prefetch_factor + 8
    decode_images: int = 6400
    eval_scale: float = 1.0
    #: seconds a row needs left in the budget to start (compiling takes a minute or more)
    need_eager_s: float = 20.0
    need_compile_s: float = 120.0
    need_child_s: float = 30.0


SMOKE = Sizes(
    loss_batches=(16, 32),
    loss_dim=32,
    loss_instances=4,
    loss_repeats=2,
    loss_warmup=1,
    archs=("resnet18",),
    image_size=(64, 32),
    batches=((8, 2),),
    num_classes=16,
    train_warmup=1,
    train_steps=2,
    compile_warmup=1,
    synthetic_ids=8,
    synthetic_images_per_id=8,
    loader_batches=3,
    loader_warmup=1,
    decode_images=32,
    eval_scale=0.01,
    need_eager_s=0.0,
    need_compile_s=0.0,
    need_child_s=0.0,
)


# ------------------------------------------------------------------------------ the report


@dataclass
class Section:
    key: str
    title: str
    columns: list[str]
    note: str = ""
    rows: dict[int, list[list[str]]] = field(default_factory=dict)  # by task order

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        for order in sorted(self.rows):
            for row in self.rows[order]:
                cells = [*row, *[""] * (len(self.columns) - len(row))]
                lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        return "\n".join(lines)


class Report:
    """The sections, rewritten to ``output`` after every row."""

    def __init__(self, header: list[str], output: Path | None) -> None:
        self.header = header
        self.output = output
        self.sections: dict[str, Section] = {}
        self.footer: list[str] = []

    def add(self, section: Section) -> Section:
        self.sections[section.key] = section
        return section

    def markdown(self) -> str:
        parts = ["# adasp GPU benchmark", "", *self.header, ""]
        parts += [s.markdown() + "\n" for s in self.sections.values()]
        return "\n".join(parts + self.footer).rstrip() + "\n"

    def write(self) -> None:
        if self.output is None:
            return
        self.output.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.output.with_name(self.output.name + ".tmp")
        temporary.write_text(self.markdown())
        os.replace(temporary, self.output)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


@dataclass
class Task:
    """Rows of one section: ``run()`` returns whole rows; on error or a spent budget one row
    of ``labels`` plus the reason stands in for them."""

    section: str
    order: int  # place in the section's table
    priority: float  # run order (cheap and important first; compiling last)
    labels: list[str]
    run: Callable[[], list[list[str]]]
    need_s: float = 0.0
    always: bool = False  # clean-up: runs even when the budget is spent


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def error_text(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0]
    return f"error: {type(error).__name__}: {first[:200]}"


def run_tasks(tasks: list[Task], report: Report, budget: Budget) -> None:
    for task in sorted(tasks, key=lambda t: (t.priority, t.order)):
        section = report.sections[task.section]
        if not task.always and (budget.left() < task.need_s or budget.left() <= 0):
            rows = [[*task.labels, SKIPPED]]
        else:
            try:
                rows = task.run()
            except Exception as error:  # one row's failure must not stop the others
                rows = [[*task.labels, error_text(error)]]
            release_memory()
        section.rows[task.order] = rows
        for row in rows:
            print(f"[{budget.elapsed():6.1f} s] {task.section}: {' | '.join(row)}", file=sys.stderr)
        report.write()


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"


def verdict(ok: bool, what: str) -> str:
    return f"{'PASS' if ok else 'FAIL'} ({what})"


# ------------------------------------------------------------------------------ (a) the loss


def loss_tasks(report: Report, sizes: Sizes, device: torch.device, names: list[str]) -> list[Task]:
    losses_bench = bench_module("losses")
    from adasp.losses import build_loss

    report.add(
        Section(
            "a",
            "(a) Sparse Pairwise loss forward+backward vs the floor",
            [
                "loss",
                "B",
                "D",
                "dtype",
                "loss ms",
                "standalone ms",
                "graphed ms",
                "floor ms",
                "× floor",
                "fp32 floor ms",
                "× fp32 floor",
                "target",
            ],
            note=(
                "Median ms of `loss(features, labels).backward()` over "
                f"{sizes.loss_repeats} runs after {sizes.loss_warmup} ({sizes.loss_instances} "
                "instances per identity, features created in the dtype). loss ms: called as "
                "the trainer calls it (labels in pinned host memory, as the loader gives them, "
                "and no host-side NaN check: nothing waits for the device); standalone ms: "
                "labels on the device and the NaN check on, as a user's own loop would call "
                "it (the class layout and the check read the device). graphed ms: as the "
                "trainer calls it with `loss.cuda_graph=true` (forward + backward replayed "
                "from one CUDA graph, `adasp.losses.graphed`; the eager loss off CUDA). "
                "floor ms: the floor "
                "in the same dtype; fp32 floor ms: in float32. The floor is "
                "`benchmarks/losses.py`'s: normalise, B×B similarity matmul, one log-sum-exp, "
                "forward and backward, timed by its `time_fn`. Targets (issue 13): ≤ 1.3× the "
                "floor at B ≥ 256 in bf16; no slower than the floor's own fp32 time in any dtype."
            ),
        )
    )
    floors: dict[tuple[int, str], float] = {}
    inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def data(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if batch not in inputs:
            inputs.clear()
            gen = torch.Generator().manual_seed(batch)
            features = torch.randn(batch, sizes.loss_dim, generator=gen)
            labels = torch.arange(batch // sizes.loss_instances).repeat_interleave(
                sizes.loss_instances
            )
            labels = labels[torch.randperm(batch, generator=gen)]
            inputs[batch] = (features.to(device), labels.to(device))
        return inputs[batch]

    def graphed_loss_ms(name: str, features: torch.Tensor, host_labels: torch.Tensor) -> str:
        from adasp.losses.graphed import GraphedSparsePairwise

        loss = build_loss(name)
        loss.check_finite = False
        if not hasattr(loss, "mode"):
            return "n/a"
        try:
            ms = losses_bench.time_fn(
                GraphedSparsePairwise(loss),
                features,
                host_labels,
                device,
                sizes.loss_repeats,
                sizes.loss_warmup,
            )
        except Exception as error:  # a failed capture must not stop the other columns
            return f"error: {type(error).__name__}: {str(error)[:80]}"
        return f"{ms:.3f}"

    def floor_ms(batch: int, dtype: str) -> float:
        if (batch, dtype) not in floors:
            features, labels = data(batch)
            floors[batch, dtype] = losses_bench.time_fn(
                losses_bench.floor,
                features.to(DTYPES[dtype]),
                labels,
                device,
                sizes.loss_repeats,
                sizes.loss_warmup,
            )
        return floors[batch, dtype]

    def run(batch: int, dtype: str) -> list[list[str]]:
        features, labels = data(batch)
        base, base32 = floor_ms(batch, dtype), floor_ms(batch, "fp32")
        host_labels = labels.cpu()
        if device.type == "cuda":
            host_labels = host_labels.pin_memory()
        rows = []
        for name in names:
            as_trainer = build_loss(name)
            as_trainer.check_finite = False  # the trainer checks the total on the device
            ms, standalone = (
                losses_bench.time_fn(
                    loss,
                    features.to(DTYPES[dtype]),
                    given,
                    device,
                    sizes.loss_repeats,
                    sizes.loss_warmup,
                )
                for loss, given in ((as_trainer, host_labels), (build_loss(name), labels))
            )
            graphed_ms = graphed_loss_ms(name, features.to(DTYPES[dtype]), host_labels)
            checks = [verdict(ms <= base32, "≤ fp32 floor")]
            if dtype == "bf16" and batch >= 256:
                checks.insert(0, verdict(ms / base <= 1.3, "≤ 1.3× floor"))
            rows.append(
                [
                    name,
                    str(batch),
                    str(sizes.loss_dim),
                    dtype,
                    f"{ms:.3f}",
                    f"{standalone:.3f}",
                    graphed_ms,
                    f"{base:.3f}",
                    f"{ms / base:.2f}",
                    f"{base32:.3f}",
                    f"{ms / base32:.2f}",
                    "; ".join(checks),
                ]
            )
        return rows

    tasks = []
    for batch in sizes.loss_batches:
        for dtype in DTYPES:
            tasks.append(
                Task(
                    "a",
                    len(tasks),
                    0.0,
                    [", ".join(names), str(batch), str(sizes.loss_dim), dtype],
                    lambda b=batch, d=dtype: run(b, d),
                    sizes.need_eager_s,
                )
            )
    return tasks


# ------------------------------------------------------------------------- (b1) the step


@dataclass(frozen=True)
class StepConfig:
    arch: str
    batch: int
    instances: int
    loop: str  # "peer" or "trainer"
    amp: str = "none"
    compile: bool = False
    channels_last: bool = False

    @property
    def pk(self) -> str:
        return f"{self.batch} ({self.batch // self.instances}×{self.instances})"


def step_configs(sizes: Sizes) -> list[tuple[StepConfig, float]]:
    """The measured subset, each with its run priority: every eager row first (the peer-style
    baseline of each model and batch before the rows compared with it), compiled rows last
    (each costs a compilation of a minute or more)."""
    out: list[tuple[StepConfig, float]] = []
    for arch in sizes.archs:
        main = arch == sizes.archs[0]
        for index, (batch, k) in enumerate(sizes.batches):
            first = index == 0
            rows = [StepConfig(arch, batch, k, "peer")]
            if main and first:
                rows += [
                    StepConfig(arch, batch, k, "trainer"),
                    StepConfig(arch, batch, k, "trainer", "bf16"),
                ]
            rows.append(StepConfig(arch, batch, k, "trainer", "bf16", channels_last=True))
            out += [(c, 1.0 if main else 1.1) for c in rows]
            compiled = StepConfig(arch, batch, k, "trainer", "bf16", True, True)
            # The main model at the first batch is compiled before the loader rows reuse it.
            out.append((compiled, 3.0 if main and first else (5.0 if first else 6.0)))
    return out


def step_labels(cfg: StepConfig, device: torch.device) -> list[str]:
    """The first cells of a (b1) row: what was measured."""
    compiled = "no"
    if cfg.compile:
        compiled = "yes" if device.type == "cuda" else "no (CPU: prepare_model skips it)"
    return [
        cfg.arch,
        cfg.pk,
        "peer-style" if cfg.loop == "peer" else "trainer",
        "fp32" if cfg.amp == "none" else f"AMP {cfg.amp}",
        compiled,
        "yes" if cfg.channels_last else "no",
    ]


def synthetic_batches(
    sizes: Sizes, batch: int, instances: int, device: torch.device, count: int = 4
) -> list[dict[str, torch.Tensor]]:
    """Pre-made batches on the device: random images, P identities × K instances each."""
    gen = torch.Generator().manual_seed(batch)
    out = []
    for _ in range(count):
        pids = torch.randperm(sizes.num_classes, generator=gen)[: batch // instances]
        image = torch.randn(batch, 3, *sizes.image_size, generator=gen)
        out.append({"image": image.to(device), "pid": pids.repeat_interleave(instances).to(device)})
    return out


def build_reid(arch: str, sizes: Sizes, device: torch.device, cfg: StepConfig) -> torch.nn.Module:
    from adasp.models import build_model, prepare_model

    torch.manual_seed(0)
    if cfg.compile and device.type == "cuda":
        # A fresh compilation per model: otherwise the second batch size of the same forward
        # is recompiled with a dynamic batch dimension.
        importlib.import_module("torch._dynamo").reset()
    model = build_model(arch, sizes.num_classes)
    return prepare_model(model, device, channels_last=cfg.channels_last, compile=cfg.compile)


def build_objective() -> torch.nn.Module:
    from adasp.engine.builders import build_objective as build
    from adasp.engine.config import LossConfig

    return build(LossConfig())  # the recipe: CE (label smoothing 0.1) + AdaSP, τ = 0.04


def build_trainer(cfg: StepConfig, sizes: Sizes, device: torch.device, workdir: Path, loader):
    from adasp.engine.builders import build_optimizer
    from adasp.engine.config import OptimConfig
    from adasp.engine.schedule import LRSchedule
    from adasp.engine.trainer import Trainer, TrainingSettings

    model = build_reid(cfg.arch, sizes, device, cfg)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    return Trainer(
        model,
        build_objective(),
        loader,
        build_optimizer(OptimConfig(), model),  # the default: fused Adam on CUDA
        LRSchedule(iters_per_epoch=len(loader), epochs=1),
        settings=TrainingSettings(epochs=1, amp=cfg.amp, channels_last=cfg.channels_last),
        output_dir=folder,
        evaluator=None,
        device=str(device),
        progress=False,
    )


class PeerStep:
    """The peers' loop: eager float32, and every loss term read on the host every step
    (fast-reid's ``_write_metrics`` between backward and step; torchreid's ``loss.item()``),
    plus a host-side finiteness check."""

    def __init__(self, model, objective, optimizer) -> None:
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.last = float("nan")

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        outputs = self.model(batch["image"])
        total, parts = self.objective(outputs, batch["pid"])
        self.optimizer.zero_grad()
        total.backward()
        values = {name: value.item() for name, value in parts.items()}
        values["total"] = float(total)
        if not math.isfinite(values["total"]):
            raise FloatingPointError(f"loss became {values['total']}")
        self.optimizer.step()
        self.last = values["total"]


def timed_steps(
    step, batches, warmup: int, steps: int, device: torch.device
) -> tuple[float, float]:
    """``(warm-up seconds, timed seconds)``; the host waits for the device only at the ends."""
    start = time.perf_counter()
    for i in range(warmup):
        step(batches[i % len(batches)])
    sync(device)
    middle = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    sync(device)
    return middle - start, time.perf_counter() - middle


def timed_trainer(
    cfg: StepConfig, sizes: Sizes, device: torch.device, workdir: Path, batches
) -> tuple[Any, float, float, str]:
    """A :class:`Trainer` for ``cfg`` stepped on pre-made ``batches``: ``(trainer, warm-up
    seconds, timed seconds, logged loss)``; the trainer is closed if anything fails."""
    warmup = sizes.compile_warmup if cfg.compile else sizes.train_warmup
    trainer = build_trainer(cfg, sizes, device, workdir, batches)
    try:
        trainer.net.train()
        warm, seconds = timed_steps(trainer.train_step, batches, warmup, sizes.train_steps, device)
        return trainer, warm, seconds, trainer_loss(trainer)
    except BaseException:
        trainer.close()
        raise


def trainer_loss(trainer) -> str:
    # What the loop logs: the means since the last read, in one transfer.
    total = trainer.read_losses().get("total")
    return "n/a" if total is None else f"{total:.3f}"


@dataclass
class StepState:
    rates: dict[StepConfig, float] = field(default_factory=dict)
    kept: dict[str, Any] = field(default_factory=dict)  # the compiled trainer the loader reuses


def step_tasks(
    report: Report, sizes: Sizes, device: torch.device, workdir: Path, state: StepState
) -> list[Task]:
    h, w = sizes.image_size
    report.add(
        Section(
            "b1",
            "(b1) Training step, pre-made batches on the device",
            [
                "model",
                "batch (P×K)",
                "loop",
                "precision",
                "compiled",
                "channels_last",
                "images/s",
                "× peer-style",
                "warm-up s",
                "peak GPU MiB",
                "loss",
                "target",
            ],
            note=(
                f"{h}×{w} images, CE + AdaSP, {sizes.num_classes} classes; images/s over "
                f"{sizes.train_steps} steps after {sizes.train_warmup} warm-up steps "
                f"({sizes.compile_warmup} when compiled, which include the compilation), "
                "synchronising only at the ends. `trainer` = `Trainer.train_step` "
                "(fused Adam, loss values kept on the device); `peer-style` = plain eager "
                "fp32 loop written here, torch Adam, `.item()` of every loss term each step. "
                "Measured subset: per model and batch the peer-style baseline, trainer bf16 "
                "channels_last eager and compiled; for the first model at the first batch "
                "also trainer fp32 and bf16 without channels_last (fp32 compiled, fp16 and "
                "compiled without channels_last are not run). Target (issue 13): ≥ 1.25× "
                "peer-style for ResNet50-IBN-a, batch 64, AMP bf16. Loss: the last step's "
                "total (peer-style), the mean total of all steps (trainer)."
            ),
        )
    )

    def run(cfg: StepConfig) -> list[list[str]]:
        batches = synthetic_batches(sizes, cfg.batch, cfg.instances, device)
        reset_peak(device)
        trainer = None
        if cfg.loop == "peer":
            model = build_reid(cfg.arch, sizes, device, cfg)
            objective = build_objective().to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
            model.train()
            step = PeerStep(model, objective, optimizer)
            # The peer-style loop is never compiled: the eager warm-up.
            warm, seconds = timed_steps(
                step, batches, sizes.train_warmup, sizes.train_steps, device
            )
            loss = f"{step.last:.3f}"
        else:
            trainer, warm, seconds, loss = timed_trainer(cfg, sizes, device, workdir, batches)
        rate = sizes.train_steps * cfg.batch / seconds
        state.rates[cfg] = rate
        peer = state.rates.get(StepConfig(cfg.arch, cfg.batch, cfg.instances, "peer"))
        ratio = rate / peer if peer else None
        target = ""
        is_target = cfg.arch == sizes.archs[0] and cfg.batch == sizes.batches[0][0]
        if is_target and cfg.loop == "trainer" and cfg.amp == "bf16" and ratio is not None:
            target = verdict(ratio >= 1.25, "≥ 1.25× peer-style")
        if trainer is not None:
            if cfg.compile and cfg.arch == sizes.archs[0] and cfg.batch == sizes.batches[0][0]:
                state.kept["trainer"], state.kept["rate"] = trainer, rate
                state.kept["label"] = f"{cfg.arch} bf16 channels_last compiled, batch {cfg.pk}"
            else:
                trainer.close()
        return [
            [
                *step_labels(cfg, device),
                f"{rate:.0f}",
                "" if cfg.loop == "peer" else (f"{ratio:.2f}" if ratio else "n/a"),
                f"{warm:.1f}",
                peak_mib(device),
                loss,
                target,
            ]
        ]

    tasks = []
    for cfg, priority in step_configs(sizes):
        need = sizes.need_compile_s if cfg.compile else sizes.need_eager_s
        labels = step_labels(cfg, device)
        tasks.append(Task("b1", len(tasks), priority, labels, lambda c=cfg: run(c), need))
    return tasks


# ------------------------------------------------------------------------ (b2) the loader


def loader_tasks(
    report: Report,
    sizes: Sizes,
    device: torch.device,
    workdir: Path,
    state: StepState,
    worker_counts: list[int] | None = None,
) -> list[Task]:
    from adasp.data import PKSampler, TrainLoader, build_dataset, build_train_transform

    counts = worker_counts or [min(16, cpu_count())]
    batch, k = sizes.batches[0]  # the batch of the compiled step the loader feeds
    h, w = sizes.image_size
    gpu_note = (
        "`data.decode=gpu` rows: `GPUDecodeTrainLoader` (workers read bytes and draw the "
        "augmentation parameters; `to_device` decodes with nvJPEG, resizes and augments on the "
        "GPU); the raw row is `decode_jpeg` alone on the same files, the ceiling of that path"
    )
    section = report.add(
        Section(
            "b2",
            "(b2) Training with the real loader",
            [
                "path",
                "workers",
                "batch",
                "images/s",
                "vs the step in memory",
                "target",
                "note",
            ],
            note=(
                f"Synthetic pedestrians (adasp.data synthetic generator, JPEG) in a temporary "
                f"folder; `TrainLoader` (PKSampler, the training transform at {h}×{w}, pinned "
                "memory, persistent workers, prefetch 4), timed after the workers' prefetch "
                "queues were drained once. The step in memory: (b1)'s compiled step, or, "
                "when (b1) did not run it, the eager bf16 channels_last step timed here on "
                "pre-made batches. `--loader-workers N ...` repeats the loader rows per worker "
                "count. Target (issue 13): the loader keeps up with the compiled model step on "
                f"a 16-core machine, or GPU decode does. {gpu_note}."
            ),
        )
    )
    shared: dict[str, Any] = {}

    def dataset():
        if "data" not in shared:
            start = time.perf_counter()
            shared["data"] = build_dataset(
                "synthetic",
                workdir / "synthetic",
                num_identities=sizes.synthetic_ids,
                images_per_identity=sizes.synthetic_images_per_id,
            )
            seconds = time.perf_counter() - start
            section.note += (
                f" Data: {len(shared['data'].train)} training images, generated in {seconds:.1f} s."
            )
        return shared["data"]

    def loader(decode: str, workers: int):
        from adasp.data.gpu_decode import BatchAugmentation, GPUDecodeTrainLoader

        samples = dataset().train
        warm = workers * 4 + 8 if sizes.loader_warmup is None else sizes.loader_warmup
        sampler = PKSampler(
            [s.pid for s in samples],
            batch_size=batch,
            num_instances=k,
            batches_per_epoch=2 * (warm + sizes.loader_batches) + 2,
        )
        if decode == "gpu":
            made = GPUDecodeTrainLoader(
                samples, sampler, BatchAugmentation(sizes.image_size), num_workers=workers
            )
        else:
            made = TrainLoader(
                samples, sampler, build_train_transform(sizes.image_size), num_workers=workers
            )
        made.set_epoch(0)
        return made, warm

    def compiled_rate() -> float | None:
        return state.kept.get("rate")

    def versus(rate: float) -> str:
        step = compiled_rate()
        return f"{rate / step:.2f}×" if step else "n/a (no step row)"

    def run_loader_alone(decode: str, workers: int) -> list[list[str]]:
        made, warm = loader(decode, workers)
        batches = iter(made)
        for _ in range(warm + 1):  # the first batch waits for the workers to start
            made.to_device(next(batches), device)
        sync(device)
        start = time.perf_counter()
        for _ in range(sizes.loader_batches):
            made.to_device(next(batches), device)
        sync(device)
        rate = sizes.loader_batches * batch / (time.perf_counter() - start)
        shared["loader_rate"] = rate
        step = compiled_rate()
        target = verdict(rate >= step, "loader ≥ step") if step else ""
        what = (
            "CPU decode, loader alone (batches copied to the device)"
            if decode == "cpu"
            else "data.decode=gpu, loader + device decode/augment alone"
        )
        return [
            [
                what,
                str(workers),
                str(batch),
                f"{rate:.0f}",
                versus(rate),
                target,
                "",
            ]
        ]

    def run_step_reference() -> list[list[str]]:
        """Without (b1)'s compiled trainer: the eager bf16 channels_last one, timed on
        pre-made batches, is what the loader rows compare with."""
        if "trainer" in state.kept:
            return []
        cfg = StepConfig(sizes.archs[0], batch, k, "trainer", "bf16", False, True)
        batches = synthetic_batches(sizes, batch, k, device)
        trainer, _, seconds, _ = timed_trainer(cfg, sizes, device, workdir, batches)
        state.kept["trainer"] = trainer
        rate = sizes.train_steps * batch / seconds
        state.kept["rate"] = rate
        state.kept["label"] = f"{cfg.arch} bf16 channels_last eager, batch {cfg.pk}"
        return [["training step alone, pre-made batches", "-", str(batch), f"{rate:.0f}",
                 "1.00×", "", state.kept["label"]]]  # fmt: skip

    def run_loader_step(decode: str, workers: int) -> list[list[str]]:
        trainer, note = state.kept["trainer"], state.kept["label"]
        made, warm = loader(decode, workers)
        trainer.train_loader = made  # train_step asks the loader to put batches on the device
        batches = iter(made)
        trainer.net.train()
        for _ in range(warm + 1):
            trainer.train_step(next(batches))
        sync(device)
        start = time.perf_counter()
        for _ in range(sizes.loader_batches):
            trainer.train_step(next(batches))
        sync(device)
        rate = sizes.loader_batches * batch / (time.perf_counter() - start)
        return [
            [
                "CPU decode + training step"
                if decode == "cpu"
                else "data.decode=gpu + training step",
                str(workers),
                str(batch),
                f"{rate:.0f}",
                versus(rate),
                "",
                note,
            ]
        ]

    def run_gpu_decode() -> list[list[str]]:
        import torchvision

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's decoders are marked deprecated
            files = [torchvision.io.read_file(s.path) for s in dataset().train]
            chunks = [files[i : i + batch] for i in range(0, len(files), batch)]

            def decode(chunk):
                return torchvision.io.decode_jpeg(chunk, device=device)

            decode(chunks[0])  # nvJPEG start-up
            sync(device)
            done, start = 0, time.perf_counter()
            while done < sizes.decode_images:
                for chunk in chunks:
                    decode(chunk)
                    done += len(chunk)
            sync(device)
        rate = done / (time.perf_counter() - start)
        step = compiled_rate()
        target = verdict(rate >= step, "decode ≥ step") if step else ""
        what = "GPU" if device.type == "cuda" else "CPU (smoke: no GPU)"
        return [
            [
                f"{what} decode: torchvision.io.decode_jpeg(list, device), raw",
                "-",
                str(batch),
                f"{rate:.0f}",
                versus(rate),
                target,
                "ceiling of the data.decode=gpu path",
            ]
        ]

    def release() -> list[list[str]]:
        trainer = state.kept.pop("trainer", None)
        if trainer is not None:
            trainer.close()
        return []

    need = sizes.need_eager_s
    rows = [
        ("cpu", "CPU decode, loader alone", run_loader_alone),
        ("cpu", "CPU decode + training step", run_loader_step),
        ("gpu", "data.decode=gpu, loader alone", run_loader_alone),
        ("gpu", "data.decode=gpu + training step", run_loader_step),
    ]
    tasks = [
        Task("b2", 0, 3.99, ["training step alone"], run_step_reference, need),
        Task("b2", 1, 4.0, ["GPU decode"], run_gpu_decode, need),
    ]
    for workers in counts:
        for decode, label, run in rows:
            order = len(tasks)
            tasks.append(
                Task(
                    "b2",
                    order,
                    4.0 + order / 100,
                    [label, str(workers)],
                    lambda r=run, d=decode, w=workers: r(d, w),
                    need,
                )
            )
    return [*tasks, Task("b2", len(tasks), 4.99, [], release, always=True)]


# --------------------------------------------------------------------- (c) evaluation


def emit(name: str, result: dict[str, Any]) -> None:
    """One finished measurement of a child, as a JSON line (read even if a later one is cut)."""
    print(json.dumps({"name": name, **result}), flush=True)


def child_veriwild(scale: float, device: torch.device) -> None:
    """evaluate_features at VERI-WILD-large size with benchmarks/evaluation.py's
    trained-like features (identity centre + Gaussian noise 1.6)."""
    from adasp.evaluation import evaluate_features

    ev = bench_module("evaluation")
    num_q, num_g = int(10000 * scale), int(138517 * scale)
    rng = np.random.default_rng(1)
    q_pids = np.arange(1, num_q + 1)
    _, g_pids, _, g_cams = ev.identities(rng, num_q, num_g, num_q, 174)
    q_cams = rng.integers(0, 174, num_q)
    centres = rng.standard_normal((num_q, 256), dtype=np.float32)
    query = torch.from_numpy(ev.model_features(rng, q_pids, centres, 1.6)).to(device)
    gallery = torch.from_numpy(ev.model_features(rng, g_pids, centres, 1.6)).to(device)
    labels = [torch.from_numpy(np.asarray(a)).to(device) for a in (q_pids, g_pids, q_cams, g_cams)]
    # warm-up on a slice: the first call pays for loading the kernels
    few = max(num_q // 100, 2)
    evaluate_features(query[:few], gallery, labels[0][:few], labels[1], labels[2][:few], labels[3])
    size = f"{num_q} × {num_g}, 256-d"
    emit("veriwild", timed_call(lambda: evaluate_features(query, gallery, *labels), device, size))


def child_msmt17(scale: float, device: torch.device) -> None:
    """evaluate_features without, then with, re-ranking at MSMT17 size on
    benchmarks/rerank.py's features."""
    from adasp.evaluation import evaluate_features

    rr = bench_module("rerank")
    sizes = rr.MSMT17
    q, g = max(round(sizes["queries"] * scale), 20), max(round(sizes["gallery"] * scale), 200)
    ids = max(2, round(sizes["ids"] * q / sizes["queries"]))
    split = rr.synthetic_split(ids, q, g, sizes["cameras"], 256, 0)
    query, gallery, q_ids, q_cams, g_ids, g_cams = (t.to(device) for t in split)
    size = f"{q} × {g}, 256-d"
    for rerank in (False, True):
        evaluate_features(
            query[:20],
            gallery[:200],
            q_ids[:20],
            g_ids[:200],
            q_cams[:20],
            g_cams[:200],
            rerank=rerank,
        )
        result = timed_call(
            lambda r=rerank: evaluate_features(
                query, gallery, q_ids, g_ids, q_cams, g_cams, rerank=r
            ),
            device,
            size,
        )
        emit("rerank" if rerank else "plain", result)


def timed_call(call, device: torch.device, size: str) -> dict[str, Any]:
    sync(device)
    resident = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
    reset_peak(device)
    start = time.perf_counter()
    result = call()
    sync(device)
    seconds = time.perf_counter() - start
    return {
        "size": size,
        "seconds": seconds,
        "peak": peak_mib(device),
        "resident": "n/a" if resident is None else f"{resident:.0f}",
        "mAP": float(result["mAP"]),
        "rank1": float(result["cmc"][0]),
    }


def eval_tasks(report: Report, sizes: Sizes, device: torch.device, budget: Budget) -> list[Task]:
    report.add(
        Section(
            "c",
            "(c) Evaluation and re-ranking on the device",
            ["task", "size", "seconds", "peak GPU MiB", "MiB held before", "mAP", "R1"],
            note=(
                "In child processes (stopped at the time budget), each call after a warm-up "
                "call on a slice. VERI-WILD-large: `evaluate_features` (cosine) on the "
                "trained-like features of `benchmarks/evaluation.py`; MSMT17: "
                "`evaluate_features(rerank=True)` (k1 = 20, k2 = 6, λ = 0.3) on the features "
                "of `benchmarks/rerank.py`, and without re-ranking for reference. Peak GPU MiB "
                "= `torch.cuda.max_memory_allocated` during the call; it includes what was "
                "held before (the features and labels), shown in the next column."
            ),
        )
    )

    def run(child: str, rows: list[tuple[str, str]]) -> list[list[str]]:
        command = [
            sys.executable,
            __file__,
            "--child",
            child,
            "--child-scale",
            str(sizes.eval_scale),
            "--device",
            str(device),
        ]
        limit = max(budget.left(), 1.0)
        timed_out, stdout, stderr, code = False, "", "", 0
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=limit, check=False
            )
            stdout, stderr, code = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired as expired:
            timed_out = True
            out = expired.stdout or ""
            stdout = out.decode(errors="replace") if isinstance(out, bytes) else out
        results = {}
        for line in stdout.splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and "name" in item:
                    results[item["name"]] = item
        if code != 0 and not results:
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"child exited with {code}: {last}")
        out_rows = []
        for name, label in rows:
            r = results.get(name)
            if r is not None:
                out_rows.append(
                    [
                        label,
                        r["size"],
                        f"{r['seconds']:.3f}",
                        r["peak"],
                        r["resident"],
                        f"{r['mAP']:.4f}",
                        f"{r['rank1']:.4f}",
                    ]
                )
            elif timed_out:
                out_rows.append([label, "", f"{SKIPPED}: stopped after {limit:.0f} s"])
            else:
                last = (stderr.strip().splitlines() or ["no output"])[-1]
                out_rows.append([label, "", f"error: child exited with {code}: {last}"])
        return out_rows

    veriwild = [("veriwild", "VERI-WILD-large, evaluate_features")]
    msmt17 = [
        ("plain", "MSMT17, evaluate_features (no re-ranking)"),
        ("rerank", "MSMT17, evaluate_features(rerank=True)"),
    ]
    need = sizes.need_child_s
    return [
        Task("c", 0, 2.0, [veriwild[0][1]], lambda: run("veriwild", veriwild), need),
        Task("c", 1, 2.1, [msmt17[1][1]], lambda: run("msmt17", msmt17), need),
    ]


# ---------------------------------------------------------------------------------- main


def header(device: torch.device, smoke: bool, budget: float) -> list[str]:
    if device.type == "cuda":
        gpu = (
            f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, cuDNN "
            f"{torch.backends.cudnn.version()})"
        )
    else:
        gpu = (
            f"none: CPU smoke run ({torch.get_num_threads()} threads), numbers are not GPU figures"
        )
    try:
        import torchvision

        vision = torchvision.__version__
    except ImportError:  # pragma: no cover
        vision = "not installed"
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return [
        f"- GPU: {gpu}",
        f"- torch {torch.__version__}, torchvision {vision}, Python {platform.python_version()}, "
        f"{cpu_count()} CPUs",
        f"- date: {now}",
        f"- settings: cudnn.benchmark {torch.backends.cudnn.benchmark}, TF32 matmul "
        f"{torch.backends.cuda.matmul.allow_tf32}, TF32 cuDNN {torch.backends.cudnn.allow_tf32}; "
        f"time budget {budget:.0f} s" + ("; smoke sizes" if smoke else ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip rows after this")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes on the CPU (also: no CUDA)"
    )
    parser.add_argument(
        "--sections", nargs="+", default=["a", "b1", "b2", "c"], choices=["a", "b1", "b2", "c"]
    )
    parser.add_argument(
        "--losses",
        nargs="+",
        default=["adasp"],
        choices=["adasp", "sp-h", "sp-lh"],
        help="Sparse Pairwise variants of section (a)",
    )
    parser.add_argument(
        "--loader-workers",
        type=int,
        nargs="+",
        metavar="N",
        help="(b2) loader rows for each of these worker counts (default: min(16, CPUs))",
    )
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["veriwild", "msmt17"], help=argparse.SUPPRESS)
    parser.add_argument("--child-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        device = torch.device(args.device or "cpu")
        if device.type == "cpu":
            torch.set_num_threads(1)  # the smoke run's child, as its parent
        child = child_veriwild if args.child == "veriwild" else child_msmt17
        child(args.child_scale, device)
        return 0

    smoke = args.smoke or not torch.cuda.is_available()
    sizes = SMOKE if smoke else Sizes()
    device = torch.device("cpu" if smoke else "cuda")
    if smoke:
        # One thread: on a small, busy machine a second intra-op thread makes tiny ops wait
        # for a core and the smoke run many times slower (see benchmarks/evaluation.py).
        torch.set_num_threads(1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as fast-reid, torchreid and our trainer do
    budget = Budget(args.budget_s)
    report = Report(header(device, smoke, args.budget_s), args.output)
    state = StepState()
    with tempfile.TemporaryDirectory(prefix="adasp-gpu-bench-") as temporary:
        workdir = Path(temporary)
        tasks: list[Task] = []
        builders = {
            "a": lambda: loss_tasks(report, sizes, device, args.losses),
            "b1": lambda: step_tasks(report, sizes, device, workdir, state),
            "b2": lambda: loader_tasks(report, sizes, device, workdir, state, args.loader_workers),
            "c": lambda: eval_tasks(report, sizes, device, budget),
        }
        for key in args.sections:
            try:
                tasks += builders[key]()
            except Exception as error:  # e.g. an import that no longer exists
                section = report.add(Section(key, f"({key}) not run", ["error"]))
                section.rows[0] = [[error_text(error)]]
        run_tasks(tasks, report, budget)
        trainer = state.kept.pop("trainer", None)
        if trainer is not None:
            trainer.close()
    report.footer = [f"Finished in {budget.elapsed():.0f} s."]
    report.write()
    print(report.markdown())
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
