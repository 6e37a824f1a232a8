"""Checkpoints and model files: written atomically, read with ``weights_only=True``, with the RNG
state needed for an exact resume, and a format version checked on read.

Every file adasp writes holds ``"format": "<kind>-<version>"``: ``adasp-checkpoint-N`` for a
training checkpoint (``checkpoints/last.pt``: everything a resume needs) and ``adasp-model-N``
for a model file (``model.pt``, ``model_ema.pt``, ``best.pt``: weights, config, class count,
and any extra fields, e.g. a preprocessing record). Reading (:func:`read_versioned`):

- a file of a newer version than this adasp knows is refused, in one line naming the file and
  both versions;
- a file that is not an adasp file (no or another ``format``) is refused the same way; the
  model readers accept a bare ``state_dict`` of tensors as weights only;
- an older version is brought up to date by the one upgrade path: the functions registered
  with :func:`upgrade` for ``(kind, version)``, applied in turn (``N -> N+1 -> ...``). A
  format change bumps the version in :data:`FORMAT_VERSIONS` and registers its upgrade.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adasp.errors import MissingPathError, UserInputError
from adasp.utils.atomic import atomic_write_with


def capture_rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) RNG states, in types ``weights_only`` accepts."""
    # The legacy global generator is what third-party augmentation code draws from.
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
    assert not isinstance(keys, str)
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


CHECKPOINT_KIND = "adasp-checkpoint"
MODEL_KIND = "adasp-model"

#: The version of each file kind this adasp writes (and the newest it reads).
FORMAT_VERSIONS = {CHECKPOINT_KIND: 2, MODEL_KIND: 1}

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]
_UPGRADES: dict[tuple[str, int], Upgrade] = {}


def format_tag(kind: str) -> str:
    """The ``format`` value this adasp writes for ``kind``, e.g. ``"adasp-checkpoint-2"``."""
    return f"{kind}-{FORMAT_VERSIONS[kind]}"


def parse_format(value: Any) -> tuple[str, int] | None:
    """``("adasp-model", 1)`` for ``"adasp-model-1"``; None when it is not an adasp format."""
    if not isinstance(value, str):
        return None
    kind, _, version = value.rpartition("-")
    if kind not in FORMAT_VERSIONS or not version.isdigit():
        return None
    return kind, int(version)


def upgrade(kind: str, version: int) -> Callable[[Upgrade], Upgrade]:
    """Register the function that turns a ``kind`` file of ``version`` into ``version + 1``."""

    def add(function: Upgrade) -> Upgrade:
        _UPGRADES[(kind, version)] = function
        return function

    return add


def upgrade_state(state: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``state`` (a loaded adasp file) at the current version of its kind.

    Raises:
        UserInputError: not an adasp file, or a version newer than this adasp reads.
    """
    parsed = parse_format(state.get("format"))
    if parsed is None:
        raise UserInputError(
            f"{path} is not an adasp file (format {state.get('format')!r}); give a model.pt or "
            "checkpoint written by adasp train"
        )
    kind, version = parsed
    current = FORMAT_VERSIONS[kind]
    if version > current:
        raise UserInputError(
            f"{path} was written by a newer adasp (format {kind}-{version}; this adasp reads up "
            f"to {kind}-{current}); upgrade adasp to read it"
        )
    while version < current:
        state = _UPGRADES[(kind, version)](dict(state))
        version += 1
        state["format"] = f"{kind}-{version}"
    return state


def read_versioned(
    path: str | Path, kinds: tuple[str, ...], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load ``path`` (one of ``kinds``), check its version and upgrade it (module docstring).

    Raises:
        MissingPathError: no such file.
        UserInputError: not an adasp file, another kind, or a newer version.
    """
    state = load_checkpoint(path, map_location)
    if not isinstance(state, dict):
        raise UserInputError(f"{path} is not an adasp file (it holds a {type(state).__name__})")
    state = upgrade_state(state, path)
    kind = state["format"].rpartition("-")[0]
    if kind not in kinds:
        raise UserInputError(
            f"{path} is an {kind} file, not {' or '.join(kinds)}; give the right file"
        )
    return state


@dataclass
class ModelFile:
    """The content of a model file (``model.pt`` and its variants).

    Attributes:
        weights: the model's ``state_dict``.
        config: the experiment config (plain dict), or None for a model assembled by hand.
        num_classes: training identities (the classifier's width; 0 without a classifier).
        extra: any other fields, written and read back as they are (e.g. a preprocessing
            record); a new field needs no change here.
    """

    weights: dict[str, Any]
    config: dict[str, Any] | None = None
    num_classes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        return {
            "format": format_tag(MODEL_KIND),
            "config": self.config,
            "num_classes": self.num_classes,
            "model": self.weights,
            **self.extra,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ModelFile:
        known = {"format", "config", "num_classes", "model"}
        return cls(
            state["model"],
            state.get("config"),
            int(state.get("num_classes", 0)),
            {k: v for k, v in state.items() if k not in known},
        )


def write_model_file(path: str | Path, model_file: ModelFile) -> None:
    """Write ``model_file`` atomically in the current model format."""
    save_checkpoint(path, model_file.to_state())


def read_model_state(path: str | Path) -> dict[str, Any]:
    """A model file, a training checkpoint (its model part) or a bare ``state_dict``, as the
    current model file's fields (``format``, ``config``, ``num_classes``, ``model``, extras).

    Raises:
        UserInputError: a file of a newer adasp, or neither an adasp file nor a state dict.
    """
    state = load_checkpoint(path)
    if isinstance(state, dict) and "format" not in state and state:
        if all(isinstance(v, torch.Tensor) for v in state.values()):
            return ModelFile(state).to_state()  # bare weights
    if not isinstance(state, dict):
        raise UserInputError(f"{path} is not an adasp file (it holds a {type(state).__name__})")
    state = upgrade_state(state, path)
    if state["format"].startswith(CHECKPOINT_KIND):
        # The plugins a checkpoint was trained with are named when a later command lacks them.
        extra = {"plugins": state["plugins"]} if "plugins" in state else {}
        model_file = ModelFile(
            state["model"], state.get("config"), int(state["num_classes"]), extra
        )
        state = model_file.to_state()
    return state


def read_model_file(path: str | Path) -> ModelFile:
    """:func:`read_model_state` as a :class:`ModelFile`."""
    return ModelFile.from_state(read_model_state(path))


@upgrade(CHECKPOINT_KIND, 1)
def _checkpoint_1_to_2(state: dict[str, Any]) -> dict[str, Any]:
    """Version 2 keeps the callbacks' states (``callbacks``) and each evaluation's extra
    sections (``extras``); version 1 had the harmful-pair monitor's in ``monitor`` and
    ``harmful_pairs``."""
    monitor = state.pop("monitor", None)
    state["callbacks"] = {"harmful_pairs": monitor} if monitor is not None else {}
    history = []
    for record in state.get("history", []):
        record = dict(record)
        harmful = record.pop("harmful_pairs", None)
        record["extras"] = {"harmful_pairs": harmful} if harmful is not None else {}
        history.append(record)
    state["history"] = history
    return state
