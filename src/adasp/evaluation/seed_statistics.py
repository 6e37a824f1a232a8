"""Statistics over training seeds: mean ± standard deviation per cell, and paired differences
against a baseline cell with a Student t-interval.

A sweep with a ``train.seed`` axis trains every cell (one combination of the other axes) once
per seed. The spread over seeds measures how far a result moves when only the training
randomness changes (initial weights, P×K sampler, augmentation, dropout); it does not include
the sampling of the test queries, which all runs share.

Two cells are compared seed by seed: ``d_s = m(cell, s) - m(baseline, s)`` over the n seeds
both cells finished. When the cells differ only in, say, the loss, one seed gives both the same
initial weights, batches and augmented images, so the pairing cancels the noise they share.
The 95 % interval is the two-sided Student t-interval of the mean difference,

    mean(d) ± t_{0.975, n-1} · std(d, ddof=1) / sqrt(n),

which assumes the per-seed differences are independent draws of a roughly normal variable.
A difference is *distinguishable from seed noise* when its interval excludes 0.

The t quantile comes from the closed-form CDF of Student's t for integer degrees of freedom
(Abramowitz & Stegun 26.7.3 and 26.7.4: a finite trigonometric series) inverted by bisection,
so it is exact to ~1e-12 and needs no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adasp.errors import UserInputError

#: The config key of the seed axis of a sweep (``adasp sweep --seeds N``).
SEED_KEY = "train.seed"

#: Above this many degrees of freedom (where the series would grow long) the t quantile is
#: the normal one plus the first two Cornish-Fisher terms, accurate to ~1e-14 there.
_NORMAL_DF = 100_000


def _t_central_mass(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with ``df`` degrees of freedom (``t >= 0``); ``df = 0``
    stands for the normal distribution (infinite degrees of freedom)."""
    if df == 0:
        return math.erf(t / math.sqrt(2.0))
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    term = series = 1.0
    if df % 2:  # A&S 26.7.4: 2/pi (theta + sin cos (1 + 2/3 c^2 + 2·4/(3·5) c^4 + ...))
        if df == 1:
            return 2.0 * theta / math.pi
        for k in range(1, (df - 3) // 2 + 1):
            term *= cos2 * (2 * k) / (2 * k + 1)
            series += term
        return 2.0 / math.pi * (theta + sin * math.cos(theta) * series)
    # A&S 26.7.3: sin (1 + 1/2 c^2 + 1·3/(2·4) c^4 + ...)
    for k in range(1, (df - 2) // 2 + 1):
        term *= cos2 * (2 * k - 1) / (2 * k)
        series += term
    return sin * series


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom, for ``0.5 <= p < 1``
    (e.g. ``t_quantile(0.975, 2) = 4.3027`` for a 95 % interval from 3 values); ``df = 0``
    gives the normal quantile.

    Raises:
        UserInputError: ``p`` outside [0.5, 1) or ``df`` not a positive integer.
    """
    if not 0.5 <= p < 1.0:
        raise UserInputError(f"t_quantile: p must be in [0.5, 1), got {p!r}")
    if isinstance(df, bool) or not isinstance(df, int) or df < 0:
        raise UserInputError(f"t_quantile: df must be an integer >= 0 (0: normal), got {df!r}")
    if df > _NORMAL_DF:
        z = t_quantile(p, 0)
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    target = 2.0 * p - 1.0  # P(|T| <= t) of the upper p quantile
    low, high = 0.0, 1.0
    while _t_central_mass(high, df) < target:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if _t_central_mass(middle, df) < target:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class SeedSummary:
    """A cell's metric over its seeds: count, mean and sample standard deviation (ddof = 1;
    NaN with one seed)."""

    n: int
    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> SeedSummary:
        """Raises ``UserInputError`` for no values."""
        if not values:
            raise UserInputError("SeedSummary.of: no values (no run of the cell finished)")
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
        return cls(n, mean, std)


@dataclass(frozen=True)
class PairedDifference:
    """``cell - baseline`` seed by seed, with a two-sided Student t-interval of the mean.

    ``low`` and ``high`` are NaN with fewer than 2 paired seeds (no spread to measure).
    """

    seeds: tuple[str, ...]
    differences: tuple[float, ...]
    mean: float
    std: float
    low: float
    high: float
    confidence: float

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def distinguishable(self) -> bool:
        """The interval excludes 0: the difference is larger than the seed noise."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    @property
    def verdict(self) -> str:
        if self.n < 2:
            return "n/a (needs 2+ paired seeds)"
        if self.distinguishable:
            return f"distinguishable ({'higher' if self.mean > 0 else 'lower'})"
        return "noise"


def paired_difference(
    values: Mapping[str, float], baseline: Mapping[str, float], confidence: float = 0.95
) -> PairedDifference:
    """The paired difference of ``values`` minus ``baseline`` (each: seed -> metric) over the
    seeds both have.

    Raises:
        UserInputError: ``confidence`` outside (0, 1), or no seed in common.
    """
    if not 0.0 < confidence < 1.0:
        raise UserInputError(f"confidence must be in (0, 1), got {confidence!r}")
    seeds = tuple(s for s in values if s in baseline)
    if not seeds:
        raise UserInputError("paired_difference: the cell and the baseline share no seed")
    diffs = tuple(float(values[s]) - float(baseline[s]) for s in seeds)
    summary = SeedSummary.of(diffs)
    if summary.n < 2:
        low = high = math.nan
    else:
        half = t_quantile(0.5 + confidence / 2, summary.n - 1) * summary.std / math.sqrt(summary.n)
        low, high = summary.mean - half, summary.mean + half
    return PairedDifference(seeds, diffs, summary.mean, summary.std, low, high, confidence)
