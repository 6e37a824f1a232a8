"""The training loop: model, objective, loader, optimiser and schedule in; a trained model, its
metrics, logs and checkpoints out.

:class:`Trainer` takes its parts explicitly, so any of them can be the user's own (a model
that returns ``{"features", "logits"}`` in training mode, any objective returning
``(total, parts)``, any iterable of ``{"image", "pid"}`` batches). :meth:`Trainer.from_config`
builds every part from an :class:`~adasp.engine.config.ExperimentConfig` with the
:mod:`~adasp.engine.builders` and takes any part passed in instead.

A run folder holds ``config.yaml`` (the resolved config), ``checkpoints/last.pt`` (everything
needed to resume: model, optimiser, AMP scaler, sampler position, RNG states, evaluation
history), ``model.pt`` (the final weights and config), ``metrics.json``, ``log.jsonl`` and
``tensorboard/``. Checkpoints are written atomically at the end of every epoch (and every
``checkpoint_every_iters`` iterations); augmentation is seeded per sample, so a run killed at
any moment and resumed replays exactly what the uninterrupted run would have done (on CPU,
bit for bit).

The step never waits for the device: loss values and the divergence check stay on the device
(:class:`~adasp.engine.loss_meter.LossMeter`) and the host reads them every ``log_every``
steps, before a checkpoint and at the end of an epoch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adasp.engine.checkpoint import (
    capture_rng_state,
    check_same_training_set,
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
)
from adasp.engine.config import ExperimentConfig, config_from_dict, save_config
from adasp.engine.cpu_speed import apply_cpu_settings
from adasp.engine.distributed import (
    DistributedContext,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
)
from adasp.engine.inference import model_file_preprocessing
from adasp.engine.loss_meter import LossMeter
from adasp.engine.plugin_use import plugins_used
from adasp.engine.preflight import check_test_sets
from adasp.engine.progress import print_epoch_line
from adasp.engine.run_folder import (
    RunFolderLock,
    check_run_outputs,
    discard_set_aside_run,
    restore_set_aside_run,
    set_aside_run_outputs,
)
from adasp.engine.run_log import RunLog
from adasp.engine.schedule import LRSchedule
from adasp.errors import UserInputError
from adasp.evaluation.results import (
    METRIC_NAMES,
    TestSetMetrics,
    TestSetResult,
    metrics_by_test_set,
    metrics_document,
    metrics_from_dict,
    write_metrics,
)
from adasp.evaluation.tables import titled_results_table
from adasp.models import unwrap_model
from adasp.utils.plain import plain

CHECKPOINT_FORMAT = "adasp-checkpoint-1"

#: Config keys that do not change what a run computes, so a resume may change them.
RESUME_FREE_KEYS = (
    "data.test_sets",
    "data.num_workers",
    "data.test_batch_size",
    "data.pin_memory",
    "data.persistent_workers",
    "data.prefetch_factor",
    "eval",
    "train.eval_every",
    "train.log_every",
    "train.checkpoint_every_iters",
    "train.ddp_timeout_s",
)


class TrainingDiverged(UserInputError):
    """The loss became NaN or infinite; the message names the step and the loss term."""


@dataclass(frozen=True)
class TrainingSettings:
    """How the loop runs (the parts it runs are :class:`Trainer`'s arguments).

    Attributes:
        epochs: epochs to train.
        log_every: iterations between log lines (the host reads the losses only then).
        eval_every: epochs between evaluations; 0 evaluates only after the last epoch.
        checkpoint_every_iters: also checkpoint mid-epoch every N iterations; 0: per epoch.
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` (CUDA only; float32 elsewhere, warned).
        grad_clip: maximum gradient norm; 0 disables clipping.
        freeze_backbone_iters: iterations during which ``model.backbone`` is not updated.
        channels_last: feed images in channels-last memory format.
        find_unused_parameters, static_graph: DDP options (ignored in a single process).
    """

    epochs: int
    log_every: int = 20
    eval_every: int = 0
    checkpoint_every_iters: int = 0
    amp: str = "none"
    grad_clip: float = 0.0
    freeze_backbone_iters: int = 0
    channels_last: bool = False
    find_unused_parameters: bool = False
    static_graph: bool = False

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> TrainingSettings:
        return cls(
            epochs=config.schedule.epochs,
            log_every=config.train.log_every,
            eval_every=config.train.eval_every,
            checkpoint_every_iters=config.train.checkpoint_every_iters,
            amp=config.train.amp,
            grad_clip=config.optim.grad_clip,
            freeze_backbone_iters=config.schedule.freeze_backbone_iters,
            channels_last=config.model.channels_last,
            # Without cross-entropy the classifier and BNNeck BN take no part in the loss.
            find_unused_parameters=config.loss.ce_weight == 0,
            static_graph=config.train.ddp_static_graph,
        )


@dataclass
class RunState:
    """Where the run is: the epoch in progress and how many of its batches are done."""

    epoch: int = 0
    batches_done: int = 0
    step: int = 0
    finished: bool = False


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluation of the run: when, the metrics of every test set, and the harmful-pair
    monitor's summary when one runs."""

    epoch: int
    step: int
    test_sets: dict[str, TestSetMetrics]
    harmful_pairs: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "test_sets": {name: m.as_dict() for name, m in self.test_sets.items()},
        }
        if self.harmful_pairs is not None:
            out["harmful_pairs"] = self.harmful_pairs
        return plain(out)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvaluationRecord:
        return cls(
            int(values["epoch"]),
            int(values["step"]),
            {name: metrics_from_dict(m) for name, m in values["test_sets"].items()},
            values.get("harmful_pairs"),
        )


def claim_run_folder(
    folder: str | Path, ctx: DistributedContext, *, resume: bool, overwrite: bool
) -> RunFolderLock:
    """Lock ``folder`` for this run (rank 0 holds the lock for the whole group) and check that
    it may be written (:func:`~adasp.engine.run_folder.check_run_outputs`), on every rank.

    Raises:
        UserInputError: the folder is busy, unwritable, or holds a run not to be replaced.
    """
    if resume and overwrite:
        raise UserInputError("--resume continues a run and --overwrite replaces it; pass one")
    lock = RunFolderLock(folder, enabled=ctx.is_main)
    error: UserInputError | None = None
    if ctx.is_main:
        try:
            lock.acquire()
            check_run_outputs(folder, resume=resume, overwrite=overwrite)
        except BaseException as caught:
            lock.release()
            if isinstance(caught, OSError):
                caught = UserInputError(f"cannot use {folder} as a run folder: {caught}")
            elif not isinstance(caught, UserInputError):
                raise
            error = caught
    message = broadcast_object(str(error) if error is not None else None, ctx)
    if error is not None:
        raise error
    if message is not None:
        raise UserInputError(message)
    return lock


def _amp_settings(amp: str, device: torch.device) -> tuple[bool, torch.dtype]:
    if amp == "none":
        return False, torch.float32
    if device.type != "cuda":
        warnings.warn(f"amp={amp!r} needs a GPU; training in float32 on {device}", stacklevel=3)
        return False, torch.float32
    return True, torch.bfloat16 if amp == "bf16" else torch.float16


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Bit-exact repeatable kernels, or (on CUDA, when off) cuDNN's autotuned fastest ones."""
    if enabled:
        if device.type == "cuda":
            # cuBLAS is deterministic only with a fixed workspace, chosen before its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


class Trainer:
    """Trains a model, evaluates it and writes the run folder.

    Args:
        model: returns ``{"features": ..., "logits": ...}`` in training mode and embeddings
            in eval mode (a :class:`~adasp.models.ReIDModel`, or your own). Moved to the
            device; wrapped in DDP under ``torchrun``.
        objective: ``objective(outputs, pids) -> (total, {term: value})`` (e.g. an
            :class:`~adasp.losses.Objective`); ``pids`` are on the device, or the loader's
            CPU tensor if the objective sets ``accepts_host_labels = True``.
        train_loader: yields ``{"image": (B, 3, H, W), "pid": (B,), ...}`` batches and has a
            length (batches per epoch). With ``set_epoch(epoch, start_batch)``,
            ``state_dict(batches_done)`` and ``load_state_dict`` (as
            :class:`~adasp.data.TrainLoader` has) epochs reshuffle and a resumed run continues
            mid-epoch exactly; without them a resume restarts the interrupted epoch.
        optimizer: over the model's parameters; each group needs ``initial_lr`` (its base lr),
            which ``schedule`` scales.
        schedule: the learning-rate factor per iteration.
        settings: epochs, logging, AMP, clipping... (:class:`TrainingSettings`).
        output_dir: the run folder.
        evaluator: ``evaluator.evaluate(model, device, progress) -> [TestSetResult]`` (an
            :class:`~adasp.evaluation.Evaluator`); None: no evaluation, no ``metrics.json``.
        config: the experiment config, written to ``config.yaml`` and checkpoints and checked
            on resume (None for a run assembled by hand).
        context: the process's rank and device (default: from ``device``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (when no ``context``).
        monitor: a harmful-pair monitor (``observe``/``summary``/``state_dict``), or None.
        resume: continue the run in ``output_dir`` from its last checkpoint (a fresh start if
            there is none yet).
        overwrite: replace the run ``output_dir`` holds. Without it (or ``resume``) a folder
            holding a run's outputs is refused: a finished run is never overwritten silently.
        progress: show tqdm progress bars on the main rank.
        summary: a description printed at the start (e.g. the dataset's summary table).
        run_folder_lock: the folder's lock when the caller already claimed it with
            :func:`claim_run_folder` (as :meth:`from_config` does before building anything).

    Example:
        >>> trainer = Trainer(model, objective, loader, optimizer, schedule,
        ...                   settings=TrainingSettings(epochs=10), output_dir="runs/mine")
        >>> trainer.fit()
    """

    def __init__(
        self,
        model: nn.Module,
        objective: nn.Module,
        train_loader: Iterable[dict[str, Any]],
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        *,
        settings: TrainingSettings,
        output_dir: str | Path,
        evaluator: Any | None = None,
        config: ExperimentConfig | None = None,
        context: DistributedContext | None = None,
        device: str = "auto",
        monitor: Any | None = None,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        summary: str | None = None,
        run_folder_lock: RunFolderLock | None = None,
    ) -> None:
        self.ctx = context if context is not None else init_distributed(device)
        self.output_dir = Path(output_dir).expanduser()
        self._lock = (
            run_folder_lock
            if run_folder_lock is not None
            else claim_run_folder(self.output_dir, self.ctx, resume=resume, overwrite=overwrite)
        )
        # The previous run is removed when this one starts writing (fit), not before: a
        # failure while the new run is assembled leaves the old one as it was.
        self._overwrite = overwrite
        try:  # the folder is released on any failure from here on
            self.settings = settings
            self.config = config
            self.checkpoint_path = self.output_dir / "checkpoints" / "last.pt"
            self.progress = progress and self.ctx.is_main
            self.resume = resume
            self.summary = summary
            self.model = model.to(self.ctx.device)
            self.net: nn.Module = self.model
            if self.ctx.distributed:
                self.net = nn.parallel.DistributedDataParallel(
                    self.model,
                    device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None,
                    find_unused_parameters=settings.find_unused_parameters,
                    # Gradients live in the communication buckets: no copy, less memory.
                    gradient_as_bucket_view=True,
                    static_graph=settings.static_graph,
                )
            self.objective = objective
            self.train_loader = train_loader
            self.iters_per_epoch = len(train_loader)  # type: ignore[arg-type]
            self.optimizer = optimizer
            self.schedule = schedule
            self.evaluator = evaluator
            self.monitor = monitor
            self.amp, self.amp_dtype = _amp_settings(settings.amp, self.ctx.device)
            self.scaler = torch.amp.GradScaler(
                "cuda", enabled=self.amp and self.amp_dtype == torch.float16
            )
            backbone = getattr(unwrap_model(self.model), "backbone", None)
            self.backbone_params = (
                {id(p) for p in backbone.parameters()} if backbone is not None else set()
            )
            self.state = RunState()
            self.history: list[EvaluationRecord] = []
            self._resumed_sampler: dict[str, Any] | None = None
            self._evaluation_changed = False
            self._meter: LossMeter | None = None
            self._step_counter = torch.zeros((), dtype=torch.int64, device=self.ctx.device)
            checkpoint = self._read_resume_checkpoint()
            if checkpoint is not None:
                self._load(checkpoint)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder (done by :meth:`fit` when it returns or fails)."""
        self._lock.release()

    # ----------------------------------------------------------------------- from a config
    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig,
        output_dir: str | Path,
        *,
        device: str = "auto",
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        model: nn.Module | None = None,
        objective: nn.Module | None = None,
        train_loader: Iterable[dict[str, Any]] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        schedule: LRSchedule | None = None,
        evaluator: Any | None = None,
    ) -> Trainer:
        """A trainer whose parts are built from ``config`` (see :mod:`adasp.engine.builders`),
        except those passed in.

        Example:
            >>> Trainer.from_config(load_config("quickstart"), "runs/q", model=my_model).fit()
        """
        ctx = init_distributed(device, config.train.ddp_timeout_s)
        # Claimed before any work: a busy or finished run folder stops the command at once.
        lock = claim_run_folder(output_dir, ctx, resume=resume, overwrite=overwrite)
        try:
            return cls._from_config(
                config, output_dir, ctx, lock, resume, overwrite, progress, model, objective,
                train_loader, optimizer, schedule, evaluator,
            )  # fmt: skip
        except BaseException:
            lock.release(discard=True)  # a failed start leaves no folder behind
            raise

    @classmethod
    def _from_config(
        cls,
        config: ExperimentConfig,
        output_dir: str | Path,
        ctx: DistributedContext,
        lock: RunFolderLock,
        resume: bool,
        overwrite: bool,
        progress: bool,
        model: nn.Module | None,
        objective: nn.Module | None,
        train_loader: Iterable[dict[str, Any]] | None,
        optimizer: torch.optim.Optimizer | None,
        schedule: LRSchedule | None,
        evaluator: Any | None,
    ) -> Trainer:
        from adasp.engine import builders
        from adasp.models import prepare_model

        torch.manual_seed(config.train.seed)
        set_deterministic(config.train.deterministic, ctx.device)
        apply_cpu_settings(config.train.intra_op_threads, config.train.reuse_host_memory)
        dataset = builders.build_datasets(config.data)
        if train_loader is None:
            train_loader = builders.build_train_loader(config, dataset, ctx.rank, ctx.world_size)
        if evaluator is None:
            # Built now so that a bad extra test set fails before any training.
            evaluator = builders.build_evaluator(
                config, builders.build_test_sets(config.data, dataset)
            )
        check_test_sets(getattr(evaluator, "test_sets", []))  # before any training or removal
        if model is None:
            model = builders.build_reid_model(config.model, dataset.num_train_pids)
            if config.model.sync_bn and ctx.distributed:
                if ctx.device.type == "cuda":
                    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                else:
                    warnings.warn("model.sync_bn needs CUDA; keeping plain BatchNorm", stacklevel=2)
            # prepare_model compiles in place (CUDA only; elsewhere it warns and skips).
            model = prepare_model(
                model,
                ctx.device,
                channels_last=config.model.channels_last,
                compile=config.model.compile,
            )
        model.to(ctx.device)
        if objective is None:
            # No host-side NaN check in the losses: the loop checks the loss on the device.
            objective = builders.build_objective(
                config.loss, gather_distributed=ctx.distributed, check_finite=False
            )
        if optimizer is None:
            optimizer = builders.build_optimizer(config.optim, model)
        if schedule is None:
            schedule = builders.build_schedule(config.schedule, len(train_loader))  # type: ignore[arg-type]
        monitor = None
        if config.train.measure_harmful_pairs:
            from adasp.analysis.harmful_monitor import HarmfulPairMonitor

            monitor = HarmfulPairMonitor.for_dataset(dataset, config.loss)
        return cls(
            model,
            objective,
            train_loader,
            optimizer,
            schedule,
            settings=TrainingSettings.from_config(config),
            output_dir=output_dir,
            evaluator=evaluator,
            config=config,
            context=ctx,
            monitor=monitor,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            summary=dataset.summary(),
            run_folder_lock=lock,
        )

    # ------------------------------------------------------------------------ checkpoints
    def _read_resume_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (None for a fresh start), checked against the config.

        Rank 0 decides, so that processes on nodes without a shared file system agree.
        """
        exists = broadcast_object(self.checkpoint_path.exists(), self.ctx)
        if not (self.resume and exists):
            return None
        if self.ctx.is_main:
            remove_stale_temporaries(self.checkpoint_path)
        barrier(self.ctx)
        checkpoint = load_checkpoint(self.checkpoint_path, map_location="cpu")
        saved = checkpoint.get("config")
        if saved is not None and self.config is not None:
            # Filled with today's defaults, so a run saved before a key was added resumes.
            saved = config_from_dict(saved).to_dict()
            now = self.config.to_dict()
            if _trajectory(saved) != _trajectory(now):
                raise UserInputError(
                    f"cannot resume {self.output_dir}: the config differs from the run's "
                    f"({_first_difference(_trajectory(saved), _trajectory(now))}); resume with "
                    "the same config and overrides (only evaluation, logging and loader settings "
                    f"may change: {', '.join(RESUME_FREE_KEYS)})"
                )
            self._evaluation_changed = _evaluation_settings(saved) != _evaluation_settings(now)
        return checkpoint

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict() if self.config is not None else None,
            "plugins": plugins_used(self.config),  # named when a later command lacks them
            "num_classes": self._num_classes(),
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.state.epoch,
            "batches_done": self.state.batches_done,
            "step": self.state.step,
            "finished": self.state.finished,
            "sampler": self._loader_state(),
            "rng": gather_objects(capture_rng_state(), self.ctx),
            "history": [record.as_dict() for record in self.history],
            "monitor": self.monitor.state_dict() if self.monitor is not None else None,
        }

    def _num_classes(self) -> int:
        return int(getattr(unwrap_model(self.model), "num_classes", 0))

    def _loader_state(self) -> dict[str, Any]:
        state = getattr(self.train_loader, "state_dict", None)
        return state(self.state.batches_done) if state is not None else {}

    def _save(self) -> None:
        self.read_losses()  # never checkpoint a diverged model
        state = self._checkpoint_state()  # every rank takes part in gathering RNG states
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, state)
            discard_set_aside_run(self.output_dir)  # the run --overwrite replaced
        barrier(self.ctx)

    def _load(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise UserInputError(
                f"{self.checkpoint_path} is not an adasp training checkpoint (format "
                f"{ckpt.get('format')!r}); it cannot be resumed"
            )
        check_same_training_set(unwrap_model(self.model), ckpt, self.output_dir)
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"]:  # empty when the run started without fp16 loss scaling
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = RunState(
            ckpt["epoch"], ckpt["batches_done"], ckpt["step"], bool(ckpt["finished"])
        )
        if not hasattr(self.train_loader, "set_epoch"):
            # A plain loader restarts the interrupted epoch, so its steps are taken again.
            self.state.step -= self.state.batches_done
            self.state.batches_done = 0
        self._resumed_sampler = ckpt["sampler"]
        self.history = [EvaluationRecord.from_dict(r) for r in ckpt["history"]]
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
        """Train to the configured number of epochs, evaluate, and write the run's files.

        Returns:
            The content of ``metrics.json`` (empty without an evaluator).
        """
        epochs = self.settings.epochs
        self._lock.acquire()  # held since construction, unless close() was called
        self.log: RunLog | None = None
        try:
            if self.ctx.is_main:
                if self._overwrite:
                    set_aside_run_outputs(self.output_dir)  # removed at the first checkpoint
                    self._overwrite = False
                self.output_dir.mkdir(parents=True, exist_ok=True)
                if self.config is not None:
                    save_config(self.config, self.output_dir / "config.yaml")
                if self.summary:
                    print(self.summary, file=sys.stderr)
            self.log = RunLog(
                self.output_dir, enabled=self.ctx.is_main, resume_step=self.state.step
            )
            reevaluate = self.state.finished and self._evaluation_changed
            while self.state.epoch < epochs:
                self._train_epoch()
                epoch = self.state.epoch + 1
                last = epoch == epochs
                every = self.settings.eval_every
                if last or (every and epoch % every == 0):
                    self._evaluate_and_record(epoch)
                self.state = RunState(epoch, 0, self.state.step, last)
                self._save()
            if reevaluate and self.history:
                # A finished run resumed with other evaluation settings: its results must
                # match the config.yaml written above, so the last evaluation is redone.
                self.history.pop()
                self._evaluate_and_record(self.state.epoch)
                self._save()
            metrics = self._final_metrics()
            if self.ctx.is_main:
                self._write_outputs()
            return metrics
        finally:
            if self.log is not None:
                self.log.close()
            restore_set_aside_run(self.output_dir, enabled=self.ctx.is_main)  # failed early
            self.close()

    def _train_epoch(self) -> None:
        epoch, start = self.state.epoch, self.state.batches_done
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch, start)
            if start and self._resumed_sampler:
                self.train_loader.load_state_dict(self._resumed_sampler)
        self._resumed_sampler = None
        self.net.train()
        bar = self._epoch_bar(epoch, start)
        seen, tick = 0, time.perf_counter()
        every = self.settings.checkpoint_every_iters
        for batch in self.train_loader:
            factor = self.train_step(batch)
            self.state.batches_done += 1
            seen += batch["image"].shape[0] * self.ctx.world_size
            if (
                self.state.step % self.settings.log_every == 0
                or self.state.batches_done == self.iters_per_epoch
            ):
                self._log_progress(epoch, factor, seen, time.perf_counter() - tick, bar)
                seen, tick = 0, time.perf_counter()
            if bar is not None:
                bar.update(1)
            if (
                every
                and self.state.step % every == 0
                and self.state.batches_done < self.iters_per_epoch
            ):
                self._save()
        if bar is not None:
            bar.close()

    def _epoch_bar(self, epoch: int, start: int) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.iters_per_epoch,
            initial=start,
            desc=f"epoch {epoch + 1}/{self.settings.epochs}",
            dynamic_ncols=True,
            mininterval=1.0,
            file=sys.stderr,
        )

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimisation step at ``state.step`` (learning rate, forward, backward, update),
        queued without waiting for the device; advances ``state.step``.

        Returns:
            The learning-rate factor the schedule set for this step.
        """
        factor = self.schedule.apply(self.optimizer, self.state.step)
        device = self.ctx.device
        memory_format = (
            torch.channels_last if self.settings.channels_last else torch.contiguous_format
        )
        # The loader puts its batch on the device (in place): a TrainLoader copies the images,
        # a GPUDecodeTrainLoader (data.decode=gpu) decodes and augments them there. Any
        # iterable of batches works too.
        to_device = getattr(self.train_loader, "to_device", None)
        if to_device is not None:
            batch = to_device(batch, device)
        images = (
            batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        )
        # Built-in objectives take the loader's host labels (index tables and label checks
        # then cost no wait for the device); others get them on the device.
        pids = batch["pid"]
        if not getattr(self.objective, "accepts_host_labels", False):
            pids = pids.to(device, non_blocking=True)
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
            if "NaN or Inf" in str(error):  # a loss's own input check (library objectives)
                raise TrainingDiverged(self._diverged_message(str(error), self._where())) from None
            raise UserInputError(f"{self._where()}: {error}") from None
        if self._meter is None:
            self._meter = LossMeter(list(parts), device)
        self._step_counter += 1
        self._meter.add(parts, total, self._step_counter)
        if self.monitor is not None:
            self.monitor.observe(outputs, batch, self.state.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.state.step < self.settings.freeze_backbone_iters:
            # Frozen backbone: drop its gradients so the optimiser leaves it (and its state) alone.
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if id(p) in self.backbone_params:
                        p.grad = None
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step += 1
        return factor

    def read_losses(self) -> dict[str, float]:
        """The loss terms' means since the last read, in one host transfer (the only place the
        loop waits for the device; it runs at log steps, epoch ends and before checkpoints).

        Raises:
            TrainingDiverged: a step since the start had a NaN or infinite loss; the message
                names the step and the terms.
        """
        if self._meter is None:
            return {}
        reading = self._meter.read()
        if reading.first_bad_step is not None:
            # The meter counts this process's steps from 1; state.step counts all of them.
            step = self.state.step - int(self._step_counter) + reading.first_bad_step
            iteration = self.state.batches_done - (self.state.step - step)
            terms = reading.bad_terms or ("total",)
            what = "the loss is not finite: " + ", ".join(
                f"term {t!r} = {reading.bad_values[t]}" for t in terms
            )
            where = (
                f"training stopped at epoch {self.state.epoch + 1}, iteration {iteration} of "
                f"{self.iters_per_epoch} (global step {step})"
            )
            raise TrainingDiverged(self._diverged_message(what, where))
        return reading.means

    def _log_progress(self, epoch: int, factor: float, seen: int, elapsed: float, bar: Any) -> None:
        means = self.read_losses()
        values: dict[str, Any] = {f"loss/{k}": v for k, v in means.items()}
        initial_lr = self.optimizer.param_groups[0].get("initial_lr", 0.0)
        values.update(
            epoch=epoch + 1,
            lr=factor * initial_lr,
            images_per_sec=seen / max(elapsed, 1e-9),
        )
        if self.monitor is not None:
            values.update(self.monitor.last_values())
        self.log.event("train", self.state.step, **values)
        if bar is None and self.state.batches_done == self.iters_per_epoch and self.ctx.is_main:
            print_epoch_line(epoch + 1, self.settings.epochs, values)  # no bars: a line instead
        if bar is not None:
            bar.set_postfix(
                {k: f"{v:.3f}" for k, v in means.items()}
                | {"lr": f"{values['lr']:.2e}", "img/s": f"{values['images_per_sec']:.0f}"},
                refresh=False,
            )

    def _where(self) -> str:
        return (
            f"training stopped at epoch {self.state.epoch + 1}, iteration "
            f"{self.state.batches_done + 1} of {self.iters_per_epoch} (global step "
            f"{self.state.step + 1})"
        )

    def _diverged_message(self, what: str, where: str) -> str:
        keep = (
            f"the last good checkpoint is {self.checkpoint_path}"
            if self.checkpoint_path.exists()
            else "no checkpoint had been written yet"
        )
        return f"{where}: {what}; {keep}. Lower optim.lr, enable optim.grad_clip or check the data"

    # -------------------------------------------------------------------------- evaluation
    def evaluate(self) -> list[TestSetResult]:
        """Evaluate the current model with the evaluator (every test set, in order)."""
        if self.evaluator is None:
            return []
        if self.ctx.distributed:
            # BatchNorm statistics drift apart on each rank between DDP's broadcasts; every
            # rank embeds with rank 0's (the ones saved in the checkpoint).
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, 0)
        return self.evaluator.evaluate(self.net, self.ctx.device, progress=self.progress)

    def _evaluate_and_record(self, epoch: int) -> None:
        results = self.evaluate()
        if not results:
            return
        record = EvaluationRecord(
            epoch,
            self.state.step,
            metrics_by_test_set(results),
            self.monitor.summary() if self.monitor is not None else None,
        )
        self.history.append(record)
        for index, result in enumerate(results):
            kind = "eval" if index == 0 else f"eval/{result.name}"
            metrics = result.metrics
            self.log.event(
                kind, self.state.step, epoch=epoch, **{k: metrics[k] for k in METRIC_NAMES}
            )
        # The last epoch's table is printed once, as the run's results.
        if self.ctx.is_main and epoch < self.settings.epochs:
            table = titled_results_table(record.test_sets, f"evaluation after epoch {epoch}")
            print(table, file=sys.stderr)

    def _final_fields(self) -> dict[str, Any]:
        last = self.history[-1]  # the last epoch is always evaluated before it is saved
        fields: dict[str, Any] = {"epoch": last.epoch}
        if last.harmful_pairs is not None:
            fields["harmful_pairs"] = last.harmful_pairs
        return fields

    def _final_metrics(self) -> dict[str, Any]:
        if not self.history:
            return {}
        return metrics_document(self.history[-1].test_sets, **self._final_fields())

    def _write_outputs(self) -> None:
        save_checkpoint(
            self.output_dir / "model.pt",
            {
                "format": "adasp-model-1",
                "config": self.config.to_dict() if self.config is not None else None,
                "plugins": plugins_used(self.config),  # named when a later command lacks them
                "preprocessing": model_file_preprocessing(self.config),
                "num_classes": self._num_classes(),
                "model": unwrap_model(self.model).state_dict(),
            },
        )
        if self.history:
            # Written last: a run with metrics.json is complete (sweeps rely on it).
            write_metrics(
                self.output_dir / "metrics.json",
                self.history[-1].test_sets,
                **self._final_fields(),
            )


def metrics_table(metrics: dict[str, Any], markdown: bool = False) -> str:
    """The final table of a run's ``metrics.json`` content."""
    from adasp.evaluation.results import read_metrics

    return titled_results_table(
        read_metrics(metrics), f"results after epoch {metrics['epoch']}", markdown
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


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path}: saved {a!r}, now {b!r}"
