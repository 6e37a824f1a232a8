"""Byte-identical image files across a dataset's splits (train, query, gallery).

A query whose exact file is also in the gallery (or in train) is found at distance 0 by any
model: the evaluation's same-camera rule usually hides it, a plain search does not, and a
training image in the test set inflates the metrics. Files are compared by size first, then
only files of equal size in different splits are read and hashed, so a large dataset is
checked in about the time it takes to read its few candidates.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CrossSplitDuplicates:
    """Files of split ``first`` byte-identical to a file of split ``second``.

    ``pairs`` are ``(file in first, file in second)``, one per file of ``first``."""

    first: str
    second: str
    pairs: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        count = len(self.pairs)
        a, b = self.pairs[0]
        return (
            f"{count} {self.first} {'file is' if count == 1 else 'files are'} byte-identical to "
            f"{self.second} files, e.g. {a} = {b}"
        )


def _digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.blake2b(handle.read(), digest_size=16).hexdigest()


def find_cross_split_duplicates(
    splits: Mapping[str, Sequence[str]],
) -> list[CrossSplitDuplicates]:
    """Byte-identical files between every two splits (e.g. ``{"train": [...], "query": [...],
    "gallery": [...]}``), in the splits' order; unreadable files are skipped."""
    sizes: dict[int, list[tuple[str, str]]] = {}
    for split, paths in splits.items():
        for path in dict.fromkeys(str(p) for p in paths):  # a file listed twice counts once
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            sizes.setdefault(size, []).append((split, path))
    by_digest: dict[str, list[tuple[str, str]]] = {}
    for group in sizes.values():
        if len({split for split, _ in group}) < 2:
            continue
        for split, path in group:
            try:
                by_digest.setdefault(_digest(path), []).append((split, path))
            except OSError:
                continue
    names = list(splits)
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for group in by_digest.values():
        for i, first in enumerate(names):
            mine = [p for s, p in group if s == first]
            for second in names[i + 1 :]:
                theirs = [p for s, p in group if s == second]
                if mine and theirs:
                    found.setdefault((first, second), []).extend((p, theirs[0]) for p in mine)
    return [
        CrossSplitDuplicates(first, second, tuple(sorted(pairs)))
        for (first, second), pairs in sorted(
            found.items(), key=lambda item: (names.index(item[0][0]), names.index(item[0][1]))
        )
    ]
