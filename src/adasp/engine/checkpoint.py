"""Checkpoints: written atomically, read with ``weights_only=True``, with the RNG state needed
for an exact resume."""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adasp.errors import MissingPathError, UserInputError
from adasp.utils.atomic import atomic_write_with


def capture_rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) RNG states, in types ``weights_only`` accepts."""
    # The legacy global generator is what third-party augmentation code draws from.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # Only this process's device: a resume may run on a machine with fewer GPUs.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a killed writer leaves the old file intact).

    Raises:
        UserInputError: the disk is full (or the write fails otherwise with an OS error); the
            message names the device, the path and about how much space the file needs. The
            previous file at ``path`` is intact and no temporary file is left.
    """
    try:
        atomic_write_with(path, lambda handle: torch.save(state, handle))
    except (OSError, RuntimeError) as error:
        reported = _write_error(Path(path), state, error)
        if reported is error:
            raise
        raise reported from error


def _state_bytes(state: Any) -> int:
    if isinstance(state, torch.Tensor):
        return state.nelement() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _write_error(path: Path, state: dict[str, Any], error: Exception) -> Exception:
    """A one-line :class:`UserInputError` for a failed checkpoint write (``error`` itself when
    it is not a file-system failure)."""
    text = str(error)
    no_space = getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text
    if isinstance(error, RuntimeError) and not no_space:
        # torch.save reports a failed write as a RuntimeError from its zip writer; whether
        # the disk is full is then read from the file system itself.
        writer_failed = "inline_container" in text or "PytorchStreamWriter" in text
        if not writer_failed:
            return error
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        no_space = free < _state_bytes(state)
    needed = max(1, round(_state_bytes(state) / 2**20))
    if no_space:
        return UserInputError(
            f"no space left on {_mount_point(path.parent)} while writing {path} (needed about "
            f"{needed} MB); the previous checkpoint is intact; free space and run again with "
            "--resume"
        )
    reason = getattr(error, "strerror", None) or text.splitlines()[0]
    return UserInputError(
        f"cannot write {path}: {reason}; the previous checkpoint is intact; fix the problem and "
        "run again with --resume"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary objects are unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserInputError(
            f"{path} is not a valid adasp checkpoint ({error.__class__.__name__}: {reason}). "
            "adasp checkpoints hold only tensors and plain values; a file with other objects is "
            "refused for safety"
        ) from None


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete the temporary files a killed atomic write of ``path`` left beside it."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def model_state_from_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The model weights inside an adasp checkpoint (or a bare state dict)."""
    if "model" in checkpoint and isinstance(checkpoint["model"], dict):
        return checkpoint["model"]
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise UserInputError(
        f"{path} holds no model weights (expected an adasp checkpoint with a 'model' entry or a "
        "state dict of tensors)"
    )
