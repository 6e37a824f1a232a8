"""Sparse building blocks of k-reciprocal re-ranking (Zhong et al., CVPR 2017).

Given every item's ranked nearest neighbours, re-ranking needs three things that the
published reference code keeps as dense N x N matrices:

* the k-reciprocal encoding ``V``: row ``i`` holds Gaussian-kernel weights on the item's
  expanded k-reciprocal set, about ``1.5 * k1`` non-zeros;
* its local query expansion: row ``i`` becomes the mean of the rows of its ``k2`` nearest
  neighbours;
* the Jaccard distance ``1 - sum(min(V_p, V_g)) / (2 - sum(min(V_p, V_g)))`` of each query
  ``p`` to each gallery item ``g``, which is non-trivial only where the two rows share a
  non-zero column.

Here ``V`` is stored as compressed sparse rows (:class:`SparseRows`), set construction is
vectorised over blocks of items (no Python loop over items), and the Jaccard distance of a
block of queries is gathered through ``V``'s columns (the inverted index). Every function
works on CPU and CUDA tensors alike; memory grows with N times the neighbourhood sizes,
never with N squared.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Entries gathered at once when a step emits one value per (row, neighbour-of-neighbour)
# pair: about 64 MiB of int64 indices, independent of N.
GATHER_BUDGET = 1 << 23

# Extra candidates taken by ``torch.topk`` so that ties at the k-th place can be detected.
TIE_MARGIN = 8


@dataclass(frozen=True)
class SparseRows:
    """An ``(n_rows, n_cols)`` sparse matrix in compressed-row form.

    Attributes:
        crow: ``(n_rows + 1,)`` int64 offsets; row ``r`` is ``col/val[crow[r]:crow[r + 1]]``.
        col: ``(nnz,)`` int64 column indices, ascending within each row.
        val: ``(nnz,)`` float32 values.
        n_cols: number of columns.
    """

    crow: Tensor
    col: Tensor
    val: Tensor
    n_cols: int

    @property
    def n_rows(self) -> int:
        return self.crow.numel() - 1

    @property
    def nnz(self) -> int:
        return self.col.numel()

    def row_ids(self) -> Tensor:
        """``(nnz,)`` int64: the row of every stored entry."""
        counts = self.crow[1:] - self.crow[:-1]
        return torch.repeat_interleave(
            torch.arange(self.n_rows, device=self.crow.device), counts, output_size=self.nnz
        )

    def to_dense(self) -> Tensor:
        """The ``(n_rows, n_cols)`` dense matrix (for small cases and tests only)."""
        out = torch.zeros(self.n_rows, self.n_cols, dtype=self.val.dtype, device=self.val.device)
        out[self.row_ids(), self.col] = self.val
        return out


def _offsets(counts: Tensor) -> Tensor:
    """``(n + 1,)`` int64 exclusive prefix sums of ``(n,)`` counts."""
    out = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, 0, out=out[1:])
    return out


def gather_segments(crow: Tensor, segments: Tensor) -> tuple[Tensor, Tensor]:
    """Positions of all entries of the given rows of a CSR matrix, concatenated.

    Args:
        crow: ``(n_rows + 1,)`` int64 row offsets.
        segments: ``(S,)`` int64 row indices (repeats allowed).

    Returns:
        ``(positions, owner)``, both ``(T,)`` int64 with ``T`` the total length of the rows:
        ``positions`` index the CSR's ``col``/``val``; ``owner[t]`` is the index into
        ``segments`` of the row that entry ``t`` came from.
    """
    starts = crow[segments]
    lengths = crow[segments + 1] - starts
    total = int(lengths.sum())
    owner = torch.repeat_interleave(
        torch.arange(segments.numel(), device=crow.device), lengths, output_size=total
    )
    within = torch.arange(total, device=crow.device) - _offsets(lengths)[:-1][owner]
    return starts[owner] + within, owner


def smallest_k_stable(values: Tensor, k: int, divisor: Tensor | None = None) -> Tensor:
    """Indices of the ``k`` smallest entries of each row, ordered as a stable argsort would.

    Ranks ``values / divisor[:, None]`` when ``divisor`` is given (a positive per-row scale,
    applied after selection so that the caller never materialises the scaled block). Ties
    are broken by the lower column index, exactly as ``numpy.argsort(kind="stable")``: the
    candidates from ``torch.topk`` (whose tie order is unspecified) are re-sorted by
    ``(value, index)``, and rows where an equal value may lie beyond the candidates are
    sorted in full.

    Args:
        values: ``(B, N)`` floating distances (finite).
        k: how many to keep; clipped to ``N``.
        divisor: optional ``(B,)`` positive floats.

    Returns:
        ``(B, min(k, N))`` int64 column indices, nearest first.
    """
    n = values.shape[1]
    k = min(k, n)

    def full_sort(rows: Tensor | None) -> Tensor:
        block = values if rows is None else values[rows]
        if divisor is not None:
            block = block / (divisor if rows is None else divisor[rows])[:, None]
        return torch.sort(block, dim=1, stable=True).indices[:, :k]

    if k + TIE_MARGIN >= n:
        return full_sort(None)
    cand_val, cand_idx = torch.topk(values, k + TIE_MARGIN, dim=1, largest=False, sorted=False)
    if divisor is not None:
        cand_val = cand_val / divisor[:, None]
    # (value, index) order: sort by index, then stably by value.
    cand_idx, perm = torch.sort(cand_idx, dim=1)
    cand_val = torch.gather(cand_val, 1, perm)
    cand_val, perm = torch.sort(cand_val, dim=1, stable=True)
    cand_idx = torch.gather(cand_idx, 1, perm)
    out = cand_idx[:, :k].contiguous()
    # Any entry outside the candidates is >= the last candidate; if that equals the k-th
    # value, an outside entry with a lower index may belong in the top k.
    unsure = (cand_val[:, k - 1] >= cand_val[:, -1]).nonzero().squeeze(1)
    if unsure.numel():
        out[unsure] = full_sort(unsure)
    return out


def reciprocal_mask(neighbours: Tensor, rows: Tensor) -> Tensor:
    """Which neighbours of ``rows`` have the row among their own neighbours.

    Args:
        neighbours: ``(N, k)`` int64 ranked neighbour lists of all items.
        rows: ``(B,)`` int64 item indices.

    Returns:
        ``(B, k)`` bool: ``mask[b, a]`` is true when ``rows[b]`` is in
        ``neighbours[neighbours[rows[b], a]]``.
    """
    back = neighbours[neighbours[rows]]  # (B, k, k)
    return (back == rows[:, None, None]).any(-1)


def _half_k(k1: int) -> int:
    # The reference rounds k1/2 with numpy.around: half to even (k1 = 5 -> 2, k1 = 3 -> 2).
    return int(np.around(k1 / 2.0))


def k_reciprocal_encoding(
    ranks: Tensor,
    k1: int,
    normalised_distance: Callable[[Tensor, Tensor], Tensor],
) -> SparseRows:
    """The k-reciprocal encoding ``V`` of every item, before query expansion.

    For item ``i`` with forward list ``F(i) = ranks[i, :k1 + 1]`` (the item itself included):

    * ``R(i)``: the members ``c`` of ``F(i)`` with ``i`` in ``F(c)``;
    * for each ``c`` in ``R(i)``, ``H(c)``: the same with ``round(k1 / 2) + 1`` neighbours;
      ``H(c)`` joins the set when ``|H(c) & R(i)| > 2/3 |H(c)|`` (float64 comparison, as
      the reference);
    * ``V[i, e] = exp(-d(i, e)) / sum_e' exp(-d(i, e'))`` over the expanded set ``e``.

    Args:
        ranks: ``(N, K)`` int64 ranked neighbours of every item, ``K >= min(k1 + 1, N)``.
        k1: the k-reciprocal neighbourhood size (>= 1).
        normalised_distance: ``f(rows, cols) -> (P,)`` float32 distances ``d(i, e)`` (the
            squared, normalised distance of the reference) for ``(P,)`` int64 index pairs.

    Returns:
        ``V`` as :class:`SparseRows` of shape ``(N, N)``.
    """
    n = ranks.shape[0]
    device = ranks.device
    k = min(k1 + 1, n)
    kh = min(_half_k(k1) + 1, n)
    forward = ranks[:, :k].contiguous()
    half = ranks[:, :kh].contiguous()
    # Size blocks so that the (B, k, k) and (B, k, kh) index tensors stay near GATHER_BUDGET.
    block = max(1, GATHER_BUDGET // (k * (k + kh)))
    half_ok = torch.cat(
        [
            reciprocal_mask(half, torch.arange(s, min(n, s + block), device=device))
            for s in range(0, n, block)
        ]
    )
    counts, cols, vals = [], [], []
    for start in range(0, n, block):
        rows = torch.arange(start, min(n, start + block), device=device)
        fw = forward[rows]  # (B, k)
        fw_ok = reciprocal_mask(forward, rows)
        cand = half[fw]  # (B, k, kh): H(c) candidates of every forward neighbour c
        cand_ok = half_ok[fw]
        # membership in R(i) by binary search in the sorted set (n pads non-members)
        r_sorted = torch.sort(fw.masked_fill(~fw_ok, n), dim=1).values
        flat = cand.reshape(rows.numel(), -1)
        found = torch.searchsorted(r_sorted, flat).clamp_max_(k - 1)
        in_r = (torch.gather(r_sorted, 1, found) == flat).view_as(cand)
        overlap = (in_r & cand_ok).sum(-1)
        size = cand_ok.sum(-1)
        accept = fw_ok & (overlap.double() > (2.0 / 3.0) * size.double())
        members = torch.cat(
            [
                fw.masked_fill(~fw_ok, n),
                cand.masked_fill(~(cand_ok & accept.unsqueeze(-1)), n).flatten(1),
            ],
            dim=1,
        )
        members = torch.sort(members, dim=1).values
        keep = members < n
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        row_counts = keep.sum(1)
        row_cols = members[keep]
        row_ids = torch.repeat_interleave(rows, row_counts, output_size=row_cols.numel())
        weight = torch.exp(-normalised_distance(row_ids, row_cols).float())
        total = torch.zeros(rows.numel(), dtype=torch.float32, device=device)
        total.index_add_(0, row_ids - start, weight)
        counts.append(row_counts)
        cols.append(row_cols)
        vals.append(weight / total[row_ids - start])
    return SparseRows(_offsets(torch.cat(counts)), torch.cat(cols), torch.cat(vals), n)


def average_rows(v: SparseRows, sources: Tensor) -> SparseRows:
    """Local query expansion: row ``i`` of the result is the mean of rows ``sources[i]`` of ``v``.

    Args:
        v: ``(N, M)`` sparse rows.
        sources: ``(N, k2)`` int64 row indices (each item's ``k2`` nearest neighbours).

    Returns:
        ``(N, M)`` :class:`SparseRows`; a column absent from all source rows stays absent.
    """
    n, k2 = sources.shape
    device = v.crow.device
    longest = int((v.crow[1:] - v.crow[:-1]).max()) if v.nnz else 1
    block = max(1, GATHER_BUDGET // (k2 * max(longest, 1)))
    counts, cols, vals = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        positions, owner = gather_segments(v.crow, sources[start:stop].reshape(-1))
        keys = torch.div(owner, k2, rounding_mode="floor") * v.n_cols + v.col[positions]
        unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        summed = torch.zeros(unique.numel(), dtype=torch.float32, device=device)
        summed.index_add_(0, inverse, v.val[positions])
        local_rows = torch.div(unique, v.n_cols, rounding_mode="floor")
        counts.append(torch.bincount(local_rows, minlength=stop - start))
        cols.append(unique - local_rows * v.n_cols)
        vals.append(summed / k2)  # sum then divide, as numpy.mean
    return SparseRows(_offsets(torch.cat(counts)), torch.cat(cols), torch.cat(vals), v.n_cols)


def columns_of(v: SparseRows, first_row: int) -> SparseRows:
    """The inverted index of ``v``: its columns, restricted to rows ``first_row`` onwards.

    Returns:
        :class:`SparseRows` of shape ``(v.n_cols, v.n_rows - first_row)``: row ``c`` lists the
        rows ``r - first_row`` (ascending) where ``v[r, c]`` is non-zero, with the values.
    """
    start = int(v.crow[first_row])
    rows = v.row_ids()[start:] - first_row
    col = v.col[start:]
    order = torch.sort(col, stable=True).indices  # stable: rows stay ascending per column
    counts = torch.bincount(col, minlength=v.n_cols)
    return SparseRows(_offsets(counts), rows[order], v.val[start:][order], v.n_rows - first_row)


def shared_minima(
    v: SparseRows, gallery_columns: SparseRows, start: int, stop: int
) -> tuple[Tensor, Tensor]:
    """``s = sum_c min(V[i, c], V[g, c])`` for queries ``start:stop``, where it is non-zero.

    Only columns where row ``i`` is non-zero contribute, so the sum runs over the inverted
    index: cost proportional to the encodings' overlaps, not to the gallery size.

    Args:
        v: ``(N, N)`` encoding (after query expansion).
        gallery_columns: :func:`columns_of` ``v`` for the gallery rows, ``(N, G)``.
        start, stop: the block of query rows.

    Returns:
        ``(flat, shared)``: ``(P,)`` int64 positions ``(i - start) * G + g`` in the block's
        row-major ``(stop - start, G)`` layout, ascending and unique, and the ``(P,)``
        float32 sums there; every other position has ``s = 0``.
    """
    g = gallery_columns.n_cols
    device = v.val.device
    lo, hi = int(v.crow[start]), int(v.crow[stop])
    entry_rows = torch.repeat_interleave(
        torch.arange(stop - start, device=device),
        v.crow[start + 1 : stop + 1] - v.crow[start:stop],
        output_size=hi - lo,
    )
    entry_cols = v.col[lo:hi]
    entry_vals = v.val[lo:hi]
    lengths = gallery_columns.crow[entry_cols + 1] - gallery_columns.crow[entry_cols]
    # Split the entries so that each gather stays near GATHER_BUDGET, however skewed the
    # column lengths (a "hub" item can sit in many rows' encodings).
    ends = torch.cumsum(lengths, 0)
    total = int(ends[-1]) if ends.numel() else 0
    cuts = []
    if total > GATHER_BUDGET:
        marks = torch.arange(GATHER_BUDGET, total, GATHER_BUDGET, device=device)
        cuts = torch.searchsorted(ends, marks, right=True).tolist()
    bounds = [0, *cuts, entry_cols.numel()]
    flats, sums = [], []
    for a, b in itertools.pairwise(bounds):
        if b <= a:
            continue
        positions, owner = gather_segments(gallery_columns.crow, entry_cols[a:b])
        contribution = torch.minimum(entry_vals[a:b][owner], gallery_columns.val[positions])
        target = entry_rows[a:b][owner] * g + gallery_columns.col[positions]
        unique, inverse = torch.unique(target, sorted=True, return_inverse=True)
        flats.append(unique)
        sums.append(torch.zeros(unique.numel(), device=device).index_add_(0, inverse, contribution))
    if len(flats) > 1:  # a position can appear in several groups: coalesce once more
        unique, inverse = torch.unique(torch.cat(flats), sorted=True, return_inverse=True)
        summed = torch.zeros(unique.numel(), device=device).index_add_(0, inverse, torch.cat(sums))
        return unique, summed
    if flats:
        return flats[0], sums[0]
    return torch.zeros(0, dtype=torch.int64, device=device), torch.zeros(0, device=device)


def jaccard_from_shared(shared: Tensor) -> Tensor:
    """``1 - s / (2 - s)``: the reference's Jaccard distance from the summed minima ``s``.

    Equals ``1 - sum(min) / sum(max)`` because every row of ``V`` sums to 1.
    """
    return 1.0 - shared / (2.0 - shared)
