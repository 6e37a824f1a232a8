"""The ranks of each query's true matches in its filtered, stably sorted gallery, without
sorting the gallery.

For one block of queries ``dist (B, G)``: each query's M good matches are sorted by
``(distance, gallery index)``. Every other ranked item is then located among the 2M sorted
thresholds ``{prev(v), v}`` of the match distances v (prev = the next float below v): O(G)
cheap work per query (:class:`ThresholdGrid`) instead of the O(G log G) full sort. A
histogram of the positions gives, per match, the number of items nearer than it (``< v``)
and at exactly its distance (``== v``, rare with float features); the latter are placed by
gallery index, which is what a stable sort does. Items farther than a query's last match
cannot change any rank, so when they are most of the gallery (a trained model) only the
nearer ones are located.

Over 500 lines on purpose: the two exact ways of locating items (the float threshold grid and
the integer-key histogram for weak rankings) share their block logic and are tested against
each other, so they stay together.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

_T = TypeVar("_T")

#: Share of a block's items nearer than their query's last match below which those items are
#: packed first (two extra passes over the block, then work per packed item only) rather than
#: locating every item (the measured crossover on CPU is about 12 %).
PACK_BELOW_SHARE = 0.12

#: The same crossover against the integer-key histogram (:func:`_histogram_keys`), which is
#: cheaper per item: measured about 6 % (Market size, one thread; at 12 % a mAP-50 % matrix
#: took 0.82 s packed against 0.64 s by keys).
KEYS_PACK_BELOW_SHARE = 0.06

#: Items located at once on CPU. Smaller slices keep temporaries in cache but pay Python and
#: dispatch overhead per slice; on a dedicated 2-core CPU (Market size, random distances)
#: 2**15 took 0.41 s, 2**17 0.22 s and 2**18 0.20 s with 2 threads (0.42 / 0.29 / 0.28 s with
#: one), so slices are large enough for torch to split an operation over its threads.
SLICE_ELEMENTS = 1 << 18

#: The same for the integer-key histogram, whose blocks run on one thread each
#: (:func:`_split_rows` splits a block over the cores): larger
#: slices mean fewer operations, hence less Python overhead and less waiting for the GIL
#: between the two threads (Market size, 2 cores: 2**18 0.24 s, 2**20 0.19 s, random matrix).
KEY_SLICE_ELEMENTS = 1 << 20

#: Items of a CPU block from which :func:`_histogram_keys` runs on several Python threads, one
#: part of the rows each, with torch's intra-op parallelism off in them: its histogram, byte
#: lookup and ``nonzero`` are single-threaded operations in torch, so a block placed at once
#: leaves the other cores idle (Market size, 2 cores: docs/performance.md).
SPLIT_MIN_ITEMS = 1 << 20

#: How items are placed among the thresholds when most are nearer than the last match.
LOCATE_METHODS = ("keys", "grid")

#: Lookup-table entries of one :class:`ThresholdGrid` (rows x bins), built for a group of rows.
GRID_ENTRIES = 1 << 18

#: Table entries of one :class:`_KeyGrid` (rows x bins, one byte each), built for a group of
#: rows: larger groups mean fewer per-group operations; the table stays cache-resident.
KEY_GRID_ENTRIES = 1 << 20

#: Items equal to a threshold resolved together (bounds their memory with heavy ties).
TIE_BATCH = 1 << 20

#: Grid bins of :class:`ThresholdGrid` per row: ``sqrt(GRID_BALANCE * items * thresholds)``
#: (at least 4 per threshold) balances building the table (per bin) against resolving the
#: values that share a bin with a threshold (a share of about thresholds / bins).
GRID_BALANCE = 8


def same_identity_items(
    q_pids: torch.Tensor, sorted_pids: torch.Tensor, pid_order: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gallery indices of each query's identity, ``(B, L)`` padded, and the ``(B, L)`` mask of
    real entries. ``sorted_pids``/``pid_order``: the gallery identities sorted stably and the
    permutation doing it, so that the indices of one identity ascend."""
    start = torch.searchsorted(sorted_pids, q_pids, side="left")
    count = torch.searchsorted(sorted_pids, q_pids, side="right") - start
    width = int(count.max()) if q_pids.numel() else 0
    offsets = torch.arange(width, device=q_pids.device)
    present = offsets < count[:, None]
    last = max(sorted_pids.numel() - 1, 0)
    return pid_order[(start[:, None] + offsets).clamp(max=last)], present


