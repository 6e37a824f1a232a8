"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), exact and memory-bounded.

Two entry points give the same distances:

* :func:`rerank` takes the three distance blocks (query-gallery, query-query,
  gallery-gallery), like the authors' public reference function, and returns the
  re-ranked query x gallery matrix. It holds the dense (Q+G) x (Q+G) matrix, as its input
  already implies.
* :func:`reranked_distance_chunks` takes features and yields the re-ranked distances a
  block of queries at a time. It never builds a dense (Q+G) x (Q+G) or Q x G matrix:
  neighbours come from a chunked distance pass with top-k, the encoding ``V`` is sparse
  (see :mod:`adasp.evaluation.reranking_sparse`), and the original distances of a block
  are recomputed when the block is yielded. Memory is O((Q+G) * k1 * k2) plus one block.

:func:`rerank_features` wraps both for features, returning a NumPy array.
The distances they start from are :mod:`adasp.evaluation.distances`' (evaluation's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adasp.errors import UserInputError
from adasp.evaluation.distances import (
    METRICS,
    SQEUCLIDEAN,
    Metric,
    as_features,
    check_same_dimension,
    common_scale,
)
from adasp.evaluation.reranking_sparse import (
    GATHER_BUDGET,
    SparseRows,
    average_rows,
    columns_of,
    jaccard_from_shared,
    k_reciprocal_encoding,
    shared_minima,
    smallest_k_stable,
)

# Elements per dense block (rows x items): 128 MiB of float32 in the neighbour pass (larger
# blocks run the product and the top-k faster), 64 MiB per yielded block of queries.
NEIGHBOUR_BLOCK_ELEMENTS = 1 << 25
QUERY_BLOCK_ELEMENTS = 1 << 24

# rerank_features(dense=None) uses the dense path up to this many items in total.
DENSE_ITEM_LIMIT = 4096


#: The metrics re-ranking starts from, by name: evaluation's (:data:`METRICS`: 1 - cosine
#: similarity of L2-normalised features, Euclidean distance) and the squared Euclidean distance
#: (what several toolkits call "euclidean").
RERANK_METRICS: dict[str, Metric] = {**METRICS, "sqeuclidean": SQEUCLIDEAN}


# ---------------------------------------------------------------------------------------------
# input checks


def _check_parameters(k1: object, k2: object, lambda_value: object) -> None:
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise UserInputError(
                f"{name} must be an integer >= 1, got {value!r}; the paper uses k1=20, k2=6 "
                "(k2=1 turns off the local query expansion)"
            )
    if (
        isinstance(lambda_value, bool)
        or not isinstance(lambda_value, int | float | np.integer | np.floating)
        or not 0.0 <= float(lambda_value) <= 1.0
    ):
        raise UserInputError(
            f"lambda_value must be a number in [0, 1], got {lambda_value!r}: it weights the "
            "original distance against the Jaccard distance (the paper uses 0.3)"
        )


def _check_metric(metric: object) -> Metric:
    if metric not in RERANK_METRICS:
        raise UserInputError(
            f"unknown metric {metric!r}; choose one of {', '.join(sorted(RERANK_METRICS))}"
        )
    return RERANK_METRICS[metric]


def _check_chunk_size(chunk_size: object) -> None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int | np.integer)
        or chunk_size < 1
    ):
        raise UserInputError(
            f"chunk_size must be a positive integer (queries per block) or None for "
            f"automatic, got {chunk_size!r}"
        )


def _check_device(device: Any) -> torch.device | None:
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UserInputError(
            f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r} ({error})"
        ) from None


def _features(
    query_features: object, gallery_features: object, device: object
) -> tuple[Tensor, Tensor]:
    chosen = _check_device(device)
    if chosen is None and isinstance(query_features, Tensor):
        chosen = query_features.device
    query = as_features(query_features, "query_features", chosen or torch.device("cpu"))
    gallery = as_features(gallery_features, "gallery_features", query.device)
    for name, matrix in (("query_features", query), ("gallery_features", gallery)):
        if matrix.shape[0] == 0 or matrix.shape[1] == 0:
            raise UserInputError(f"{name} is empty (shape {tuple(matrix.shape)})")
    check_same_dimension(query, gallery)
    return query.float(), gallery.float()


