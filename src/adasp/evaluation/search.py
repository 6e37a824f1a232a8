"""Exact top-k gallery search for query embeddings: chunked torch, or faiss for large galleries.

Both backends are exact (brute force, no approximation) and return the same neighbours on
data without ties; faiss is usually faster on CPU for large galleries and is an optional
dependency (``pip install adasp[faiss]``), imported only when used.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adasp.errors import UserInputError
from adasp.evaluation.distances import (
    COSINE,
    METRICS,
    as_features,
    check_same_dimension,
    checked_distance_chunks,
    common_scale,
)
from adasp.evaluation.embeddings import Embeddings
from adasp.evaluation.inputs import check_choice
from adasp.utils.atomic import atomic_write_json, atomic_write_text
from adasp.utils.tables import format_table

#: Search backends; "auto" picks faiss for galleries of at least :data:`FAISS_MIN_GALLERY`
#: items on CPU when faiss is installed, else torch.
BACKENDS = ("auto", "torch", "faiss")

#: Gallery size from which "auto" uses faiss: below it both take a fraction of a second and
#: torch avoids the import; above it faiss' flat index is about 2x faster on CPU (2,000 queries,
#: 256-d: `python benchmarks/evaluation.py --search`).
FAISS_MIN_GALLERY = 10_000


def faiss_available() -> bool:
    """Whether the optional faiss package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _search_torch(
    query: torch.Tensor, gallery: torch.Tensor, topk: int, metric: str, chunk_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    distances, indices = [], []
    for _, block in checked_distance_chunks(query, gallery, metric, chunk_size):
        values, idx = torch.topk(block, topk, dim=1, largest=False, sorted=True)
        distances.append(values.float().cpu())
        indices.append(idx.cpu())
    if not distances:
        return np.zeros((0, topk), np.float32), np.zeros((0, topk), np.int64)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()


def _search_faiss(
    query: torch.Tensor, gallery: torch.Tensor, topk: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    try:
        import faiss
    except ImportError as error:
        raise UserInputError(
            "backend 'faiss' needs the faiss package: pip install faiss-cpu "
            "(or adasp[faiss]), or use --backend torch"
        ) from error
    q = query.detach().float().cpu()
    g = gallery.detach().float().cpu()
    scale = 1.0
    if metric == "cosine":
        q, g = COSINE.prepare(q), COSINE.prepare(g)  # overflow-safe, as the torch backend
        index: Any = faiss.IndexFlatIP(g.shape[1])
    else:
        scale = common_scale(q, g)  # an exact power of two: no square overflows
        q, g = q / scale, g / scale
        index = faiss.IndexFlatL2(g.shape[1])
    index.add(np.ascontiguousarray(g.numpy()))
    scores, indices = index.search(np.ascontiguousarray(q.numpy()), topk)
    if metric == "cosine":
        distances = 1.0 - scores
    else:  # faiss returns squared L2 distances
        distances = np.sqrt(np.maximum(scores, 0.0)) * scale
    return distances.astype(np.float32), indices.astype(np.int64)


def resolve_backend(backend: str, gallery_size: int, device: torch.device) -> str:
    """The backend ``"auto"`` stands for, given the gallery size and the features' device."""
    check_choice(backend, BACKENDS, "backend")
    if backend != "auto":
        return backend
    use_faiss = gallery_size >= FAISS_MIN_GALLERY and device.type == "cpu" and faiss_available()
    return "faiss" if use_faiss else "torch"


def search(
    query_features: Any,
    gallery_features: Any,
    topk: int = 10,
    metric: str = "cosine",
    backend: str = "auto",
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``topk`` nearest gallery items of every query, nearest first.

    Args:
        query_features: ``(Q, D)`` array or tensor (CPU or CUDA).
        gallery_features: ``(G, D)`` array or tensor.
        topk: neighbours per query; at most G are returned.
        metric: ``"cosine"`` or ``"euclidean"`` (as in :mod:`adasp.evaluation.distances`).
        backend: ``"torch"`` (exact, chunked, on the features' device), ``"faiss"`` (exact
            flat index on CPU) or ``"auto"`` (faiss from :data:`FAISS_MIN_GALLERY` gallery
            items on CPU when installed, else torch).
        chunk_size: query rows per block for the torch backend.

    Returns:
        ``distances (Q, k)`` float32 and ``indices (Q, k)`` int64 numpy arrays, with
        ``k = min(topk, G)``. Which of several exactly tied items fills the last places is
        backend-dependent.
    """
    check_choice(metric, tuple(METRICS), "metric")
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise UserInputError(f"topk must be a positive integer; got {topk!r}")
    device = query_features.device if isinstance(query_features, torch.Tensor) else None
    query = as_features(query_features, "query_features", device)
    gallery = as_features(gallery_features, "gallery_features", query.device)
    check_same_dimension(query, gallery)
    if gallery.shape[0] == 0:
        raise UserInputError("the gallery is empty: nothing to search")
    k = min(int(topk), gallery.shape[0])
    chosen = resolve_backend(backend, gallery.shape[0], query.device)
    if chosen == "faiss":
        return _search_faiss(query, gallery, k, metric)
    return _search_torch(query, gallery, k, metric, chunk_size)


@dataclass(frozen=True)
class SearchResult:
    """Top-k gallery items for each query: ``distances``/``indices`` ``(Q, k)``.

    ``same_camera_excluded``: gallery items of the query's identity seen by the query's camera
    were left out (as the evaluation protocol does)."""

    query: Embeddings
    gallery: Embeddings
    distances: np.ndarray
    indices: np.ndarray
    metric: str
    backend: str
    same_camera_excluded: bool = False

    def records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """One dict per query (the first ``limit`` ones, or all): its path and pid, and the
        ranked gallery paths, pids, distances."""
        count = len(self.query) if limit is None else min(limit, len(self.query))
        ranked_paths = self.gallery.paths[self.indices[:count]]
        ranked_pids = self.gallery.pids[self.indices[:count]]
        return [
            {
                "query": str(self.query.paths[i]),
                "query_pid": int(self.query.pids[i]),
                "gallery": ranked_paths[i].tolist(),
                "gallery_pids": ranked_pids[i].tolist(),
                "distances": [float(d) for d in self.distances[i]],
            }
            for i in range(count)
        ]


def cameras_known(query: Embeddings, gallery: Embeddings) -> bool:
    """Whether every query and gallery item has a known camera (``camids >= 0``)."""
    return bool((query.camids >= 0).all() and (gallery.camids >= 0).all())


def search_embeddings(
    query: Embeddings,
    gallery: Embeddings,
    topk: int = 10,
    metric: str = "cosine",
    backend: str = "auto",
    chunk_size: int | None = None,
    exclude_same_camera: bool | None = None,
) -> SearchResult:
    """:func:`search` on two :class:`Embeddings`, keeping their paths and identities.

    Args:
        exclude_same_camera: leave out gallery items with the query's identity and camera, as
            the evaluation does (the same person seen by the same camera is a near-duplicate
            of the query, often its very image). ``None``: exclude when every camera is known
            (:func:`cameras_known`). Queries of unknown identity (-1) exclude nothing. At most
            ``G`` minus the largest number of excluded items per query are returned.
    """
    chosen = resolve_backend(backend, len(gallery), torch.device("cpu"))
    exclude = cameras_known(query, gallery) if exclude_same_camera is None else exclude_same_camera
    if not exclude or len(query) == 0:
        distances, indices = search(
            query.features, gallery.features, topk, metric, chosen, chunk_size
        )
        return SearchResult(query, gallery, distances, indices, metric, chosen)
    # Each query loses at most `most` items (its identity's same-camera gallery items):
    # search that many more, then drop them, keeping the order.
    known = query.pids >= 0
    g_keys = gallery.pids * (1 << 20) + gallery.camids
    keys, counts = np.unique(g_keys, return_counts=True)
    q_keys = query.pids * (1 << 20) + query.camids
    slot = np.clip(np.searchsorted(keys, q_keys), 0, len(keys) - 1)
    lost = np.where((keys[slot] == q_keys) & known, counts[slot], 0)
    most = int(lost.max())
    k = max(1, min(int(topk), len(gallery) - most))
    distances, indices = search(
        query.features, gallery.features, k + most, metric, chosen, chunk_size
    )
    dropped = (
        (gallery.pids[indices] == query.pids[:, None])
        & (gallery.camids[indices] == query.camids[:, None])
        & known[:, None]
    )
    order = np.argsort(dropped, axis=1, kind="stable")[:, :k]  # kept items first, in order
    distances = np.take_along_axis(distances, order, axis=1)
    indices = np.take_along_axis(indices, order, axis=1)
    return SearchResult(query, gallery, distances, indices, metric, chosen, True)


def write_search_results(result: SearchResult, path: str | os.PathLike) -> Path:
    """Write ``result`` atomically as JSON (``.json``) or CSV (``.csv``, one row per query and
    rank: query, query_pid, rank, gallery, gallery_pid, distance)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".json":
        atomic_write_json(
            target,
            {
                "metric": result.metric,
                "backend": result.backend,
                "topk": int(result.indices.shape[1]),
                "results": result.records(),
            },
        )
    elif suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["query", "query_pid", "rank", "gallery", "gallery_pid", "distance"])
        for record in result.records():
            for rank, (path_, pid, dist) in enumerate(
                zip(record["gallery"], record["gallery_pids"], record["distances"], strict=True),
                start=1,
            ):
                writer.writerow([record["query"], record["query_pid"], rank, path_, pid, dist])
        atomic_write_text(target, buffer.getvalue())
    else:
        raise UserInputError(f"output file must end in .json or .csv; got {target.name!r}")
    return target


def format_search_table(result: SearchResult, num_queries: int = 5, show: int = 3) -> str:
    """A console table of the first ``num_queries`` queries and their ``show`` nearest items
    (a ``*`` marks a gallery item of the query's identity)."""
    headers = ["query", "pid"] + [f"#{r}" for r in range(1, min(show, result.indices.shape[1]) + 1)]
    rows = []
    for record in result.records(num_queries):
        cells = [_short(record["query"]), str(record["query_pid"])]
        for path, pid, dist in list(
            zip(record["gallery"], record["gallery_pids"], record["distances"], strict=True)
        )[: len(headers) - 2]:
            mark = "*" if pid == record["query_pid"] and pid >= 0 else ""
            cells.append(f"{_short(path)} ({pid}{mark}, {dist:.3f})")
        rows.append(cells)
    return format_table(headers, rows)


def _short(path: str, keep: int = 2) -> str:
    """The last ``keep`` components of a path, for narrow tables."""
    parts = Path(path).parts
    return str(Path(*parts[-keep:])) if len(parts) > keep else path
