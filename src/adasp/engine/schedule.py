"""Learning-rate schedule as a pure function of the iteration: linear warm-up, then multi-step
decay or cosine annealing after a delay.

Being a function of the iteration alone, the schedule needs no state of its own: a resumed run
that restores the iteration counter restores the schedule exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LRSchedule:
    """Learning-rate multiplier per iteration.

    Args:
        iters_per_epoch: optimiser steps in one epoch.
        epochs: total epochs.
        warmup_iters: linear warm-up from ``warmup_factor`` to 1 over these iterations.
        warmup_factor: multiplier at iteration 0.
        scheduler: ``"multistep"`` (times ``gamma`` at each milestone epoch) or ``"cosine"``
            (constant until ``cosine_delay_epochs``, then cosine down to ``min_lr_factor``).
    """

    iters_per_epoch: int
    epochs: int
    warmup_iters: int = 0
    warmup_factor: float = 0.1
    scheduler: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    cosine_delay_epochs: int = 0
    min_lr_factor: float = 0.0

    def factor(self, iteration: int) -> float:
        """The multiplier of the base learning rate at 0-based ``iteration``."""
        epoch = iteration / self.iters_per_epoch
        if self.scheduler == "multistep":
            decay = self.gamma ** sum(epoch >= m for m in self.milestones)
        else:
            start = self.cosine_delay_epochs
            span = max(self.epochs - start, 1e-12)
            progress = min(max((epoch - start) / span, 0.0), 1.0)
            decay = self.min_lr_factor + (1 - self.min_lr_factor) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            decay *= self.warmup_factor * (1 - alpha) + alpha
        return decay

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set each parameter group's lr to its ``initial_lr`` times the factor; returns it."""
        factor = self.factor(iteration)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return factor
