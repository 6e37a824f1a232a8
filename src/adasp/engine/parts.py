"""The contracts of the parts a :class:`~adasp.engine.trainer.Trainer` is given, as
``typing.Protocol``s a type checker sees (any object with these methods fits; nothing needs to
inherit from them). The callback contract is :class:`~adasp.engine.callbacks.Callback`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from adasp.evaluation.results import TestSetResult
from adasp.utils.distributed import ProcessRanks


@runtime_checkable
class TrainBatches(Protocol):
    """The training loader: an iterable with a length (batches per epoch) of
    ``{"image": (B, 3, H, W), "pid": (B,), ...}`` batches (a list of batches fits)."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class ResumableBatches(TrainBatches, Protocol):
    """A loader that reshuffles per epoch and resumes mid-epoch exactly (as
    :class:`~adasp.data.TrainLoader` does). Without these a resume restarts the epoch."""

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...

    def state_dict(self, batches_done: int) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class DeviceBatches(Protocol):
    """A loader that moves (or decodes) its batches onto the device itself."""

    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]: ...


class Objective(Protocol):
    """``objective(outputs, pids) -> (total, {term: value})`` (e.g. an
    :class:`~adasp.losses.Objective`). Labels are on the device unless the objective has
    ``accepts_host_labels = True`` (then the loader's CPU tensor)."""

    def __call__(
        self, outputs: Any, pids: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


@runtime_checkable
class HostLabels(Protocol):
    """An objective that takes the loader's CPU labels (``accepts_host_labels = True``, as
    the built-in :class:`~adasp.losses.Objective`): no wait for the device on label checks."""

    accepts_host_labels: bool


class Evaluating(Protocol):
    """Evaluates a model on the run's test sets (an :class:`~adasp.evaluation.Evaluator`)."""

    def evaluate(
        self,
        model: nn.Module,
        device: torch.device | str,
        progress: bool = False,
        keep_details: bool = False,
        ranks: ProcessRanks | None = None,
    ) -> Sequence[TestSetResult]: ...
