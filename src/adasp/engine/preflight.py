"""Checks a training run makes before its first step: what would otherwise fail only at the
first evaluation, after an epoch (or, with ``--overwrite``, after the old run is gone).

- :func:`check_valid_queries` — the test set's protocol has at least one query with a valid
  match (its identity in the gallery, seen by another camera when cameras are filtered).
- :func:`check_test_images` — every query and gallery image decodes (the training images are
  decoded as the loader reaches them; see ``docs/datasets.md``).

Both read only the file lists and the test images, never the model: they cost one pass over
the test split, the work of one evaluation's image reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adasp.errors import UserInputError

#: The identity of junk images, removed from every ranking (as in evaluate_features).
JUNK_PID = -1


def check_test_sets(test_sets: Sequence[tuple[str, Any]]) -> None:
    """:func:`check_valid_queries`, then :func:`check_test_images`, for each ``(name, dataset)``.

    Raises:
        UserInputError: one line naming the test set, the problem and that nothing trained.
    """
    for name, dataset in test_sets:
        check_valid_queries(name, dataset)
    for name, dataset in test_sets:
        check_test_images(name, dataset)


def _arrays(samples: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    pids = np.fromiter((s.pid for s in samples), dtype=np.int64, count=len(samples))
    camids = np.fromiter((s.camid for s in samples), dtype=np.int64, count=len(samples))
    return pids, camids


def _keys(pids: np.ndarray, camids: np.ndarray) -> np.ndarray:
    # One int64 per (identity, camera) pair, for set membership in one vectorised call.
    return (pids << 32) ^ (camids & 0xFFFFFFFF)


def check_valid_queries(name: str, dataset: Any) -> None:
    """Refuse a test set of the usual protocol (query against gallery) where no query has a
    valid match; other protocols (VehicleID's draws) build their own queries and are skipped.

    Raises:
        UserInputError: the counts of queries without a match, by cause.
    """
    from adasp.evaluation.protocols import PROTOCOLS

    if dataset.name in PROTOCOLS:
        return
    q_pids, q_cams = _arrays(dataset.query)
    g_pids, g_cams = _arrays(dataset.gallery)
    kept = g_pids != JUNK_PID
    g_pids, g_cams = g_pids[kept], g_cams[kept]
    junk = q_pids == JUNK_PID
    in_gallery = np.isin(q_pids, g_pids)
    valid = ~junk & in_gallery
    if dataset.camera_filter:
        pairs = np.unique(_keys(g_pids, g_cams))
        identities, cameras = np.unique(pairs >> 32, return_counts=True)
        where = np.clip(np.searchsorted(identities, q_pids), 0, max(len(identities) - 1, 0))
        known = identities[where] == q_pids if len(identities) else np.zeros_like(valid)
        count = np.where(known, cameras[where] if len(cameras) else 0, 0)
        own = np.isin(_keys(q_pids, q_cams), pairs)
        valid &= count - own > 0  # another camera shows the identity
    if valid.any():
        return
    queries = len(q_pids)
    if queries == 0:
        raise UserInputError(
            f"test set {name}: the query set is empty; found before training, nothing was trained"
        )

    def have(n: int) -> str:
        return f"{n} {'has' if n == 1 else 'have'}"

    same_camera = int((~junk & in_gallery).sum())
    absent = int((~junk & ~in_gallery).sum())
    causes = []
    if same_camera:
        causes.append(
            f"{have(same_camera)} gallery images of their identity only from their own camera "
            "(removed by the same-camera filter)"
        )
    if absent:
        causes.append(f"{have(absent)} an identity absent from the gallery")
    if junk.any():
        causes.append(f"{have(int(junk.sum()))} the junk identity {JUNK_PID}")
    raise UserInputError(
        f"test set {name}: no query has a valid match in the gallery: of {queries} "
        f"{'query' if queries == 1 else 'queries'}, {'; '.join(causes)}; found before training, "
        "nothing was trained: check that query and gallery hold the same identities, seen by "
        "other cameras"
    )


def check_test_images(name: str, dataset: Any) -> None:
    """Decode every query and gallery image.

    Raises:
        UserInputError: how many cannot be decoded, with up to three of them and why.
    """
    from adasp.data.images import find_unreadable

    paths = [sample.path for sample in (*dataset.query, *dataset.gallery)]
    bad = find_unreadable(paths)
    if bad:
        examples = "; ".join(f"{path} ({reason})" for path, reason in list(bad.items())[:3])
        raise UserInputError(
            f"test set {name}: {len(bad)} of {len(paths)} test images cannot be decoded, e.g. "
            f"{examples}; found before training, nothing was trained or removed: replace or "
            "delete the files"
        )
