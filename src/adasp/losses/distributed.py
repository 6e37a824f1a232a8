"""Gathering a P×K batch from all DDP ranks so that a metric loss sees the global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def distributed_world_size() -> int:
    """The number of processes in the default group, or 1 outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_gather_rows(tensor: Tensor) -> tuple[list[Tensor], int]:
    """Every rank's ``tensor`` (rows may differ in number), in rank order, and this rank."""
    world = dist.get_world_size()
    local_n = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    counts = [torch.zeros_like(local_n) for _ in range(world)]
    dist.all_gather(counts, local_n)
    sizes = [int(c.item()) for c in counts]
    max_n = max(sizes)
    padded = tensor.new_zeros((max_n, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    buffers = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(buffers, padded.contiguous())
    return [buf[:n] for buf, n in zip(buffers, sizes, strict=True)], dist.get_rank()


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
