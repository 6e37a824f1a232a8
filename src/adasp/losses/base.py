"""The common call path of the metric losses: validate, optionally gather, compute."""

from __future__ import annotations

from torch import Tensor, nn

from adasp.losses.distributed import gather_batch
from adasp.losses.pairwise import autocast_off, check_metric_inputs


class MetricLoss(nn.Module):
    """Base of the metric losses: ``loss(features, labels)`` returns a scalar tensor.

    Subclasses implement :meth:`compute` on validated inputs. With
    ``gather_distributed=True`` the features and labels of every DDP rank are gathered first,
    so the loss sees the global P×K batch (gradients flow back to the local rows).

    Attributes:
        input_key: which model output the loss consumes (``"features"``).
    """

    input_key = "features"

    def __init__(self, gather_distributed: bool = False) -> None:
        super().__init__()
        self.gather_distributed = bool(gather_distributed)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Loss of ``features`` ``(B, D)`` with integer ``labels`` ``(B,)``; a 0-dim tensor."""
        labels = check_metric_inputs(features, labels)
        if self.gather_distributed:
            features, labels = gather_batch(features, labels)
        with autocast_off(features):
            return self.compute(features, labels)

    def compute(self, features: Tensor, labels: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError
