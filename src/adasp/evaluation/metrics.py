"""Exact ranking metrics (mAP, CMC, mINP) without sorting the query × gallery matrix.

Only the ranks of a query's true matches matter: :mod:`adasp.evaluation.match_ranks` finds
them exactly, as a stable full argsort would place them, with a few cheap passes over each
row instead of the O(G log G) sort the usual evaluators run. This module turns the ranks into
the metrics and accumulates them over blocks of queries.

Protocol (Market-1501, also used for DukeMTMC-reID, CUHK03-np, MSMT17, VeRi-776, VERI-WILD):
for each query, gallery items with the same identity *and* the same camera are junk and are
removed from its ranking; gallery items whose identity is ``junk_pid`` (-1: Market-1501's
"junk" images in bounding_box_test) are removed for every query, exactly as the original
Market-1501 evaluation code does; distractors (Market's identity 0) stay as ordinary
non-matches. Queries with no remaining match are skipped and counted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from adasp.errors import UserInputError
from adasp.evaluation.inputs import as_ids, as_tensor, check_choice, resolve_chunk_size
from adasp.evaluation.match_ranks import LOCATE_METHODS, match_ranks, part_workers

#: Average-precision variants; see :func:`evaluate_ranking`.
AP_MODES = ("standard", "trapezoid")


def _as_distances(distances: torch.Tensor) -> torch.Tensor:
    """Distances in a dtype compared exactly (half precision widened, integers as float64)."""
    if distances.dtype in (torch.float16, torch.bfloat16):
        return distances.float()
    if distances.dtype == torch.bool or distances.is_complex():
        raise UserInputError(f"the distance matrix must be real-valued; got {distances.dtype}")
    if not distances.dtype.is_floating_point:
        return distances.double()  # integer distances: exact up to 2**53
    return distances


class RankingEvaluator:
    """Accumulates mAP, CMC and mINP over chunks of query rows of a distance matrix.

    Build it once per gallery, call :meth:`add` with each block of query rows (any number,
    in any order), then :meth:`result`. Memory is proportional to one block.

    Args:
        g_pids: ``(G,)`` gallery identities (integers).
        g_camids: ``(G,)`` gallery cameras (integers; ignored when ``camera_filter`` is False).
        max_rank: length of the CMC curve.
        camera_filter: remove same-identity same-camera gallery items per query (Market
            protocol); False keeps them as matches (VehicleID, data without cameras).
        ap_mode: ``"standard"`` or ``"trapezoid"`` (see :func:`evaluate_ranking`).
        junk_pid: gallery identity removed from every ranking (Market's -1); None keeps all.
        device: where the gallery labels live; distance blocks are moved there.
        locate: how weak models' rankings are searched (:func:`match_ranks`): ``"keys"``
            (default, faster) or ``"grid"`` (the earlier method, kept to compare); the
            results are identical.
        threads: Python threads that place a weak ranking's items at once on the CPU
            (:func:`match_ranks`; None: torch's intra-op thread count). The results do not
            depend on it.
    """

    def __init__(
        self,
        g_pids: Any,
        g_camids: Any,
        max_rank: int = 50,
        *,
        camera_filter: bool = True,
        ap_mode: str = "standard",
        junk_pid: int | None = -1,
        device: torch.device | str | None = None,
        locate: str = "keys",
        threads: int | None = None,
    ) -> None:
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise UserInputError(f"threads must be a positive integer or None; got {threads!r}")
        self.threads = threads
        if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)):
            raise UserInputError(f"max_rank must be a positive integer; got {max_rank!r}")
        if max_rank < 1:
            raise UserInputError(f"max_rank must be a positive integer; got {max_rank}")
        self.ap_mode = check_choice(ap_mode, AP_MODES, "ap_mode")
        self.locate = check_choice(locate, LOCATE_METHODS, "locate")
        self.max_rank = int(max_rank)
        self.camera_filter = bool(camera_filter)
        if device is None and isinstance(g_pids, torch.Tensor):
            device = g_pids.device
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.g_pids = as_ids(g_pids, "g_pids", device=self.device)
        self.g_camids = as_ids(g_camids, "g_camids", self.g_pids.numel(), self.device)
        self.num_gallery = self.g_pids.numel()
        if self.num_gallery == 0:
            raise UserInputError(
                "the gallery is empty: there is nothing to rank the queries against"
            )
        # The gallery grouped by identity (indices ascending within an identity): a query's
        # same-identity items are one contiguous slice, found with two binary searches.
        self._sorted_pids, self._pid_order = torch.sort(self.g_pids, stable=True)
        self.junk_pid = junk_pid
        junk = None if junk_pid is None else self.g_pids == junk_pid
        self._junk_cols = junk if junk is not None and bool(junk.any()) else None
        self._ap: list[torch.Tensor] = []
        self._inp: list[torch.Tensor] = []
        self._cmc_counts = torch.zeros(self.max_rank, dtype=torch.int64)
        self.num_queries = 0
        self.num_valid_queries = 0
        # Why queries had no valid match (reported when none has one): their identity is the
        # junk id, is absent from the gallery, or has only same-camera gallery items.
        self._no_match = {"junk": 0, "absent": 0, "same_camera": 0}

    def add(self, distances: Any, q_pids: Any, q_camids: Any) -> None:
        """Evaluate a block of queries: ``distances`` ``(B, G)``, ``q_pids``/``q_camids`` ``(B,)``.

        Smaller distance means more similar. Rows are treated independently, so blocks can
        come from any split of the queries.
        """
        dist = _as_distances(as_tensor(distances, "distances", self.device)).contiguous()
        if dist.dim() != 2 or dist.shape[1] != self.num_gallery:
            raise UserInputError(
                f"distances must have shape (num_queries, {self.num_gallery}) to match the "
                f"gallery labels; got {tuple(dist.shape)}"
            )
        rows = dist.shape[0]
        q_pids = as_ids(q_pids, "q_pids", rows, self.device)
        q_camids = as_ids(q_camids, "q_camids", rows, self.device)
        if rows == 0:
            return
        # One cheap reduction (min and max propagate NaN) instead of isnan().any().
        low, high = torch.aminmax(dist)
        finfo = torch.finfo(dist.dtype)
        if bool(torch.isnan(high)) or bool(low <= -finfo.max) or bool(high >= finfo.max):
            raise UserInputError(
                "the distance matrix contains NaN or an infinite (or extreme) value; check the "
                "features (NaN values, or all-zero vectors under cosine distance), and to push "
                "gallery items to the end of a ranking use a large finite distance, not inf"
            )
        ranks, num_matches = match_ranks(
            dist,
            q_pids,
            q_camids,
            self.g_camids,
            self._sorted_pids,
            self._pid_order,
            self._junk_cols,
            self.camera_filter,
            self.locate,
            part_workers(torch.get_num_threads() if self.threads is None else self.threads),
        )
        ap, inp, first = _metrics_from_ranks(ranks, num_matches, self.ap_mode)
        valid = ~torch.isnan(ap)
        self.num_queries += rows
        self.num_valid_queries += int(valid.sum())
        if not bool(valid.all()):
            self._count_no_match(q_pids[~valid])
        self._ap.append(ap.cpu())
        self._inp.append(inp.cpu())
        first = first[valid].clamp(max=self.max_rank).cpu()
        self._cmc_counts += torch.bincount(first, minlength=self.max_rank + 1)[: self.max_rank]

    def _count_no_match(self, pids: torch.Tensor) -> None:
        """Count the queries of identities ``pids`` (that have no valid match) by cause."""
        junk = (
            pids == self.junk_pid
            if self.junk_pid is not None
            else torch.zeros_like(pids, dtype=torch.bool)
        )
        in_gallery = torch.searchsorted(self._sorted_pids, pids, right=True) > torch.searchsorted(
            self._sorted_pids, pids
        )
        self._no_match["junk"] += int(junk.sum())
        self._no_match["absent"] += int((~junk & ~in_gallery).sum())
        self._no_match["same_camera"] += int((~junk & in_gallery).sum())

    def _no_valid_query_message(self) -> str:
        if self.num_queries == 0:
            return "there are no queries to evaluate: the query set is empty"
        counts = self._no_match

        def have(n: int) -> str:
            return f"{n} {'has' if n == 1 else 'have'}"

        causes = []
        if counts["same_camera"]:
            causes.append(
                f"{have(counts['same_camera'])} gallery images of their identity only from "
                "their own camera (removed by the same-camera filter of the Market protocol; "
                "if the camera ids are not real cameras, evaluate with camera_filter=False)"
            )
        if counts["absent"]:
            causes.append(f"{have(counts['absent'])} an identity absent from the gallery")
        if counts["junk"]:
            causes.append(
                f"{have(counts['junk'])} the junk identity {self.junk_pid} (junk gallery "
                "images are removed from every ranking)"
            )
        queries = f"{self.num_queries} {'query' if self.num_queries == 1 else 'queries'}"
        return (
            f"no query has a valid match in the gallery: of {queries}, "
            + "; ".join(causes)
            + ". Check that query and gallery hold the same identities, seen by other cameras"
        )

    def result(self) -> dict[str, Any]:
        """The metrics over every query added so far (see :func:`evaluate_ranking`).

        Raises:
            UserInputError: no query has a valid match (or there are no queries); the message
                says how many queries there were and which filtering removed their matches.
        """
        if self.num_valid_queries == 0:
            raise UserInputError(self._no_valid_query_message())
        ap = torch.cat(self._ap).numpy() if self._ap else np.zeros(0)
        inp = torch.cat(self._inp).numpy() if self._inp else np.zeros(0)
        valid = self.num_valid_queries
        if valid == 0:
            cmc = np.zeros(self.max_rank, dtype=np.float64)
            mean_ap = mean_inp = 0.0
        else:
            cmc = np.cumsum(self._cmc_counts.numpy()).astype(np.float64) / valid
            mean_ap = float(np.nansum(ap) / valid)
            mean_inp = float(np.nansum(inp) / valid)
        return {
            "mAP": mean_ap,
            "cmc": cmc,
            "mINP": mean_inp,
            "num_valid_queries": valid,
            "num_queries": self.num_queries,
            "ap": ap,
            "inp": inp,
        }


def _metrics_from_ranks(
    ranks: torch.Tensor, num_matches: torch.Tensor, ap_mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-query AP, INP (NaN where no match) and first-match rank from the 0-based match
    ranks ``(B, Mmax)`` (increasing; entries beyond ``num_matches`` ignored), in float64."""
    device = ranks.device
    rows, max_matches = ranks.shape
    has_match = num_matches > 0
    nan = torch.full((rows,), math.nan, dtype=torch.float64, device=device)
    if max_matches == 0:
        return nan, nan.clone(), torch.zeros(rows, dtype=torch.int64, device=device)
    order = torch.arange(1, max_matches + 1, device=device, dtype=torch.float64)
    rank_f = ranks.to(torch.float64)
    keep = order <= num_matches[:, None]
    precision = order / (rank_f + 1)
    if ap_mode == "trapezoid":
        # Original Market-1501 code: area under the precision-recall curve by trapezoids; the
        # precision just before the k-th match, at 0-based rank r, is (k-1)/r (1 when r = 0).
        before = torch.where(ranks > 0, (order - 1) / rank_f.clamp(min=1), 1.0)
        per_match = (before + precision) / 2
    else:
        per_match = precision
    ap = (per_match * keep).sum(1) / num_matches.clamp(min=1)
    last_rank = ranks.gather(1, (num_matches - 1).clamp(min=0)[:, None])[:, 0]
    inp = num_matches / (last_rank.to(torch.float64) + 1)
    return torch.where(has_match, ap, nan), torch.where(has_match, inp, nan), ranks[:, 0]


def evaluate_ranking(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    *,
    camera_filter: bool = True,
    ap_mode: str = "standard",
    junk_pid: int | None = -1,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """mAP, CMC and mINP of a query × gallery distance matrix (smaller = more similar).

    Identical to stably argsorting every row and scanning it (the usual evaluators), but only
    the true matches' ranks are computed, so it is several times faster and its memory is
    bounded by one chunk of rows.

    Definitions, per query, over its ranking after removing junk (same identity and same
    camera when ``camera_filter``; gallery identity ``junk_pid`` always). Ties in distance are
    broken by gallery index (a stable sort). With M matches at 1-based ranks r_1 < ... < r_M:

    - AP, ``ap_mode="standard"``: ``mean_k k / r_k``, the non-interpolated average precision
      of torchreid, fast-reid and most published numbers.
    - AP, ``ap_mode="trapezoid"``: ``mean_k ((k-1)/(r_k-1) + k/r_k) / 2`` with the first
      term 1 when r_k = 1: the trapezoidal area of the original Market-1501 MATLAB evaluation
      code (and the layumi baseline); slightly higher than the standard AP.
    - CMC@k: 1 if r_1 <= k. If a filtered gallery is shorter than ``max_rank`` the curve stays
      at its last value.
    - INP: ``M / r_M`` (Ye et al., 2021).

    Queries without any match are skipped: they count in ``num_queries`` but not in
    ``num_valid_queries`` nor in the means. If no query is valid, a :class:`UserInputError`
    says how many queries there were and why they have no match (same-camera filter, identity
    absent from the gallery, junk identity): a metric of 0 would read as a model failure.

    Args:
        distmat: ``(Q, G)`` numpy array or torch tensor (CPU or CUDA), any real dtype.
        q_pids, g_pids: ``(Q,)``, ``(G,)`` integer identities.
        q_camids, g_camids: ``(Q,)``, ``(G,)`` integer cameras.
        max_rank: length of the CMC curve.
        camera_filter: False keeps same-camera matches (VehicleID, data without cameras).
        ap_mode: ``"standard"`` or ``"trapezoid"``.
        junk_pid: gallery identity dropped from every ranking (Market-1501's -1; distractors,
            identity 0, are kept); None drops nothing.
        chunk_size: query rows per step (default: about 16 M matrix elements per step).

    Returns:
        ``{"mAP": float, "cmc": (max_rank,) float64 array, "mINP": float,
        "num_valid_queries": int, "num_queries": int, "ap": (Q,) array, "inp": (Q,) array}``;
        metrics are fractions in [0, 1]; ``ap``/``inp`` are per query, NaN where skipped.
    """
    dist = as_tensor(distmat, "distmat")
    if dist.dim() != 2:
        raise UserInputError(
            f"distmat must be a 2-D (num_queries, num_gallery) matrix; got {tuple(dist.shape)}"
        )
    num_q, num_g = dist.shape
    q_pids = as_ids(q_pids, "q_pids", num_q, dist.device)
    q_camids = as_ids(q_camids, "q_camids", num_q, dist.device)
    g_pids = as_ids(g_pids, "g_pids", num_g, dist.device)
    g_camids = as_ids(g_camids, "g_camids", num_g, dist.device)
    evaluator = RankingEvaluator(
        g_pids,
        g_camids,
        max_rank,
        camera_filter=camera_filter,
        ap_mode=ap_mode,
        junk_pid=junk_pid,
        device=dist.device,
    )
    step = resolve_chunk_size(chunk_size, num_g)
    for begin in range(0, num_q, step):
        rows = slice(begin, min(begin + step, num_q))
        evaluator.add(dist[rows], q_pids[rows], q_camids[rows])
    return evaluator.result()


def summarize(result: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of an evaluation result, as fractions in [0, 1]:
    ``{"mAP", "rank1", "rank5", "rank10", "mINP", "num_valid_queries"}`` (the dict form of
    :class:`~adasp.evaluation.results.RankingMetrics`); a rank-k beyond the length of the
    result's CMC curve is NaN."""
    from adasp.evaluation.results import RankingMetrics

    return RankingMetrics.from_result(result).as_dict()
