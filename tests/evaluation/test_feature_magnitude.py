"""Issue 23, item 8: finite features of any magnitude give the distances and metrics of the
same features at unit scale (no overflow to inf, no underflow to 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasp.evaluation import evaluate_features
from adasp.evaluation.distances import pairwise_distances
from adasp.evaluation.search import search


def _separated(seed=0):
    """4 identities, 2 cameras: queries close to their identity's gallery images."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 16))
    query = centres + 0.01 * rng.normal(size=(4, 16))
    gallery = np.repeat(centres, 2, axis=0) + 0.01 * rng.normal(size=(8, 16))
    return (query.astype(np.float32), gallery.astype(np.float32), np.arange(4),
            np.repeat(np.arange(4), 2), np.zeros(4, int), np.ones(8, int))  # fmt: skip


# Powers of two (2^83 ~ 1e25): the scaled features hold exactly the same digits.
@pytest.mark.parametrize("scale", [2.0**83, 2.0**-83, 2.0**100])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_distances_do_not_depend_on_the_magnitude(metric, scale):
    query, gallery, *_ = _separated()
    unit = pairwise_distances(query, gallery, metric)
    scaled = pairwise_distances(query * scale, gallery * scale, metric)
    assert torch.isfinite(scaled).all()
    factor = 1.0 if metric == "cosine" else scale
    torch.testing.assert_close(scaled / factor, unit, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("rerank", [False, True], ids=["plain", "rerank"])
def test_evaluation_of_huge_features_is_that_of_the_same_features(metric, rerank):
    query, gallery, q_pids, g_pids, q_cams, g_cams = _separated()
    ids = (q_pids, g_pids, q_cams, g_cams)
    options = {"metric": metric, "rerank": rerank, "k1": 3, "k2": 2}
    assert evaluate_features(query, gallery, *ids, **options)["mAP"] == 1.0
    assert evaluate_features(query * 1e25, gallery * 1e25, *ids, **options)["mAP"] == 1.0


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_search_distances_of_huge_features_are_not_all_one(backend, metric):
    if backend == "faiss":
        pytest.importorskip("faiss", reason="the faiss backend needs faiss-cpu")
    query, gallery, *_ = _separated()
    scale = 2.0**83  # ~1e25, exact
    distances, indices = search(query * scale, gallery * scale, 2, metric, backend)
    expected_d, expected_i = search(query, gallery, 2, metric, backend)
    np.testing.assert_array_equal(indices, expected_i)
    factor = 1.0 if metric == "cosine" else scale
    np.testing.assert_allclose(distances / factor, expected_d, rtol=1e-5, atol=1e-6)


def test_unit_scale_distances_are_unchanged_bit_for_bit():
    # Scaling by powers of two is exact: ordinary features give the very same numbers.
    query, gallery, *_ = _separated(1)
    q, g = torch.from_numpy(query), torch.from_numpy(gallery)
    cosine = 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    assert torch.equal(pairwise_distances(q, g, "cosine"), cosine)
