"""CPU speed settings of a training process that are not the model's or the loader's own.

On a machine with few cores the training process shares them with its loader workers; the
number of torch intra-op threads it runs is then a speed choice (``train.intra_op_threads``,
measured by ``benchmarks/training_cpu.py``). It is not free of numerical effect: oneDNN's
convolutions split their sums differently with another thread count, so gradients differ in
the last bits (about 1e-5 relative) and a run with another count is the same training only up
to that rounding (the same accuracy, not the same bits). Unset, nothing changes.
"""

from __future__ import annotations

import torch

from adasp.errors import UserInputError


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
