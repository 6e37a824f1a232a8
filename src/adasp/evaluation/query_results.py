"""Per-query results of one evaluated query/gallery split, and the compact file that keeps them.

``adasp evaluate`` writes ``OUT/queries/<test set>.npz`` beside ``metrics.json``: for each
query its AP (the evaluator's value), the rank of its first true match, and its top-k gallery
items with their distances, in the order the metrics saw them (junk items removed: gallery
identity -1, and the query identity's same-camera items under the camera filter). The
results page (:mod:`adasp.evaluation.results_page`), ``adasp compare``
(:mod:`adasp.evaluation.run_comparison`) and the ranked-list PNGs all read this one record.

File layout (``numpy.savez_compressed``, about 0.3 MB for Market-1501 at k = 10):

.. code-block:: text

    test_set, metric: 0-d str; camera_filter: 0-d bool; image_root: 0-d str
    query_paths (Q,) str, query_pids (Q,) int64, query_camids (Q,) int64
    gallery_paths (G,) str, gallery_pids (G,) int64, gallery_camids (G,) int64
    ap (Q,) float64 (NaN: no valid match), first_match (Q,) int64 (1-based; 0: none)
    ranked (Q, k) int32 gallery indices, nearest first (-1: fewer than k kept items)
    distances (Q, k) float32

Image paths are stored relative to ``image_root`` (their common folder), which keeps the file
small and lets :meth:`QueryResults.load` re-root the images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adasp.errors import UserInputError
from adasp.utils.atomic import atomic_write_with

#: Gallery items kept per query by ``adasp evaluate`` (the page and PNGs show up to this many).
KEPT_RANKS = 20

#: File format version of the ``.npz`` file.
FORMAT_VERSION = 1


class RankedListCollector:
    """Keeps each query's top-k gallery items and the rank of its first true match, block by
    block, from the same distance blocks the metrics see.

    Junk rules are those of :class:`~adasp.evaluation.metrics.RankingEvaluator`; ties in
    distance are broken by gallery index, as in the metrics (a stable sort), for both the
    top-k and the first true match's rank, which are exact.

    Args:
        g_pids, g_camids: ``(G,)`` gallery identities and cameras (tensors on the blocks'
            device).
        topk: items kept per query.
        camera_filter, junk_pid: as in :func:`~adasp.evaluation.evaluate_ranking`.
    """

    def __init__(
        self,
        g_pids: torch.Tensor,
        g_camids: torch.Tensor,
        topk: int,
        *,
        camera_filter: bool = True,
        junk_pid: int | None = -1,
    ) -> None:
        self.g_pids, self.g_camids = g_pids, g_camids
        self.topk = min(int(topk), int(g_pids.numel()))
        self.camera_filter = camera_filter
        self.junk = (
            torch.zeros_like(g_pids, dtype=torch.bool) if junk_pid is None else g_pids == junk_pid
        )
        self._ranked: list[torch.Tensor] = []
        self._distances: list[torch.Tensor] = []
        self._first: list[torch.Tensor] = []

    def add(self, distances: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor) -> None:
        """A block of ``distances`` ``(B, G)`` with the block's ``q_pids``/``q_camids`` ``(B,)``."""
        same_pid = q_pids[:, None] == self.g_pids[None, :]
        removed = self.junk[None, :].expand_as(same_pid)
        if self.camera_filter:
            removed = removed | (same_pid & (q_camids[:, None] == self.g_camids[None, :]))
        kept = ~removed
        dist = distances.to(torch.float64) if distances.dtype == torch.float16 else distances
        masked = dist.masked_fill(removed, math.inf)
        # The k nearest with ties by gallery index (a stable sort's top k): everything below
        # the k-th distance, then the lowest-index items at it.
        kth = torch.topk(masked, self.topk, dim=1, largest=False, sorted=True).values[:, -1:]
        below = masked < kth
        at_kth = masked == kth
        room = self.topk - below.sum(dim=1, keepdim=True)
        chosen = below | (at_kth & (torch.cumsum(at_kth, dim=1) <= room))
        index = chosen.nonzero()[:, 1].reshape(-1, self.topk)  # row-major: ascending index
        values = masked.gather(1, index)
        order = torch.argsort(values, dim=1, stable=True)
        values, index = values.gather(1, order), index.gather(1, order)
        index = torch.where(torch.isinf(values), -1, index)
        self._ranked.append(index.to(torch.int32).cpu())
        self._distances.append(values.to(torch.float32).cpu())
        # The first true match: the nearest kept same-identity item, ties by index.
        match = same_pid & kept
        best = dist.masked_fill(~match, math.inf).amin(dim=1, keepdim=True)
        columns = torch.arange(dist.shape[1], device=dist.device)
        at_best = match & (dist == best)
        best_index = torch.where(at_best, columns, dist.shape[1]).amin(dim=1, keepdim=True)
        before = kept & ((dist < best) | ((dist == best) & (columns < best_index)))
        first = before.sum(dim=1) + 1
        has_match = match.any(dim=1)
        self._first.append(torch.where(has_match, first, 0).cpu())

    def result(self) -> dict[str, np.ndarray]:
        """``{"ranked": (Q, k) int32, "ranked_distances": (Q, k) float32, "first_match": (Q,)
        int64}`` over every block added."""
        k = self.topk
        return {
            "ranked": torch.cat(self._ranked).numpy() if self._ranked else np.zeros((0, k)),
            "ranked_distances": torch.cat(self._distances).numpy()
            if self._distances
            else np.zeros((0, k), np.float32),
            "first_match": torch.cat(self._first).numpy().astype(np.int64)
            if self._first
            else np.zeros(0, np.int64),
        }


