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

import torch
from torch import Tensor

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