def match_ranks(
    dist: torch.Tensor,
    q_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    sorted_pids: torch.Tensor,
    pid_order: torch.Tensor,
    junk_cols: torch.Tensor | None,
    camera_filter: bool,
    locate: str = "keys",
    workers: PartWorkers | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks ``(B, Mmax)`` of each query's good matches among its ranked items, in
    increasing order, and the number of good matches ``(B,)``; entries beyond a query's count
    are meaningless.

    Ranked items: all gallery items but the junk ones, i.e. those of the junk identity
    (``junk_cols``) and, with ``camera_filter``, the query identity's items in the query's
    camera. Good matches: the ranked items of the query's identity.

    ``locate`` picks how the items are placed among the match thresholds when most of them
    are nearer than their query's last match (weak models): ``"keys"`` (default), the
    integer-key histogram of :func:`_histogram_keys`; ``"grid"``, the float grid of
    :func:`_histogram` (used anyway where keys do not apply). Both give identical ranks.
    """
    device = dist.device
    rows, gallery = dist.shape
    if rows == 0 or gallery == 0:
        empty = torch.zeros(rows, dtype=torch.int64, device=device)
        return torch.zeros((rows, 0), dtype=torch.int64, device=device), empty
    same, present = same_identity_items(q_pids, sorted_pids, pid_order)
    good = present
    if junk_cols is not None:
        good = good & ~junk_cols[same]
    if camera_filter:
        good = good & (g_camids[same] != q_camids[:, None])
    num_matches = good.sum(1)
    max_matches = int(num_matches.max()) if rows and same.shape[1] else 0
    if max_matches == 0:
        return torch.zeros((rows, 0), dtype=torch.int64, device=device), num_matches

    # Good matches moved to the front (stable: gallery order kept), then sorted by distance:
    # a stable sort of index-ordered items orders them by (distance, index).
    front = torch.sort((~good).to(torch.uint8), dim=1, stable=True).indices[:, :max_matches]
    match_idx = same.gather(1, front)
    is_pad = torch.arange(max_matches, device=device) >= num_matches[:, None]
    match_dist = dist.gather(1, match_idx).masked_fill(is_pad, math.inf)
    match_dist, perm = torch.sort(match_dist, dim=1, stable=True)
    match_idx = match_idx.gather(1, perm).masked_fill(is_pad, gallery)

    # Items never ranked against their own identity's matches: the identity's items (good ones
    # are counted as matches, the others are junk). Pads repeat a real entry.
    excluded = torch.where(present, same, same[:, :1])
    last = match_dist.gather(1, (num_matches - 1).clamp(min=0)[:, None])
    last = last.masked_fill(num_matches[:, None] == 0, -math.inf)  # skipped queries: nothing
    matches = _Matches(match_dist, match_idx, num_matches, gallery)
    # A cheap estimate of the share of nearer items, from every 16th row (contiguous memory:
    # every 16th column would read every cache line).
    sampled = dist[::16] <= last[::16]
    nearer = int(sampled.sum(dtype=torch.int32))
    keys = locate == "keys" and _keys_apply(dist, matches)
    crossover = KEYS_PACK_BELOW_SHARE if keys else PACK_BELOW_SHARE
    if nearer > crossover * sampled.numel():
        if keys:
            counts, tie_fix = _split_rows(
                _histogram_keys, dist, workers, matches, excluded, present, junk_cols
            )
        else:
            counts, tie_fix = _histogram(dist, matches, excluded, junk_cols)
    else:
        # Only the items no farther than the last match matter: locate just those.
        candidate = dist <= last
        if junk_cols is not None:
            candidate &= ~junk_cols
        candidate.scatter_(1, excluded, False)
        hit_row, hit_col = candidate.nonzero(as_tuple=True)
        counts, tie_fix = _histogram_items(hit_row, hit_col, dist[hit_row, hit_col], matches)
    before = _nearer(counts, matches) + tie_fix
    return torch.arange(max_matches, device=device) + before, num_matches


class PartWorkers:
    """Threads that place the parts of a large CPU block's rows at once (:func:`_split_rows`).

    Kept for the process and shared (:func:`part_workers`), as torch keeps its intra-op
    threads: fresh threads for every block cost page faults, since glibc serves each thread
    from an arena whose memory a new thread touches afresh (~20,000 faults and about 15 %
    of the time for a Market-size random matrix on 2 threads); kept threads reuse theirs. A
    forked child makes its own threads on first use.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def map(self, fn: Callable[[slice], _T], parts: list[slice]) -> list[_T]:
        """``fn`` of each part, on the threads, in order."""
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="adasp-ranks")
                self._pid = os.getpid()
            pool = self._pool
        return list(pool.map(fn, parts))


_PART_WORKERS: dict[int, PartWorkers] = {}
_PART_WORKERS_LOCK = threading.Lock()


def part_workers(count: int) -> PartWorkers:
    """The process's :class:`PartWorkers` of ``count`` threads (made on first use)."""
    with _PART_WORKERS_LOCK:
        if count not in _PART_WORKERS:
            _PART_WORKERS[count] = PartWorkers(count)
        return _PART_WORKERS[count]


