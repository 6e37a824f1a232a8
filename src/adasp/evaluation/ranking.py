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
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from adasp.errors import UserInputError
from adasp.evaluation.match_ranks import match_ranks

#: Average-precision variants; see :func:`evaluate_ranking`.
AP_MODES = ("standard", "trapezoid")

#: Default number of distance-matrix elements evaluated at once (rows × gallery size): one
#: block is ~64 MB of float32, whatever the matrix size.
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def as_tensor(values: Any, name: str, device: torch.device | str | None = None) -> torch.Tensor:
    """``values`` (numpy array, torch tensor, or sequence) as a tensor, on ``device`` if given."""
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError) as error:
            raise UserInputError(f"{name} must be a numeric array; got {type(values)!r}") from error
    return tensor if device is None else tensor.to(device)


def as_ids(values: Any, name: str, length: int | None = None, device=None) -> torch.Tensor:
    """Integer identity or camera labels as a 1-D int64 tensor of the expected ``length``."""
    ids = as_tensor(values, name, device)
    if ids.dim() != 1:
        raise UserInputError(f"{name} must be 1-D; got shape {tuple(ids.shape)}")
    if length is not None and ids.numel() != length:
        raise UserInputError(
            f"{name} has {ids.numel()} entries but the distance matrix / features need {length}"
        )
    if ids.dtype.is_floating_point:
        if not torch.equal(ids, ids.round()):
            raise UserInputError(f"{name} must hold integer labels; got non-integer values")
    elif ids.dtype == torch.bool or ids.is_complex():
        raise UserInputError(f"{name} must hold integer labels; got dtype {ids.dtype}")
    return ids.to(torch.int64)


def check_choice(value: str, allowed: Sequence[str], name: str) -> str:
    """``value`` if it is one of ``allowed``, else a UserInputError listing the choices."""
    if value not in allowed:
        raise UserInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


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
    ) -> None:
        if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)):
            raise UserInputError(f"max_rank must be a positive integer; got {max_rank!r}")
        if max_rank < 1:
            raise UserInputError(f"max_rank must be a positive integer; got {max_rank}")
        self.ap_mode = check_choice(ap_mode, AP_MODES, "ap_mode")
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
        )
        ap, inp, first = _metrics_from_ranks(ranks, num_matches, self.ap_mode)
        valid = ~torch.isnan(ap)
        self.num_queries += rows
        self.num_valid_queries += int(valid.sum())
        self._ap.append(ap.cpu())
        self._inp.append(inp.cpu())
        first = first[valid].clamp(max=self.max_rank).cpu()
        self._cmc_counts += torch.bincount(first, minlength=self.max_rank + 1)[: self.max_rank]

    def result(self) -> dict[str, Any]:
        """The metrics over every query added so far (see :func:`evaluate_ranking`)."""
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
    ``num_valid_queries`` nor in the means. If no query is valid, every metric is 0 and
    ``num_valid_queries`` is 0 (no exception: check that field).

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


def resolve_chunk_size(chunk_size: int | None, num_gallery: int) -> int:
    """Query rows per step: ``chunk_size``, or about :data:`DEFAULT_CHUNK_ELEMENTS` / G."""
    if chunk_size is None:
        return max(1, DEFAULT_CHUNK_ELEMENTS // max(num_gallery, 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise UserInputError(f"chunk_size must be a positive integer or None; got {chunk_size!r}")
    if chunk_size < 1:
        raise UserInputError(f"chunk_size must be a positive integer or None; got {chunk_size}")
    return int(chunk_size)


def summarize(result: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of an evaluation result, as fractions in [0, 1].

    Returns ``{"mAP", "rank1", "rank5", "rank10", "mINP", "num_valid_queries"}``; a rank-k
    beyond the length of the result's CMC curve is NaN.
    """
    try:
        cmc = np.asarray(result["cmc"], dtype=np.float64)
        summary = {"mAP": float(result["mAP"])}
        for k in (1, 5, 10):
            summary[f"rank{k}"] = float(cmc[k - 1]) if cmc.size >= k else math.nan
        summary["mINP"] = float(result["mINP"])
        summary["num_valid_queries"] = int(result["num_valid_queries"])
    except (KeyError, TypeError) as error:
        raise UserInputError(
            "summarize() needs a result of evaluate_ranking/evaluate_features with keys "
            f"mAP, cmc, mINP, num_valid_queries; got {error}"
        ) from error
    return summary
