"""Two evaluated runs on the same test set, query by query (``adasp compare``).

For each query, the AP difference ``AP_B - AP_A`` (B is the second run); how many queries
improved, worsened or stayed within ``tolerance``; the queries that changed most; and paired
bootstrap intervals of ΔmAP and ΔR1: resample the valid queries with replacement
``resamples`` times, keep each resample's mean per-query difference, and take the central
``level`` quantiles (percentile bootstrap). The pairing (the same queries in both runs) is what
makes the interval narrow enough to tell small changes from query sampling noise; it says
nothing about training noise (seeds: ``adasp report --baseline``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from adasp.errors import UserInputError
from adasp.evaluation.query_results import QueryResults, short_names
from adasp.utils.tables import format_table

#: Bootstrap resamples by default.
RESAMPLES = 1000

#: |ΔAP| at or below which a query counts as unchanged.
TOLERANCE = 1e-3


@dataclass(frozen=True)
class BootstrapInterval:
    """A paired difference's mean over the queries and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    resamples: int
    level: float


@dataclass(frozen=True)
class RunComparison:
    """Run B against run A on one test set (see the module docstring)."""

    a: QueryResults
    b: QueryResults
    label_a: str
    label_b: str
    delta_ap: np.ndarray  # (Q,) AP_B - AP_A; NaN where the query has no valid match
    improved: int
    worsened: int
    same: int
    tolerance: float
    delta_map: BootstrapInterval
    delta_rank1: BootstrapInterval

    @property
    def test_set(self) -> str:
        return self.a.test_set

    def largest_changes(self, count: int) -> np.ndarray:
        """Indices of the ``count`` valid queries of largest |ΔAP| (ties by index)."""
        valid = np.flatnonzero(~np.isnan(self.delta_ap))
        order = np.argsort(-np.abs(self.delta_ap[valid]), kind="stable")
        return valid[order[: max(count, 0)]]


def paired_bootstrap(
    differences: np.ndarray, resamples: int = RESAMPLES, level: float = 0.95, seed: int = 0
) -> BootstrapInterval:
    """The mean of per-query ``differences`` and its percentile bootstrap interval.

    Raises:
        UserInputError: no differences, fewer than 1 resample or a level outside (0, 1).
    """
    values = np.asarray(differences, dtype=np.float64)
    if values.size == 0:
        raise UserInputError("a bootstrap interval needs at least one query with a valid match")
    if resamples < 1:
        raise UserInputError(f"--resamples must be at least 1; got {resamples}")
    if not 0 < level < 1:
        raise UserInputError(f"the interval level must lie in (0, 1); got {level}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 4_000_000 // values.size)  # bounded memory per block of resamples
    for begin in range(0, resamples, step):
        count = min(step, resamples - begin)
        means[begin : begin + count] = values[
            rng.integers(0, values.size, (count, values.size))
        ].mean(1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return BootstrapInterval(float(values.mean()), float(low), float(high), resamples, level)


def check_same_test_set(a: QueryResults, b: QueryResults) -> None:
    """Raise a one-line error unless ``a`` and ``b`` rank the same queries against the same
    gallery (compared by file name, identity and camera: the dataset may have moved)."""

    def signature(paths: np.ndarray, pids: np.ndarray, camids: np.ndarray) -> list[tuple]:
        names = [os.path.basename(str(p)) for p in paths]
        return list(zip(names, pids.tolist(), camids.tolist(), strict=True))

    if a.test_set != b.test_set:
        raise UserInputError(
            f"the runs evaluated different test sets: {a.test_set} and {b.test_set}"
        )
    for what, x, y in (
        ("queries", (a.query_paths, a.query_pids, a.query_camids), (b.query_paths, b.query_pids, b.query_camids)),
        ("gallery", (a.gallery_paths, a.gallery_pids, a.gallery_camids), (b.gallery_paths, b.gallery_pids, b.gallery_camids)),
    ):  # fmt: skip
        if len(x[0]) != len(y[0]) or signature(*x) != signature(*y):
            raise UserInputError(
                f"{a.test_set}: the two runs' {what} differ ({len(x[0])} and {len(y[0])} "
                "images, or other files): compare evaluations of the same test set"
            )


def compare_query_results(
    a: QueryResults,
    b: QueryResults,
    *,
    label_a: str = "A",
    label_b: str = "B",
    resamples: int = RESAMPLES,
    tolerance: float = TOLERANCE,
    level: float = 0.95,
    seed: int = 0,
) -> RunComparison:
    """Compare run B with run A query by query (see the module docstring).

    Raises:
        UserInputError: the runs evaluated different test sets, or no query is valid.
    """
    check_same_test_set(a, b)
    valid = a.valid & b.valid
    delta = np.where(valid, b.ap - a.ap, np.nan)
    changed = delta[valid]
    r1 = (b.first_match[valid] == 1).astype(np.float64) - (a.first_match[valid] == 1)
    return RunComparison(
        a=a,
        b=b,
        label_a=label_a,
        label_b=label_b,
        delta_ap=delta,
        improved=int((changed > tolerance).sum()),
        worsened=int((changed < -tolerance).sum()),
        same=int((np.abs(changed) <= tolerance).sum()),
        tolerance=tolerance,
        delta_map=paired_bootstrap(changed, resamples, level, seed),
        delta_rank1=paired_bootstrap(r1, resamples, level, seed + 1),
    )


def _points(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:+.2f}"


def interval_text(interval: BootstrapInterval) -> str:
    """E.g. ``+2.18 [+1.50, +2.90]`` (percentage points)."""
    return f"{_points(interval.mean)} [{_points(interval.low)}, {_points(interval.high)}]"


def format_comparison(comparison: RunComparison, top: int = 10) -> str:
    """The plain-text summary ``adasp compare`` prints."""
    c = comparison
    valid = int((~np.isnan(c.delta_ap)).sum())
    level = f"{100 * c.delta_map.level:g}%"
    headline = format_table(
        ["metric", c.label_a, c.label_b, f"Δ (B - A) [{level} interval]"],
        [
            ["mAP", f"{100 * c.a.mean_ap:.2f}", f"{100 * c.b.mean_ap:.2f}", interval_text(c.delta_map)],
            ["R1", f"{100 * c.a.rank1:.2f}", f"{100 * c.b.rank1:.2f}", interval_text(c.delta_rank1)],
        ],
    )  # fmt: skip
    names = short_names(c.a.query_paths.tolist())
    changes = [
        [
            names[i],
            str(int(c.a.query_pids[i])),
            str(int(c.a.query_camids[i])),
            f"{c.a.ap[i]:.3f}",
            f"{c.b.ap[i]:.3f}",
            f"{c.delta_ap[i]:+.3f}",
            str(int(c.a.first_match[i])),
            str(int(c.b.first_match[i])),
        ]
        for i in c.largest_changes(top)
    ]
    lines = [
        f"{c.test_set}: {c.a.num_queries} queries, {valid} with a valid match in both runs",
        headline,
        f"(percentage points; paired percentile bootstrap over the {valid} queries, "
        f"{c.delta_map.resamples} resamples)",
        f"AP per query: {c.improved} improved, {c.worsened} worsened, {c.same} the same "
        f"(|ΔAP| <= {c.tolerance:g})",
    ]
    if changes:
        lines += [
            f"largest changes (top {len(changes)}):",
            format_table(
                ["query", "id", "cam", f"AP {c.label_a}", f"AP {c.label_b}", "ΔAP",
                 f"1st {c.label_a}", f"1st {c.label_b}"],
                changes,
            ),
        ]  # fmt: skip
    return "\n".join(lines)
