"""Sparse building blocks of re-ranking, each against a dense computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adasp.evaluation.reranking as reranking
import adasp.evaluation.reranking_sparse as sparse
from adasp.evaluation.reranking import _final_block
from adasp.evaluation.reranking_sparse import (
    SparseRows,
    average_rows,
    columns_of,
    gather_segments,
    k_reciprocal_encoding,
    reciprocal_mask,
    shared_minima,
    smallest_k_stable,
)


def random_sparse_rows(rng, n_rows, n_cols, density, normalise=True):
    dense = rng.random((n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < density)
    dense[np.arange(n_rows), rng.integers(0, n_cols, n_rows)] += 0.5  # no empty rows
    if normalise:
        dense /= dense.sum(1, keepdims=True)
    dense = torch.tensor(dense, dtype=torch.float32)
    rows, cols = dense.nonzero(as_tuple=True)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    return SparseRows(crow, cols, dense[rows, cols], n_cols), dense


@pytest.mark.parametrize(("n", "k"), [(50, 5), (50, 30), (12, 12), (200, 21)])
@pytest.mark.parametrize("with_divisor", [False, True])
def test_smallest_k_stable_is_a_stable_argsort_prefix(n, k, with_divisor):
    rng = np.random.default_rng(n + k)
    # few distinct values: ties everywhere, including across the k-th place
    values = torch.tensor(rng.integers(0, 6, size=(40, n)), dtype=torch.float32)
    divisor = torch.tensor(rng.choice([1.0, 3.0, 7.0], size=40), dtype=torch.float32)
    got = smallest_k_stable(values, k, divisor if with_divisor else None)
    scaled = (values / divisor[:, None] if with_divisor else values).numpy()
    want = np.argsort(scaled, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(got.numpy(), want)


def test_smallest_k_stable_with_continuous_values():
    values = torch.rand(30, 500, generator=torch.Generator().manual_seed(0))
    got = smallest_k_stable(values, 21)
    np.testing.assert_array_equal(got.numpy(), np.argsort(values.numpy(), axis=1)[:, :21])


def test_gather_segments():
    crow = torch.tensor([0, 2, 2, 5, 6])
    positions, owner = gather_segments(crow, torch.tensor([2, 0, 1, 2, 3]))
    assert positions.tolist() == [2, 3, 4, 0, 1, 2, 3, 4, 5]
    assert owner.tolist() == [0, 0, 0, 1, 1, 3, 3, 3, 4]


def test_sparse_rows_round_trip():
    v, dense = random_sparse_rows(np.random.default_rng(0), 7, 9, 0.3)
    torch.testing.assert_close(v.to_dense(), dense)
    assert v.n_rows == 7
    assert v.nnz == int((dense != 0).sum())


def test_reciprocal_mask():
    neighbours = torch.tensor([[0, 1], [1, 2], [2, 1], [3, 0]])
    mask = reciprocal_mask(neighbours, torch.arange(4))
    # 0-1 is one-sided, 1-2 mutual; every item is its own neighbour
    assert mask.tolist() == [[True, False], [True, True], [True, True], [True, False]]


def test_k_reciprocal_encoding_against_sets():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(40, 3))
    dist = ((points[:, None] - points[None]) ** 2).sum(-1)
    dist /= dist.max(axis=1, keepdims=True)
    order = np.argsort(dist, axis=1, kind="stable")
    k1 = 6
    v = k_reciprocal_encoding(
        torch.from_numpy(order[:, : k1 + 1]).contiguous(),
        k1,
        lambda r, c: torch.tensor(dist[r.numpy(), c.numpy()], dtype=torch.float32),
    )

    def reciprocal(i, k):
        return {int(j) for j in order[i, : k + 1] if i in order[j, : k + 1]}

    want = np.zeros_like(dist)
    for i in range(len(points)):
        core = reciprocal(i, k1)
        members = set(core)
        for c in core:
            half = reciprocal(c, 3)
            if 3 * len(half & core) > 2 * len(half):
                members |= half
        idx = sorted(members)
        weights = np.exp(-dist[i, idx])
        want[i, idx] = weights / weights.sum()
    np.testing.assert_allclose(v.to_dense().numpy(), want, atol=1e-6)
    assert v.to_dense().count_nonzero() == np.count_nonzero(want)


def test_average_rows_is_a_mean_of_rows():
    rng = np.random.default_rng(2)
    v, dense = random_sparse_rows(rng, 30, 30, 0.1)
    sources = torch.tensor(rng.integers(0, 30, size=(30, 4)))
    got = average_rows(v, sources)
    torch.testing.assert_close(got.to_dense(), dense[sources].mean(1))
    assert got.to_dense().count_nonzero() == dense[sources].sum(1).count_nonzero()


def test_columns_of_is_the_transposed_gallery_block():
    v, dense = random_sparse_rows(np.random.default_rng(3), 20, 20, 0.2)
    got = columns_of(v, 6)
    torch.testing.assert_close(got.to_dense(), dense[6:].T)


def test_jaccard_matches_the_dense_formula():
    v, dense = random_sparse_rows(np.random.default_rng(4), 25, 25, 0.15)
    gallery_columns = columns_of(v, 5)
    # With lambda 0 and no original distance, the final block is the Jaccard distance alone.
    got = _final_block(v, gallery_columns, torch.zeros(4, 20), 1, 0.0)
    a, b = dense[1:5, None, :], dense[None, 5:, :]
    want = 1 - torch.minimum(a, b).sum(-1) / torch.maximum(a, b).sum(-1)
    torch.testing.assert_close(got, want)
    flat, shared = shared_minima(v, gallery_columns, 1, 5)
    assert torch.all(flat[1:] > flat[:-1])
    assert torch.all(shared > 0)


def test_small_budgets_give_the_same_distances(monkeypatch):
    # Tiny gather budgets and neighbour blocks force every split and merge path.
    rng = np.random.default_rng(5)
    features = rng.normal(size=(90, 6)).astype(np.float32)
    query, gallery = features[:20], features[20:]
    want = reranking.rerank_features(query, gallery, k1=6, k2=3, dense=True)
    monkeypatch.setattr(sparse, "GATHER_BUDGET", 64)
    monkeypatch.setattr(reranking, "GATHER_BUDGET", 64)
    monkeypatch.setattr(reranking, "NEIGHBOUR_BLOCK_ELEMENTS", 700)
    got = reranking.rerank_features(query, gallery, k1=6, k2=3, dense=False, chunk_size=3)
    np.testing.assert_allclose(got, want, atol=2e-6)
    dense_small = reranking.rerank_features(query, gallery, k1=6, k2=3, dense=True)
    np.testing.assert_allclose(dense_small, want, atol=2e-6)
