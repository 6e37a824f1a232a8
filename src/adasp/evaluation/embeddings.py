"""The embedding file: features with their identities, cameras, image paths and splits.

Written by ``adasp extract`` and read by ``adasp search``. It is a NumPy ``.npz`` archive
(no pickled objects, so loading it runs no code) with the arrays

=================  ===========  =================================================
``features``       (N, D) f32   one embedding per image
``pids``           (N,) int64   identity (-1 where unknown)
``camids``         (N,) int64   camera (-1 where unknown)
``paths``          (N,) str     image path
``splits``         (N,) str     optional: "query", "gallery", "train", ...
``format_version`` ()  int64    :data:`FORMAT_VERSION`
=================  ===========  =================================================
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adasp.errors import MissingPathError, UserInputError
from adasp.utils.atomic import atomic_write_with

#: Version of the file layout, stored in every file.
FORMAT_VERSION = 1

REQUIRED_ARRAYS = ("features", "pids", "camids", "paths")


@dataclass(frozen=True)
class Embeddings:
    """Embeddings of N images: ``features (N, D)`` float32, ``pids``/``camids`` ``(N,)``
    int64, ``paths`` ``(N,)`` str, ``splits`` ``(N,)`` str or None."""

    features: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    paths: np.ndarray
    splits: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.features.shape[1])

    def subset(self, indices: Any) -> Embeddings:
        """The rows at ``indices`` (integer array or boolean mask)."""
        idx = np.asarray(indices)
        try:
            return Embeddings(
                self.features[idx],
                self.pids[idx],
                self.camids[idx],
                self.paths[idx],
                None if self.splits is None else self.splits[idx],
            )
        except MemoryError:
            rows = int(idx.sum()) if idx.dtype == bool else int(idx.size)
            needed = rows * (self.dim * self.features.itemsize + 16 + self.paths.itemsize)
            raise UserInputError(
                f"not enough memory to copy {rows} embeddings of dimension {self.dim} (needs "
                f"about {needed / 1e9:.1f} GB more); free memory, or write the query and gallery "
                "embeddings to separate files (adasp extract --split query / --split gallery) and "
                "pass --query Q.npz --gallery G.npz"
            ) from None

    def split(self, name: str) -> Embeddings:
        """The rows whose split is ``name`` (e.g. ``"query"``, ``"gallery"``)."""
        if self.splits is None:
            raise UserInputError(
                f"these embeddings have no 'splits' array, so split {name!r} cannot be "
                "selected; pass separate query and gallery files instead"
            )
        mask = self.splits == name
        if not mask.any():
            found = ", ".join(sorted(set(self.splits.tolist()))) or "none"
            raise UserInputError(f"no embeddings in split {name!r}; the file has: {found}")
        return self.subset(mask)


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _as_strings(values: Any, name: str, length: int) -> np.ndarray:
    array = np.asarray([os.fspath(v) if isinstance(v, os.PathLike) else v for v in values])
    if array.shape != (length,):
        raise UserInputError(f"{name} must hold {length} entries; got shape {array.shape}")
    if length and array.dtype.kind not in "U":
        raise UserInputError(f"{name} must hold strings; got dtype {array.dtype}")
    return array.astype(str) if length else np.zeros(0, dtype="<U1")


def _validated(features: Any, pids: Any, camids: Any, paths: Any, splits: Any | None) -> Embeddings:
    features = _as_numpy(features)
    if features.ndim != 2:
        raise UserInputError(f"features must be (N, D); got shape {features.shape}")
    if features.dtype.kind not in "fiu":
        raise UserInputError(f"features must be numeric; got dtype {features.dtype}")
    length = features.shape[0]
    arrays = {}
    for name, values in (("pids", pids), ("camids", camids)):
        array = _as_numpy(values)
        if array.shape != (length,):
            raise UserInputError(f"{name} must have shape ({length},); got {array.shape}")
        if array.dtype.kind not in "iu":
            raise UserInputError(f"{name} must hold integers; got dtype {array.dtype}")
        arrays[name] = array.astype(np.int64)
    return Embeddings(
        features.astype(np.float32, copy=False),
        arrays["pids"],
        arrays["camids"],
        _as_strings(paths, "paths", length),
        None if splits is None else _as_strings(splits, "splits", length),
    )


def save_embeddings(
    path: str | os.PathLike,
    features: Any,
    pids: Any,
    camids: Any,
    paths: Any,
    splits: Any | None = None,
) -> Path:
    """Write embeddings to ``path`` (an ``.npz`` file) atomically; returns the path.

    Args:
        features: ``(N, D)`` array or tensor (stored as float32).
        pids, camids: ``(N,)`` integers (-1 where unknown).
        paths: ``(N,)`` image paths (str or path-like).
        splits: ``(N,)`` split names, or None.
    """
    data = _validated(features, pids, camids, paths, splits)
    arrays = {
        "features": data.features,
        "pids": data.pids,
        "camids": data.camids,
        "paths": data.paths,
        "format_version": np.int64(FORMAT_VERSION),
    }
    if data.splits is not None:
        arrays["splits"] = data.splits
    target = Path(path)
    atomic_write_with(target, lambda handle: np.savez(handle, **arrays))
    return target


def _format_version(value: np.ndarray, source: Path) -> int:
    if value.shape != () or value.dtype.kind not in "iu":
        raise UserInputError(
            f"{source}: format_version must be one integer, got {value.dtype} array of shape "
            f"{value.shape}; the file was not written by `adasp extract`: write it again with it"
        )
    return int(value)


def load_embeddings(path: str | os.PathLike) -> Embeddings:
    """Read a file written by :func:`save_embeddings` (no pickle: safe on untrusted files).

    Raises:
        MissingPathError: the file does not exist.
        UserInputError: it is not an embedding file (not an ``.npz``, missing or
            inconsistent arrays, a newer format version).
    """
    source = Path(path)
    if not source.is_file():
        raise MissingPathError(
            f"embedding file not found: {source}; create one with `adasp extract` "
            "(an .npz with features, pids, camids, paths)"
        )
    try:
        loaded = np.load(source, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise UserInputError(
                f"{source} is a single NumPy array (.npy), not an embedding file; write one with "
                "`adasp extract` (an .npz with features, pids, camids, paths)"
            )
        with loaded as archive:
            stored = {name: archive[name] for name in archive.files}
    except MemoryError:
        raise UserInputError(
            f"not enough memory to read {source} (its arrays need more than is free); free "
            "memory, or extract fewer images per file (adasp extract --split query / --split "
            "gallery) and pass --query Q.npz --gallery G.npz"
        ) from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        if isinstance(error, UserInputError):
            raise
        raise UserInputError(
            f"{source} is not a readable embedding file (.npz written by `adasp extract`): {error}"
        ) from error
    missing = [name for name in REQUIRED_ARRAYS if name not in stored]
    if missing:
        raise UserInputError(
            f"{source} lacks the array(s) {', '.join(missing)}; an embedding file needs "
            f"{', '.join(REQUIRED_ARRAYS)} (and optionally splits)"
        )
    version = _format_version(
        stored.get("format_version", np.asarray(FORMAT_VERSION, dtype=np.int64)), source
    )
    if version > FORMAT_VERSION:
        raise UserInputError(
            f"{source} has embedding format version {version}; this adasp reads up to "
            f"{FORMAT_VERSION}: upgrade adasp"
        )
    try:
        return _validated(
            stored["features"],
            stored["pids"],
            stored["camids"],
            stored["paths"],
            stored.get("splits"),
        )
    except UserInputError as error:
        raise UserInputError(f"{source} is not a valid embedding file: {error}") from error
