"""Turning the raw splits a layout reader produced into a :class:`ReIDDataset`: optional image
verification, then relabelling of the training identities."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adasp.data.sample import ReIDDataset, Sample, relabel
from adasp.errors import UserInputError


def assemble_dataset(
    name: str,
    root: Path,
    train: list[Sample],
    query: list[Sample],
    gallery: list[Sample],
    *,
    camera_filter: bool = True,
    marks: Mapping[str, frozenset[str]] | None = None,
    options: Mapping[str, Any] | None = None,
    verify_images: bool = False,
    skip_unreadable: bool = False,
) -> ReIDDataset:
    """Build the dataset from raw splits (training pids still original).

    Args:
        verify_images: decode every image now and raise on the first unreadable one (naming
            it and how many others are unreadable), instead of failing later in training.
        skip_unreadable: decode every image now and drop unreadable ones with a warning that
            gives the count and examples. Verification happens before relabelling, so training
            identities stay ``0..n-1`` even if an identity loses all its images.
    """
    if verify_images or skip_unreadable:
        # Imported here: listing or checking a dataset's files needs no torch.
        from adasp.data.images import SKIP_HINT, find_unreadable

        splits = {"train": train, "query": query, "gallery": gallery}
        all_paths = [s.path for samples in splits.values() for s in samples]
        bad = find_unreadable(all_paths)
        if bad:
            examples = "; ".join(f"{p} ({r})" for p, r in list(bad.items())[:3])
            if not skip_unreadable:
                raise UserInputError(
                    f"{name}: {len(bad)} of {len(all_paths)} images cannot be decoded, e.g. "
                    f"{examples}; {SKIP_HINT}"
                )
            warnings.warn(
                f"{name}: skipped {len(bad)} unreadable of {len(all_paths)} images, e.g. "
                f"{examples}",
                stacklevel=3,
            )
            train, query, gallery = (
                [s for s in samples if s.path not in bad] for samples in splits.values()
            )
            for split, samples in (("train", train), ("query", query), ("gallery", gallery)):
                if not samples:
                    raise UserInputError(
                        f"{name}: every {split} image is unreadable; check the files under {root}"
                    )
    return ReIDDataset(
        name=name,
        root=root,
        train=relabel(train),
        query=list(query),
        gallery=list(gallery),
        camera_filter=camera_filter,
        marks=dict(marks or {}),
        options=dict(options or {}),
    )
