"""The harmful-pair model of the AdaSP supplementary (§1), simulated and in closed form.

Model: an identity has M instances and all ``E = M(M-1)/2`` unordered positive pairs; ``K`` of
them, chosen uniformly at random, are *harmful* (no shared visual cue). Similarities are
i.i.d. except that every harmful pair is below every real pair. Dense sampling takes, for each
anchor, its lowest-similarity positive (M samples per identity); Sparse Pairwise (SP) sampling
takes the highest of those M (one sample per identity).

Because harmful pairs are the lowest, an anchor's lowest positive is harmful exactly when the
anchor is an endpoint of a harmful pair, and SP's pair is harmful exactly when the harmful
pairs touch *every* instance (they form an edge cover of the M instances). An edge cover needs
at least ``ceil(M/2)`` pairs, so SP is guaranteed to pick no harmful pair iff ``2K < M``; the
supplementary's "K < M" is not sufficient (M=4, K=2: two disjoint harmful pairs cover all four
instances, probability 3/15).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import Any

import torch

from adasp.errors import UserInputError
from adasp.utils.checks import check_seed

Z_95 = 1.959963984540054


def num_pairs(instances: int) -> int:
    """Unordered positive pairs of an identity with ``instances`` images: ``M(M-1)/2``."""
    return instances * (instances - 1) // 2


def sp_guaranteed_harmless(instances: int, harmful: int) -> bool:
    """True iff SP can never pick a harmful pair: fewer than ``ceil(M/2)`` harmful pairs."""
    return 2 * harmful < instances


def check_model(ids: int, instances: int, harmful: int, trials: int = 1) -> None:
    """Raise :class:`UserInputError` unless the model's parameters are valid."""
    if ids < 1:
        raise UserInputError(f"--ids must be >= 1, got {ids}")
    if instances < 2:
        raise UserInputError(
            f"--instances must be >= 2 (a positive pair needs two), got {instances}"
        )
    pairs = num_pairs(instances)
    if not 0 <= harmful <= pairs:
        raise UserInputError(
            f"--harmful must be between 0 and M(M-1)/2 = {pairs} for M = {instances}, got {harmful}"
        )
    if trials < 1:
        raise UserInputError(f"--trials must be >= 1, got {trials}")


#: Bytes the simulation holds per element of an identity's ``M x M`` tables: float32
#: similarities, bool flags, int64 partners and the per-pair keys, values and indices.
BYTES_PER_ELEMENT = 24


def check_instances_fit(instances: int, max_chunk_elements: int = 2**24) -> None:
    """Refuse an ``M`` whose one identity's ``M x M`` tables exceed the simulation's chunk
    bound (M at most ``sqrt(max_chunk_elements)``: 4096 by default, about 400 MB).

    Raises:
        UserInputError: names the memory ``M`` would need and the limit.
    """
    limit = math.isqrt(max_chunk_elements)
    if instances > limit:
        needed = instances * instances * BYTES_PER_ELEMENT
        raise UserInputError(
            f"--instances {instances} needs about {needed / 1e9:.0f} GB for one identity's "
            f"{instances}x{instances} tables; the simulation takes at most {limit} instances "
            f"(about {limit * limit * BYTES_PER_ELEMENT / 1e6:.0f} MB): lower --instances"
        )


