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
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserInputError(
            f"{path} is not a valid adasp checkpoint ({error.__class__.__name__}: {reason}). "
            "adasp checkpoints hold only tensors and plain values; a file with other objects is "
            "refused for safety"
        ) from None
    # Every reader (evaluate, extract, export, search, resume) looks entries up by name.
    what: str | None = None
    if not isinstance(checkpoint, dict):
        what = f"a {type(checkpoint).__name__}"
    elif not all(isinstance(key, str) for key in checkpoint):
        what = "a dict with non-string keys"
    if what is not None:
        raise UserInputError(
            f"{path} holds {what}, not an adasp checkpoint (a dict with a 'model' entry, or a "
            "state dict of tensors); pass the model.pt or checkpoints/last.pt of an adasp run"
        )
    return checkpoint


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


#: Model settings that change no weight's shape (a difference there explains no mismatch).
_SHAPELESS_MODEL_KEYS = (
    "pretrained",
    "channels_last",
    "compile",
    "sync_bn",
    "dropout",
    "neck_feat",
)


def shape_mismatches(
    model: torch.nn.Module, state: dict[str, Any]
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``(key, shape in state, shape in model)`` of every weight both have with another shape."""
    own = model.state_dict()
    return [
        (key, tuple(value.shape), tuple(own[key].shape))
        for key, value in state.items()
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape
    ]


def _model_setting_differences(saved: Any, now: dict[str, Any]) -> list[str]:
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        return []
    before, after = saved["model"], now.get("model", {})
    return [
        f"model.{key}: the checkpoint was trained with {before.get(key)!r}, the config says "
        f"{after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if key not in _SHAPELESS_MODEL_KEYS and before.get(key) != after.get(key)
    ]


def check_weights_fit(
    model: torch.nn.Module,
    checkpoint: dict[str, Any],
    path: str | Path,
    config: dict[str, Any],
) -> None:
    """Refuse, in one line, a checkpoint whose weights have other shapes than ``model``'s:
    the mismatching keys and the config settings that differ from the checkpoint's own.

    Raises:
        UserInputError: some weight's shape differs.
    """
    mismatched = shape_mismatches(model, model_state_from_checkpoint(checkpoint, path))
    if not mismatched:
        return
    shown = ", ".join(
        f"{k} is {a} in the checkpoint but {b} in the model" for k, a, b in mismatched[:3]
    )
    more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
    causes = _model_setting_differences(checkpoint.get("config"), config)
    model_cfg = config.get("model", {})
    cause = (
        "; ".join(causes)
        if causes
        else f"check model.backbone ({model_cfg.get('backbone')!r}) and model.embedding_dim "
        f"({model_cfg.get('embedding_dim')!r})"
    )
    stored = isinstance(checkpoint.get("config"), dict)
    fix = (
        "use the config the checkpoint was trained with (without --config, the one it stores)"
        if stored
        else "pass the config the checkpoint was trained with"
    )
    raise UserInputError(
        f"checkpoint {path} does not match the config: {shown}{more}; {cause}; {fix}"
    )


def check_same_training_set(
    model: torch.nn.Module, checkpoint: dict[str, Any], folder: Path
) -> None:
    """Refuse to resume when the training set's identity count changed since the run started
    (the classifier has one row per training identity).

    Raises:
        UserInputError: the checkpoint's classifier and the model's have other sizes.
    """
    saved = checkpoint.get("num_classes")
    now = int(getattr(model, "num_classes", 0))
    if isinstance(saved, int) and saved and now and saved != now:
        raise UserInputError(
            f"cannot resume {folder}: the training set changed (the run was trained on {saved} "
            f"identities, the training split now has {now}); restore the training images the run "
            "started with, or start a new run (another --output, or --overwrite)"
        )
