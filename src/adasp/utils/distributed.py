"""Where a process stands in its group (:class:`ProcessRanks`, learnt one way:
:meth:`ProcessRanks.current`), and the few ``torch.distributed`` collectives shared by losses,
evaluation and the engine.

The collectives work outside a process group too (a group of one), so library code calls them
without asking whether it runs under ``torchrun``. Code that shards work (embedding
extraction, evaluation) takes a :class:`ProcessRanks` argument: the engine passes its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class ProcessRanks:
    """This process's rank and the number of processes (0 and 1: a group of one)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> ProcessRanks:
        """The one way adasp learns the rank: the joined process group, or, before it is
        joined, the group torchrun describes (its ``RANK``/``WORLD_SIZE``; a group of one for a
        plain process)."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def _joined() -> bool:
    """Whether there is a process group to talk to (collectives are no-ops without one)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def distributed_world_size() -> int:
    """The size of the joined process group (1 without one): what the collectives span."""
    return dist.get_world_size() if _joined() else 1


def all_gather_rows(tensor: Tensor) -> tuple[list[Tensor], int]:
    """Every rank's ``tensor`` (rows may differ in number), in rank order, and this rank.

    Needs an initialised process group.
    """
    world = dist.get_world_size()
    local_n = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    counts = [torch.zeros_like(local_n) for _ in range(world)]
    dist.all_gather(counts, local_n)
    sizes = torch.cat(counts).tolist()  # one host read for all ranks' counts
    max_n = max(sizes)
    padded = tensor.new_zeros((max_n, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    buffers = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(buffers, padded.contiguous())
    return [buf[:n] for buf, n in zip(buffers, sizes, strict=True)], dist.get_rank()


def gather_rows(tensor: Tensor) -> Tensor:
    """Every rank's rows (counts may differ) concatenated in rank order, on every rank, on
    ``tensor``'s device; ``tensor`` itself outside a process group."""
    if distributed_world_size() == 1:
        return tensor
    # NCCL gathers CUDA tensors only, gloo CPU tensors: use the backend's device.
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    parts, _ = all_gather_rows(tensor.to(device))
    return torch.cat(parts).to(tensor.device)


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself outside a process group)."""
    if distributed_world_size() == 1:
        return obj
    holder = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
