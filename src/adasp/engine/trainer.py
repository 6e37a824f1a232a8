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
import os
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
)
from adasp.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
)
from adasp.engine.config import ExperimentConfig, save_config
from adasp.engine.distributed import (
    DistributedContext,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
)
from adasp.engine.evaluator import (
    METRIC_KEYS,
    TestSetResult,
    build_test_sets,
    embed_with_config,
    run_protocol,
    unwrap_model,
)
from adasp.engine.run_log import RunLog
from adasp.engine.seeded_loading import SeededBatches, SeededDataset, mix_seed
from adasp.errors import UserInputError
from adasp.utils.atomic import atomic_write_json
from adasp.utils.plain import plain

CHECKPOINT_FORMAT = "adasp-checkpoint-1"

#: Config keys that do not change what a run computes, so a resume may change them.
RESUME_FREE_KEYS = (
    "data.test_sets",
    "data.num_workers",
    "data.test_batch_size",
    "eval",
    "train.eval_every",
    "train.log_every",
    "train.checkpoint_every_iters",
)


def _evaluation_settings(config: dict[str, Any]) -> tuple[Any, Any]:
    """What decides a finished run's reported metrics besides its weights."""
    return config.get("eval"), config.get("data", {}).get("test_sets")


def _trajectory(config: dict[str, Any]) -> dict[str, Any]:
    """The config without :data:`RESUME_FREE_KEYS`."""
    out = {section: dict(values) for section, values in config.items()}
    for key in RESUME_FREE_KEYS:
        section, _, name = key.partition(".")
        if name:
            out.get(section, {}).pop(name, None)
        else:
            out.pop(section, None)
    return out


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
        if device.type == "cuda":
            # cuBLAS is deterministic only with a fixed workspace, chosen before its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


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
        self._evaluation_changed = False
        resume_from = self._read_resume_checkpoint()
        self.state = RunState()
        self.history: list[dict[str, Any]] = []
        self._resumed_sampler: dict[str, Any] | None = None
        self._setup()
        if resume_from is not None:
            self._load(resume_from)

    # ----------------------------------------------------------------------------- set-up
    def _read_resume_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (None for a fresh start), checked against the config.

        Rank 0 decides, so that processes on nodes without a shared file system agree.
        """
        exists = broadcast_object(self.checkpoint_path.exists(), self.ctx)
        if exists and not self.resume:
            raise UserInputError(
                f"{self.output_dir} already holds a run ({self.checkpoint_path}); pass --resume to "
                "continue it, or choose another --output"
            )
        if not (self.resume and exists):
            return None
        if self.ctx.is_main:
            remove_stale_temporaries(self.checkpoint_path)
        barrier(self.ctx)
        checkpoint = load_checkpoint(self.checkpoint_path, map_location="cpu")
        saved, now = checkpoint.get("config"), self.config.to_dict()
        if saved is not None and _trajectory(saved) != _trajectory(now):
            raise UserInputError(
                f"cannot resume {self.output_dir}: the config differs from the run's "
                f"({_first_difference(_trajectory(saved), _trajectory(now))}); resume with the "
                "same config and overrides (only evaluation, logging and loader settings may "
                f"change: {', '.join(RESUME_FREE_KEYS)})"
            )
        if saved is not None:
            self._evaluation_changed = _evaluation_settings(saved) != _evaluation_settings(now)
        return checkpoint

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
        self.test_sets = build_test_sets(cfg.data, self.dataset)  # fail fast on a bad one
        model = build_reid_model(cfg.model, self.dataset.num_train_pids)
        if cfg.model.sync_bn and ctx.distributed:
            if ctx.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                warnings.warn("model.sync_bn needs CUDA; keeping plain BatchNorm", stacklevel=2)
        # prepare_model compiles in place (CUDA only; elsewhere it warns and skips).
        self.model = prepare_model(
            model, ctx.device, channels_last=cfg.model.channels_last, compile=cfg.model.compile
        )
        self.net: nn.Module = self.model
        if ctx.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                # Without cross-entropy the classifier and BNNeck BN take no part in the loss.
                find_unused_parameters=cfg.loss.ce_weight == 0,
            )
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

            self.monitor = HarmfulPairMonitor.for_dataset(self.dataset, cfg.loss)

    # ------------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "num_classes": int(self.dataset.num_train_pids),
            "model": unwrap_model(self.model).state_dict(),
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
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"]:  # empty when the run started without fp16 loss scaling
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
            again = (
                "evaluating it again with the changed evaluation settings"
                if self._evaluation_changed
                else "writing its results again"
            )
            where = (
                f"the run had finished its {self.state.epoch} epochs; {again}"
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
        self.log = RunLog(
            self.output_dir, enabled=self.ctx.is_main, resume_step=self.state.step or None
        )
        reevaluate = self.state.finished and self._evaluation_changed
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
            if reevaluate:
                # A finished run resumed with other evaluation settings: its results must
                # match the config.yaml written above, so the last evaluation is redone.
                self.history.pop()
                self._evaluate_and_record(self.state.epoch)
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
            if "NaN or Inf" in str(error):  # the losses' check of their input features
                raise TrainingDiverged(self._diverged_message(str(error))) from None
            raise UserInputError(f"{self._where()}: {error}") from None
        values = {name: float(value.detach()) for name, value in parts.items()}
        values["total"] = float(total.detach())
        if not math.isfinite(values["total"]):
            bad = [n for n, v in values.items() if not math.isfinite(v) and n != "total"]
            raise TrainingDiverged(
                self._diverged_message(
                    "the loss is not finite: "
                    + ", ".join(f"term {n!r} = {values[n]}" for n in bad or ["total"])
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
        return values

    def _where(self) -> str:
        return (
            f"training stopped at epoch {self.state.epoch + 1}, iteration "
            f"{self.state.batches_done + 1} of {self.iters_per_epoch} (global step "
            f"{self.state.step + 1})"
        )

    def _diverged_message(self, what: str) -> str:
        keep = (
            f"the last good checkpoint is {self.checkpoint_path}"
            if self.checkpoint_path.exists()
            else "no checkpoint had been written yet"
        )
        return (
            f"{self._where()}: {what}; {keep}. Lower optim.lr, enable optim.grad_clip or check "
            "the data"
        )

    # -------------------------------------------------------------------------- evaluation
    def evaluate(self) -> list[TestSetResult]:
        """Evaluate the current model on the main test set and ``data.test_sets``."""
        if self.ctx.distributed:
            # BatchNorm statistics drift apart on each rank between DDP's broadcasts; every
            # rank embeds with rank 0's (the ones saved in the checkpoint).
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, 0)
        return evaluate_model(
            self.net,
            self.config,
            self.ctx,
            self.test_transform,
            self.test_sets,
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
        # The last epoch's table is printed once, as the run's results.
        if self.ctx.is_main and epoch < self.config.schedule.epochs:
            print(results_table(results, title=f"evaluation after epoch {epoch}"), file=sys.stderr)

    def _final_metrics(self) -> dict[str, Any]:
        last = self.history[-1]  # the last epoch is always evaluated before it is saved
        names = list(last["test_sets"])
        metrics: dict[str, Any] = {"test_set": names[0], **last["test_sets"][names[0]]}
        metrics["epoch"] = last["epoch"]
        metrics["test_sets"] = last["test_sets"]
        if "harmful_pairs" in last:
            metrics["harmful_pairs"] = last["harmful_pairs"]
        return metrics

    def _write_outputs(self, metrics: dict[str, Any]) -> None:
        save_checkpoint(
            self.output_dir / "model.pt",
            {
                "format": "adasp-model-1",
                "config": self.config.to_dict(),
                "num_classes": int(self.dataset.num_train_pids),
                "model": unwrap_model(self.model).state_dict(),
            },
        )
        # Written last: a run with metrics.json is complete (sweeps rely on it).
        atomic_write_json(self.output_dir / "metrics.json", plain(metrics))


def evaluate_model(
    model: nn.Module,
    config: ExperimentConfig,
    ctx: DistributedContext,
    transform: Any,
    test_sets: list[tuple[str, Any]] | None = None,
    progress: bool = False,
    keep_details: bool = False,
) -> list[TestSetResult]:
    """Evaluate ``model`` on the configured main test set, then on each of ``data.test_sets``.

    Args:
        test_sets: ``(name, dataset)`` pairs from :func:`build_test_sets` (built from the
            config when None).
        keep_details: keep each single-split result's embeddings and dataset in
            ``details`` (for pictures of ranked lists); otherwise they are dropped at once.

    Every rank embeds its shard and receives all embeddings; rank 0 computes the metrics and
    sends the summaries to the others.
    """
    sets = test_sets if test_sets is not None else build_test_sets(config.data)
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

        result = run_protocol(dataset, name, embed, config.eval, compute=ctx.is_main)
        if not keep_details:
            result.details.clear()
        results.append(result)
    summaries = broadcast_object([r.summary for r in results], ctx)
    for result, summary in zip(results, summaries, strict=True):
        result.summary = summary
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
    from adasp.evaluation import format_results_table

    results = {
        name: {"mean": s, "std": s["std"], "num_draws": s["num_draws"]} if "std" in s else s
        for name, s in summaries.items()
    }
    table = format_results_table(results, markdown=markdown)
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
