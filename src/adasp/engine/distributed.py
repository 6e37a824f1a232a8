"""Process-group set-up for DDP (``torchrun``) and the collectives the engine needs.

``torchrun --nproc_per_node=N -m adasp train ...`` starts N processes and describes the group
to each through its standard variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); a
plain ``adasp train`` is a group of one and touches none of this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from adasp.errors import UserInputError
from adasp.utils.distributed import ProcessRanks, broadcast_from_main


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def ranks(self) -> ProcessRanks:
        """Rank and world size, as the library's sharded code takes them."""
        return ProcessRanks(self.rank, self.world_size)


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; otherwise the named device (checked)."""
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserInputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(
                f"device {device!r} requested but CUDA is not available here; use --device cpu"
            )
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank % torch.cuda.device_count())
    return resolved


def init_distributed(device: str | None = "auto") -> DistributedContext:
    """Join the process group described by torchrun, or make a group of one."""
    described = ProcessRanks.current()  # torchrun's description, before joining
    rank, world_size = described.rank, described.world_size
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, resolved)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_object(obj: Any, ctx: DistributedContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    return broadcast_from_main(obj) if ctx.distributed else obj


def gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