def exact_probabilities(instances: int, harmful: int) -> tuple[float, float]:
    """Closed-form expected fractions of harmful samples ``(P_SP, P_D)``.

    ``P_D = 1 - C(E-(M-1), K)/C(E, K)``: an anchor's lowest positive is harmful iff one of its
    M-1 pairs is. ``P_SP`` = P(K random pairs cover all M instances), by inclusion-exclusion
    over the instances left uncovered: ``Σ_j (-1)^j C(M, j) C(C(M-j, 2), K) / C(E, K)``.
    """
    check_model(1, instances, harmful)
    pairs = num_pairs(instances)
    total = math.comb(pairs, harmful)
    p_dense = 1.0 - math.comb(pairs - (instances - 1), harmful) / total
    covers = sum(
        (-1) ** j * math.comb(instances, j) * math.comb(num_pairs(instances - j), harmful)
        for j in range(instances + 1)
    )
    return covers / total, p_dense


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sensible at 0 and n successes)."""
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class HarmfulPairResult:
    """Monte Carlo estimates (with 95% intervals) beside the closed forms."""

    ids: int
    instances: int
    harmful: int
    trials: int
    seed: int
    p_sp: float
    p_sp_ci: tuple[float, float]
    p_dense: float
    p_dense_ci: tuple[float, float]
    p_sp_exact: float
    p_dense_exact: float
    sp_guaranteed_harmless: bool

    def to_dict(self) -> dict:
        out = asdict(self)
        out["p_sp_ci"] = list(self.p_sp_ci)
        out["p_dense_ci"] = list(self.p_dense_ci)
        out["guarantee_condition"] = "2K < M"
        return out


#: The most similarities one command may simulate: about 10 minutes on one CPU core, at the
#: ~15 million a second measured on the project's 2-core machine.
MAX_SIMILARITIES = 10**10
#: Simulations above this many similarities (~5 s) show a progress bar on stderr.
PROGRESS_ABOVE = 10**8
_RATE = 15e6  # similarities per second on one core, for the estimate in messages


def simulated_similarities(ids: int, instances: int, trials: int, sweep: bool = False) -> int:
    """How many similarities ``N·T·M²`` a simulation draws (times ``M(M-1)/2 + 1`` values of
    K for a sweep): the measure of its work."""
    runs = num_pairs(instances) + 1 if sweep else 1
    return ids * trials * instances * instances * runs


def check_work(ids: int, instances: int, trials: int, sweep: bool = False) -> int:
    """The work of a simulation (:func:`simulated_similarities`), if within the limit.

    Raises:
        UserInputError: too many instances for memory (:func:`check_instances_fit`, the
            harder limit, checked first), or above :data:`MAX_SIMILARITIES`, with the estimate
            and what to lower.
    """
    check_instances_fit(instances)
    work = simulated_similarities(ids, instances, trials, sweep)
    if work > MAX_SIMILARITIES:
        what = f"a sweep of {num_pairs(instances) + 1} values of K" if sweep else "a simulation"
        raise UserInputError(
            f"{what} with N = {ids}, M = {instances}, T = {trials} draws about {work:.1e} "
            f"similarities (about {_duration(work / _RATE)} on one core), above the limit of "
            f"{MAX_SIMILARITIES:.0e} (~{_duration(MAX_SIMILARITIES / _RATE)}); lower --trials, "
            "--ids or --instances"
        )
    return work


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.0f} s"


def _progress_bar(total: int, desc: str, show: bool) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, mininterval=1.0, file=sys.stderr, leave=False)


def _simulate_chunk(
    n: int, instances: int, harmful: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate ``n`` identities; returns (SP pick harmful ``(n,)``, dense picks harmful ``(n, M)``)."""
    rows, cols = torch.triu_indices(instances, instances, offset=1)
    pairs = rows.numel()
    # A uniformly random K-subset of the pairs: the K smallest of i.i.d. keys.
    keys = torch.rand(n, pairs, generator=generator)
    is_harmful = torch.zeros(n, pairs, dtype=torch.bool)
    if harmful:
        is_harmful.scatter_(1, keys.topk(harmful, dim=1, largest=False).indices, True)
    # i.i.d. similarities, every harmful pair (in [0, 1)) below every real pair (in [1, 2)).
    sim_pairs = torch.rand(n, pairs, generator=generator) + (~is_harmful).float()
    sim = torch.full((n, instances, instances), float("inf"))
    sim[:, rows, cols] = sim_pairs
    sim[:, cols, rows] = sim_pairs
    flags = torch.zeros(n, instances, instances, dtype=torch.bool)
    flags[:, rows, cols] = is_harmful
    flags[:, cols, rows] = is_harmful
    lowest, partner = sim.min(dim=2)  # dense: each anchor's lowest positive
    dense_harmful = flags.gather(2, partner[..., None]).squeeze(2)
    sp_anchor = lowest.argmax(dim=1)  # SP: the highest of those
    sp_harmful = dense_harmful.gather(1, sp_anchor[:, None]).squeeze(1)
    return sp_harmful, dense_harmful


