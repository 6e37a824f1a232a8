"""Process-group set-up for DDP (``torchrun``) and the collectives the engine needs.

``torchrun --nproc_per_node=N -m adasp train ...`` starts N processes and describes the group
to each through its standard variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); a
plain ``adasp train`` is a group of one and touches none of this.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
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
    # Checked here, before anything is built; meta (shapes without data) exists everywhere.
    elif resolved.type not in ("cpu", "meta") and not _backend_available(resolved.type):
        raise UserInputError(
            f"device {device!r} requested but {resolved.type.upper()} is not available here; "
            "use --device cpu"
        )
    return resolved


def _backend_available(kind: str) -> bool:
    """Whether torch can use devices of type ``kind`` (mps, xpu, ...) on this machine."""
    backend = getattr(torch.backends, kind, None) or getattr(torch, kind, None)
    is_available = getattr(backend, "is_available", None)
    return bool(is_available()) if callable(is_available) else False


#: How long a collective waits for a rank that does not answer, unless told otherwise
#: (``train.ddp_timeout_s``); gloo's own default is 30 minutes.
DEFAULT_TIMEOUT_S = 300.0


def init_distributed(
    device: str | None = "auto", timeout_s: float = DEFAULT_TIMEOUT_S
) -> DistributedContext:
    """Join the process group described by torchrun, or make a group of one.

    Args:
        timeout_s: how long any collective waits for the other ranks before it fails (see
            :func:`rank_timeout_error` for the message that failure becomes).
    """
    described = ProcessRanks.current()  # torchrun's description, before joining
    rank, world_size = described.rank, described.world_size
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(
            backend="nccl" if resolved.type == "cuda" else "gloo",
            timeout=timedelta(seconds=timeout_s),
        )
    return DistributedContext(rank, world_size, local_rank, resolved)


class RankTimeoutError(UserInputError):
    """A rank did not answer a collective within the process group's timeout."""


def _is_timeout(error: BaseException) -> bool:
    text = str(error).lower()
    return "timed out" in text or "timeout" in text


def unanswered_ranks(wait_s: float) -> list[int] | None:
    """After a collective timed out: the ranks that do not say so too within ``wait_s``.

    Every rank whose collective timed out writes its rank to the group's key-value store
    (torchrun's, which lives outside the workers); a stopped or stuck rank never does. None
    when the store cannot be reached.
    """
    try:
        store = dist.distributed_c10d._get_default_store()
        rank, world = dist.get_rank(), dist.get_world_size()
        store.set(f"adasp/timed-out/{rank}", "1")
        deadline = time.monotonic() + wait_s
        while True:
            missing = [r for r in range(world) if not store.check([f"adasp/timed-out/{r}"])]
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.2)
    except Exception:  # the store is gone too (its node lost): nothing more to learn
        return None


def rank_timeout_error(error: BaseException, timeout_s: float) -> RankTimeoutError | None:
    """``error`` as a one-line :class:`RankTimeoutError` naming the ranks that did not answer,
    if it is a collective's timeout in a process group; None otherwise.

    The other live ranks time out in the same collective, so they are waited for (at most
    ``timeout_s``, 60 s at most) before the silent ones are named.
    """
    if not (dist.is_available() and dist.is_initialized()) or not _is_timeout(error):
        return None
    world = dist.get_world_size()
    if world < 2:
        return None
    missing = unanswered_ranks(min(timeout_s, 60.0))
    if missing:
        names = ", ".join(str(r) for r in missing)
        who = (
            f"rank {names} of {world} did" if len(missing) == 1 else f"ranks {names} of {world} did"
        )
    else:
        who = f"a rank of {world} did"
    return RankTimeoutError(
        f"{who} not answer within {timeout_s:g} s (train.ddp_timeout_s): it is stopped, stuck "
        "or its node is lost; the last checkpoint is intact: run again with --resume"
    )


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


#: How gloo and NCCL report, on the ranks still running, that another process of the group
#: is gone (killed, crashed or stopped on its own error).
LOST_PEER_SIGNS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "Connection refused",
    "remote process exited",
    "NCCL communicator was aborted",
)


def lost_peer_message(error: BaseException, command: str) -> str | None:
    """One line for an error of a collective whose peer process went away, naming this rank
    and the fix; None for any other error (which keeps its traceback).

    A process started by hand (or by torchrun) whose partner is killed sees the loss as a
    ``RuntimeError`` from the communication library, in whatever collective it was running.
    """
    world = os.environ.get("WORLD_SIZE", "1")
    if not isinstance(error, RuntimeError) or world in ("", "1"):
        return None
    text = str(error)
    sign = next((s for s in LOST_PEER_SIGNS if s in text), None)
    if sign is None:
        return None
    again = (
        "start every rank again with --resume (the last checkpoint is intact)"
        if command == "train"
        else "start every rank again"
    )
    return (
        f"rank {ProcessRanks.current().rank} of {world} lost contact with the process group ({sign}): "
        f"another rank stopped or was killed (its own output says why); {again}"
    )
