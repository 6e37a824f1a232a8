"""The built-in callbacks every run has: backbone freezing, the ``train`` log line, progress
bars, the divergence check, evaluation scheduling and checkpointing (built by the trainer from
its :class:`~adasp.engine.training_state.TrainingSettings`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from adasp.engine.callbacks.base import Callback
from adasp.engine.progress import print_epoch_line
from adasp.engine.training_state import EvaluationRecord, StepOutputs, TrainingSettings
from adasp.evaluation.results import METRIC_NAMES, TestSetResult, metrics_by_test_set
from adasp.evaluation.tables import titled_results_table

if TYPE_CHECKING:
    from adasp.engine.trainer import Trainer


class BackboneFreeze(Callback):
    """Keeps ``model.backbone`` unchanged for the first ``iters`` steps: its gradients are
    dropped, so the optimiser leaves it (and its state) alone."""

    name = "backbone_freeze"

    def __init__(self, iters: int) -> None:
        self.iters = iters
        self._ids: set[int] = set()

    def on_fit_start(self, trainer: Trainer) -> None:
        backbone = getattr(trainer.model, "backbone", None)
        self._ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()

    def on_after_backward(self, trainer: Trainer) -> None:
        if trainer.state.step >= self.iters:
            return
        for group in trainer.optimizer.param_groups:
            for p in group["params"]:
                if id(p) in self._ids:
                    p.grad = None


class TrainLog(Callback):
    """Every ``log_every`` steps (and at an epoch's last batch): the losses' means, the
    learning rate, images per second and the callbacks' :meth:`~Callback.train_log_values`,
    as a ``train`` log event. Reading the losses is the step's only wait for the device."""

    name = "train_log"

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every
        self._seen, self._tick = 0, time.perf_counter()

    def on_epoch_start(self, trainer: Trainer) -> None:
        self._seen, self._tick = 0, time.perf_counter()

    def on_step_end(self, trainer: Trainer, step: StepOutputs) -> None:
        self._seen += step.batch["image"].shape[0] * trainer.ctx.world_size
        state = trainer.state
        if state.step % self.log_every and state.batches_done != trainer.iters_per_epoch:
            return
        values: dict[str, Any] = {f"loss/{k}": v for k, v in trainer.read_losses().items()}
        initial_lr = trainer.optimizer.param_groups[0].get("initial_lr", 0.0)
        elapsed = max(time.perf_counter() - self._tick, 1e-9)
        values.update(
            epoch=state.epoch + 1,
            lr=step.lr_factor * initial_lr,
            images_per_sec=self._seen / elapsed,
        )
        for callback in trainer.callbacks:
            values.update(callback.train_log_values(trainer))
        trainer.log("train", state.step, **values)
        self._seen, self._tick = 0, time.perf_counter()


class ProgressBar(Callback):
    """A tqdm bar per epoch (main rank), with the last logged losses."""

    name = "progress_bar"

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self._bar: Any = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=trainer.iters_per_epoch,
            initial=trainer.state.batches_done,
            desc=f"epoch {trainer.state.epoch + 1}/{self.epochs}",
            dynamic_ncols=True,
            mininterval=1.0,
            file=sys.stderr,
        )

    def on_log(self, trainer: Trainer, kind: str, step: int, values: Mapping[str, Any]) -> None:
        if kind == "train" and self._bar is not None:
            shown = {k[5:]: f"{v:.3f}" for k, v in values.items() if k.startswith("loss/")}
            shown |= {"lr": f"{values['lr']:.2e}", "img/s": f"{values['images_per_sec']:.0f}"}
            self._bar.set_postfix(shown, refresh=False)

    def on_step_end(self, trainer: Trainer, step: StepOutputs) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.teardown(trainer)

    def teardown(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EpochLines(Callback):
    """Without progress bars (``--no-progress``, or stderr not a terminal): one line per epoch
    from the values logged at its last step, so a log file reads like a table."""

    name = "epoch_lines"

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_log(self, trainer: Trainer, kind: str, step: int, values: Mapping[str, Any]) -> None:
        if kind == "train" and trainer.state.batches_done == trainer.iters_per_epoch:
            print_epoch_line(trainer.state.epoch + 1, self.epochs, values)


class DivergenceCheck(Callback):
    """Stops the run at the end of an epoch whose loss was NaN or infinite (the loss is
    checked on the device every step; :meth:`Trainer.read_losses` raises
    :class:`~adasp.engine.training_state.TrainingDiverged` naming the first bad step and term).
    Log steps and checkpoints read it too: a diverged model is never checkpointed."""

    name = "divergence_check"

    def on_epoch_end(self, trainer: Trainer) -> None:
        trainer.read_losses()


class EvaluationSchedule(Callback):
    """Evaluates after every ``every`` epochs (0: only after the last one) and after the last."""

    name = "evaluation_schedule"

    def __init__(self, every: int) -> None:
        self.every = every

    def on_epoch_end(self, trainer: Trainer) -> None:
        epoch = trainer.state.epoch
        if trainer.state.finished or (self.every and epoch % self.every == 0):
            trainer.evaluate_and_record(epoch)


class Checkpointer(Callback):
    """Writes ``checkpoints/last.pt`` at every epoch end (and every ``every_iters`` steps
    mid-epoch). Called after the other callbacks, so their states are up to date."""

    name = "checkpointer"

    def __init__(self, every_iters: int) -> None:
        self.every_iters = every_iters

    def on_step_end(self, trainer: Trainer, step: StepOutputs) -> None:
        state = trainer.state
        if (
            self.every_iters
            and state.step % self.every_iters == 0
            and state.batches_done < trainer.iters_per_epoch
        ):
            trainer.save_checkpoint()

    def on_epoch_end(self, trainer: Trainer) -> None:
        trainer.save_checkpoint()


def evaluate_and_record(trainer: Trainer, epoch: int) -> None:
    """Evaluate the trainer's model; the callbacks see the record (and may add to its extras)
    before it is logged (``eval`` events) and kept in ``trainer.history``; the results table
    is printed, except after the last epoch (whose table is the run's result)."""
    trainer.call("on_evaluation_start")
    results = trainer.evaluate()
    if not results:
        return
    record = EvaluationRecord(epoch, trainer.state.step, metrics_by_test_set(results))
    trainer.call("on_evaluation_end", record)
    trainer.history.append(record)
    log_results(trainer, "eval", epoch, results)
    if trainer.ctx.is_main and epoch < trainer.settings.epochs:
        table = titled_results_table(record.test_sets, f"evaluation after epoch {epoch}")
        print(table, file=sys.stderr)


def log_results(trainer: Trainer, kind: str, epoch: int, results: Sequence[TestSetResult]) -> None:
    """``kind`` log events for the main test set's metrics, ``kind/<name>`` for the others."""
    for index, result in enumerate(results):
        name = kind if index == 0 else f"{kind}/{result.name}"
        metrics = {k: result.metrics[k] for k in METRIC_NAMES}
        trainer.log(name, trainer.state.step, epoch=epoch, **metrics)


def leading_callbacks(settings: TrainingSettings) -> list[Callback]:
    """Built-ins called before the user's callbacks."""
    return (
        [BackboneFreeze(settings.freeze_backbone_iters)] if settings.freeze_backbone_iters else []
    )


def trailing_callbacks(settings: TrainingSettings, progress: bool, main: bool) -> list[Callback]:
    """Built-ins called after the user's: evaluation, logging, the divergence check and, last,
    checkpointing."""
    from adasp.engine.callbacks.loggers import JsonlLogger, TensorBoardLogger

    callbacks: list[Callback] = [EvaluationSchedule(settings.eval_every)]
    callbacks.append(TrainLog(settings.log_every))
    if progress and main:
        callbacks.append(ProgressBar(settings.epochs))
    elif main:
        callbacks.append(EpochLines(settings.epochs))
    if main:
        callbacks.append(JsonlLogger())
        if settings.tensorboard:
            callbacks.append(TensorBoardLogger())
    callbacks += [DivergenceCheck(), Checkpointer(settings.checkpoint_every_iters)]
    return callbacks
