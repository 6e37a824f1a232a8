"""The training loop: from a config to a trained model, its metrics, logs and checkpoints.

A run folder holds ``config.yaml`` (the resolved config), ``checkpoints/last.pt`` (everything
needed to resume: model, optimiser, AMP scaler, sampler position, RNG states, evaluation
history), ``model.pt`` (the final weights and config), ``metrics.json``, ``log.jsonl`` and
``tensorboard/``. Checkpoints are written atomically at the end of every epoch (and every
``train.checkpoint_every_iters`` iterations); augmentation is seeded per sample, so a run
killed at any moment and resumed with ``--resume`` replays exactly what the uninterrupted run
would have done (on CPU, bit for bit).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from adasp.engine.builders import (
    build_datasets,
    build_objective,
    build_optimizer,
    build_reid_model,
    build_schedule,
    build_transforms,
    dataset_root,
)
from adasp.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from adasp.engine.config import ExperimentConfig, config_from_dict, save_config
from adasp.engine.distributed import (
    DistributedContext,
    barrier,
    gather_objects,
    init_distributed,
)
from adasp.engine.evaluator import (
    METRIC_KEYS,
    TestSetResult,
    embed_with_config,
    run_protocol,
    test_set_name,
)
from adasp.engine.run_log import RunLog
from adasp.engine.seeded_loading import SeededBatches, SeededDataset, mix_seed
from adasp.errors import UserInputError
from adasp.utils.atomic import atomic_write_json
from adasp.utils.plain import plain
from adasp.utils.tables import format_table

CHECKPOINT_FORMAT = "adasp-checkpoint-1"


class TrainingDiverged(UserInputError):
    """The loss became NaN or infinite; the message names the step and the loss term."""


@dataclass
class RunState:
    """Where the run is: the epoch in progress and how many of its batches are done."""

    epoch: int = 0
    batches_done: int = 0
    step: int = 0
    finished: bool = False


def _amp_settings(amp: str, device: torch.device) -> tuple[bool, torch.dtype]:
    if amp == "none":
        return False, torch.float32
    if device.type != "cuda":
        warnings.warn(
            f"train.amp={amp!r} needs a GPU; training in float32 on {device}", stacklevel=3
        )
        return False, torch.float32
    return True, torch.bfloat16 if amp == "bf16" else torch.float16


def _set_deterministic(enabled: bool, device: torch.device) -> None:
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


class Trainer:
    """Trains and evaluates one configured run.

    Args:
        config: a validated configuration.
        output_dir: the run folder (created; must not hold another run unless ``resume``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        resume: continue the run in ``output_dir`` from its last checkpoint (a fresh start if
            there is none yet).
        progress: show tqdm progress bars on the main rank.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        output_dir: str | Path,
        device: str = "auto",
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir).expanduser()
        self.checkpoint_path = self.output_dir / "checkpoints" / "last.pt"
        self.ctx: DistributedContext = init_distributed(device)
        self.progress = progress and self.ctx.is_main
        self.resume = resume
        self._check_output_dir()
        self.state = RunState()
        self.history: list[dict[str, Any]] = []
        self._resumed_sampler: dict[str, Any] | None = None
        self._setup()

    # ----------------------------------------------------------------------------- set-up
    def _check_output_dir(self) -> None:
        if self.checkpoint_path.exists() and not self.resume:
            raise UserInputError(
                f"{self.output_dir} already holds a run ({self.checkpoint_path}); pass --resume to "
                "continue it, or choose another --output"
            )
        if self.resume and self.checkpoint_path.exists():
            saved = load_checkpoint(self.checkpoint_path).get("config")
            if saved is not None and saved != self.config.to_dict():
                diff = _first_difference(saved, self.config.to_dict())
                raise UserInputError(
                    f"cannot resume {self.output_dir}: the config differs from the run's ({diff}); "
                    "resume with the same config and overrides"
                )

    def _setup(self) -> None:
        from adasp.data import ImageDataset, PKSampler
        from adasp.data.loading import collate_batch
        from adasp.models import prepare_model

        cfg = self.config
        ctx = self.ctx
        torch.manual_seed(cfg.train.seed)
        _set_deterministic(cfg.train.deterministic, ctx.device)
        self.dataset = build_datasets(cfg.data)
        self.train_transform, self.test_transform = build_transforms(cfg.data)
        pids = [s.pid for s in self.dataset.train]
        self.sampler = PKSampler(
            pids,
            batch_size=cfg.data.batch_size,
            num_instances=cfg.data.num_instances,
            seed=cfg.train.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            batches_per_epoch=(
                max(1, len(pids) // cfg.data.batch_size)
                if cfg.data.epoch_length == "images"
                else None
            ),
        )
        self.iters_per_epoch = len(self.sampler)
        self.batches = SeededBatches(self.sampler, mix_seed(cfg.train.seed, ctx.rank))
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            SeededDataset(ImageDataset(self.dataset.train, self.train_transform)),
            batch_sampler=self.batches,
            collate_fn=collate_batch,
            num_workers=workers,
            pin_memory=ctx.device.type == "cuda",
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )
        model = build_reid_model(cfg.model, self.dataset.num_train_pids)
        if cfg.model.sync_bn and ctx.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = prepare_model(
            model, ctx.device, channels_last=cfg.model.channels_last, compile=False
        )
        self.net: nn.Module = self.model
        if ctx.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
            )
        if cfg.model.compile:
            self.net = torch.compile(self.net)
        self.objective = build_objective(cfg.loss, gather_distributed=ctx.distributed)
        self.optimizer = build_optimizer(cfg.optim, self.model)
        self.schedule = build_schedule(cfg.schedule, self.iters_per_epoch)
        self.amp, self.amp_dtype = _amp_settings(cfg.train.amp, ctx.device)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp and self.amp_dtype == torch.float16
        )
        self.backbone_params = {id(p) for p in self.model.backbone.parameters()}
        self.monitor = None
        if cfg.train.measure_harmful_pairs:
            from adasp.analysis.harmful_monitor import HarmfulPairMonitor

            self.monitor = HarmfulPairMonitor.for_dataset(self.dataset, cfg.loss, ctx)
        if self.resume and self.checkpoint_path.exists():
            self._load(load_checkpoint(self.checkpoint_path, map_location="cpu"))

    # ------------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "num_classes": int(self.dataset.num_train_pids),
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.state.epoch,
            "batches_done": self.state.batches_done,
            "step": self.state.step,
            "finished": self.state.finished,
            "sampler": self.sampler.state_dict(self.state.batches_done),
            "rng": gather_objects(capture_rng_state(), self.ctx),
            "history": self.history,
            "monitor": self.monitor.state_dict() if self.monitor is not None else None,
        }

    def _save(self) -> None:
        state = self._checkpoint_state()  # every rank takes part in gathering RNG states
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, state)
        barrier(self.ctx)

    def _load(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise UserInputError(
                f"{self.checkpoint_path} is not an adasp training checkpoint (format "
                f"{ckpt.get('format')!r}); it cannot be resumed"
            )
        _unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state = RunState(
            ckpt["epoch"], ckpt["batches_done"], ckpt["step"], bool(ckpt["finished"])
        )
        self._resumed_sampler = ckpt["sampler"]
        self.history = list(ckpt["history"])
        if self.monitor is not None and ckpt.get("monitor") is not None:
            self.monitor.load_state_dict(ckpt["monitor"])
        rng = ckpt["rng"]
        restore_rng_state(rng[self.ctx.rank] if self.ctx.rank < len(rng) else rng[0])
        if self.ctx.is_main:
            where = (
                f"the run had finished its {self.state.epoch} epochs; writing its results again"
                if self.state.finished
                else f"continuing at epoch {self.state.epoch + 1}, batch {self.state.batches_done} "
                f"(step {self.state.step})"
            )
            print(f"resumed {self.output_dir}: {where}", file=sys.stderr)

    # ---------------------------------------------------------------------------- training
    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs, evaluate, and write the run's files."""
        cfg = self.config
        if self.ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.output_dir / "config.yaml")
            print(self.dataset.summary(), file=sys.stderr)
        self.log = RunLog(self.output_dir, enabled=self.ctx.is_main)
        try:
            while self.state.epoch < cfg.schedule.epochs:
                self._train_epoch()
                epoch = self.state.epoch + 1
                last = epoch == cfg.schedule.epochs
                every = cfg.train.eval_every
                if last or (every and epoch % every == 0):
                    self._evaluate_and_record(epoch)
                self.state = RunState(epoch, 0, self.state.step, last)
                self._save()
            metrics = self._final_metrics()
            if self.ctx.is_main:
                self._write_outputs(metrics)
            return metrics
        finally:
            self.log.close()

    def _train_epoch(self) -> None:
        cfg = self.config
        epoch, start = self.state.epoch, self.state.batches_done
        self.sampler.set_epoch(epoch)
        if start and self._resumed_sampler is not None:
            self.sampler.load_state_dict(self._resumed_sampler)
        self._resumed_sampler = None
        self.batches.set_epoch(epoch, start)
        self.net.train()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=self.iters_per_epoch,
                initial=start,
                desc=f"epoch {epoch + 1}/{cfg.schedule.epochs}",
                dynamic_ncols=True,
                mininterval=1.0,
                file=sys.stderr,
            )
        seen, tick = 0, time.perf_counter()
        for batch in self.loader:
            factor = self.schedule.apply(self.optimizer, self.state.step)
            parts = self._train_step(batch)
            self.state.step += 1
            self.state.batches_done += 1
            seen += batch["image"].shape[0] * self.ctx.world_size
            if (
                self.state.step % cfg.train.log_every == 0
                or self.state.batches_done == self.iters_per_epoch
            ):
                elapsed = time.perf_counter() - tick
                values = {f"loss/{k}": v for k, v in parts.items()}
                values.update(
                    epoch=epoch + 1,
                    lr=factor * self.optimizer.param_groups[0]["initial_lr"],
                    images_per_sec=seen / max(elapsed, 1e-9),
                )
                if self.monitor is not None:
                    values.update(self.monitor.last_values())
                self.log.event("train", self.state.step, **values)
                if bar is not None:
                    bar.set_postfix(
                        {k.split("/")[-1]: f"{v:.3f}" for k, v in parts.items()}
                        | {"lr": f"{values['lr']:.2e}", "img/s": f"{values['images_per_sec']:.0f}"},
                        refresh=False,
                    )
                seen, tick = 0, time.perf_counter()
            if bar is not None:
                bar.update(1)
            every = cfg.train.checkpoint_every_iters
            if (
                every
                and self.state.step % every == 0
                and self.state.batches_done < self.iters_per_epoch
            ):
                self._save()
        if bar is not None:
            bar.close()

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        device = self.ctx.device
        memory_format = (
            torch.channels_last if self.config.model.channels_last else torch.contiguous_format
        )
        images = (
            batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        )
        pids = batch["pid"].to(device, non_blocking=True)
        autocast = (
            torch.autocast(device_type=device.type, dtype=self.amp_dtype)
            if self.amp
            else contextlib.nullcontext()
        )
        with autocast:
            outputs = self.net(images)
        try:
            total, parts = self.objective(outputs, pids)
        except ValueError as error:
            raise TrainingDiverged(
                self._diverged_message(f"the model's outputs are invalid ({error})")
            ) from None
        values = {name: float(value.detach()) for name, value in parts.items()}
        if not math.isfinite(float(total.detach())):
            bad = [n for n, v in values.items() if not math.isfinite(v)] or ["total"]
            raise TrainingDiverged(
                self._diverged_message(
                    "the loss is not finite: "
                    + ", ".join(f"term {n!r} = {values.get(n, float(total.detach()))}" for n in bad)
                )
            )
        if self.monitor is not None:
            self.monitor.observe(outputs, batch, self.state.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.state.step < self.config.schedule.freeze_backbone_iters:
            # Frozen backbone: drop its gradients so the optimiser leaves it (and its state) alone.
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if id(p) in self.backbone_params:
                        p.grad = None
        if self.config.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values["total"] = float(total.detach())
        return values

    def _diverged_message(self, what: str) -> str:
        where = (
            f"epoch {self.state.epoch + 1}, iteration {self.state.batches_done + 1} of "
            f"{self.iters_per_epoch} (global step {self.state.step + 1})"
        )
        keep = (
            f"the last good checkpoint is {self.checkpoint_path}"
            if self.checkpoint_path.exists()
            else "no checkpoint had been written yet"
        )
        return (
            f"training stopped at {where}: {what}; {keep}. Lower optim.lr, enable optim.grad_clip "
            "or check the data"
        )

    # -------------------------------------------------------------------------- evaluation
    def evaluate(self) -> list[TestSetResult]:
        """Evaluate the current model on the main test set and ``data.test_sets``."""
        return evaluate_model(
            self.net,
            self.config,
            self.ctx,
            self.test_transform,
            self.dataset,
            progress=self.progress,
        )

    def _evaluate_and_record(self, epoch: int) -> None:
        results = self.evaluate()
        record = {
            "epoch": epoch,
            "step": self.state.step,
            "test_sets": {r.name: r.summary for r in results},
        }
        if self.monitor is not None:
            record["harmful_pairs"] = self.monitor.summary()
        self.history.append(plain(record))
        main = results[0]
        self.log.event(
            "eval", self.state.step, epoch=epoch, **{k: main.summary[k] for k in METRIC_KEYS}
        )
        for result in results[1:]:
            self.log.event(
                f"eval/{result.name}",
                self.state.step,
                epoch=epoch,
                **{k: result.summary[k] for k in METRIC_KEYS},
            )
        if self.ctx.is_main:
            print(results_table(results, title=f"evaluation after epoch {epoch}"), file=sys.stderr)

    def _final_metrics(self) -> dict[str, Any]:
        if not self.history or self.history[-1]["epoch"] != self.config.schedule.epochs:
            self._evaluate_and_record(self.config.schedule.epochs)
        last = self.history[-1]
        names = list(last["test_sets"])
        metrics: dict[str, Any] = {"test_set": names[0], **last["test_sets"][names[0]]}
        metrics["epoch"] = last["epoch"]
        metrics["test_sets"] = last["test_sets"]
        if "harmful_pairs" in last:
            metrics["harmful_pairs"] = last["harmful_pairs"]
        return metrics

    def _write_outputs(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.output_dir / "metrics.json", plain(metrics))
        save_checkpoint(
            self.output_dir / "model.pt",
            {
                "format": "adasp-model-1",
                "config": self.config.to_dict(),
                "num_classes": int(self.dataset.num_train_pids),
                "model": _unwrap(self.model).state_dict(),
            },
        )


def evaluate_model(
    model: nn.Module,
    config: ExperimentConfig,
    ctx: DistributedContext,
    transform: Any,
    main_dataset: Any | None = None,
    progress: bool = False,
) -> list[TestSetResult]:
    """Evaluate ``model`` on the configured main test set, then on each of ``data.test_sets``.

    Every rank embeds its shard and receives all embeddings; each then computes the same
    metrics (cheap next to the embedding), so no rank waits on another.
    """
    from adasp.data import build_dataset

    cfg = config.data
    main = main_dataset or build_datasets(cfg)
    sets = [(test_set_name(main.name, main.options), main)]
    for extra in cfg.test_sets:
        # An extra test set without its own root shares the main dataset's.
        root = dataset_root(extra.dataset, extra.root or cfg.root)
        dataset = build_dataset(extra.dataset, root, **extra.options)
        sets.append((extra.name or test_set_name(dataset.name, dataset.options), dataset))
    results = []
    for name, dataset in sets:

        def embed(samples, _name=name):
            bar = _progress_bar(len(samples), f"embedding {_name}", progress)
            try:
                return embed_with_config(
                    model,
                    samples,
                    transform,
                    config,
                    ctx.device,
                    ctx,
                    progress=bar.update if bar is not None else None,
                )
            finally:
                if bar is not None:
                    bar.close()

        results.append(run_protocol(dataset, name, embed, config.eval))
    return results


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, dynamic_ncols=True, mininterval=1.0, file=sys.stderr, leave=False
    )


