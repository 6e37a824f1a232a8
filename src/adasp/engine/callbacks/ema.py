"""Weight EMA: an exponential moving average of the model's weights, evaluated and saved beside
the trained model.

After step ``t`` (1-based) the EMA weights are ``ema <- d_t · ema + (1 - d_t) · w`` with
``d_t = min(decay, (1 + t) / (10 + t))`` (the warm-up keeps the first steps from being
dominated by the random initialisation); buffers (BatchNorm statistics) are copied. The
update runs on the device with no host read. At each evaluation the EMA model is evaluated
too: its metrics are logged as ``eval/ema`` events and reported under ``ema`` in
``metrics.json``; at the end it is written to ``model_ema.pt``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adasp.engine.callbacks.base import CALLBACKS, Callback
from adasp.engine.callbacks.core import log_results
from adasp.engine.training_state import EvaluationRecord, StepOutputs
from adasp.evaluation.results import metrics_by_test_set, metrics_document
from adasp.models import unwrap_model

if TYPE_CHECKING:
    from adasp.engine.trainer import Trainer


@CALLBACKS.register("ema")
class EMA(Callback):
    """Keeps an EMA copy of the model (see the module docstring).

    Args:
        decay: the EMA decay ``d`` in ``(0, 1)``.
        warmup: ramp the decay up over the first steps.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.model: nn.Module | None = None
        self._pending: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.model is None:
            self.model = copy.deepcopy(unwrap_model(trainer.model)).eval()
            self.model.requires_grad_(False)
        if self._pending is not None:
            self.model.load_state_dict(self._pending)
            self._pending = None

    def on_step_end(self, trainer: Trainer, step: StepOutputs) -> None:
        assert self.model is not None
        t = trainer.state.step  # a host count: no wait for the device
        decay = min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay
        source = unwrap_model(trainer.model)
        with torch.no_grad():
            ema: list[torch.Tensor] = list(self.model.parameters())
            now: list[torch.Tensor] = [p.detach() for p in source.parameters()]
            torch._foreach_lerp_(ema, now, 1.0 - decay)
            for mine, theirs in zip(self.model.buffers(), source.buffers(), strict=True):
                mine.copy_(theirs)

    def on_evaluation_end(self, trainer: Trainer, record: EvaluationRecord) -> None:
        assert self.model is not None
        results = trainer.evaluate(self.model)
        if results:
            record.extras["ema"] = metrics_document(metrics_by_test_set(results))
            log_results(trainer, "eval/ema", record.epoch, results)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.model is not None and trainer.ctx.is_main:
            trainer.write_model(trainer.run_folder.model_variant("ema"), self.model)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()} if self.model is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "model" in state:
            if self.model is not None:
                self.model.load_state_dict(state["model"])
            else:
                self._pending = state["model"]
