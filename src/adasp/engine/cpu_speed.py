"""CPU speed settings of a training process that are not the model's or the loader's own.

On a machine with few cores the training process shares them with its loader workers; the
number of torch intra-op threads it runs is then a speed choice (``train.intra_op_threads``,
measured by ``benchmarks/training_cpu.py``). It is not free of numerical effect: oneDNN's
convolutions split their sums differently with another thread count, so gradients differ in
the last bits (about 1e-5 relative) and a run with another count is the same training only up
to that rounding (the same accuracy, not the same bits). Unset, nothing changes.

``train.reuse_host_memory`` changes no value at all: glibc returns every large block (the
activations and gradients of a step, tens of MB each) to the kernel when it is freed and
maps fresh zeroed pages when it is allocated again, so each CPU step paid ~25,000 page
faults (ResNet-18, 128×64, batch 64: 45-100 ms of kernel time per step). Raising glibc's
mmap and trim thresholds keeps those blocks in the heap for the next step (~2,000 faults).
"""

from __future__ import annotations

import torch

from adasp.errors import UserInputError

#: glibc ``mallopt`` parameters (malloc.h) and the size kept in the heap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 1 << 30


def apply_cpu_settings(intra_op_threads: int | None, reuse_host_memory: bool) -> None:
    """The training process's CPU settings (``train.intra_op_threads``,
    ``train.reuse_host_memory``): one call for the trainer."""
    set_intra_op_threads(intra_op_threads)
    if reuse_host_memory:
        reuse_freed_host_memory()


def reuse_freed_host_memory() -> bool:
    """Keep freed large blocks in the process's heap for reuse instead of unmapping them
    (glibc only; returns whether it applied). Process-wide and for the process's life; it
    costs no more memory than the step's peak, held between steps."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    )


def set_intra_op_threads(count: int | None) -> None:
    """Run torch's CPU operations of this process on ``count`` threads (None: leave torch's
    default, one per physical core).

    Raises:
        UserInputError: ``count`` is not a positive integer.
    """
    if count is None:
        return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserInputError(
            f"train.intra_op_threads must be a positive integer or null; got {count!r}"
        )
    torch.set_num_threads(count)
