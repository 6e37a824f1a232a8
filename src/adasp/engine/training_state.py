"""The training loop's typed values: its settings, where a run is, one evaluation's record, what
a step produced, and the divergence error."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from adasp.errors import UserInputError
from adasp.evaluation.results import TestSetMetrics, metrics_from_dict
from adasp.utils.plain import plain

if TYPE_CHECKING:
    from adasp.engine.config import ExperimentConfig


class TrainingDiverged(UserInputError):
    """The loss became NaN or infinite; the message names the step and the loss term."""


@dataclass(frozen=True)
class TrainingSettings:
    """How the loop runs (the parts it runs are :class:`~adasp.engine.trainer.Trainer`'s
    arguments).

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
        tensorboard: also log to TensorBoard (``RUN/tensorboard``).
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
    tensorboard: bool = True

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
            tensorboard=config.train.tensorboard,
        )


@dataclass
class RunState:
    """Where the run is: the epoch in progress (after an epoch ends: the epochs done), how many
    of its batches are done, the global step, and whether the last epoch is done."""

    epoch: int = 0
    batches_done: int = 0
    step: int = 0
    finished: bool = False


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluation of the run: when, the metrics of every test set, and the sections that
    callbacks add (``extras``, e.g. ``"ema"`` or ``"harmful_pairs"``), which go into
    ``metrics.json`` beside the metrics."""

    epoch: int
    step: int
    test_sets: dict[str, TestSetMetrics]
    extras: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return plain(
            {
                "epoch": self.epoch,
                "step": self.step,
                "test_sets": {name: m.as_dict() for name, m in self.test_sets.items()},
                "extras": self.extras,
            }
        )

    def main_metrics(self) -> dict[str, float]:
        """The first (main) test set's metrics."""
        first = next(iter(self.test_sets.values()))
        return {k: float(v) for k, v in first.as_dict().items() if isinstance(v, (int, float))}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvaluationRecord:
        return cls(
            int(values["epoch"]),
            int(values["step"]),
            {name: metrics_from_dict(m) for name, m in values["test_sets"].items()},
            dict(values.get("extras") or {}),
        )


@dataclass(frozen=True)
class StepOutputs:
    """What one optimisation step produced, for the callbacks (all still on the device: reading
    a value waits for the device, so do it only at log steps).

    Attributes:
        batch: the loader's batch (``image``, ``pid``, ``index``...), on the device.
        outputs: the model's training outputs (``{"features", "logits"}``).
        total: the loss, a 0-d tensor.
        parts: each loss term's value.
        lr_factor: the factor the schedule set for this step's learning rate.
    """

    batch: dict[str, Any]
    outputs: Any
    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    lr_factor: float


def amp_settings(amp: str, device: torch.device) -> tuple[bool, torch.dtype]:
    """Whether to autocast, and to which dtype (``amp`` needs CUDA: float32 elsewhere, warned)."""
    if amp == "none":
        return False, torch.float32
    if device.type != "cuda":
        warnings.warn(f"amp={amp!r} needs a GPU; training in float32 on {device}", stacklevel=3)
        return False, torch.float32
    return True, torch.bfloat16 if amp == "bf16" else torch.float16
