"""Precise BatchNorm statistics: before each evaluation, the BatchNorm running statistics are
recomputed as the exact average over ``batches`` training batches (instead of the running
average the training steps left, which lags behind the weights). The random state is restored
afterwards, so training continues as it would have."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import torch
from torch import nn

from adasp.engine.callbacks.base import CALLBACKS, Callback
from adasp.engine.checkpoint import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    from adasp.engine.trainer import Trainer


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@CALLBACKS.register("precise_bn")
class PreciseBN(Callback):
    """Recomputes the BatchNorm statistics over ``batches`` training batches before each
    evaluation.

    Args:
        batches: training batches to average over (at most an epoch's).
    """

    def __init__(self, batches: int = 50) -> None:
        if batches < 1:
            raise ValueError(f"batches must be >= 1, got {batches}")
        self.batches = batches

    def on_evaluation_start(self, trainer: Trainer) -> None:
        layers = batch_norms(trainer.model)
        if not layers:
            return
        rng = capture_rng_state()
        momenta = [m.momentum for m in layers]
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # a cumulative (exact) average over the batches seen
        training = trainer.model.training
        trainer.model.train()
        with torch.no_grad():
            for batch in itertools.islice(iter(trainer.train_loader), self.batches):
                trainer.model(trainer.images_of(batch))
        trainer.model.train(training)
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        restore_rng_state(rng)
