"""Keep-best: the model of the best evaluation so far, by a chosen metric of the main test
set, written to ``best.pt`` (a model file, like ``model.pt``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from adasp.engine.callbacks.base import CALLBACKS, Callback
from adasp.engine.training_state import EvaluationRecord
from adasp.evaluation.results import METRIC_NAMES

if TYPE_CHECKING:
    from adasp.engine.trainer import Trainer


@CALLBACKS.register("keep_best")
class KeepBest(Callback):
    """Writes ``best.pt`` whenever an evaluation beats the best so far; reports the best value
    and its epoch under ``best`` in ``metrics.json``.

    Args:
        metric: one of the metrics (``mAP``, ``rank1``, ``rank5``, ``rank10``, ``mINP``).
        mode: ``max`` (higher is better) or ``min``.
    """

    def __init__(self, metric: str = "mAP", mode: Literal["max", "min"] = "max") -> None:
        if metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRIC_NAMES)}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {mode!r}")
        self.metric, self.mode = metric, mode
        self.best: float | None = None
        self.epoch = 0

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_evaluation_end(self, trainer: Trainer, record: EvaluationRecord) -> None:
        value = record.main_metrics()[self.metric]
        if self._better(value):
            self.best, self.epoch = value, record.epoch
            if trainer.ctx.is_main:
                trainer.write_model(trainer.run_folder.best_model)
        record.extras["best"] = {self.metric: self.best, "epoch": self.epoch}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.epoch = state["best"], int(state["epoch"])
