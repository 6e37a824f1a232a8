"""Property tests (hypothesis): agreement with the loop reference and the metrics' invariances."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from adasp.errors import UserInputError
from adasp.evaluation import evaluate_ranking as _evaluate_ranking
from tests.evaluation.naive import naive_evaluate

#: What :func:`evaluate_ranking` gives for a case without any valid query (an error).
NO_VALID_QUERY = "no valid query"


def evaluate_ranking(*args, **kwargs):
    """The result, or :data:`NO_VALID_QUERY` where no query has a valid match."""
    try:
        return _evaluate_ranking(*args, **kwargs)
    except UserInputError as error:
        assert str(error).startswith("no query has a valid match in the gallery")
        return NO_VALID_QUERY


SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def cases(draw, ties=None):
    """A small evaluation case; integer-valued distances when ``ties`` (exact arithmetic)."""
    num_q = draw(st.integers(1, 8))
    num_g = draw(st.integers(1, 40))
    num_ids = draw(st.integers(1, 6))
    num_cams = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    with_ties = draw(st.booleans()) if ties is None else ties
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, num_ids + 1, num_q)
    g_pids = rng.integers(0, num_ids + 1, num_g)
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    if with_ties:
        dist = rng.integers(0, 6, (num_q, num_g)).astype(np.float64)
    else:
        dist = rng.permutation(num_q * num_g).reshape(num_q, num_g).astype(np.float64)
    camera_filter = draw(st.booleans())
    ap_mode = draw(st.sampled_from(["standard", "trapezoid"]))
    options = {"camera_filter": camera_filter, "ap_mode": ap_mode, "max_rank": 10}
    return (dist, q_pids, g_pids, q_cams, g_cams), options


def _num_valid(result):
    return 0 if result is NO_VALID_QUERY else result["num_valid_queries"]


def same_metrics(a, b, per_query=True):
    assert _num_valid(a) == _num_valid(b)
    if _num_valid(a) == 0:
        assert a is NO_VALID_QUERY or b is NO_VALID_QUERY  # ours raised (the naive one can't)
        return
    np.testing.assert_allclose(a["mAP"], b["mAP"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["mINP"], b["mINP"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["cmc"], b["cmc"], rtol=0, atol=1e-12)
    if per_query:
        np.testing.assert_allclose(a["ap"], b["ap"], rtol=0, atol=1e-12)


@SETTINGS
@given(cases())
def test_agrees_with_loop_reference(case):
    arrays, options = case
    same_metrics(evaluate_ranking(*arrays, **options), naive_evaluate(*arrays, **options))


@SETTINGS
@given(cases(ties=False), st.integers(0, 2**32 - 1))
def test_gallery_permutation_invariance_without_ties(case, seed):
    (dist, q_pids, g_pids, q_cams, g_cams), options = case
    perm = np.random.default_rng(seed).permutation(dist.shape[1])
    same_metrics(
        evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, **options),
        evaluate_ranking(dist[:, perm], q_pids, g_pids[perm], q_cams, g_cams[perm], **options),
    )


@SETTINGS
@given(cases(), st.integers(0, 2**32 - 1))
def test_query_permutation_permutes_per_query_results(case, seed):
    (dist, q_pids, g_pids, q_cams, g_cams), options = case
    perm = np.random.default_rng(seed).permutation(dist.shape[0])
    base = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, **options)
    permuted = evaluate_ranking(dist[perm], q_pids[perm], g_pids, q_cams[perm], g_cams, **options)
    same_metrics(base, permuted, per_query=False)
    if base is NO_VALID_QUERY:
        return
    np.testing.assert_allclose(base["ap"][perm], permuted["ap"], rtol=0, atol=1e-12)


@SETTINGS
@given(cases(), st.integers(0, 2**32 - 1))
def test_consistent_relabelling_of_identities_and_cameras(case, seed):
    (dist, q_pids, g_pids, q_cams, g_cams), options = case
    rng = np.random.default_rng(seed)
    pid_map = rng.permutation(1000)[:10] + 1  # a bijection onto other positive labels
    cam_map = rng.permutation(50)[:3]
    same_metrics(
        evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, **options),
        evaluate_ranking(
            dist, pid_map[q_pids], pid_map[g_pids], cam_map[q_cams], cam_map[g_cams], **options
        ),
    )


@SETTINGS
@given(cases(), st.integers(-1000, 1000), st.sampled_from([0.25, 1.0, 4.0]))
def test_invariant_to_shifting_and_scaling_distances(case, shift, scale):
    # Integer-valued distances: shifting by an integer and scaling by a power of two are exact,
    # so ties stay ties.
    (dist, *labels), options = case
    same_metrics(
        evaluate_ranking(dist, *labels, **options),
        evaluate_ranking(dist * scale + shift, *labels, **options),
    )


@SETTINGS
@given(cases())
def test_metric_ranges(case):
    arrays, options = case
    result = evaluate_ranking(*arrays, **options)
    if result is NO_VALID_QUERY:
        assert naive_evaluate(*arrays, **options)["num_valid_queries"] == 0
        return
    assert 0 <= result["mAP"] <= 1 and 0 <= result["mINP"] <= 1
    assert np.all(np.diff(result["cmc"]) >= 0)
    assert np.all((result["cmc"] >= 0) & (result["cmc"] <= 1))
    valid = ~np.isnan(result["ap"])
    assert valid.sum() == result["num_valid_queries"]
    # The best a query can do: its first match first. INP <= 1 with equality iff the matches
    # fill the top ranks, in which case AP = 1 too.
    perfect = result["inp"][valid] == 1
    np.testing.assert_allclose(result["ap"][valid][perfect], 1.0)
