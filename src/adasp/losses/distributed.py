"""Gathering a P×K batch from all DDP ranks so that a metric loss sees the global batch."""

from __future__ import annotations

import torch
from torch import Tensor

from adasp.utils.distributed import all_gather_rows, distributed_world_size


class _GatherWithLocalGrad(torch.autograd.Function):
    """Concatenate every rank's rows; the gradient flows back to this rank's rows only.

    Every rank computes the same loss on the same global batch, so the gradient a rank gets
    for its own rows is the true one. DDP then averages parameter gradients over the ranks,
    which would divide it by the world size; backward multiplies by the world size so that the
    averaged gradient equals the gradient of the global-batch loss.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        parts, rank = all_gather_rows(tensor.detach())
        offsets = [0]
        for part in parts:
            offsets.append(offsets[-1] + part.shape[0])
        ctx.local = (offsets[rank], offsets[rank + 1])
        ctx.world = len(parts)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        start, stop = ctx.local
        return grad[start:stop] * ctx.world


def gather_batch(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Features ``(B_r, D)`` and labels ``(B_r,)`` of every rank, concatenated in rank order.

    Outside an initialised process group (or with one process) the inputs are returned as they
    are. Gradients flow to the local features only, scaled as described in
    :class:`_GatherWithLocalGrad`.
    """
    if distributed_world_size() == 1:
        return features, labels
    gathered_features = _GatherWithLocalGrad.apply(features)
    label_parts, _ = all_gather_rows(labels)
    return gathered_features, torch.cat(label_parts, dim=0)
