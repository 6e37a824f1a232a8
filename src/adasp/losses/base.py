"""The common call path of the metric losses: validate, optionally gather, compute."""

from __future__ import annotations

import inspect

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

    #: ``labels`` may be on the CPU while ``features`` are on a GPU (see :meth:`forward`).
    accepts_host_labels = True
    _compute_takes_host_labels = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Subclasses written before ``host_labels`` existed define compute(features, labels).
        cls._compute_takes_host_labels = "host_labels" in inspect.signature(cls.compute).parameters

    def __init__(self, gather_distributed: bool = False) -> None:
        super().__init__()
        self.gather_distributed = bool(gather_distributed)

    #: Refuse NaN/Inf features (a host read: see :func:`check_metric_inputs`).
    check_finite = True

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Loss of ``features`` ``(B, D)`` with integer ``labels`` ``(B,)``; a 0-dim tensor.

        ``labels`` may be on the CPU while ``features`` are on a GPU: index tables are then
        built on the host, so the loss is queued without waiting for the device.
        """
        host_labels = labels if labels.device.type == "cpu" else None
        labels = check_metric_inputs(features, labels, self.check_finite)
        if self.gather_distributed:
            features, gathered = gather_batch(features, labels)
            if gathered is not labels:  # other ranks' labels joined: not on this host
                host_labels, labels = None, gathered
        with autocast_off(features):
            if self._compute_takes_host_labels:
                return self.compute(features, labels, host_labels)
            return self.compute(features, labels)

    def compute(
        self, features: Tensor, labels: Tensor, host_labels: Tensor | None = None
    ) -> Tensor:  # pragma: no cover
        """The loss of validated inputs; ``host_labels`` are ``labels`` on the CPU (or None)."""
        raise NotImplementedError