@dataclass(frozen=True)
class QueryResults:
    """Per-query results of one test set (see the module docstring for the fields)."""

    test_set: str
    query_paths: np.ndarray
    query_pids: np.ndarray
    query_camids: np.ndarray
    gallery_paths: np.ndarray
    gallery_pids: np.ndarray
    gallery_camids: np.ndarray
    ap: np.ndarray
    first_match: np.ndarray
    ranked: np.ndarray
    distances: np.ndarray
    metric: str = "cosine"
    camera_filter: bool = True

    @property
    def num_queries(self) -> int:
        return len(self.query_paths)

    @property
    def valid(self) -> np.ndarray:
        """``(Q,)`` bool: the query has a true match (it counts in the metrics)."""
        return ~np.isnan(self.ap)

    @property
    def matches(self) -> np.ndarray:
        """``(Q, k)`` bool: the ranked item has the query's identity."""
        safe = np.where(self.ranked >= 0, self.ranked, 0)
        return (self.ranked >= 0) & (self.gallery_pids[safe] == self.query_pids[:, None])

    @property
    def mean_ap(self) -> float:
        return float(np.nanmean(self.ap)) if self.valid.any() else math.nan

    @property
    def rank1(self) -> float:
        valid = self.valid
        return float((self.first_match[valid] == 1).mean()) if valid.any() else math.nan

    def worst(self, count: int) -> np.ndarray:
        """Indices of the ``count`` valid queries of lowest AP (ties by query index)."""
        valid = np.flatnonzero(self.valid)
        order = np.argsort(self.ap[valid], kind="stable")
        return valid[order[: max(count, 0)]]

    @classmethod
    def from_evaluation(
        cls,
        test_set: str,
        result: dict[str, Any],
        dataset: Any,
        metric: str = "cosine",
    ) -> QueryResults:
        """From a full :func:`~adasp.evaluation.evaluate_features` result computed with
        ``ranked_topk > 0`` and the evaluated :class:`~adasp.data.ReIDDataset`."""
        if "ranked" not in result:
            raise UserInputError(
                f"{test_set}: per-query ranked lists were not kept (evaluate with ranked_topk)"
            )
        query, gallery = list(dataset.query), list(dataset.gallery)
        return cls(
            test_set=test_set,
            query_paths=np.array([str(s.path) for s in query]),
            query_pids=np.array([s.pid for s in query], dtype=np.int64),
            query_camids=np.array([s.camid for s in query], dtype=np.int64),
            gallery_paths=np.array([str(s.path) for s in gallery]),
            gallery_pids=np.array([s.pid for s in gallery], dtype=np.int64),
            gallery_camids=np.array([s.camid for s in gallery], dtype=np.int64),
            ap=np.asarray(result["ap"], dtype=np.float64),
            first_match=np.asarray(result["first_match"], dtype=np.int64),
            ranked=np.asarray(result["ranked"], dtype=np.int32),
            distances=np.asarray(result["ranked_distances"], dtype=np.float32),
            metric=metric,
            camera_filter=bool(dataset.camera_filter),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the compressed ``.npz`` file atomically; returns its path."""
        all_paths = [*self.query_paths.tolist(), *self.gallery_paths.tolist()]
        root = _common_folder(all_paths)
        arrays: dict[str, Any] = {
            "format_version": np.array(FORMAT_VERSION),
            "test_set": np.array(self.test_set),
            "metric": np.array(self.metric),
            "camera_filter": np.array(self.camera_filter),
            "image_root": np.array(root),
            "query_paths": np.array(_relative(self.query_paths, root)),
            "gallery_paths": np.array(_relative(self.gallery_paths, root)),
            "query_pids": self.query_pids,
            "query_camids": self.query_camids,
            "gallery_pids": self.gallery_pids,
            "gallery_camids": self.gallery_camids,
            "ap": self.ap,
            "first_match": self.first_match,
            "ranked": self.ranked,
            "distances": self.distances,
        }
        target = Path(path)
        atomic_write_with(target, lambda handle: np.savez_compressed(handle, **arrays))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> QueryResults:
        """Read a file written by :meth:`save`.

        Raises:
            UserInputError: the file is missing or is not a per-query results file.
        """
        source = Path(path)
        if not source.is_file():
            raise UserInputError(f"per-query results not found: {source}")
        try:
            with np.load(source, allow_pickle=False) as data:
                version = int(data["format_version"])
                if version > FORMAT_VERSION:
                    raise UserInputError(
                        f"{source} has per-query format {version}; this adasp reads up to "
                        f"{FORMAT_VERSION}: upgrade adasp"
                    )
                root = str(data["image_root"])
                return cls(
                    test_set=str(data["test_set"]),
                    query_paths=_rooted(data["query_paths"], root),
                    query_pids=data["query_pids"],
                    query_camids=data["query_camids"],
                    gallery_paths=_rooted(data["gallery_paths"], root),
                    gallery_pids=data["gallery_pids"],
                    gallery_camids=data["gallery_camids"],
                    ap=data["ap"],
                    first_match=data["first_match"],
                    ranked=data["ranked"],
                    distances=data["distances"],
                    metric=str(data["metric"]),
                    camera_filter=bool(data["camera_filter"]),
                )
        except (KeyError, ValueError, OSError) as error:
            raise UserInputError(
                f"{source} is not a per-query results file of adasp evaluate ({error})"
            ) from None


def short_names(paths: Sequence[str]) -> list[str]:
    """Paths relative to their common folder (``0002_c1s1_000451_03.jpg``, or ``004/01_2.png``
    where identities are folders), for tables and pages."""
    root = _common_folder([str(p) for p in paths])
    return _relative(np.asarray(paths), root)


def query_results_path(out_dir: str | os.PathLike, test_set: str) -> Path:
    """Where ``adasp evaluate --output OUT`` keeps a test set's per-query results."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in test_set)
    return Path(out_dir) / "queries" / f"{safe}.npz"


def load_evaluation_queries(out_dir: str | os.PathLike) -> list[QueryResults]:
    """Every test set's per-query results of an ``adasp evaluate`` output folder, in name order.

    Raises:
        UserInputError: the folder holds none (naming the command that writes them).
    """
    files = sorted((Path(out_dir) / "queries").glob("*.npz"))
    if not files:
        raise UserInputError(
            f"{out_dir} has no per-query results (queries/*.npz): evaluate the model with "
            f"adasp evaluate --checkpoint MODEL --output {out_dir}"
        )
    return [QueryResults.load(f) for f in files]


def _common_folder(paths: list[str]) -> str:
    if not paths:
        return ""
    try:
        root = os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # mixed absolute and relative paths, or several drives
        return ""
    return root


def _relative(paths: np.ndarray, root: str) -> list[str]:
    if not root:
        return [str(p) for p in paths]
    cut = len(root.rstrip(os.sep)) + 1
    return [str(p)[cut:] for p in paths]


def _rooted(paths: np.ndarray, root: str) -> np.ndarray:
    if not root:
        return np.asarray(paths).astype(str)
    return np.array([os.path.join(root, str(p)) for p in paths])
