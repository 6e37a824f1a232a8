"""evaluate_ranking against the loop-based reference, edge cases, protocol details, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasp.errors import UserInputError
from adasp.evaluation import RankingEvaluator, evaluate_ranking, match_ranks, summarize
from tests.evaluation.naive import naive_evaluate, random_case


def assert_same(ours, reference, atol=1e-12):
    assert ours["num_valid_queries"] == reference["num_valid_queries"]
    assert ours["mAP"] == pytest.approx(reference["mAP"], abs=atol)
    assert ours["mINP"] == pytest.approx(reference["mINP"], abs=atol)
    np.testing.assert_allclose(ours["cmc"], reference["cmc"], rtol=0, atol=atol)
    np.testing.assert_allclose(ours["ap"], reference["ap"], rtol=0, atol=atol)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("ap_mode", ["standard", "trapezoid"])
def test_matches_loop_reference_on_random_cases(ties, ap_mode):
    rng = np.random.default_rng(1 + ties)
    for trial in range(60):
        num_q, num_g = int(rng.integers(1, 15)), int(rng.integers(1, 70))
        case = random_case(
            rng,
            num_q,
            num_g,
            int(rng.integers(1, 9)),
            int(rng.integers(1, 4)),
            ties,
            trial % 3 == 0,
        )
        for camera_filter in (True, False):
            options = {"max_rank": 12, "camera_filter": camera_filter, "ap_mode": ap_mode}
            reference = naive_evaluate(*case, **options)
            if reference["num_valid_queries"] == 0:
                with pytest.raises(UserInputError, match="no query has a valid match"):
                    evaluate_ranking(*case, **options, chunk_size=4)
                continue
            ours = evaluate_ranking(*case, **options, chunk_size=4)
            assert_same(ours, reference)
            assert ours["num_queries"] == num_q


@pytest.mark.parametrize("separation", [0.0, 0.5, 3.0])
def test_weak_and_strong_models(separation):
    # separation 0: every item is nearer than the last match (full-row counting);
    # 3: only a few are (packed candidates). Both paths must agree with the reference.
    rng = np.random.default_rng(7)
    num_q, num_g = 25, 300
    q_pids = rng.integers(1, 20, num_q)
    g_pids = rng.integers(0, 20, num_g)
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    dist = rng.random((num_q, num_g)) - separation * (q_pids[:, None] == g_pids[None, :])
    dist = dist.astype(np.float32)
    for ap_mode in ("standard", "trapezoid"):
        assert_same(
            evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, 20, ap_mode=ap_mode),
            naive_evaluate(dist, q_pids, g_pids, q_cams, g_cams, 20, ap_mode=ap_mode),
        )


def test_trained_model_with_ties():
    # Matches mostly nearest (few items before the last match are located) and integer
    # distances, so some of those items tie a match.
    rng = np.random.default_rng(9)
    num_q, num_g = 30, 400
    q_pids, g_pids = rng.integers(1, 25, num_q), rng.integers(0, 25, num_g)
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    same = q_pids[:, None] == g_pids[None, :]
    dist = np.where(same, rng.integers(0, 13, (num_q, num_g)), rng.integers(10, 60, (num_q, num_g)))
    for ap_mode in ("standard", "trapezoid"):
        assert_same(
            evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, 20, ap_mode=ap_mode),
            naive_evaluate(dist, q_pids, g_pids, q_cams, g_cams, 20, ap_mode=ap_mode),
        )


def test_rows_split_into_column_slices(monkeypatch):
    # Galleries wider than a slice are located in column slices: force that on a small case.
    monkeypatch.setattr(match_ranks, "SLICE_ELEMENTS", 16)
    monkeypatch.setattr(match_ranks, "GRID_ENTRIES", 64)
    monkeypatch.setattr(match_ranks, "TIE_BATCH", 3)
    rng = np.random.default_rng(10)
    for ties in (False, True):
        case = random_case(rng, 12, 90, 5, 3, ties=ties, junk=True)
        assert_same(evaluate_ranking(*case), naive_evaluate(*case))


def test_quantised_distances_tie_everywhere():
    # Few distinct values (e.g. low-precision distances): almost every item ties a match.
    rng = np.random.default_rng(3)
    case = random_case(rng, 30, 400, 6, 3, ties=False)
    dist = np.round(case[0] * 8) / 8
    assert_same(evaluate_ranking(dist, *case[1:]), naive_evaluate(dist, *case[1:]))


def test_hand_computed_example():
    # Gallery order by distance: g0 (match), g1, g2 (match), g3 (same pid & camera: junk).
    dist = np.array([[0.1, 0.2, 0.3, 0.05]])
    result = evaluate_ranking(dist, [7], [7, 1, 7, 7], [0], [1, 1, 2, 0], max_rank=4)
    assert result["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert result["mINP"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(result["cmc"], [1, 1, 1, 1])
    trapezoid = evaluate_ranking(
        dist, [7], [7, 1, 7, 7], [0], [1, 1, 2, 0], max_rank=4, ap_mode="trapezoid"
    )
    assert trapezoid["mAP"] == pytest.approx(0.5 * (1 + 1) / 2 + 0.5 * (1 / 2 + 2 / 3) / 2)
    without_filter = evaluate_ranking(
        dist, [7], [7, 1, 7, 7], [0], [1, 1, 2, 0], max_rank=4, camera_filter=False
    )
    # g3 now counts: order g3, g0, g1, g2 -> matches at ranks 1, 2, 4.
    assert without_filter["mAP"] == pytest.approx((1 + 1 + 3 / 4) / 3)


def test_ties_are_broken_by_gallery_index():
    # All distances equal: the ranking is the gallery order.
    dist = np.zeros((1, 4))
    result = evaluate_ranking(dist, [1], [2, 1, 2, 1], [0], [1, 1, 1, 1], max_rank=4)
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    np.testing.assert_allclose(result["cmc"], [0, 1, 1, 1])


def test_query_without_valid_match_is_skipped_and_counted():
    dist = np.array([[0.1, 0.2], [0.3, 0.1], [0.5, 0.4]])
    # Query 1's only match shares its camera; query 2's identity is not in the gallery.
    result = evaluate_ranking(dist, [1, 2, 3], [1, 2], [0, 0, 0], [1, 0], max_rank=2)
    assert result["num_queries"] == 3
    assert result["num_valid_queries"] == 1
    assert result["mAP"] == pytest.approx(1.0)
    assert np.isnan(result["ap"][1]) and np.isnan(result["ap"][2])


def test_no_valid_query_is_an_error_saying_why():
    # Identities 5 and 6 are not in the gallery: a mAP of 0 would read as a model failure.
    with pytest.raises(UserInputError) as error:
        evaluate_ranking(np.ones((2, 3)), [5, 6], [1, 2, 3], [0, 0], [0, 0, 0], max_rank=5)
    assert str(error.value) == (
        "no query has a valid match in the gallery: of 2 queries, 2 have an identity absent "
        "from the gallery. Check that query and gallery hold the same identities, seen by "
        "other cameras"
    )


def test_no_valid_query_counts_every_cause():
    # q0: only a same-camera match; q1: absent; q2, q3: the junk identity -1.
    dist = np.ones((4, 3))
    args = ([1, 9, -1, -1], [1, 2, -1], [0, 0, 0, 0], [0, 1, 1])
    with pytest.raises(UserInputError) as error:
        evaluate_ranking(dist, *args, chunk_size=1)
    message = str(error.value)
    assert message.startswith("no query has a valid match in the gallery: of 4 queries, ")
    assert "1 has gallery images of their identity only from their own camera" in message
    assert "same-camera filter" in message and "camera_filter=False" in message
    assert "1 has an identity absent from the gallery" in message
    assert "2 have the junk identity -1" in message
    assert "\n" not in message
    # Without the camera filter q0 is valid, and only it is.
    result = evaluate_ranking(dist, *args, camera_filter=False)
    assert result["num_valid_queries"] == 1 and result["num_queries"] == 4


def test_one_valid_query_is_enough_and_empty_query_sets_are_errors():
    evaluator = RankingEvaluator([1, 2], [1, 1])
    evaluator.add(np.ones((1, 2)), [7], [0])  # absent
    evaluator.add(np.ones((0, 2)), [], [])
    with pytest.raises(UserInputError, match="of 1 query, 1 has an identity absent"):
        evaluator.result()
    evaluator.add(np.ones((1, 2)), [2], [0])
    assert evaluator.result()["num_valid_queries"] == 1
    with pytest.raises(UserInputError, match="no queries to evaluate: the query set is empty"):
        evaluate_ranking(np.ones((0, 2)), [], [1, 2], [], [0, 0])


def test_draw_protocols_still_work_and_name_an_empty_draw():
    from adasp.evaluation.protocols import evaluate_draws

    rng = np.random.default_rng(3)
    pids = np.repeat(np.arange(6), 3)
    features = rng.normal(size=(18, 4)) + pids[:, None]
    camids = np.zeros(18, dtype=int)
    draws = []
    for offset in range(3):  # one query per identity, the rest as gallery
        query = np.arange(offset, 18, 3)
        draws.append((query, np.setdiff1d(np.arange(18), query)))
    metrics = evaluate_draws(features, pids, camids, draws)
    assert metrics.mean.num_valid_queries == 6
    bad = [draws[0], (np.array([0]), np.arange(3, 18))]  # identity 0 not in that gallery
    with pytest.raises(UserInputError, match="no query has a valid match"):
        evaluate_draws(features, pids, camids, bad)


def test_gallery_shorter_than_max_rank_keeps_last_value():
    dist = np.array([[0.3, 0.1, 0.2]])
    result = evaluate_ranking(dist, [1], [1, 2, 3], [0], [1, 1, 1], max_rank=10)
    assert result["cmc"].shape == (10,)
    np.testing.assert_allclose(result["cmc"], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1])


def test_one_camera_only_leaves_no_valid_query_unless_filter_off():
    rng = np.random.default_rng(0)
    dist = rng.random((4, 10))
    q_pids, g_pids = np.array([1, 2, 3, 4]), np.repeat([1, 2, 3, 4, 5], 2)
    cams_q, cams_g = np.zeros(4, int), np.zeros(10, int)
    with pytest.raises(UserInputError, match="of 4 queries, 4 have gallery images of their"):
        evaluate_ranking(dist, q_pids, g_pids, cams_q, cams_g)
    unfiltered = evaluate_ranking(dist, q_pids, g_pids, cams_q, cams_g, camera_filter=False)
    assert unfiltered["num_valid_queries"] == 4
    assert_same(
        unfiltered, naive_evaluate(dist, q_pids, g_pids, cams_q, cams_g, camera_filter=False)
    )


def test_junk_pid_is_removed_and_distractors_are_kept():
    # g0: junk (-1), nearest; g1: distractor (0); g2: the match.
    dist = np.array([[0.1, 0.2, 0.3]])
    args = ([5], [-1, 0, 5], [0], [1, 1, 1])
    result = evaluate_ranking(dist, *args, max_rank=3)
    assert result["mAP"] == pytest.approx(1 / 2)  # the distractor still ranks first
    np.testing.assert_allclose(result["cmc"], [0, 1, 1])
    kept = evaluate_ranking(dist, *args, max_rank=3, junk_pid=None)
    assert kept["mAP"] == pytest.approx(1 / 3)
    # Dropping the junk images up front (what the data layer does) gives the same numbers.
    dropped = evaluate_ranking(dist[:, 1:], [5], [0, 5], [0], [1, 1], max_rank=3)
    assert dropped["mAP"] == result["mAP"]


def test_numpy_and_torch_inputs_and_dtypes_agree():
    rng = np.random.default_rng(4)
    case = random_case(rng, 12, 50, 5, 3)
    reference = evaluate_ranking(*case)
    as_torch = evaluate_ranking(*(torch.as_tensor(a) for a in case))
    assert_same(as_torch, reference)
    as_float32 = evaluate_ranking(case[0].astype(np.float32), *case[1:])
    assert as_float32["mAP"] == pytest.approx(reference["mAP"], abs=1e-6)
    half = evaluate_ranking(torch.as_tensor(case[0]).half(), *case[1:])
    assert half["num_valid_queries"] == reference["num_valid_queries"]
    integer = np.round(case[0] * 10).astype(np.int64)
    assert_same(evaluate_ranking(integer, *case[1:]), naive_evaluate(integer, *case[1:]))


def test_runs_on_every_device(device):
    rng = np.random.default_rng(5)
    case = random_case(rng, 10, 40, 4, 2, ties=True)
    ours = evaluate_ranking(*(torch.as_tensor(a, device=device) for a in case))
    assert_same(ours, naive_evaluate(*case))


def test_evaluator_accumulates_blocks_in_any_order():
    rng = np.random.default_rng(6)
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 20, 60, 6, 3)
    evaluator = RankingEvaluator(g_pids, g_cams, max_rank=8)
    for rows in (slice(10, 20), slice(0, 3), slice(3, 10)):
        evaluator.add(dist[rows], q_pids[rows], q_cams[rows])
    result = evaluator.result()
    whole = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, max_rank=8)
    assert result["mAP"] == pytest.approx(whole["mAP"], abs=1e-12)
    np.testing.assert_allclose(result["cmc"], whole["cmc"])


def test_summarize():
    rng = np.random.default_rng(8)
    result = evaluate_ranking(*random_case(rng, 15, 80, 5, 3))
    summary = summarize(result)
    assert set(summary) == {"mAP", "rank1", "rank5", "rank10", "mINP", "num_valid_queries"}
    assert summary["rank1"] == result["cmc"][0] and summary["rank10"] == result["cmc"][9]
    assert all(0 <= summary[k] <= 1 for k in ("mAP", "rank1", "rank5", "rank10", "mINP"))
    short = summarize(evaluate_ranking(*random_case(rng, 5, 20, 3, 2), max_rank=3))
    assert np.isnan(short["rank5"]) and not np.isnan(short["rank1"])
    with pytest.raises(UserInputError, match="needs the keys mAP, cmc"):
        summarize({"cmc": [1.0]})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: (a[0][:, :-1], *a[1:]), "g_pids has"),
        (lambda a: (a[0], a[1][:-1], *a[2:]), "q_pids has"),
        (lambda a: (a[0][0], *a[1:]), "2-D"),
        (lambda a: (a[0], a[1] + 0.5, *a[2:]), "integer labels"),
    ],
)
def test_shape_and_label_errors(change, message):
    case = random_case(np.random.default_rng(0), 4, 6, 2, 2)
    with pytest.raises(UserInputError, match=message):
        evaluate_ranking(*change(case))


def test_bad_options_and_values():
    case = random_case(np.random.default_rng(0), 4, 6, 2, 2)
    with pytest.raises(UserInputError, match="ap_mode must be one of standard, trapezoid"):
        evaluate_ranking(*case, ap_mode="interpolated")
    with pytest.raises(UserInputError, match="max_rank"):
        evaluate_ranking(*case, max_rank=0)
    with pytest.raises(UserInputError, match="chunk_size"):
        evaluate_ranking(*case, chunk_size=0)
    nan = case[0].copy()
    nan[1, 2] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        evaluate_ranking(nan, *case[1:])


def test_infinite_distances_and_empty_gallery_are_refused():
    import numpy as np
    import pytest

    from adasp.errors import UserInputError
    from adasp.evaluation import evaluate_ranking

    with pytest.raises(UserInputError, match="infinite"):
        evaluate_ranking(np.array([[0.3, np.inf, np.inf]]), [1], [2, 2, 1], [0], [1, 1, 1])
    with pytest.raises(UserInputError, match="gallery is empty"):
        evaluate_ranking(np.zeros((2, 0)), [1, 2], [], [0, 0], [])
