"""The dataset record types: one image (:class:`Sample`) and a loaded benchmark (:class:`ReIDDataset`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from adasp.utils.tables import format_table


class Sample(NamedTuple):
    """One image: its file, its identity and its camera.

    Attributes:
        path: the image file (an absolute path string).
        pid: the identity. Training identities are relabelled ``0..n-1`` (sorted by original
            id); query and gallery identities keep their original ids.
        camid: the camera, ``0``-based.
    """

    path: str
    pid: int
    camid: int


@dataclass
class ReIDDataset:
    """A re-identification benchmark split into train / query / gallery.

    Attributes:
        name: the registry name (``"market1501"``, ``"folder"``, ...).
        root: the resolved dataset folder (the one holding the dataset's own sub-folders).
        train, query, gallery: the samples of each split.
        camera_filter: whether evaluation removes, for each query, the gallery items of the same
            identity *and* camera (the Market protocol). False for VehicleID and for ``folder``
            data whose file names carry no camera.
        marks: named sets of image paths a dataset marks for studies (the synthetic set's
            ``"harmful"``: images sharing no visual cue with the rest of their identity);
            empty for real benchmarks.
        options: the options the dataset was built with (for logs and checkpoints).
    """

    name: str
    root: Path
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    camera_filter: bool = True
    marks: Mapping[str, frozenset[str]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        """Number of training identities (the classifier's output size)."""
        return len({s.pid for s in self.train})

    @property
    def num_train_cams(self) -> int:
        """Number of distinct cameras among the training images."""
        return len({s.camid for s in self.train})

    def splits(self) -> dict[str, list[Sample]]:
        """``{"train": ..., "query": ..., "gallery": ...}``."""
        return {"train": self.train, "query": self.query, "gallery": self.gallery}

    def summary(self) -> str:
        """A table of identities / images / cameras per split."""
        rows = [
            [split, len({s.pid for s in samples}), len(samples), len({s.camid for s in samples})]
            for split, samples in self.splits().items()
        ]
        return format_table(["split", "identities", "images", "cameras"], rows)


def relabel(samples: Sequence[Sample]) -> list[Sample]:
    """Map the identities of ``samples`` to ``0..n-1`` in the order of their sorted original ids."""
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid) for s in samples]
