"""Where each identity's samples sit in a batch, as padded index tables.

The Sparse Pairwise losses reduce over "the members of a class". For any batch order and
any number of instances per class this module lays the batch out as a ``(C, K)`` table of
batch indices (``K`` = the largest class size, shorter classes padded), so that every
per-class reduction is one masked tensor operation instead of a loop over classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ClassLayout:
    """Index tables of a batch's classes.

    Attributes:
        inverse: ``(B,)`` class index in ``0..C-1`` of each sample (classes in ascending label
            order).
        slots: ``(C, K)`` batch indices of each class's members; padded entries repeat the
            class's last member and must be masked with ``valid``.
        valid: ``(C, K)`` True for real members.
    """

    inverse: Tensor
    slots: Tensor
    valid: Tensor

    @property
    def num_classes(self) -> int:
        return self.slots.shape[0]

    @classmethod
    def from_labels(cls, labels: Tensor, device: torch.device | str | None = None) -> ClassLayout:
        """Build the layout of integer ``labels`` ``(B,)`` (any values, any order).

        The tables are computed where ``labels`` are and then moved to ``device`` (default:
        the labels' device). The number of classes and the largest class size are read on
        the host, so build from CPU labels when the loss runs on a GPU: nothing then waits
        for the device (the copies are asynchronous from pinned memory).
        """
        sorted_labels, order = torch.sort(labels, stable=True)
        _, sorted_class, counts = torch.unique_consecutive(
            sorted_labels, return_inverse=True, return_counts=True
        )
        inverse = torch.empty_like(sorted_class)
        inverse[order] = sorted_class
        starts = counts.cumsum(0) - counts
        slot = torch.arange(int(counts.max()), device=labels.device)
        valid = slot < counts[:, None]
        position = starts[:, None] + torch.minimum(slot, counts[:, None] - 1)
        layout = cls(inverse=inverse, slots=order[position], valid=valid)
        target = torch.device(device) if device is not None else labels.device
        return layout if target == labels.device else layout.to(target)

    def to(self, device: torch.device) -> ClassLayout:
        """The same tables on ``device`` (asynchronous copies from host memory)."""

        def move(table: Tensor) -> Tensor:
            if table.device.type == "cpu" and device.type == "cuda":
                table = table.pin_memory()
            return table.to(device, non_blocking=True)

        return ClassLayout(move(self.inverse), move(self.slots), move(self.valid))
