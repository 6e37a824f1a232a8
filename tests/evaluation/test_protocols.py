"""Protocols: repeated gallery draws (VehicleID), several test sets, one results table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasp.errors import UserInputError
from adasp.evaluation import (
    DrawsMetrics,
    RankingMetrics,
    aggregate_draws,
    evaluate_draws,
    evaluate_features,
    format_results_table,
    summarize,
)
from adasp.evaluation.results import metrics_document, metrics_from_dict


def vehicle_test_set(seed=0, num_ids=20, per_id=4, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    pids = np.repeat(np.arange(num_ids), per_id)
    features = centres[pids] + 0.7 * rng.standard_normal((len(pids), dim))
    return features.astype(np.float32), pids, np.zeros(len(pids), dtype=np.int64)


def one_image_per_identity_draws(pids, num_draws, seed=0):
    """VehicleID-style draws: one random gallery image per identity, the rest are queries."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(num_draws):
        gallery = np.array([rng.choice(np.flatnonzero(pids == p)) for p in np.unique(pids)])
        query = np.setdiff1d(np.arange(len(pids)), gallery)
        draws.append((query, gallery))
    return draws


def test_aggregate_draws_mean_and_sample_std():
    results = [
        {
            "mAP": 0.5,
            "rank1": 0.6,
            "rank5": 0.8,
            "rank10": 0.9,
            "mINP": 0.3,
            "num_valid_queries": 10,
        },
        {
            "mAP": 0.7,
            "rank1": 0.8,
            "rank5": 1.0,
            "rank10": 1.0,
            "mINP": 0.5,
            "num_valid_queries": 12,
        },
    ]
    aggregate = aggregate_draws(results)
    assert isinstance(aggregate, DrawsMetrics)
    assert aggregate.num_draws == 2 and len(aggregate.draws) == 2
    assert aggregate.mean.mAP == pytest.approx(0.6)
    assert aggregate.std.mAP == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert aggregate.mean.num_valid_queries == pytest.approx(11)
    assert aggregate_draws(results[:1]).std.rank1 == 0.0
    with pytest.raises(UserInputError, match="at least one"):
        aggregate_draws([])


def test_evaluate_draws_equals_evaluating_each_draw():
    features, pids, camids = vehicle_test_set()
    draws = one_image_per_identity_draws(pids, 3)
    aggregate = evaluate_draws(features, pids, camids, draws, max_rank=10)
    per_draw = [
        summarize(
            evaluate_features(
                features[q],
                features[g],
                pids[q],
                pids[g],
                camids[q],
                camids[g],
                max_rank=10,
                camera_filter=False,
            )
        )
        for q, g in draws
    ]
    assert aggregate.num_draws == 3
    assert aggregate.mean.mAP == pytest.approx(np.mean([s["mAP"] for s in per_draw]))
    assert aggregate.std.rank1 == pytest.approx(np.std([s["rank1"] for s in per_draw], ddof=1))
    # One gallery image per identity and one camera: every query is valid without filtering.
    assert aggregate.mean.num_valid_queries == len(draws[0][0])
    # Torch features (their device is kept) give the same numbers.
    as_torch = evaluate_draws(torch.as_tensor(features), pids, camids, draws, max_rank=10)
    assert as_torch.mean.mAP == pytest.approx(aggregate.mean.mAP, abs=1e-6)


def test_evaluate_draws_errors():
    features, pids, camids = vehicle_test_set()
    with pytest.raises(UserInputError, match="at least one"):
        evaluate_draws(features, pids, camids, [])
    with pytest.raises(UserInputError, match="draw 0: gallery indices"):
        evaluate_draws(features, pids, camids, [(np.arange(3), np.array([999]))])


def _split_metrics(features, pids, camids, query):
    return RankingMetrics.from_result(
        evaluate_features(
            features[query],
            features[~query],
            pids[query],
            pids[~query],
            camids[query],
            camids[~query],
            max_rank=10,
        )
    )


def test_several_test_sets_in_one_table():
    summaries = {}
    for size, name in ((10, "veriwild-small"), (20, "veriwild-medium")):
        features, pids, _ = vehicle_test_set(seed=size, num_ids=size)
        cams = np.arange(len(pids)) % 3
        query = np.arange(len(pids)) % 4 == 0
        summaries[name] = _split_metrics(features, pids, cams, query)
    features, pids, camids = vehicle_test_set(seed=3)
    summaries["vehicleid-800"] = evaluate_draws(
        features, pids, camids, one_image_per_identity_draws(pids, 10), max_rank=10
    )
    text = format_results_table(summaries)
    lines = text.splitlines()
    assert lines[0].split() == [
        "test",
        "set",
        "queries",
        "mAP",
        "(%)",
        "R1",
        "(%)",
        "R5",
        "(%)",
        "R10",
        "(%)",
        "mINP",
        "(%)",
    ]
    assert "veriwild-small" in lines[2] and "vehicleid-800 (10 draws)" in lines[4]
    assert "±" in lines[4] and "±" not in lines[2]
    small = summaries["veriwild-small"]
    assert f"{100 * small.mAP:.2f}" in lines[2]
    markdown = format_results_table(summaries, markdown=True)
    assert markdown.splitlines()[0].startswith("| test set | queries | mAP (%)")
    assert markdown.count("\n") == 4


def test_table_accepts_raw_results_and_short_cmc():
    features, pids, _ = vehicle_test_set()
    cams = np.arange(len(pids)) % 2
    result = evaluate_features(
        features[:10], features[10:], pids[:10], pids[10:], cams[:10], cams[10:], max_rank=3
    )
    table = format_results_table({"tiny": result})
    assert "n/a" in table  # rank-5 and rank-10 beyond a 3-long CMC
    with pytest.raises(UserInputError, match="at least one"):
        format_results_table({})


def test_metrics_round_trip_through_the_metrics_json_form():
    features, pids, camids = vehicle_test_set(seed=3)
    draws = evaluate_draws(
        features, pids, camids, one_image_per_identity_draws(pids, 4), max_rank=10
    )
    cams = np.arange(len(pids)) % 3
    single = _split_metrics(features, pids, cams, np.arange(len(pids)) % 4 == 0)
    document = metrics_document({"veriwild": single, "vehicleid-800": draws}, epoch=3)
    # The keys scripts read: the first test set at the top level, then every test set.
    assert list(document)[:8] == [
        "test_set", "mAP", "rank1", "rank5", "rank10", "mINP", "num_valid_queries", "epoch"
    ]  # fmt: skip
    assert document["test_set"] == "veriwild" and document["mAP"] == single.mAP
    vehicle = document["test_sets"]["vehicleid-800"]
    assert vehicle["num_draws"] == 4 and set(vehicle["std"]) == {
        "mAP", "rank1", "rank5", "rank10", "mINP"
    }  # fmt: skip
    assert metrics_from_dict(document["test_sets"]["veriwild"]) == single
    again = metrics_from_dict(vehicle)
    assert isinstance(again, DrawsMetrics)
    assert again.mean == draws.mean and again.std.mAP == draws.std.mAP
    # The table reads the stored form as well as the typed one.
    assert format_results_table(document["test_sets"]) == format_results_table(
        {"veriwild": single, "vehicleid-800": draws}
    )
