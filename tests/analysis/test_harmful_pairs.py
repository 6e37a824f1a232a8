"""The harmful-pair model: simulation against closed forms and brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import pytest

from adasp.analysis.harmful_pairs import (
    exact_probabilities,
    num_pairs,
    simulate_harmful_pairs,
    sp_guaranteed_harmless,
    sweep_harmful_pairs,
    wilson_interval,
)
from adasp.analysis.harmful_pairs_report import sweep_findings, write_sweep
from adasp.errors import UserInputError


def _brute_force(instances: int, harmful: int) -> tuple[float, float]:
    """Enumerate every K-subset of pairs: P(all instances covered), P(an anchor covered)."""
    pairs = list(itertools.combinations(range(instances), 2))
    covered_all = 0
    anchor_covered = 0
    subsets = list(itertools.combinations(pairs, harmful))
    for subset in subsets:
        touched = {v for pair in subset for v in pair}
        covered_all += len(touched) == instances
        anchor_covered += 0 in touched
    return covered_all / len(subsets), anchor_covered / len(subsets)


@pytest.mark.parametrize("instances", [2, 3, 4, 5, 6])
def test_closed_forms_match_enumeration(instances):
    for harmful in range(num_pairs(instances) + 1):
        p_sp, p_dense = exact_probabilities(instances, harmful)
        b_sp, b_dense = _brute_force(instances, harmful)
        assert p_sp == pytest.approx(b_sp, abs=1e-12)
        assert p_dense == pytest.approx(b_dense, abs=1e-12)


@pytest.mark.parametrize(("instances", "harmful"), [(4, 2), (6, 3), (8, 5), (8, 12), (5, 1)])
def test_simulation_agrees_with_closed_form(instances, harmful):
    result = simulate_harmful_pairs(16, instances, harmful, trials=3000, seed=1)
    lo, hi = result.p_sp_ci
    assert lo <= result.p_sp_exact <= hi
    dlo, dhi = result.p_dense_ci
    # The dense interval is a normal approximation; allow a small slack around it.
    assert dlo - 0.005 <= result.p_dense_exact <= dhi + 0.005
    assert result.p_sp <= result.p_dense


def test_supplementary_claim_k_less_than_m_is_not_sufficient():
    # M = 4, K = 2 < M: two disjoint harmful pairs cover all four instances (3 of 15 subsets).
    assert exact_probabilities(4, 2)[0] == pytest.approx(3 / 15)
    assert simulate_harmful_pairs(8, 4, 2, trials=2000, seed=0).p_sp > 0.15
    assert not sp_guaranteed_harmless(4, 2)


@pytest.mark.parametrize("instances", [2, 3, 4, 7, 8, 16])
def test_exact_guarantee_condition(instances):
    for harmful in range(num_pairs(instances) + 1):
        p_sp, _ = exact_probabilities(instances, harmful)
        assert (
            (p_sp == 0) == (2 * harmful < instances) == sp_guaranteed_harmless(instances, harmful)
        )
        # Below the threshold the simulation never sees one either.
    safe = (instances - 1) // 2
    assert simulate_harmful_pairs(4, instances, safe, trials=500, seed=2).p_sp == 0


def test_same_seed_same_numbers_and_chunking_is_invisible():
    a = simulate_harmful_pairs(5, 6, 4, trials=300, seed=7)
    b = simulate_harmful_pairs(5, 6, 4, trials=300, seed=7)
    assert a == b
    c = simulate_harmful_pairs(5, 6, 4, trials=300, seed=8)
    assert c.p_dense != a.p_dense


def test_wilson_interval_bounds():
    assert wilson_interval(0, 100)[0] == 0.0 and wilson_interval(0, 100)[1] > 0
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi
    # Reference values of the Wilson score interval for 30/100 at 95%.
    lo, hi = wilson_interval(30, 100)
    assert math.isclose(lo, 0.2189, abs_tol=5e-4) and math.isclose(hi, 0.3958, abs_tol=5e-4)


@pytest.mark.parametrize(
    ("ids", "instances", "harmful", "trials", "message"),
    [
        (0, 4, 1, 10, "--ids"),
        (4, 1, 0, 10, "--instances"),
        (4, 4, 7, 10, "between 0 and M"),
        (4, 4, -1, 10, "between 0 and M"),
        (4, 4, 1, 0, "--trials"),
    ],
)
def test_invalid_parameters(ids, instances, harmful, trials, message):
    with pytest.raises(UserInputError, match=message):
        simulate_harmful_pairs(ids, instances, harmful, trials)


@pytest.mark.slow
def test_sweep_writes_table_and_plot(tmp_path):
    results = sweep_harmful_pairs(4, 5, trials=200, seed=0)
    assert [r.harmful for r in results] == list(range(11))
    paths = write_sweep(results, tmp_path)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = paths["csv"].read_text().splitlines()
    assert len(csv_lines) == 12 and csv_lines[0].startswith("K,p_sp")
    text = paths["markdown"].read_text()
    assert "contradicted" in text and "2K < M" in text
    findings = sweep_findings(results)
    assert any("K <= 2" in line for line in findings)