def simulate_harmful_pairs(
    ids: int,
    instances: int,
    harmful: int,
    trials: int = 1000,
    seed: int = 0,
    max_chunk_elements: int = 2**24,
    progress_above: int = PROGRESS_ABOVE,
) -> HarmfulPairResult:
    """Monte Carlo estimate of the fraction of sampled positive pairs that are harmful.

    Args:
        ids: N identities per mini-batch.
        instances: M instances per identity (>= 2).
        harmful: K harmful pairs per identity, ``0 <= K <= M(M-1)/2``.
        trials: T simulated mini-batches.
        seed: seed of the random generator (same seed, same numbers).
        max_chunk_elements: bound on the ``n·M·M`` similarity tensor simulated at once.
        progress_above: show a progress bar on stderr when more similarities than this are
            drawn.

    Raises:
        UserInputError: a bad model, or more than :data:`MAX_SIMILARITIES` similarities.

    Returns:
        :class:`HarmfulPairResult`: ``p_sp`` is the fraction of SP's N·T picks that are
        harmful (Wilson interval), ``p_dense`` the fraction of the dense N·M·T picks (normal
        interval over identities, whose M picks are correlated), and the closed forms.
    """
    check_model(ids, instances, harmful, trials)
    check_seed("--seed", seed, UserInputError)
    check_instances_fit(instances, max_chunk_elements)
    work = check_work(ids, instances, trials)
    generator = torch.Generator().manual_seed(seed)
    total = ids * trials
    chunk = max(1, max_chunk_elements // (instances * instances))
    sp_count = 0
    dense_sum = 0.0
    dense_sq = 0.0
    bar = _progress_bar(total, f"simulating K = {harmful}", work > progress_above)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        sp_h, dense_h = _simulate_chunk(n, instances, harmful, generator)
        per_identity = dense_h.double().mean(dim=1)
        sp_count += int(sp_h.sum())
        dense_sum += float(per_identity.sum())
        dense_sq += float((per_identity * per_identity).sum())
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    p_dense = dense_sum / total
    var = max(0.0, dense_sq / total - p_dense * p_dense) * total / max(1, total - 1)
    half = Z_95 * math.sqrt(var / total)
    p_sp_exact, p_dense_exact = exact_probabilities(instances, harmful)
    return HarmfulPairResult(
        ids=ids,
        instances=instances,
        harmful=harmful,
        trials=trials,
        seed=seed,
        p_sp=sp_count / total,
        p_sp_ci=wilson_interval(sp_count, total),
        p_dense=p_dense,
        p_dense_ci=(max(0.0, p_dense - half), min(1.0, p_dense + half)),
        p_sp_exact=p_sp_exact,
        p_dense_exact=p_dense_exact,
        sp_guaranteed_harmless=sp_guaranteed_harmless(instances, harmful),
    )


def sweep_harmful_pairs(
    ids: int,
    instances: int,
    trials: int = 1000,
    seed: int = 0,
    progress_above: int = PROGRESS_ABOVE,
) -> list[HarmfulPairResult]:
    """:func:`simulate_harmful_pairs` for every K from 0 to ``M(M-1)/2`` (seed ``seed + K``),
    with a progress bar over K when it draws more than ``progress_above`` similarities.

    Raises:
        UserInputError: a bad model, or more than :data:`MAX_SIMILARITIES` similarities in all.
    """
    check_model(ids, instances, 0, trials)
    work = check_work(ids, instances, trials, sweep=True)
    values = range(num_pairs(instances) + 1)
    bar = _progress_bar(len(values), "sweeping K", work > progress_above)
    results = []
    for k in values:
        # Each run is small (the sweep is bounded), so only the sweep shows its progress.
        results.append(
            simulate_harmful_pairs(ids, instances, k, trials, seed + k, progress_above=work + 1)
        )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results
