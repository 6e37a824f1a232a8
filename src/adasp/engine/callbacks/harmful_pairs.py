"""The harmful-pair monitor as a callback (``train.callbacks=[harmful_pairs]``): on a dataset
that marks the images sharing no visual cue with the rest of their identity (the synthetic
set), the fraction of the pairs each loss selects that are harmful, per step in the ``train``
log (``harmful/<loss>``) and as running means under ``harmful_pairs`` in ``metrics.json``
(see :mod:`adasp.analysis.harmful_monitor`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from adasp.analysis.harmful_monitor import HarmfulPairMonitor
from adasp.engine.callbacks.base import CALLBACKS, Callback, CallbackContext
from adasp.engine.training_state import EvaluationRecord, StepOutputs

if TYPE_CHECKING:
    from adasp.engine.trainer import Trainer


@CALLBACKS.register("harmful_pairs")
class HarmfulPairs(Callback):
    """Measures harmful-pair selection during training.

    Args:
        temperature: τ for AdaSP's adaptive weight (default: ``loss.temperature``).
        context: given by the registry (the dataset and the config).
    """

    def __init__(self, temperature: float | None = None, *, context: CallbackContext) -> None:
        tau = context.config.loss.temperature if temperature is None else temperature
        self.monitor = HarmfulPairMonitor.for_dataset(context.dataset, tau)

    def on_step_end(self, trainer: Trainer, step: StepOutputs) -> None:
        with torch.no_grad():
            self.monitor.observe(step.outputs, step.batch, trainer.state.step - 1)

    def train_log_values(self, trainer: Trainer) -> dict[str, float]:
        return self.monitor.last_values()

    def on_evaluation_end(self, trainer: Trainer, record: EvaluationRecord) -> None:
        record.extras["harmful_pairs"] = self.monitor.summary()

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state)
