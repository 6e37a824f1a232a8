"""The training loop: model, objective, loader, optimiser and schedule in; a trained model, its
metrics, logs and checkpoints out.

:class:`Trainer` is fit/epoch/step and nothing else; everything around it is a callback
(:mod:`adasp.engine.callbacks`): evaluation scheduling, the JSONL and TensorBoard logs, progress
bars, backbone freezing, the divergence check and checkpointing are built in, and users add
theirs (``train.callbacks`` or ``Trainer(..., callbacks=[...])``). :meth:`Trainer.from_config`
builds every part from an :class:`~adasp.engine.config.ExperimentConfig` and takes any part
passed in instead.

The run folder's files are named by :class:`~adasp.engine.run_folder.RunFolder`; a checkpoint
(:mod:`~adasp.engine.training_checkpoint`) holds everything needed to resume bit for bit (on
CPU). The step never waits for the device: losses and the divergence check stay there
(:class:`~adasp.engine.loss_meter.StepLosses`) until a log step, a checkpoint or an epoch end.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adasp.engine.callbacks import Callback, CallbackList
from adasp.engine.callbacks.core import evaluate_and_record, leading_callbacks, trailing_callbacks
from adasp.engine.checkpoint import save_checkpoint, write_model_file
from adasp.engine.config import ExperimentConfig
from adasp.engine.distributed import DistributedContext, barrier, broadcast_object, init_distributed
from adasp.engine.loss_meter import StepLosses, diverged_message
from adasp.engine.parts import (
    DeviceBatches,
    Evaluating,
    HostLabels,
    Objective,
    ResumableBatches,
    TrainBatches,
)
from adasp.engine.run_folder import RunFolder, RunFolderLock
from adasp.engine.schedule import LRSchedule
from adasp.engine.training_checkpoint import read_resume_checkpoint as read_resume
from adasp.engine.training_checkpoint import restore_training_checkpoint as restore
from adasp.engine.training_checkpoint import run_model_file, training_checkpoint
from adasp.engine.training_state import (
    EvaluationRecord,
    RunState,
    StepOutputs,
    TrainingDiverged,
    TrainingSettings,
    amp_settings,
)
from adasp.errors import UserInputError
from adasp.evaluation.results import (
    TestSetResult,
    metrics_document,
)
from adasp.utils.atomic import atomic_write_json

__all__ = ["Trainer", "TrainingDiverged", "TrainingSettings"]


class Trainer:
    """Trains a model, evaluates it and writes the run folder.

    Args:
        model: returns ``{"features": ..., "logits": ...}`` in training mode and embeddings
            in eval mode. Moved to the device; wrapped in DDP under ``torchrun``.
        objective: ``objective(outputs, pids) -> (total, parts)`` (:class:`~adasp.engine.parts.Objective`).
        train_loader: batches with a length (a ``ResumableBatches`` resumes mid-epoch).
        optimizer, schedule: the optimiser (each group with ``initial_lr``) and the lr factor.
        settings, output_dir: epochs, AMP... (:class:`TrainingSettings`); the run folder.
        evaluator: (:class:`~adasp.engine.parts.Evaluating`) None: no ``metrics.json``.
        config: written to ``config.yaml`` and checkpoints and checked on resume.
        context: the process's rank and device (default: from ``device``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (when no ``context``).
        callbacks: yours, called in order after the built-in leading ones (backbone freezing)
            and before the trailing ones (evaluation, logging, checkpointing).
        resume, overwrite: continue the run in ``output_dir``, or replace it (never silently).
        progress, summary: progress bars on the main rank; a text printed at the start.
        run_folder_lock: the folder's lock when the caller already claimed it.

    Example:
        >>> trainer = Trainer(model, objective, loader, optimizer, schedule,
        ...                   settings=TrainingSettings(epochs=10), output_dir="runs/mine",
        ...                   callbacks=[EMA(decay=0.999)])
        >>> trainer.fit()
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        train_loader: TrainBatches,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        *,
        settings: TrainingSettings,
        output_dir: str | Path,
        evaluator: Evaluating | None = None,
        config: ExperimentConfig | None = None,
        context: DistributedContext | None = None,
        device: str = "auto",
        callbacks: Sequence[Callback] = (),
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        summary: str | None = None,
        run_folder_lock: RunFolderLock | None = None,
    ) -> None:
        self.ctx = context if context is not None else init_distributed(device)
        self.run_folder = RunFolder(output_dir)
        self.output_dir = self.run_folder.path
        self._lock = run_folder_lock or self.run_folder.claim(
            self.ctx, resume=resume, overwrite=overwrite
        )
        # The previous run is removed when this one starts writing (fit), not before.
        self._overwrite = overwrite
        try:  # the folder is released on any failure from here on
            self.settings, self.config, self.summary = settings, config, summary
            self.model = model.to(self.ctx.device)
            self.net: nn.Module = self.model
            if self.ctx.distributed:
                self.net = nn.parallel.DistributedDataParallel(
                    self.model,
                    device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None,
                    find_unused_parameters=settings.find_unused_parameters,
                    gradient_as_bucket_view=True,  # no gradient copy, less memory
                    static_graph=settings.static_graph,
                )
            self.objective, self.train_loader = objective, train_loader
            self.iters_per_epoch = len(train_loader)
            self.optimizer, self.schedule, self.evaluator = optimizer, schedule, evaluator
            self.progress = progress and self.ctx.is_main
            self.callbacks = CallbackList(
                [
                    *leading_callbacks(settings),
                    *callbacks,
                    *trailing_callbacks(settings, progress, self.ctx.is_main),
                ]
            )
            self.amp, self.amp_dtype = amp_settings(settings.amp, self.ctx.device)
            self.scaler = torch.amp.GradScaler(
                "cuda", enabled=self.amp and self.amp_dtype == torch.float16
            )
            self.state = RunState()
            self.history: list[EvaluationRecord] = []
            self.resumed_sampler: dict[str, Any] | None = None
            self.evaluation_changed = False
            self.losses = StepLosses(self.ctx.device)
            if resume and broadcast_object(self.run_folder.has_checkpoint(), self.ctx):
                restore(self, read_resume(self))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder (done by :meth:`fit` when it returns or fails)."""
        self._lock.release()

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
        **parts: Any,
    ) -> Trainer:
        """A trainer whose parts are built from ``config`` except those passed in ``parts``
        (``model``, ``objective``, ``train_loader``, ``optimizer``, ``schedule``,
        ``evaluator``, ``callbacks``: added after those of ``train.callbacks``).

        Example:
            >>> Trainer.from_config(load_config("quickstart"), "runs/q", model=my_model).fit()
        """
        from adasp.engine.assemble import trainer_from_config

        ctx = init_distributed(device, config.train.ddp_timeout_s)
        # Claimed before any work: a busy or finished run folder stops the command at once.
        lock = RunFolder(output_dir).claim(ctx, resume=resume, overwrite=overwrite)
        try:
            return trainer_from_config(
                cls, config, output_dir, ctx, lock, resume=resume, overwrite=overwrite,
                progress=progress, **parts,
            )  # fmt: skip
        except BaseException:
            lock.release(discard=True)  # a failed start leaves no folder behind
            raise

    # ------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Write ``checkpoints/last.pt`` (every rank takes part: RNG states are gathered)."""
        self.read_losses()  # never checkpoint a diverged model
        state = training_checkpoint(self)
        if self.ctx.is_main:
            save_checkpoint(self.run_folder.checkpoint, state)
            self.run_folder.discard_set_aside()  # the run --overwrite replaced
        barrier(self.ctx)

    # ---------------------------------------------------------------------------- training
    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs, evaluate, and write the run's files.

        Returns:
            The content of ``metrics.json`` (empty without an evaluator).
        """
        self._lock.acquire()  # held since construction, unless close() was called
        try:
            if self.ctx.is_main:
                self.run_folder.start(self.config, replace=self._overwrite)
                self._overwrite = False
                if self.summary:
                    print(self.summary, file=sys.stderr)
            self.call("on_fit_start")
            reevaluate = self.state.finished and self.evaluation_changed
            while self.state.epoch < self.settings.epochs:
                self._train_epoch()
                epoch = self.state.epoch + 1
                self.state = RunState(epoch, 0, self.state.step, epoch == self.settings.epochs)
                self.call("on_epoch_end")
            if reevaluate and self.history:
                # A finished run resumed with other evaluation settings: its results must
                # match the config.yaml written above, so the last evaluation is redone.
                self.history.pop()
                self.evaluate_and_record(self.state.epoch)
                self.save_checkpoint()
            if self.ctx.is_main:
                self.write_model(self.run_folder.model)
            self.call("on_fit_end")
            metrics = self.final_metrics()
            if self.ctx.is_main and metrics:
                # Written last: a run with metrics.json is complete (sweeps rely on it).
                atomic_write_json(self.run_folder.metrics, metrics)
            return metrics
        finally:
            self.call("teardown")
            self.run_folder.restore_set_aside(enabled=self.ctx.is_main)  # failed early
            self.close()

    def call(self, event: str, *args: Any) -> None:
        """Call every callback's ``event`` in order."""
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def _train_epoch(self) -> None:
        if isinstance(self.train_loader, ResumableBatches):
            self.train_loader.set_epoch(self.state.epoch, self.state.batches_done)
            if self.state.batches_done and self.resumed_sampler:
                self.train_loader.load_state_dict(self.resumed_sampler)
        self.resumed_sampler = None
        self.net.train()
        self.call("on_epoch_start")
        for batch in self.train_loader:
            step = self.train_step(batch)
            self.state.batches_done += 1
            self.call("on_step_end", step)

    def images_of(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's images on the device in the configured memory format (a loader with
        ``to_device`` puts the whole batch there first, in place)."""
        if isinstance(self.train_loader, DeviceBatches):
            batch.update(self.train_loader.to_device(batch, self.ctx.device))
        fmt = torch.channels_last if self.settings.channels_last else torch.contiguous_format
        return batch["image"].to(self.ctx.device, non_blocking=True).contiguous(memory_format=fmt)

    def train_step(self, batch: dict[str, Any]) -> StepOutputs:
        """One optimisation step at ``state.step`` (learning rate, forward, backward, update),
        queued without waiting for the device; advances ``state.step``."""
        factor = self.schedule.apply(self.optimizer, self.state.step)
        images = self.images_of(batch)
        # Built-in objectives take the loader's host labels (no wait for the device).
        pids = batch["pid"]
        if not (isinstance(self.objective, HostLabels) and self.objective.accepts_host_labels):
            pids = pids.to(self.ctx.device, non_blocking=True)
        autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.amp:
            autocast = torch.autocast(device_type=self.ctx.device.type, dtype=self.amp_dtype)
        with autocast:
            outputs = self.net(images)
        try:
            total, parts = self.objective(outputs, pids)
        except ValueError as error:
            if "NaN or Inf" in str(error):  # a loss's own input check (library objectives)
                raise TrainingDiverged(
                    diverged_message(str(error), self._where(), self.run_folder.checkpoint)
                ) from None
            raise UserInputError(f"{self._where()}: {error}") from None
        self.losses.add(parts, total)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.call("on_after_backward")
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step += 1
        return StepOutputs(batch, outputs, total, parts, factor)

    def read_losses(self) -> dict[str, float]:
        """The loss terms' means since the last read, in one host transfer (the only place the
        loop waits for the device). Raises :class:`TrainingDiverged` after a non-finite loss."""
        return self.losses.read(self.state, self.iters_per_epoch, self.run_folder.checkpoint)

    def _where(self) -> str:
        s, n = self.state, self.iters_per_epoch
        return f"training stopped at epoch {s.epoch + 1}, iteration {s.batches_done + 1} of {n} (global step {s.step + 1})"

    def log(self, kind: str, step: int, **values: Any) -> None:
        """A log event for the loggers (``train``, ``eval``, ``eval/<test set>``...)."""
        self.call("on_log", kind, step, values)

    # -------------------------------------------------------------------------- evaluation
    def evaluate(self, model: nn.Module | None = None) -> list[TestSetResult]:
        """Evaluate ``model`` (default: the trained one) on every test set, in order."""
        if self.evaluator is None:
            return []
        model = self.model if model is None else model
        if self.ctx.distributed:
            # BatchNorm statistics drift apart on each rank; every rank embeds with rank 0's.
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, 0)
        net = self.net if model is self.model else model
        ranks = self.ctx.ranks  # the distributed context, passed explicitly
        return list(self.evaluator.evaluate(net, self.ctx.device, self.progress, ranks=ranks))

    def evaluate_and_record(self, epoch: int) -> None:
        """Evaluate, let the callbacks add to the record, log it and keep it in the history
        (:func:`~adasp.engine.callbacks.core.evaluate_and_record`)."""
        evaluate_and_record(self, epoch)

    def final_metrics(self) -> dict[str, Any]:
        """What ``metrics.json`` holds: the last evaluation, with its callbacks' sections."""
        if not self.history:
            return {}
        last = self.history[-1]  # the last epoch is always evaluated before it is saved
        return metrics_document(last.test_sets, epoch=last.epoch, **last.extras)

    def write_model(self, path: Path, model: nn.Module | None = None) -> None:
        """Write a model file of ``model`` (default: the trained one) with the run's config."""
        write_model_file(path, run_model_file(self, self.model if model is None else model))
