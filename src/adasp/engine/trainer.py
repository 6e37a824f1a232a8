"""The training loop: model, objective, loader, optimiser and schedule in; a trained model, its
metrics, logs and checkpoints out.

:class:`Trainer` is fit/epoch/step and nothing else; everything around it is a callback
(:mod:`adasp.engine.callbacks`): evaluation scheduling, the JSONL and TensorBoard logs, progress
bars, backbone freezing, the divergence check and checkpointing are built in, and users add
theirs (``train.callbacks`` or ``Trainer(..., callbacks=[...])``). :meth:`Trainer.from_config`
builds every part from an :class:`~adasp.engine.config.ExperimentConfig` and takes any part
passed in instead.

The run folder's files are named by :class:`~adasp.engine.run_folder.RunFolder`. Checkpoints
hold everything needed to resume (model, optimiser, AMP scaler, sampler position, RNG states,
evaluation history, every callback's state); augmentation is seeded per sample, so a run killed
at any moment and resumed replays exactly what the uninterrupted run would have done (on CPU,
bit for bit).

The step never waits for the device: loss values and the divergence check stay on the device
(:class:`~adasp.engine.loss_meter.LossMeter`) and the host reads them every ``log_every``
steps, before a checkpoint and at the end of an epoch.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adasp.engine.callbacks import Callback, CallbackList
from adasp.engine.callbacks.core import leading_callbacks, trailing_callbacks
from adasp.engine.checkpoint import (
    CHECKPOINT_KIND,
    ModelFile,
    capture_rng_state,
    format_tag,
    read_versioned,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
    write_model_file,
)
from adasp.engine.config import ExperimentConfig, save_config
from adasp.engine.distributed import (
    DistributedContext,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
)
from adasp.engine.loss_meter import LossMeter
from adasp.engine.parts import DeviceBatches, Evaluating, Objective, ResumableBatches, TrainBatches
from adasp.engine.resume import check_resume_config
from adasp.engine.run_folder import RunFolder, RunFolderLock
from adasp.engine.schedule import LRSchedule
from adasp.engine.training_state import (
    EvaluationRecord,
    RunState,
    StepOutputs,
    TrainingDiverged,
    TrainingSettings,
)
from adasp.errors import UserInputError
from adasp.evaluation.results import (
    METRIC_NAMES,
    TestSetResult,
    metrics_by_test_set,
    metrics_document,
    write_metrics,
)
from adasp.evaluation.tables import titled_results_table
from adasp.models import unwrap_model

__all__ = ["Trainer", "TrainingDiverged", "TrainingSettings", "metrics_table"]


class Trainer:
    """Trains a model, evaluates it and writes the run folder.

    Args:
        model: returns ``{"features": ..., "logits": ...}`` in training mode and embeddings
            in eval mode. Moved to the device; wrapped in DDP under ``torchrun``.
        objective: ``objective(outputs, pids) -> (total, parts)`` (:class:`~adasp.engine.parts.Objective`).
        train_loader: batches with a length (:class:`~adasp.engine.parts.TrainBatches`); a
            :class:`~adasp.engine.parts.ResumableBatches` resumes mid-epoch exactly, others
            restart the interrupted epoch.
        optimizer: over the model's parameters; each group needs ``initial_lr``.
        schedule: the learning-rate factor per iteration.
        settings: epochs, logging, AMP, clipping... (:class:`TrainingSettings`).
        output_dir: the run folder.
        evaluator: None: no evaluation, no ``metrics.json``.
        config: written to ``config.yaml`` and checkpoints and checked on resume.
        context: the process's rank and device (default: from ``device``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (when no ``context``).
        callbacks: yours, called in order after the built-in leading ones (backbone freezing)
            and before the trailing ones (evaluation, logging, checkpointing).
        resume: continue the run in ``output_dir`` from its last checkpoint.
        overwrite: replace the run ``output_dir`` holds (never done silently).
        progress: show progress bars on the main rank.
        summary: a description printed at the start (e.g. the dataset's summary).
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
            self.amp, self.amp_dtype = _amp_settings(settings.amp, self.ctx.device)
            self.scaler = torch.amp.GradScaler(
                "cuda", enabled=self.amp and self.amp_dtype == torch.float16
            )
            self.state = RunState()
            self.history: list[EvaluationRecord] = []
            self._resumed_sampler: dict[str, Any] | None = None
            self._evaluation_changed = False
            self._meter: LossMeter | None = None
            self._step_counter = torch.zeros((), dtype=torch.int64, device=self.ctx.device)
            if resume and broadcast_object(self.run_folder.has_checkpoint(), self.ctx):
                self._load(self._read_resume_checkpoint())
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

        ctx = init_distributed(device)
        # Claimed before any work: a busy or finished run folder stops the command at once.
        lock = RunFolder(output_dir).claim(ctx, resume=resume, overwrite=overwrite)
        try:
            return trainer_from_config(
                cls, config, output_dir, ctx, lock, resume=resume, overwrite=overwrite,
                progress=progress, **parts,
            )  # fmt: skip
        except BaseException:
            lock.release()
            raise

    # ------------------------------------------------------------------------ checkpoints
    def _read_resume_checkpoint(self) -> dict[str, Any]:
        """The checkpoint to resume from, checked against the config (rank 0 cleans up)."""
        if self.ctx.is_main:
            remove_stale_temporaries(self.run_folder.checkpoint)
        barrier(self.ctx)
        checkpoint = read_versioned(self.run_folder.checkpoint, (CHECKPOINT_KIND,))
        if checkpoint.get("config") is not None and self.config is not None:
            self._evaluation_changed = check_resume_config(
                checkpoint["config"], self.config, self.output_dir
            )
        return checkpoint

    def save_checkpoint(self) -> None:
        """Write ``checkpoints/last.pt`` (every rank takes part: RNG states are gathered)."""
        self.read_losses()  # never checkpoint a diverged model
        loader_state = getattr(self.train_loader, "state_dict", None)
        state = {
            "format": format_tag(CHECKPOINT_KIND),
            "config": self.config.to_dict() if self.config is not None else None,
            "num_classes": int(getattr(self.model, "num_classes", 0)),
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            **vars(self.state),
            "sampler": loader_state(self.state.batches_done) if loader_state else {},
            "rng": gather_objects(capture_rng_state(), self.ctx),
            "history": [record.as_dict() for record in self.history],
            "callbacks": self.callbacks.state_dict(),
        }
        if self.ctx.is_main:
            save_checkpoint(self.run_folder.checkpoint, state)
        barrier(self.ctx)

    def _load(self, ckpt: dict[str, Any]) -> None:
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"]:  # empty when the run started without fp16 loss scaling
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = RunState(ckpt["epoch"], ckpt["batches_done"], ckpt["step"], ckpt["finished"])
        if not isinstance(self.train_loader, ResumableBatches):
            # A plain loader restarts the interrupted epoch, so its steps are taken again.
            self.state.step -= self.state.batches_done
            self.state.batches_done = 0
        self._resumed_sampler = ckpt["sampler"]
        self.history = [EvaluationRecord.from_dict(r) for r in ckpt["history"]]
        self.callbacks.load_state_dict(ckpt["callbacks"])
        rng = ckpt["rng"]
        restore_rng_state(rng[self.ctx.rank] if self.ctx.rank < len(rng) else rng[0])
        if self.ctx.is_main:
            again = "writing its results again"
            if self._evaluation_changed:
                again = "evaluating it again with the changed evaluation settings"
            s = self.state
            where = (
                f"the run had finished its {s.epoch} epochs; {again}"
                if s.finished
                else f"continuing at epoch {s.epoch + 1}, batch {s.batches_done} (step {s.step})"
            )
            print(f"resumed {self.output_dir}: {where}", file=sys.stderr)

    # ---------------------------------------------------------------------------- training
    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs, evaluate, and write the run's files.

        Returns:
            The content of ``metrics.json`` (empty without an evaluator).
        """
        self._lock.acquire()  # held since construction, unless close() was called
        try:
            if self.ctx.is_main:
                if self._overwrite:
                    self.run_folder.remove_outputs()
                    self._overwrite = False
                self.output_dir.mkdir(parents=True, exist_ok=True)
                if self.config is not None:
                    save_config(self.config, self.run_folder.config)
                if self.summary:
                    print(self.summary, file=sys.stderr)
            self._call("on_fit_start")
            reevaluate = self.state.finished and self._evaluation_changed
            while self.state.epoch < self.settings.epochs:
                self._train_epoch()
                epoch = self.state.epoch + 1
                self.state = RunState(epoch, 0, self.state.step, epoch == self.settings.epochs)
                self._call("on_epoch_end")
            if reevaluate and self.history:
                # A finished run resumed with other evaluation settings: its results must
                # match the config.yaml written above, so the last evaluation is redone.
                self.history.pop()
                self.evaluate_and_record(self.state.epoch)
                self.save_checkpoint()
            if self.ctx.is_main:
                self.write_model(self.run_folder.model)
            self._call("on_fit_end")
            metrics = self._final_metrics()
            if self.ctx.is_main and metrics:
                # Written last: a run with metrics.json is complete (sweeps rely on it).
                write_metrics(self.run_folder.metrics, self.history[-1].test_sets, **self._fields())
            return metrics
        finally:
            self._call("teardown")
            self.close()

    def _call(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def _train_epoch(self) -> None:
        if isinstance(self.train_loader, ResumableBatches):
            self.train_loader.set_epoch(self.state.epoch, self.state.batches_done)
            if self.state.batches_done and self._resumed_sampler:
                self.train_loader.load_state_dict(self._resumed_sampler)
        self._resumed_sampler = None
        self.net.train()
        self._call("on_epoch_start")
        for batch in self.train_loader:
            step = self.train_step(batch)
            self.state.batches_done += 1
            self._call("on_step_end", step)

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
        if not getattr(self.objective, "accepts_host_labels", False):
            pids = pids.to(self.ctx.device, non_blocking=True)
        autocast = contextlib.nullcontext()
        if self.amp:
            autocast = torch.autocast(device_type=self.ctx.device.type, dtype=self.amp_dtype)
        with autocast:
            outputs = self.net(images)
        try:
            total, parts = self.objective(outputs, pids)
        except ValueError as error:
            if "NaN or Inf" in str(error):  # a loss's own input check (library objectives)
                raise TrainingDiverged(self._diverged(str(error), self._where())) from None
            raise UserInputError(f"{self._where()}: {error}") from None
        if self._meter is None:
            self._meter = LossMeter(list(parts), self.ctx.device)
        self._step_counter += 1
        self._meter.add(parts, total, self._step_counter)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self._call("on_after_backward")
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step += 1
        return StepOutputs(batch, outputs, total, parts, factor)

    def read_losses(self) -> dict[str, float]:
        """The loss terms' means since the last read, in one host transfer (the only place the
        loop waits for the device).

        Raises:
            TrainingDiverged: a step since the start had a NaN or infinite loss.
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
            raise TrainingDiverged(self._diverged(what, where))
        return reading.means

    def _where(self) -> str:
        s = self.state
        return (
            f"training stopped at epoch {s.epoch + 1}, iteration {s.batches_done + 1} of "
            f"{self.iters_per_epoch} (global step {s.step + 1})"
        )

    def _diverged(self, what: str, where: str) -> str:
        path = self.run_folder.checkpoint
        keep = f"the last good checkpoint is {path}" if path.exists() else "no checkpoint yet"
        return f"{where}: {what}; {keep}. Lower optim.lr, enable optim.grad_clip or check the data"

    def log(self, kind: str, step: int, **values: Any) -> None:
        """A log event for the loggers (``train``, ``eval``, ``eval/<test set>``...)."""
        self._call("on_log", kind, step, values)

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
        return list(self.evaluator.evaluate(net, self.ctx.device, progress=self.progress))

    def evaluate_and_record(self, epoch: int) -> None:
        """Evaluate, let the callbacks add to the record, log it and keep it in the history."""
        self._call("on_evaluation_start")
        results = self.evaluate()
        if not results:
            return
        record = EvaluationRecord(epoch, self.state.step, metrics_by_test_set(results))
        self._call("on_evaluation_end", record)
        self.history.append(record)
        self.log_results("eval", epoch, results)
        if self.ctx.is_main and epoch < self.settings.epochs:  # the last is the run's result
            print(titled_results_table(record.test_sets, f"evaluation after epoch {epoch}"),
                  file=sys.stderr)  # fmt: skip

    def log_results(self, kind: str, epoch: int, results: Sequence[TestSetResult]) -> None:
        """``kind`` events for the main test set, ``kind/<name>`` for the others."""
        for index, result in enumerate(results):
            name = kind if index == 0 else f"{kind}/{result.name}"
            self.log(name, self.state.step, epoch=epoch,
                     **{k: result.metrics[k] for k in METRIC_NAMES})  # fmt: skip

    def _fields(self) -> dict[str, Any]:
        last = self.history[-1]  # the last epoch is always evaluated before it is saved
        return {"epoch": last.epoch, **last.extras}

    def _final_metrics(self) -> dict[str, Any]:
        return (
            metrics_document(self.history[-1].test_sets, **self._fields()) if self.history else {}
        )

    def write_model(self, path: Path, model: nn.Module | None = None) -> None:
        """Write a model file of ``model`` (default: the trained one) with the run's config."""
        weights = unwrap_model(self.model if model is None else model).state_dict()
        config = self.config.to_dict() if self.config is not None else None
        num_classes = int(getattr(unwrap_model(self.model), "num_classes", 0))
        write_model_file(path, ModelFile(weights, config, num_classes))


def _amp_settings(amp: str, device: torch.device) -> tuple[bool, torch.dtype]:
    if amp == "none":
        return False, torch.float32
    if device.type != "cuda":
        warnings.warn(f"amp={amp!r} needs a GPU; training in float32 on {device}", stacklevel=3)
        return False, torch.float32
    return True, torch.bfloat16 if amp == "bf16" else torch.float16


def metrics_table(metrics: dict[str, Any], markdown: bool = False) -> str:
    """The final table of a run's ``metrics.json`` content."""
    from adasp.evaluation.results import read_metrics

    return titled_results_table(
        read_metrics(metrics), f"results after epoch {metrics['epoch']}", markdown
    )