def _unit_scale(query: Tensor, gallery: Tensor) -> tuple[Tensor, Tensor]:
    """Both sets divided by one power of two near their largest value: exact, and re-ranking
    is invariant to it (each item's distances are divided by their maximum), but squared
    distances of ~1e25 features no longer overflow to inf."""
    scale = common_scale(query, gallery)
    if 2.0**-32 <= scale <= 2.0**32:  # squares far from float32's limits: left as they are
        return query, gallery
    return query / scale, gallery / scale


# ---------------------------------------------------------------------------------------------
# shared steps


def _rank_width(n: int, k1: int, k2: int) -> int:
    """How many ranked neighbours the algorithm reads: k1 + 1 (self included), and k2."""
    return max(min(k1 + 1, n), min(k2, n))


def _block_rows(n: int, elements: int) -> int:
    return max(1, min(4096, elements // max(n, 1)))


def _positive(scale: Tensor) -> Tensor:
    # A zero maximum means an item at distance 0 from every item: the reference divides 0 by
    # 0 and gets NaN there; dividing by 1 keeps those distances 0.
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _entries_of(matrix: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """``f(rows, cols) -> matrix[rows, cols]``."""
    return lambda rows, cols: matrix[rows, cols]


def _encode(
    ranks: Tensor, k1: int, k2: int, normalised_distance: Callable[[Tensor, Tensor], Tensor]
) -> SparseRows:
    """``V`` of every item, with the local query expansion when ``k2 != 1``."""
    v = k_reciprocal_encoding(ranks, k1, normalised_distance)
    if k2 != 1:
        v = average_rows(v, ranks[:, : min(k2, ranks.shape[0])])
    return v


def _final_block(
    v: SparseRows, gallery_columns: SparseRows, original: Tensor, start: int, lambda_value: float
) -> Tensor:
    """``jaccard * (1 - lambda) + original * lambda`` for queries ``start:start + B``.

    Args:
        original: ``(B, G)`` squared, normalised distances of the block; overwritten.

    Returns:
        ``original``, now the ``(B, G)`` re-ranked distances.
    """
    flat, shared = shared_minima(v, gallery_columns, start, start + original.shape[0])
    flat_view = original.view(-1)
    touched = flat_view[flat]
    # Where no encoding column is shared the Jaccard distance is exactly 1: one fused pass.
    original.mul_(lambda_value).add_(1.0 - lambda_value)
    flat_view[flat] = (
        jaccard_from_shared(shared).mul_(1.0 - lambda_value).add_(touched.mul_(lambda_value))
    )
    return original


# ---------------------------------------------------------------------------------------------
# dense reference path


def rerank(
    q_g_dist: np.ndarray | Tensor,
    q_q_dist: np.ndarray | Tensor,
    g_g_dist: np.ndarray | Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking of a query x gallery distance matrix.

    Gives the distances of the authors' public reference function ``re_ranking(q_g_dist,
    q_q_dist, g_g_dist, k1, k2, lambda_value)`` (the float32 version), which does, with
    ``N = Q + G`` items, queries first:

    1. ``D = [[q_q, q_g], [q_g^T, g_g]] ** 2`` (squared in the input precision, then
       float32); ``M = (D / max(D, axis=0)).T``: each *column* of ``D`` is divided by its
       maximum and the result transposed, so row ``i`` of ``M`` is column ``i`` of ``D``
       over its maximum (for symmetric input, row ``i`` over the largest distance from
       item ``i`` to any item). ``M`` is "the original distance" in every later step.
    2. ``initial_rank``: each row of ``M`` argsorted, the item itself included (it is
       normally its own first neighbour).
    3. For every item ``i``: ``R(i)`` = the members ``c`` of ``initial_rank[i, :k1+1]``
       that have ``i`` in ``initial_rank[c, :k1+1]``; for each ``c`` in ``R(i)`` the same set
       ``H(c)`` with ``round(k1/2) + 1`` neighbours (``numpy.around``: half to even), added
       when ``|H(c) & R(i)| > 2/3 * |H(c)|``; ``V[i, e] = exp(-M[i, e])`` over the union,
       normalised to sum 1 (float32).
    4. If ``k2 != 1``: ``V[i] = mean(V[initial_rank[i, :k2]])`` (the item itself included).
    5. For every query ``i`` and item ``j``: ``s = sum_c min(V[i, c], V[j, c])`` through
       the inverted index, ``jaccard = 1 - s / (2 - s)``.
    6. ``final = jaccard * (1 - lambda) + M * lambda``, the query x gallery block.

    Differences, by design: ties in ``argsort`` are broken by the lower item index (a
    stable sort; the reference's quicksort leaves their order unspecified), and an item
    whose distances are all 0 gets normalised distances 0 where the reference gets NaN.
    Sums run in a different order, so values agree to float32 rounding (about 1e-6).
    Some ports keep ``V`` in float16; this follows the float32 reference.

    Args:
        q_g_dist: ``(Q, G)`` query-gallery distances (NumPy array or tensor, any device).
        q_q_dist: ``(Q, Q)`` query-query distances.
        g_g_dist: ``(G, G)`` gallery-gallery distances.
        k1: k-reciprocal neighbourhood size (>= 1; paper: 20).
        k2: local query expansion size (>= 1, 1 = none; paper: 6).
        lambda_value: weight of the original distance, in [0, 1] (paper: 0.3).

    Returns:
        ``(Q, G)`` float32 NumPy array of re-ranked distances (smaller = more similar).

    Raises:
        UserInputError: shapes that do not fit together, non-finite values, or parameters
            out of range.
    """
    _check_parameters(k1, k2, lambda_value)
    q_g = as_features(q_g_dist, "q_g_dist")
    device = q_g.device
    q_q = as_features(q_q_dist, "q_q_dist", device)
    g_g = as_features(g_g_dist, "g_g_dist", device)
    num_query, num_gallery = q_g.shape
    if num_query == 0 or num_gallery == 0:
        raise UserInputError(f"q_g_dist is empty (shape {tuple(q_g.shape)})")
    for name, block, size, what in (
        ("q_q_dist", q_q, num_query, "queries"),
        ("g_g_dist", g_g, num_gallery, "gallery items"),
    ):
        if tuple(block.shape) != (size, size):
            raise UserInputError(
                f"{name} must be ({size}, {size}) to match q_g_dist {tuple(q_g.shape)} "
                f"({size} {what}), got {tuple(block.shape)}"
            )
    dtype = torch.promote_types(torch.promote_types(q_g.dtype, q_q.dtype), g_g.dtype)
    full = torch.cat(
        [
            torch.cat([q_q.to(dtype), q_g.to(dtype)], dim=1),
            torch.cat([q_g.T.to(dtype), g_g.to(dtype)], dim=1),
        ],
        dim=0,
    )
    full = full.square_().to(torch.float32)
    full.div_(_positive(full.amax(dim=0)))
    original = full.T.contiguous()  # row i = column i of D over its maximum
    del full
    n = original.shape[0]
    step = _block_rows(n, NEIGHBOUR_BLOCK_ELEMENTS)
    width = _rank_width(n, k1, k2)
    ranks = torch.cat([smallest_k_stable(original[s : s + step], width) for s in range(0, n, step)])
    v = _encode(ranks, k1, k2, _entries_of(original))
    del ranks
    gallery_columns = columns_of(v, num_query)
    out = original[:num_query, num_query:].contiguous()
    del original
    step = _block_rows(num_gallery, QUERY_BLOCK_ELEMENTS)
    for start in range(0, num_query, step):
        _final_block(v, gallery_columns, out[start : start + step], start, float(lambda_value))
    return out.cpu().numpy()


# ---------------------------------------------------------------------------------------------
# chunked feature path


def feature_distances(
    x: np.ndarray | Tensor, y: np.ndarray | Tensor, metric: str = "cosine"
) -> Tensor:
    """The distances re-ranking starts from, as a dense matrix (for small sets).

    Args:
        x: ``(A, D)`` features.
        y: ``(B, D)`` features.
        metric: a key of :data:`RERANK_METRICS` (``cosine``, ``euclidean``, ``sqeuclidean``).

    Returns:
        ``(A, B)`` float32 tensor on ``x``'s device: the same values
        :func:`reranked_distance_chunks` computes block by block (before squaring).
    """
    spec = _check_metric(metric)
    a, b = _features(x, y, None)
    return spec.distances(spec.prepare(a), spec.prepare(b).T.contiguous())


def reranked_distance_chunks(
    query_features: np.ndarray | Tensor,
    gallery_features: np.ndarray | Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "cosine",
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> Iterator[tuple[slice, Tensor]]:
    """Re-ranked query x gallery distances, one block of queries at a time.

    The same distances as :func:`rerank` on ``feature_distances`` of the three blocks, to
    float32 rounding (distances are computed block by block, so their last bits can differ
    from one dense matrix product; an exact near-tie can then rank the other way). Nothing
    of size (Q+G)^2 or Q x G is ever held:

    1. one chunked pass over all items: distances of a block of items to all items,
       squared; each item's maximum (the reference's column normalisation) and its
       ``max(k1 + 1, k2)`` nearest neighbours by a top-k with the reference's order (ties
       by index);
    2. the sparse encoding ``V`` (about ``1.5 k1`` non-zeros per item), its weights from
       distances of the selected pairs only, and the local query expansion as sparse row
       averaging;
    3. per query block: the Jaccard distance through ``V``'s inverted index (gallery items
       sharing no non-zero get 1), blended with the block's recomputed squared, normalised
       original distances.

    Inputs are checked when this function is called; the work happens as the blocks are
    consumed. Features are used in float32.

    Args:
        query_features: ``(Q, D)`` features (NumPy array or tensor).
        gallery_features: ``(G, D)`` features.
        k1: k-reciprocal neighbourhood size (>= 1; paper: 20).
        k2: local query expansion size (>= 1, 1 = none; paper: 6).
        lambda_value: weight of the original distance, in [0, 1] (paper: 0.3).
        metric: a key of :data:`RERANK_METRICS`: ``cosine`` (1 - cosine similarity),
            ``euclidean`` or ``sqeuclidean``; the reference then squares these.
        chunk_size: queries per yielded block (default: 16M / G queries, 64 MiB of
            float32; the neighbour pass uses its own blocks of 32M / (Q + G) items, 128 MiB).
        device: where to compute (default: the query features' device, CPU for NumPy).

    Yields:
        ``(query_slice, distances)``: a ``slice`` of query indices, in order and covering
        all queries, and a ``(len(query_slice), G)`` float32 tensor on ``device``.

    Raises:
        UserInputError: bad shapes, non-finite features, an unknown metric or parameters
            out of range.
    """
    _check_parameters(k1, k2, lambda_value)
    spec = _check_metric(metric)
    _check_chunk_size(chunk_size)
    query, gallery = _unit_scale(*_features(query_features, gallery_features, device))
    return _reranked_chunks(query, gallery, int(k1), int(k2), float(lambda_value), spec, chunk_size)


def _reranked_chunks(
    query: Tensor,
    gallery: Tensor,
    k1: int,
    k2: int,
    lambda_value: float,
    spec: Metric,
    chunk_size: int | None,
) -> Iterator[tuple[slice, Tensor]]:
    num_query = query.shape[0]
    features = spec.prepare(torch.cat([query, gallery]))
    del query, gallery
    n, dim = features.shape
    # A contiguous (D, N) copy: the block products read it row-major, twice as fast on CPU.
    features_t = features.T.contiguous()
    terms = spec.column_terms(features_t)
    width = _rank_width(n, k1, k2)
    ranks = torch.empty(n, width, dtype=torch.int64, device=features.device)
    scale = torch.empty(n, dtype=torch.float32, device=features.device)
    step = _block_rows(n, NEIGHBOUR_BLOCK_ELEMENTS)
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = spec.squared_block(features[start:stop], features_t, terms)
        # the reference divides by each column's maximum of the symmetric matrix: the
        # largest squared distance from this item to any item
        block_scale = _positive(block.amax(dim=1))
        scale[start:stop] = block_scale
        ranks[start:stop] = smallest_k_stable(block, width, divisor=block_scale)
        del block

    pair_step = max(1, GATHER_BUDGET // (2 * dim))

    def normalised_distance(rows: Tensor, cols: Tensor) -> Tensor:
        out = torch.empty(rows.numel(), dtype=torch.float32, device=rows.device)
        for s in range(0, rows.numel(), pair_step):
            r, c = rows[s : s + pair_step], cols[s : s + pair_step]
            out[s : s + pair_step] = spec.squared_pairs(features[r], features[c]) / scale[r]
        return out

    v = _encode(ranks, k1, k2, normalised_distance)
    del ranks
    gallery_columns = columns_of(v, num_query)
    gallery_t = features_t[:, num_query:]
    gallery_terms = spec.column_terms(gallery_t)
    num_gallery = gallery_t.shape[1]
    step = int(chunk_size) if chunk_size else _block_rows(num_gallery, QUERY_BLOCK_ELEMENTS)
    for start in range(0, num_query, step):
        stop = min(num_query, start + step)
        original = spec.squared_block(features[start:stop], gallery_t, gallery_terms)
        original.div_(scale[start:stop, None])
        yield slice(start, stop), _final_block(v, gallery_columns, original, start, lambda_value)
        del original


def rerank_features(
    query_features: np.ndarray | Tensor,
    gallery_features: np.ndarray | Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "cosine",
    dense: bool | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Re-ranked ``(Q, G)`` distances of features, as one NumPy array.

    Args:
        query_features, gallery_features, k1, k2, lambda_value, metric, chunk_size, device:
            as :func:`reranked_distance_chunks`.
        dense: ``True`` builds the three distance blocks and calls :func:`rerank`;
            ``False`` assembles :func:`reranked_distance_chunks`; ``None`` (default) is
            dense up to ``DENSE_ITEM_LIMIT`` items in total. Both give the same distances
            to float32 rounding. For Q x G too large to hold, consume
            :func:`reranked_distance_chunks` instead.

    Returns:
        ``(Q, G)`` float32 NumPy array.
    """
    _check_parameters(k1, k2, lambda_value)
    spec = _check_metric(metric)
    _check_chunk_size(chunk_size)
    query, gallery = _unit_scale(*_features(query_features, gallery_features, device))
    if dense is None:
        dense = query.shape[0] + gallery.shape[0] <= DENSE_ITEM_LIMIT
    if dense:
        q = spec.prepare(query)
        g = spec.prepare(gallery)
        q_t, g_t = q.T.contiguous(), g.T.contiguous()
        return rerank(
            spec.distances(q, g_t),
            spec.distances(q, q_t),
            spec.distances(g, g_t),
            k1,
            k2,
            lambda_value,
        )
    out = np.empty((query.shape[0], gallery.shape[0]), dtype=np.float32)
    chunks = _reranked_chunks(query, gallery, k1, k2, float(lambda_value), spec, chunk_size)
    for rows, distances in chunks:
        out[rows] = distances.cpu().numpy()
    return out
