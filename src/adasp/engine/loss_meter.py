"""Loss values kept on the device between log steps, with divergence caught there too.

Reading a loss value on the host (``float(loss)``, ``loss.item()``, ``math.isfinite``) makes
the host wait until the GPU has computed it, so the next step cannot be queued while this one
runs. :class:`LossMeter` instead adds every step's values into a device tensor and records,
also on the device, the first step whose total was not finite and which terms were not. The
host reads everything in one transfer when it logs (:meth:`LossMeter.read`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adasp.engine.training_state import TrainingDiverged
from adasp.errors import UserInputError


@dataclass(frozen=True)
class LossReading:
    """What the host learns at a log step.

    Attributes:
        means: each term's mean (and ``"total"``'s) over the steps since the last reading.
        steps: how many steps that is.
        first_bad_step: the first step (as counted by :meth:`LossMeter.add`'s ``step``) whose
            total was NaN or infinite, or None.
        bad_terms: the terms that were not finite at that step (empty if only the sum was).
        bad_values: their values (and the total's) at that step.
    """

    means: dict[str, float]
    steps: int
    first_bad_step: int | None
    bad_terms: tuple[str, ...]
    bad_values: dict[str, float]


class LossMeter:
    """Sums of the loss terms since the last :meth:`read`, held on ``device``.

    Args:
        names: the loss terms in the order :meth:`add` receives them; ``"total"`` is added.
        device: where the losses are computed.
    """

    def __init__(self, names: Sequence[str], device: torch.device | str) -> None:
        self.names = (*names, "total")
        self.device = torch.device(device)
        n = len(self.names)
        self._sums = torch.zeros(n, dtype=torch.float64, device=self.device)
        self._count = torch.zeros((), dtype=torch.float64, device=self.device)
        # -1 until a non-finite total is seen; then the step and that step's values.
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        self._bad_values = torch.zeros(n, dtype=torch.float64, device=self.device)

    def add(self, parts: Mapping[str, Tensor], total: Tensor, step: Tensor) -> None:
        """Accumulate one step's values without waiting for the device.

        Args:
            parts: each term's loss, one value each (the names given at construction).
            total: the 0-dim weighted sum that is back-propagated.
            step: a 0-dim int64 tensor on the device holding this step's number (a host
                integer would be copied to the device every step).
        """
        if len(parts) != len(self.names) - 1 or any(n not in parts for n in self.names[:-1]):
            raise UserInputError(
                f"the objective returned the loss terms {sorted(parts)} after "
                f"{sorted(self.names[:-1])}; an objective must return the same terms every step"
            )
        terms = [parts[n] for n in self.names[:-1]] + [total]
        values = torch.stack([t.detach().reshape(()).to(self.device) for t in terms])
        values = values.to(torch.float64)
        self._sums += values
        self._count += 1
        new_bad = (self._first_bad < 0) & ~torch.isfinite(values[-1])
        self._first_bad = torch.where(new_bad, step, self._first_bad)
        self._bad_values = torch.where(new_bad, values, self._bad_values)

    def read(self) -> LossReading:
        """The means since the last read and the first divergence, in one host transfer; the
        sums restart (the divergence record is kept)."""
        packed = torch.cat(
            [self._sums, self._count[None], self._first_bad[None].double(), self._bad_values]
        ).tolist()
        n = len(self.names)
        sums, count, first_bad, bad = packed[:n], packed[n], int(packed[n + 1]), packed[n + 2 :]
        self._sums.zero_()
        self._count.zero_()
        means = {
            name: s / count if count else float("nan")
            for name, s in zip(self.names, sums, strict=True)
        }
        if first_bad < 0:
            return LossReading(means, int(count), None, (), {})
        values = dict(zip(self.names, bad, strict=True))
        terms = tuple(name for name in self.names[:-1] if not math.isfinite(values[name]))
        return LossReading(means, int(count), first_bad, terms, values)


class StepLosses:
    """The trainer's loss record: a :class:`LossMeter` built at the first step, a device step
    counter, and the divergence error naming the first bad step when a read finds one.

    Args:
        device: where the losses are computed.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.meter: LossMeter | None = None
        self.counter = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, parts: Mapping[str, Tensor], total: Tensor) -> None:
        """Record one step's values (no host read)."""
        if self.meter is None:
            self.meter = LossMeter(list(parts), self.device)
        self.counter += 1
        self.meter.add(parts, total, self.counter)

    def read(self, state: Any, iters_per_epoch: int, checkpoint: Path) -> dict[str, float]:
        """The means since the last read (one host transfer).

        Args:
            state: the trainer's :class:`~adasp.engine.training_state.RunState`.

        Raises:
            TrainingDiverged: a step since the start had a NaN or infinite loss.
        """
        if self.meter is None:
            return {}
        reading = self.meter.read()
        if reading.first_bad_step is None:
            return reading.means
        # The meter counts this process's steps from 1; state.step counts all of them.
        step = state.step - int(self.counter) + reading.first_bad_step
        iteration = state.batches_done - (state.step - step)
        terms = reading.bad_terms or ("total",)
        what = "the loss is not finite: " + ", ".join(
            f"term {t!r} = {reading.bad_values[t]}" for t in terms
        )
        where = (
            f"training stopped at epoch {state.epoch + 1}, iteration {iteration} of "
            f"{iters_per_epoch} (global step {step})"
        )
        raise TrainingDiverged(diverged_message(what, where, checkpoint))


def diverged_message(what: str, where: str, checkpoint: Path) -> str:
    """The one line a diverged run stops with: where, what, and what to do."""
    keep = (
        f"the last good checkpoint is {checkpoint}"
        if checkpoint.exists()
        else "no checkpoint had been written yet"
    )
    return f"{where}: {what}; {keep}. Lower optim.lr, enable optim.grad_clip or check the data"
