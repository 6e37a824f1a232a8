"""evaluate_features (blocks of queries) against evaluate_ranking on the full matrix; distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adasp.evaluation.reranking as reranking
from adasp.errors import UserInputError
from adasp.evaluation import (
    distance_chunks,
    evaluate_features,
    evaluate_ranking,
    pairwise_distances,
)


def clustered_features(rng, num_q=30, num_g=120, num_ids=12, dim=16, noise=0.8):
    """Features around identity centres (a model-like case), float64 for exact agreement."""
    centres = rng.standard_normal((num_ids, dim))
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    query = centres[q_pids] + noise * rng.standard_normal((num_q, dim))
    gallery = centres[g_pids] + noise * rng.standard_normal((num_g, dim))
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    return query, gallery, q_pids, g_pids, q_cams, g_cams


def assert_results_equal(a, b, atol=1e-12):
    assert a["num_valid_queries"] == b["num_valid_queries"]
    assert a["num_queries"] == b["num_queries"]
    assert a["mAP"] == pytest.approx(b["mAP"], abs=atol)
    assert a["mINP"] == pytest.approx(b["mINP"], abs=atol)
    np.testing.assert_allclose(a["cmc"], b["cmc"], rtol=0, atol=atol)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_equals_evaluate_ranking_on_the_full_matrix(metric, chunk_size):
    query, gallery, *labels = clustered_features(np.random.default_rng(0))
    full = pairwise_distances(query, gallery, metric)
    expected = evaluate_ranking(full, *labels, max_rank=20)
    result = evaluate_features(query, gallery, *labels, metric, 20, chunk_size=chunk_size)
    assert_results_equal(result, expected)
    assert 0.2 < result["mAP"] < 1.0  # a non-trivial case


def test_distances_match_direct_formulas():
    rng = np.random.default_rng(1)
    query, gallery = rng.standard_normal((5, 8)), rng.standard_normal((7, 8))
    q, g = torch.as_tensor(query), torch.as_tensor(gallery)
    euclidean = pairwise_distances(query, gallery, "euclidean")
    torch.testing.assert_close(euclidean, torch.cdist(q, g))
    cosine = pairwise_distances(query, gallery, "cosine")
    expected = (
        1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    )
    torch.testing.assert_close(cosine, expected)
    # Identical vectors are at distance 0 (no negative square root from rounding).
    assert float(pairwise_distances(gallery, gallery, "euclidean").diagonal().abs().max()) < 1e-6


def test_distance_chunks_cover_queries_in_order():
    rng = np.random.default_rng(2)
    query, gallery = rng.standard_normal((11, 4)), rng.standard_normal((6, 4))
    slices = [rows for rows, block in distance_chunks(query, gallery, chunk_size=4)]
    assert slices == [slice(0, 4), slice(4, 8), slice(8, 11)]
    float32 = next(distance_chunks(query.astype(np.float32), gallery.astype(np.float32)))[1]
    assert float32.dtype == torch.float32


def test_cosine_and_euclidean_agree_on_normalised_features():
    # On unit vectors ||q - g||² = 2 (1 - cos): the rankings, hence the metrics, coincide.
    query, gallery, *labels = clustered_features(np.random.default_rng(3))
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    cosine = evaluate_features(query, gallery, *labels, "cosine")
    euclidean = evaluate_features(query, gallery, *labels, "euclidean")
    assert cosine["mAP"] == pytest.approx(euclidean["mAP"], abs=1e-9)
    # ... but not on raw features, where the norms matter.
    raw_query, raw_gallery, *raw_labels = clustered_features(np.random.default_rng(3))
    raw_gallery *= np.random.default_rng(4).uniform(0.2, 5.0, (len(raw_gallery), 1))
    assert evaluate_features(raw_query, raw_gallery, *raw_labels, "cosine")["mAP"] != (
        pytest.approx(evaluate_features(raw_query, raw_gallery, *raw_labels, "euclidean")["mAP"])
    )


def test_runs_on_every_device(device):
    query, gallery, *labels = clustered_features(np.random.default_rng(5))
    expected = evaluate_features(query, gallery, *labels)
    q = torch.as_tensor(query, dtype=torch.float32, device=device)
    g = torch.as_tensor(gallery, dtype=torch.float32, device=device)
    labels_t = [torch.as_tensor(a, device=device) for a in labels]
    result = evaluate_features(q, g, *labels_t, chunk_size=8)
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-5)


def test_consumes_reranked_distance_blocks(monkeypatch):
    # A stand-in for the re-ranking generator: blocks of a known distance matrix.
    rng = np.random.default_rng(6)
    query, gallery, *labels = clustered_features(rng)
    known = torch.as_tensor(rng.random((len(query), len(gallery))))
    calls = {}

    def fake_chunks(q, g, k1, k2, lambda_value, metric, chunk_size, device):
        calls.update(k1=k1, k2=k2, lambda_value=lambda_value, metric=metric)
        for start in range(0, len(q), 9):
            rows = slice(start, min(start + 9, len(q)))
            yield rows, known[rows]

    monkeypatch.setattr(reranking, "reranked_distance_chunks", fake_chunks)
    result = evaluate_features(
        query, gallery, *labels, "euclidean", rerank=True, k1=5, k2=2, lambda_value=0.5
    )
    assert calls == {"k1": 5, "k2": 2, "lambda_value": 0.5, "metric": "euclidean"}
    assert_results_equal(result, evaluate_ranking(known, *labels))


def test_rejects_blocks_that_skip_queries(monkeypatch):
    query, gallery, *labels = clustered_features(np.random.default_rng(7))

    def skipping(q, g, **_):
        yield slice(0, 5), torch.zeros(5, len(g))
        yield slice(6, len(q)), torch.zeros(len(q) - 6, len(g))

    monkeypatch.setattr(reranking, "reranked_distance_chunks", skipping)
    with pytest.raises(RuntimeError, match="in order"):
        evaluate_features(query, gallery, *labels, rerank=True)


def test_rerank_path_matches_dense_reranking_on_a_small_case():
    query, gallery, *labels = clustered_features(np.random.default_rng(8), 12, 40, 6, 8)
    q = torch.as_tensor(query, dtype=torch.float32)
    g = torch.as_tensor(gallery, dtype=torch.float32)
    dense = reranking.rerank(
        reranking.feature_distances(q, g).numpy(),
        reranking.feature_distances(q, q).numpy(),
        reranking.feature_distances(g, g).numpy(),
        k1=6,
        k2=3,
    )
    expected = evaluate_ranking(dense, *labels)
    result = evaluate_features(q, g, *labels, rerank=True, k1=6, k2=3)
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)


def test_input_errors():
    query, gallery, *labels = clustered_features(np.random.default_rng(9))
    with pytest.raises(UserInputError, match="dimension"):
        evaluate_features(query, gallery[:, :5], *labels)
    with pytest.raises(UserInputError, match="metric must be one of cosine, euclidean"):
        evaluate_features(query, gallery, *labels, "manhattan")
    bad = query.copy()
    bad[0, 0] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        evaluate_features(bad, gallery, *labels)
    with pytest.raises(UserInputError, match="q_pids"):
        evaluate_features(query, gallery, labels[0][:-1], *labels[1:])
    with pytest.raises(UserInputError, match="2-D"):
        evaluate_features(query[0], gallery, *labels)