def _split_rows(
    place: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    values: torch.Tensor,
    workers: PartWorkers | None,
    matches: _Matches,
    excluded: torch.Tensor,
    present: torch.Tensor,
    junk_cols: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``place(values, matches, excluded, present, junk_cols)`` (rows are independent) on
    contiguous parts of the rows at once, one per thread of ``workers``, for large CPU
    blocks; the parts' ``counts`` and ``tie_fix`` rows concatenated in order."""
    rows = values.shape[0]
    if (
        workers is None
        or workers.count < 2
        or values.device.type != "cpu"
        or values.numel() < SPLIT_MIN_ITEMS
    ):
        return place(values, matches, excluded, present, junk_cols)
    count = min(workers.count, rows)
    bounds = [rows * i // count for i in range(count + 1)]
    parts = [slice(a, b) for a, b in itertools.pairwise(bounds)]

    # Read here, on the calling thread: OpenMP's count is per thread, but where it is global
    # (a build without OpenMP) a worker could otherwise read another worker's 1 and keep it.
    previous = torch.get_num_threads()

    def part_on_one_thread(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        torch.set_num_threads(1)
        try:
            return place(values[part], matches.rows(part), excluded[part], present[part], junk_cols)
        finally:
            torch.set_num_threads(previous)

    done = workers.map(part_on_one_thread, parts)
    counts, tie_fix = (torch.cat(pieces) for pieces in zip(*done, strict=True))
    return counts, tie_fix


class _Matches:
    """One block's sorted good matches: distances and gallery indices ``(B, Mmax)`` (+inf and
    G as padding), counts ``(B,)``, and the thresholds ``(B, 2 Mmax)``: each match distance v
    and the float just below it, sorted (+inf for the padding)."""

    def __init__(self, dist, idx, count, gallery, thresholds=None):
        self.dist, self.idx, self.count, self.gallery = dist, idx, count, gallery
        if thresholds is None:
            below = torch.nextafter(dist, dist.new_tensor(-math.inf))
            is_pad = torch.arange(dist.shape[1], device=dist.device) >= count[:, None]
            below = below.masked_fill(is_pad, math.inf)
            thresholds = torch.sort(torch.cat([below, dist], dim=1), dim=1).values
        self.thresholds = thresholds

    def rows(self, part: slice) -> _Matches:
        return _Matches(
            self.dist[part], self.idx[part], self.count[part], self.gallery, self.thresholds[part]
        )


def _grid_bins(items_per_row: float, thresholds: int) -> int:
    return max(4 * thresholds, int(math.sqrt(GRID_BALANCE * items_per_row * thresholds)))


def _histogram(values, matches, excluded, junk_cols):
    """Per row, how many ranked items of ``values (B, G)`` lie at each threshold position,
    skipping the ``excluded (B, L)`` columns and ``junk_cols (G,)``. Returns ``counts (B,
    2 Mmax + 1)`` and :func:`_ties_before` ``(B, Mmax)``.

    On CPU the items are taken in slices of at most :data:`SLICE_ELEMENTS`, which bounds the
    temporaries while keeping the per-slice overhead small.
    """
    device = values.device
    rows, width = values.shape
    positions = matches.thresholds.shape[1] + 1
    bins = positions + 1  # the positions, then a trash bin for items not to count
    counts = torch.zeros((rows, bins), dtype=torch.int64, device=device)
    tie_fix = torch.zeros(matches.dist.shape, dtype=torch.int64, device=device)
    if device.type == "cpu":
        row_step = max(1, SLICE_ELEMENTS // max(width, 1))
        col_step = width if row_step > 1 else SLICE_ELEMENTS
    else:  # accelerators take the block at once: fewer launches
        row_step, col_step = rows, width
    size = min(row_step, rows) * min(col_step, width)
    # Reused buffers: fresh large allocations cost page faults on every slice.
    flat_buffers = (
        values.new_empty(size),
        torch.empty(size, dtype=torch.int64, device=device),
        torch.empty(size, dtype=torch.int32, device=device),
    )
    offsets = torch.arange(min(row_step, rows), device=device, dtype=torch.int32)[:, None] * bins
    grid_bins = _grid_bins(width, positions - 1)
    group_rows = max(row_step, min(rows, GRID_ENTRIES // grid_bins))
    for g0 in range(0, rows, group_rows):
        group = slice(g0, min(g0 + group_rows, rows))
        local = matches.rows(group)
        grid = ThresholdGrid(local.thresholds, local.count > 0, grid_bins)
        ties = _TieCollector(local, tie_fix[group])
        for r0 in range(group.start, group.stop, row_step):
            r1 = min(r0 + row_step, group.stop)
            for c0 in range(0, width, col_step):
                c1 = min(c0 + col_step, width)
                shape = (r1 - r0, c1 - c0)
                buffers = tuple(b[: shape[0] * shape[1]].view(shape) for b in flat_buffers)
                position = grid.locate(values[r0:r1, c0:c1], slice(r0 - g0, r1 - g0), buffers)
                _skip(position, excluded[r0:r1], c0, junk_cols, grid.trash, width)
                row, col = (position < 0).nonzero(as_tuple=True)
                if row.numel():
                    value = values[r0:r1, c0:c1][row, col]
                    exact = grid.exact(row + (r0 - g0), value)
                    position[row, col] = exact.to(torch.int32)
                    ties.add(row + (r0 - g0), col + c0, value, exact)
                position += offsets[: shape[0]]
                counted = torch.bincount(position.view(-1), minlength=shape[0] * bins)
                counts[r0:r1] += counted.view(shape[0], bins)
        ties.flush()
    return counts[:, :positions], tie_fix


def _skip(position, excluded, c0, junk_cols, trash, gallery):
    """Send the excluded columns (``excluded`` per row, gallery indices) and the junk columns
    of a slice of ``position`` starting at gallery column ``c0`` (of ``gallery``) to the
    ``trash`` position."""
    rows, width = position.shape
    if c0 == 0 and width == gallery:
        position.scatter_(1, excluded, trash)  # whole rows: a direct scatter
    else:
        local = excluded - c0
        inside = (local >= 0) & (local < width)
        row = torch.arange(rows, device=position.device)[:, None].expand_as(local)
        position[row[inside], local[inside]] = trash
    if junk_cols is not None:
        position[:, junk_cols[c0 : c0 + width]] = trash


class _TieCollector:
    """Gathers the items that equal a threshold (rare with float distances) and adds their
    :func:`_ties_before` to ``out`` in batches of bounded size."""

    def __init__(self, matches, out):
        self.matches, self.out, self.parts, self.size = matches, out, [], 0

    def add(self, row, col, value, position):
        count = self.matches.thresholds.shape[1]
        at = self.matches.thresholds.view(-1)[row * count + position.clamp(max=count - 1)]
        equal = (position < count) & (at == value)
        if bool(equal.any()):
            self.parts.append((row[equal], col[equal], value[equal], position[equal]))
            self.size += int(equal.sum())
            if self.size > TIE_BATCH:
                self.flush()

    def flush(self):
        if self.parts:
            row, col, value, position = (torch.cat(p) for p in zip(*self.parts, strict=True))
            self.out += _ties_before(row, col, value, position, self.matches)
            self.parts, self.size = [], 0


def _histogram_items(row, col, value, matches):
    """:func:`_histogram` of single items at ``(row, col)`` with distances ``value`` (1-D)."""
    rows, count = matches.thresholds.shape
    bins = _grid_bins(row.numel() / max(rows, 1), count)
    grid = ThresholdGrid(matches.thresholds, matches.count > 0, bins)
    position = grid.locate_items(row, value)
    (unsure,) = (position < 0).nonzero(as_tuple=True)
    position[unsure] = grid.exact(row[unsure], value[unsure])
    flat = row * grid.width + position
    counts = torch.bincount(flat, minlength=rows * grid.width).view(rows, grid.width)
    tie_fix = _ties_before(row[unsure], col[unsure], value[unsure], position[unsure], matches)
    return counts, tie_fix


def _nearer(counts, matches):
    """``(B, Mmax)`` items strictly nearer than each match, from the position histogram."""
    # at_most[r, i]: items <= thresholds[r, i]; an item is <= a threshold t iff its position
    # is <= that of t (t being one of the thresholds). Nearer than v: <= the float below v.
    at_most = torch.cumsum(counts, dim=1)
    below = torch.nextafter(matches.dist, matches.dist.new_tensor(-math.inf))
    at = torch.searchsorted(matches.thresholds, below).clamp(max=counts.shape[1] - 1)
    return at_most.gather(1, at)


def _ties_before(row, col, value, position, matches):
    """``(B, Mmax)``: per match, the items among ``(row, col)`` (distances ``value``, threshold
    ``position``s) at exactly its distance with a smaller gallery index: a stable sort puts
    them before it (:func:`_nearer` counts only strictly nearer items)."""
    rows, max_matches = matches.dist.shape
    count = matches.thresholds.shape[1]
    flat = row * count + position.clamp(max=count - 1)
    # Per threshold, the matches nearer than it and no farther than it: the item's group of
    # equal-distance matches, when it equals a threshold that is a match distance.
    group = torch.searchsorted(matches.dist, matches.thresholds).view(-1)[flat]
    group_end = torch.searchsorted(matches.dist, matches.thresholds, side="right").view(-1)[flat]
    tied = (position < count) & (matches.thresholds.view(-1)[flat] == value) & (group_end > group)
    row, col, group, group_end = row[tied], col[tied], group[tied], group_end[tied]
    bucket = group + _group_matches_before(matches, row, group, col)
    # It precedes the group's matches from `bucket` on; one after all of them precedes none
    # (the later groups count it as nearer already): to the unread bucket.
    bucket = bucket.masked_fill(bucket == group_end, max_matches)
    flat = row * (max_matches + 1) + bucket
    cum = torch.bincount(flat, minlength=rows * (max_matches + 1)).view(rows, max_matches + 1)
    cum = torch.cat([cum.new_zeros(rows, 1), torch.cumsum(cum, 1)], dim=1)
    group_start = torch.searchsorted(matches.dist, matches.dist)  # cum[:, g]: buckets < g
    return cum[:, 1 : max_matches + 1] - cum.gather(1, group_start)


class ThresholdGrid:
    """Locates values among sorted per-row thresholds with a few elementwise operations.

    ``position(v) = #{thresholds < v}``. Each row's finite thresholds span a uniform grid of
    ``bins`` bins; a value's bin comes from a subtraction, a multiplication, a clamp and a
    truncation. These are monotone and are computed by exactly the same float operations for
    thresholds and values, so a value in a bin without thresholds has the position stored for
    that bin (a lookup). Values in bins holding thresholds (a few percent) are marked -1 and
    resolved exactly by :meth:`exact`. This replaces a branchy binary search per value
    (~30 ns on CPU) by a few ns of cache-resident work. ``trash`` (= ``width``) is a position
    past all, for values not to count (rows marked inactive get it everywhere).
    """

    def __init__(self, thresholds: torch.Tensor, active: torch.Tensor, bins: int) -> None:
        rows, count = thresholds.shape
        device = thresholds.device
        self.thresholds = thresholds
        self.width = count + 1  # positions 0 .. count
        self.trash = self.width
        self.bins = bins
        finite = torch.isfinite(thresholds)
        first = thresholds[:, :1]
        self.lo = torch.where(finite[:, :1], first, torch.zeros_like(first))  # no inf - inf
        hi = torch.where(finite, thresholds, self.lo).amax(1, keepdim=True)
        scale = bins / (hi - self.lo)
        # Degenerate spans (no finite threshold, overflow): any positive scale stays exact.
        self.scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, 1.0)
        stride = bins + 3  # bin 0: below the first threshold; bins + 2: above the last
        bin_of = self._bin(thresholds, self.lo, self.scale).masked_fill_(~finite, stride)
        row_base = torch.arange(rows, device=device)[:, None] * (stride + 1)
        per_bin = torch.bincount((bin_of + row_base).view(-1), minlength=rows * (stride + 1))
        per_bin = per_bin.view(rows, stride + 1)[:, :stride]
        self.bin_start = torch.cumsum(per_bin, 1) - per_bin
        self.bin_count = per_bin
        lookup = torch.where(per_bin > 0, -1, self.bin_start)
        self.lookup = lookup.masked_fill_(~active[:, None], self.trash).to(torch.int32)

    def _bin(self, values, lo, scale, buffers=None) -> torch.Tensor:
        """Grid bins of ``values``; ``buffers`` (float, int64) shaped like ``values``."""
        if buffers is None:
            y = torch.empty_like(values)
            bins = torch.empty(values.shape, dtype=torch.int64, device=values.device)
        else:
            y, bins = buffers
        torch.sub(values, lo, out=y)
        y.mul_(scale).clamp_(-1.0, self.bins + 1.0).add_(1.0)
        return bins.copy_(y)  # truncation, as .to(int64)

    def locate(self, values: torch.Tensor, rows: slice, buffers=None) -> torch.Tensor:
        """Positions ``(r, W)`` int32 of ``values`` (of rows ``rows`` of the grid), -1 where a
        value shares its bin with a threshold. ``buffers``: (float, int64, int32) tensors
        shaped like ``values``, reused to avoid the page faults of fresh allocations."""
        bins = self._bin(values, self.lo[rows], self.scale[rows], buffers and buffers[:2])
        out = None if buffers is None else buffers[2]
        return torch.gather(self.lookup[rows], 1, bins, out=out)

    def locate_items(self, row: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """:meth:`locate` for single values ``value`` in rows ``row`` (1-D), as int64."""
        bins = self._bin(value, self.lo[row, 0], self.scale[row, 0])
        return self.lookup.view(-1).take(row * self.lookup.shape[1] + bins).long()

    def exact(self, row: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Positions of single values ``value`` in rows ``row`` (1-D), by comparing them with
        the few thresholds of their bin."""
        bins = self._bin(value, self.lo[row, 0], self.scale[row, 0])
        start, count = self.bin_start[row, bins], self.bin_count[row, bins]
        position = start.clone()
        last = self.thresholds.shape[1] - 1
        for offset in range(int(count.max()) if count.numel() else 0):
            threshold = self.thresholds[row, (start + offset).clamp(max=last)]
            position += (offset < count) & (threshold < value)
        return position


def _group_matches_before(matches, row, group, col):
    """How many matches of the group starting at ``group`` in row ``row`` have a gallery index
    below ``col``. One binary search over the flat int64 key ``(row, group start, index)``,
    sorted because matches are ordered by (distance, index) in each row."""
    rows, max_matches = matches.dist.shape
    stride = matches.gallery + 1  # > every index, including the padding index G
    starts = torch.searchsorted(matches.dist, matches.dist, side="left")
    row_base = torch.arange(rows, device=matches.dist.device)[:, None] * (max_matches + 1)
    keys = ((row_base + starts) * stride + matches.idx).flatten()
    base = (row * (max_matches + 1) + group) * stride
    return torch.searchsorted(keys, base + col) - torch.searchsorted(keys, base)


#: Integer views of the float dtypes whose bit patterns :func:`_histogram_keys` orders (float64
#: is left to the float grid: its keys do not fit the int32 arithmetic).
_KEY_DTYPES = {torch.float32: torch.int32}

#: The key histogram is used when a row has at least this many items per bin: with fewer, its
#: per-bin work (histogram, lookup table) outweighs the per-item savings.
KEY_ITEMS_PER_BIN = 8


def _keys_apply(values: torch.Tensor, matches: _Matches) -> bool:
    """Whether :func:`_histogram_keys` can place ``values``: a float32 block, long rows, and
    only positive thresholds in the queries with matches. The bit patterns of non-negative
    floats, read as integers, are ordered as the floats are; a negative or zero threshold
    (a match at distance 0 or below) would need the sign handled, and the float grid does it."""
    if values.dtype not in _KEY_DTYPES:
        return False
    if values.shape[1] < KEY_ITEMS_PER_BIN * 4 * matches.thresholds.shape[1]:
        return False
    lowest = matches.thresholds[:, 0]  # sorted: the smallest threshold (+inf without matches)
    return not bool(((lowest <= 0) & (matches.count > 0)).any())


class _KeyGrid:
    """Per-row bins over the integer keys (float32 bit patterns, as int32) of a group of rows'
    thresholds.

    Bin of a key: ``clamp((key >> shift) - start, 0, width - 1)`` with ``shift >= 1`` per row
    (so that a row's thresholds span about ``target`` bins) and ``start`` one below the bin of
    its smallest threshold. Shifts and integer subtractions are exact and monotone, and keys
    order non-negative floats (negative ones, and -0.0, read as negative integers, fall in
    bin 0, below every positive threshold), so an item and a threshold in different bins are
    ordered by their bins: only the items of the bins holding a threshold need a comparison.

    Tables, rows of ``stride = width + 1`` entries (the last column takes the thresholds that
    are not finite, or of rows without matches, and no item):

    - ``first (rows, stride)``, uint8 (int16/int32 for many thresholds): 0 for a bin without
      thresholds, else 1 + the index of the bin's first threshold in its row, the position
      from which an item of that bin is placed by comparisons; ``marked`` its bool mask;
    - ``run (rows, T)``: per threshold, the number of thresholds in its bin.

    Each item reads one byte of ``marked`` (bool, looked up as uint8), a table small enough to
    stay in cache; ``first`` is read for the few items of marked bins only.
    """

    def __init__(self, thresholds: torch.Tensor, active: torch.Tensor, target: int) -> None:
        rows, count = thresholds.shape
        device = thresholds.device
        keys = thresholds.view(torch.int32)
        finite = torch.isfinite(thresholds) & active[:, None]
        zero = torch.zeros_like(keys[:, :1])
        low = torch.where(finite[:, :1], keys[:, :1], zero)
        high = torch.where(finite, keys, low).amax(1, keepdim=True)
        span = (high - low).double() + 1
        self.shift = torch.ceil(torch.log2(span / target)).clamp_(min=1, max=30).int()
        self.start = (low >> self.shift) - 1
        top = (high >> self.shift) - self.start  # the last bin holding thresholds
        self.width = int(top.max()) + 2 if rows else 2
        self.stride = self.width + 1
        bins = self.bins(keys).long().masked_fill_(~finite, self.width)
        # Where at_most reads the cumulative histogram: below each threshold's bin, and the
        # last column (all items).
        self.read_at = torch.cat([bins - 1, torch.full_like(bins[:, :1], self.width)], dim=1)
        index = torch.arange(count, device=device).expand(rows, count)
        opens = torch.ones_like(finite)
        opens[:, 1:] = bins[:, 1:] != bins[:, :-1]
        first = torch.where(opens, index, 0).cummax(1).values
        closes = torch.ones_like(finite)
        closes[:, :-1] = opens[:, 1:]
        last = torch.where(closes, index, count).flip(1).cummin(1).values.flip(1)
        self.run = last - first + 1
        dtype = torch.uint8 if count < 255 else torch.int16 if count < 32767 else torch.int32
        table = torch.zeros((rows, self.stride), dtype=dtype, device=device)
        # Thresholds of one bin write the same value: the scatter's order does not matter.
        self.first = table.scatter_(1, bins, (first + 1).to(dtype))
        self.marked = self.first != 0
        # The longest run of one bin (not the spare column's, which no item reaches).
        self.max_run = int(self.run[finite].max()) if bool(finite.any()) else 0

    def bins(
        self, keys: torch.Tensor, rows: slice = slice(None), out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Bins ``(r, n)`` int32 of int32 keys ``(r, n)`` of the grid's rows ``rows``."""
        out = torch.bitwise_right_shift(keys, self.shift[rows], out=out)
        # A clamp to scalar bounds: clamping to per-row bounds (to fold the row offsets of
        # the histogram into the subtraction) measured twice as slow as the two passes.
        return out.sub_(self.start[rows]).clamp_(0, self.width - 1)

    def bins_of(self, keys: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        """Bins (int64) of single int32 keys ``keys`` in rows ``row`` (1-D) of the grid."""
        shift, start = self.shift.view(-1)[row], self.start.view(-1)[row]
        return (torch.bitwise_right_shift(keys, shift) - start).clamp_(0, self.width - 1).long()

    def at_most(self, hist: torch.Tensor, rows: slice, out: torch.Tensor) -> torch.Tensor:
        """``out (r, T + 1)``: per threshold j of rows ``rows``, the items of unmarked bins
        counted in ``hist (r, stride)`` (a histogram of bins, marked bins ignored) at positions
        <= j, then all of them. An item of an unmarked bin b has position #{k: bin_k < b},
        which is <= j exactly when b < bin_j. ``hist`` is overwritten."""
        hist.masked_fill_(self.marked[rows], 0).cumsum_(1)
        return torch.gather(hist, 1, self.read_at[rows], out=out)

    def exact(
        self,
        thresholds: torch.Tensor,
        row: torch.Tensor,
        first: torch.Tensor,
        value: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (#thresholds below) of single values ``value`` in rows ``row`` (1-D, of
        the group) whose bins' ``first`` entries are given, by comparing them with the few
        thresholds of their bin; and whether each equals one of them (a possible tie)."""
        count = thresholds.shape[1]
        start = first.long() - 1
        flat = thresholds.reshape(-1)
        at = row * count + start
        threshold = flat.take(at)
        position = start + (threshold < value)
        equal = threshold == value
        # Most marked bins hold one pair {prev(v), v}: the second threshold is compared with
        # every item (masked), the further ones only with the few items of larger runs.
        run = self.run.reshape(-1).take(at)
        if self.max_run > 1:
            inside = run > 1
            threshold = flat.take((at + 1).clamp_(max=flat.numel() - 1))
            position += inside & (threshold < value)
            equal |= inside & (threshold == value)
        (index,) = (run > 2).nonzero(as_tuple=True)
        run = run[index]
        for offset in range(2, self.max_run):
            more = run > offset
            index, run = index[more], run[more]
            if not index.numel():
                break
            threshold = flat.take(at[index] + offset)
            item_value = value[index]
            position.index_add_(0, index, (threshold < item_value).long())
            equal[index] |= threshold == item_value
        return position, equal


def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices of the true entries of a contiguous bool ``mask`` (numpy's is about three
    times faster than torch's on CPU, and its bool path several times its integer one)."""
    if mask.device.type == "cpu":
        import numpy as np

        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.view(-1).nonzero()[:, 0]


def _histogram_keys(
    values: torch.Tensor,
    matches: _Matches,
    excluded: torch.Tensor,
    present: torch.Tensor,
    junk_cols: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_histogram` by integer keys (for :func:`_keys_apply` blocks): the same
    ``counts (B, 2 Mmax + 1)`` and ``tie_fix (B, Mmax)``.

    Per item, in int32: its bin (:class:`_KeyGrid`: a shift, a subtraction and a clamp), its
    row's offset, one histogram of the bins and one byte looked up (does the bin hold a
    threshold). Per slice of rows, the cumulative sum of each row's histogram (marked bins
    left out) read below each threshold's bin counts the items of unmarked bins at or below
    each position (:meth:`_KeyGrid.at_most`). Only the items of marked bins (about
    ``thresholds / bins`` of them) are compared with thresholds, a group of rows at once.
    Every item is counted, the query identity's own included; those few (``excluded``
    ``(B, L)`` where ``present``) are placed by a binary search and taken off, and left out
    of the ties. Junk columns are dropped from the block first.
    """
    device = values.device
    if junk_cols is not None:
        kept = (~junk_cols).nonzero()[:, 0]
        new_index = torch.cumsum(~junk_cols, 0) - 1
        values = values.index_select(1, kept)
        excluded = new_index[excluded]
        idx = torch.where(
            matches.idx < matches.gallery,
            new_index[matches.idx.clamp(max=matches.gallery - 1)],
            kept.numel(),
        )
        matches = _Matches(matches.dist, idx, matches.count, kept.numel(), matches.thresholds)
    rows, width = values.shape
    count = matches.thresholds.shape[1]
    positions = count + 1
    counts = torch.zeros((rows, positions), dtype=torch.int64, device=device)
    tie_fix = torch.zeros(matches.dist.shape, dtype=torch.int64, device=device)
    ties = _TieCollector(matches, tie_fix)
    own = _OwnItems(excluded, present, width)
    at_most = torch.empty((rows, positions), dtype=torch.int64, device=device)
    keys = values.view(torch.int32)
    if device.type == "cpu":
        row_step = max(1, KEY_SLICE_ELEMENTS // max(width, 1))
        col_step = width if row_step > 1 else KEY_SLICE_ELEMENTS
    else:
        row_step, col_step = rows, width
    size = min(row_step, rows) * min(col_step, width)
    # Reused buffers: fresh large allocations cost page faults on every slice.
    buffer = torch.empty(size, dtype=torch.int32, device=device)
    looked = torch.empty(size, dtype=torch.uint8, device=device)
    target = min(_grid_bins(width, count), max(width // max(KEY_ITEMS_PER_BIN, 1), 2))
    group_rows = max(row_step, min(rows, KEY_GRID_ENTRIES // target))
    for g0 in range(0, rows, group_rows):
        group = slice(g0, min(g0 + group_rows, rows))
        local = matches.rows(group)
        grid = _KeyGrid(local.thresholds, local.count > 0, target)
        offsets = torch.arange(row_step, device=device, dtype=torch.int32)[:, None] * grid.stride
        found = []  # flat indices (row * width + column, in the group) of marked items
        for r0 in range(group.start, group.stop, row_step):
            r1 = min(r0 + row_step, group.stop)
            part = slice(r0 - g0, r1 - g0)
            # The slice's rows, indexed by the flat bins: a byte lookup (0/1) is the cheapest.
            table = grid.marked[part].view(-1).view(torch.uint8)
            hist = None
            for c0 in range(0, width, col_step):
                c1 = min(c0 + col_step, width)
                shape = (r1 - r0, c1 - c0)
                flat = buffer[: shape[0] * shape[1]].view(shape)
                grid.bins(keys[r0:r1, c0:c1], part, flat).add_(offsets[: shape[0]])
                flat = flat.view(-1)
                # Bins of the slice's rows only: (rows of the slice) x stride.
                sliced = torch.bincount(flat, minlength=(r1 - r0) * grid.stride)
                hist = sliced if hist is None else hist.add_(sliced)
                looked_up = torch.index_select(table, 0, flat, out=looked[: flat.numel()])
                at = _flat_nonzero(looked_up.view(torch.bool))
                if shape[1] == width:
                    found.append(at + (r0 - g0) * width)
                else:
                    found.append((at // shape[1] + (r0 - g0)) * width + (at % shape[1] + c0))
            assert hist is not None
            grid.at_most(hist.view(r1 - r0, grid.stride), part, out=at_most[r0:r1])
        # The items of marked bins, placed by comparisons with their bin's thresholds.
        item = torch.cat(found)
        row = item // width
        col = item - row * width
        key = keys[group].reshape(-1).take(item)
        first = grid.first.view(-1).take(grid.bins_of(key, row) + row * grid.stride)
        value = key.view(values.dtype)
        position, equal = grid.exact(local.thresholds, row, first, value)
        counts[group] += torch.bincount(
            row * positions + position, minlength=(group.stop - g0) * positions
        ).view(-1, positions)
        if bool(equal.any()):  # rare, but for the identity's own items
            (tied,) = equal.nonzero(as_tuple=True)
            tied = tied[~own.contains(row[tied] + g0, col[tied])]
            ties.add(row[tied] + g0, col[tied], value[tied], position[tied])
    counts += at_most.diff(dim=1, prepend=at_most.new_zeros(rows, 1))
    # Every item was counted, the query identity's own too: those come off, placed exactly.
    own_value = values.gather(1, excluded)
    own_position = torch.searchsorted(matches.thresholds, own_value)
    own_position += torch.arange(rows, device=device)[:, None] * positions
    taken = torch.bincount(own_position[present], minlength=rows * positions)
    counts -= taken.view(rows, positions)
    ties.flush()
    return counts, tie_fix


class _OwnItems:
    """The query identity's own items of a block, ``excluded (B, L)`` gallery indices
    ascending in each row where ``present``, as sorted flat keys ``row * width + column``."""

    def __init__(self, excluded: torch.Tensor, present: torch.Tensor, width: int) -> None:
        rows = torch.arange(excluded.shape[0], device=excluded.device)[:, None]
        self.keys, self.width = (excluded + rows * width)[present], width

    def contains(self, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """Whether each item ``(row, col)`` (1-D) is one of them."""
        key = row * self.width + col
        if not self.keys.numel():
            return torch.zeros_like(key, dtype=torch.bool)
        at = torch.searchsorted(self.keys, key).clamp_(max=self.keys.numel() - 1)
        return self.keys.take(at) == key