def summaries_table(
    summaries: dict[str, dict[str, Any]], title: str = "", markdown: bool = False
) -> str:
    """The metrics of several test sets (name -> summary) as one table, in percent.

    A summary with a ``std`` entry (several draws, e.g. VehicleID) shows mean ± std.
    """
    rows = []
    for name, summary in summaries.items():
        std = summary.get("std")
        row = [name]
        for key in METRIC_KEYS:
            value = 100 * summary[key]
            row.append(f"{value:.2f} ± {100 * std[key]:.2f}" if std else f"{value:.2f}")
        rows.append(row)
    table = format_table(["test set", "mAP", "R1", "R5", "R10", "mINP"], rows, markdown=markdown)
    return f"{title}\n{table}" if title else table


def results_table(results: list[TestSetResult], title: str = "", markdown: bool = False) -> str:
    """:func:`summaries_table` of evaluation results."""
    return summaries_table({r.name: r.summary for r in results}, title, markdown)


def metrics_table(metrics: dict[str, Any], markdown: bool = False) -> str:
    """The final table of a run's ``metrics.json`` content."""
    return summaries_table(
        metrics["test_sets"], f"results after epoch {metrics['epoch']}", markdown
    )


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path}: saved {a!r}, now {b!r}"


def load_run_config(checkpoint: dict[str, Any]) -> ExperimentConfig:
    """The configuration stored in an adasp checkpoint or model file."""
    return config_from_dict(checkpoint["config"])
