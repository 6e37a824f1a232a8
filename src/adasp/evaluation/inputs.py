"""Checked user inputs shared by the evaluation functions: arrays, label vectors, named
choices and chunk sizes.

Each helper turns what a user may pass (numpy array, torch tensor, list) into the tensor the
evaluation code needs, or raises :class:`~adasp.errors.UserInputError` with a one-line message
naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from adasp.errors import UserInputError

#: Default number of distance-matrix elements evaluated at once (rows × gallery size): one
#: block is ~64 MB of float32, whatever the matrix size.
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def as_tensor(values: Any, name: str, device: torch.device | str | None = None) -> torch.Tensor:
    """``values`` (numpy array, torch tensor, or sequence) as a tensor, on ``device`` if given."""
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError) as error:
            raise UserInputError(f"{name} must be a numeric array; got {type(values)!r}") from error
    return tensor if device is None else tensor.to(device)


def as_ids(values: Any, name: str, length: int | None = None, device=None) -> torch.Tensor:
    """Integer identity or camera labels as a 1-D int64 tensor of the expected ``length``."""
    ids = as_tensor(values, name, device)
    if ids.dim() != 1:
        raise UserInputError(f"{name} must be 1-D; got shape {tuple(ids.shape)}")
    if length is not None and ids.numel() != length:
        raise UserInputError(
            f"{name} has {ids.numel()} entries but the distance matrix / features need {length}"
        )
    if ids.dtype.is_floating_point:
        if not torch.equal(ids, ids.round()):
            raise UserInputError(f"{name} must hold integer labels; got non-integer values")
    elif ids.dtype == torch.bool or ids.is_complex():
        raise UserInputError(f"{name} must hold integer labels; got dtype {ids.dtype}")
    return ids.to(torch.int64)


def check_choice(value: str, allowed: Sequence[str], name: str) -> str:
    """``value`` if it is one of ``allowed``, else a UserInputError listing the choices."""
    if value not in allowed:
        raise UserInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def resolve_chunk_size(chunk_size: int | None, num_gallery: int) -> int:
    """Query rows per step: ``chunk_size``, or about :data:`DEFAULT_CHUNK_ELEMENTS` / G."""
    if chunk_size is None:
        return max(1, DEFAULT_CHUNK_ELEMENTS // max(num_gallery, 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise UserInputError(f"chunk_size must be a positive integer or None; got {chunk_size!r}")
    if chunk_size < 1:
        raise UserInputError(f"chunk_size must be a positive integer or None; got {chunk_size}")
    return int(chunk_size)
