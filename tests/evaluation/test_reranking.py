"""k-reciprocal re-ranking: dense against a loop-based definition, dense against sparse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasp.errors import UserInputError
from adasp.evaluation.reranking import (
    RERANK_METRICS,
    feature_distances,
    rerank,
    rerank_features,
    reranked_distance_chunks,
)


def naive_rerank(q_g, q_q, g_g, k1, k2, lambda_value):
    """k-reciprocal re-ranking from the paper's definitions, one item at a time, in float64.

    With the reference's conventions: squared distances, each column divided by its maximum
    and the result transposed; neighbour lists include the item itself; the half-size sets
    use round(k1 / 2) (half to even).
    """
    q_g, q_q, g_g = (np.asarray(a, dtype=np.float64) for a in (q_g, q_q, g_g))
    num_query = q_g.shape[0]
    n = num_query + q_g.shape[1]
    squared = np.block([[q_q, q_g], [q_g.T, g_g]]) ** 2
    original = (squared / squared.max(axis=0)).T
    ranked = [sorted(range(n), key=lambda j, i=i: (original[i, j], j)) for i in range(n)]

    def reciprocal(i, k):
        return {j for j in ranked[i][: k + 1] if i in ranked[j][: k + 1]}

    half = round(k1 / 2)
    encoding = np.zeros((n, n))
    for i in range(n):
        core = reciprocal(i, k1)
        expanded = set(core)
        for candidate in core:
            candidate_set = reciprocal(candidate, half)
            if 3 * len(candidate_set & core) > 2 * len(candidate_set):
                expanded |= candidate_set
        members = sorted(expanded)
        weights = np.exp(-original[i, members])
        encoding[i, members] = weights / weights.sum()
    if k2 != 1:
        encoding = np.stack([encoding[ranked[i][:k2]].mean(axis=0) for i in range(n)])
    jaccard = np.zeros((num_query, n))
    for i in range(num_query):
        for j in range(n):
            # sum(min) / sum(max), with sum(max) = 2 - sum(min) as the reference writes it
            # (equal when both rows sum to 1; an item outside its own neighbour list, as in
            # asymmetric input, can have an empty encoding)
            both = np.minimum(encoding[i], encoding[j]).sum()
            jaccard[i, j] = 1.0 - both / (2.0 - both)
    final = jaccard * (1.0 - lambda_value) + original[:num_query] * lambda_value
    return final[:, num_query:]


def identity_features(num_ids, per_id, dim, noise, seed):
    """Features clustered by identity: a random centre per identity plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    labels = np.repeat(np.arange(num_ids), per_id)
    features = centres[labels] + noise * rng.normal(size=(labels.size, dim))
    order = rng.permutation(labels.size)
    return features[order].astype(np.float32), labels[order]


def blocks(query, gallery, metric="cosine"):
    return (
        feature_distances(query, gallery, metric).numpy(),
        feature_distances(query, query, metric).numpy(),
        feature_distances(gallery, gallery, metric).numpy(),
    )


def sparse(query, gallery, **kwargs):
    chunks = list(reranked_distance_chunks(query, gallery, **kwargs))
    return torch.cat([d for _, d in chunks]).numpy()


# ---------------------------------------------------------------------------------------------
# dense rerank against the loop-based definition


@pytest.mark.parametrize(
    ("num_query", "num_gallery", "k1", "k2", "lambda_value", "seed"),
    [
        (5, 15, 5, 3, 0.3, 0),
        (8, 22, 20, 6, 0.3, 1),  # k1 + 1 > N: every list is the whole set
        (6, 18, 4, 1, 0.5, 2),  # k2 = 1: no query expansion
        (4, 10, 3, 2, 0.0, 3),  # k1 = 3: round(1.5) = 2
        (10, 20, 5, 6, 0.8, 4),  # k1 = 5: round(2.5) = 2 (half to even)
        (7, 23, 1, 4, 0.3, 5),
    ],
)
def test_dense_matches_loop_definition(num_query, num_gallery, k1, k2, lambda_value, seed):
    features, _ = identity_features(6, 5, 6, 0.6, seed)
    query, gallery = features[:num_query], features[num_query : num_query + num_gallery]
    q_g, q_q, g_g = blocks(query, gallery, "euclidean")
    got = rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)
    want = naive_rerank(q_g, q_q, g_g, k1, k2, lambda_value)
    assert got.shape == (num_query, num_gallery)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_dense_matches_loop_definition_with_ties():
    # Integer points: many exactly equal distances, so tie-breaking decides the neighbour
    # lists; both sides break ties by the lower index.
    rng = np.random.default_rng(7)
    points = rng.integers(0, 3, size=(30, 2)).astype(np.float32)
    q_g, q_q, g_g = blocks(points[:8], points[8:], "sqeuclidean")
    for k1, k2 in [(3, 2), (6, 3), (10, 6)]:
        got = rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=0.3)
        np.testing.assert_allclose(got, naive_rerank(q_g, q_q, g_g, k1, k2, 0.3), atol=2e-6)


def test_dense_follows_reference_normalisation_for_asymmetric_input():
    # The reference divides each column of the assembled matrix by its maximum, then
    # transposes: with asymmetric blocks that is not a per-row normalisation.
    rng = np.random.default_rng(11)
    q_g = rng.uniform(0.1, 2.0, size=(6, 14))
    q_q = rng.uniform(0.1, 2.0, size=(6, 6))
    g_g = rng.uniform(0.1, 2.0, size=(14, 14))
    got = rerank(q_g, q_q, g_g, k1=4, k2=3, lambda_value=0.4)
    np.testing.assert_allclose(got, naive_rerank(q_g, q_q, g_g, 4, 3, 0.4), atol=2e-6)


# ---------------------------------------------------------------------------------------------
# properties


def test_lambda_one_returns_squared_normalised_original_distances():
    features, _ = identity_features(5, 6, 8, 0.5, 3)
    q_g, q_q, g_g = blocks(features[:9], features[9:], "euclidean")
    got = rerank(q_g, q_q, g_g, lambda_value=1.0)
    squared = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
    column_max = squared.max(axis=0)
    np.testing.assert_allclose(got, q_g**2 / column_max[:9, None], rtol=1e-6)


def test_lambda_zero_is_a_jaccard_distance_in_unit_range():
    features, _ = identity_features(8, 6, 8, 0.5, 4)
    got = rerank(*blocks(features[:9], features[9:]), k1=4, k2=2, lambda_value=0.0)
    assert got.min() >= 0.0
    assert got.max() <= 1.0
    # gallery items sharing no encoding column with a query are at distance exactly 1
    assert (got == 1.0).any()


def test_k2_one_skips_query_expansion():
    features, _ = identity_features(5, 6, 8, 0.5, 5)
    q_g, q_q, g_g = blocks(features[:9], features[9:])
    plain = rerank(q_g, q_q, g_g, k1=6, k2=1)
    expanded = rerank(q_g, q_q, g_g, k1=6, k2=4)
    assert not np.allclose(plain, expanded)
    np.testing.assert_allclose(plain, naive_rerank(q_g, q_q, g_g, 6, 1, 0.3), atol=2e-6)


def test_numpy_and_torch_inputs_agree():
    features, _ = identity_features(4, 6, 8, 0.5, 6)
    q_g, q_q, g_g = blocks(features[:6], features[6:])
    from_numpy = rerank(q_g, q_q, g_g, k1=5)
    from_torch = rerank(torch.from_numpy(q_g), torch.from_numpy(q_q), torch.from_numpy(g_g), k1=5)
    from_float64 = rerank(q_g.astype(np.float64), q_q, g_g, k1=5)
    np.testing.assert_array_equal(from_numpy, from_torch)
    np.testing.assert_allclose(from_numpy, from_float64, atol=1e-6)


def test_reranking_moves_same_identity_items_up():
    features, labels = identity_features(12, 6, 16, 1.2, 8)
    query, gallery = features[:20], features[20:]
    before = feature_distances(query, gallery).numpy()
    after = rerank_features(query, gallery, k1=6, k2=3)
    same = labels[:20, None] == labels[None, 20:]

    def mean_average_precision(distances):
        order = np.argsort(distances, axis=1, kind="stable")
        hits = np.take_along_axis(same, order, axis=1)
        precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
        return float(((precision * hits).sum(1) / hits.sum(1)).mean())

    assert mean_average_precision(after) > mean_average_precision(before)


# ---------------------------------------------------------------------------------------------
# dense against sparse


@pytest.mark.parametrize("metric", sorted(RERANK_METRICS))
@pytest.mark.parametrize(
    ("structured", "k1", "k2", "lambda_value", "chunk_size"),
    [
        (True, 20, 6, 0.3, None),
        (True, 5, 3, 0.0, 7),
        (False, 20, 6, 0.3, 1),
        (False, 3, 1, 0.7, 16),
        (True, 8, 12, 1.0, 5),  # k2 > k1 + 1
    ],
)
def test_sparse_matches_dense(metric, structured, k1, k2, lambda_value, chunk_size):
    seed = k1 * 10 + k2
    if structured:
        features, _ = identity_features(15, 8, 12, 0.7, seed)
    else:
        features = np.random.default_rng(seed).normal(size=(120, 12)).astype(np.float32)
    query, gallery = features[:25], features[25:]
    dense = rerank(*blocks(query, gallery, metric), k1=k1, k2=k2, lambda_value=lambda_value)
    got = sparse(
        query, gallery, k1=k1, k2=k2, lambda_value=lambda_value, metric=metric,
        chunk_size=chunk_size,
    )  # fmt: skip
    np.testing.assert_allclose(got, dense, atol=2e-6)


@pytest.mark.parametrize(("k1", "k2"), [(3, 2), (5, 6), (12, 4)])
def test_sparse_matches_dense_and_loop_with_exact_ties(k1, k2):
    # Integer features and squared Euclidean distances are exact in float32, so both paths
    # see bit-identical distances full of ties; the top-k tie repair must reproduce the
    # stable order (N = 60 > k1 + 1 + margin exercises the top-k path).
    rng = np.random.default_rng(k1)
    points = rng.integers(0, 3, size=(60, 3)).astype(np.float32)
    query, gallery = points[:12], points[12:]
    q_g, q_q, g_g = blocks(query, gallery, "sqeuclidean")
    dense = rerank(q_g, q_q, g_g, k1=k1, k2=k2)
    got = sparse(query, gallery, k1=k1, k2=k2, metric="sqeuclidean", chunk_size=9)
    np.testing.assert_allclose(dense, naive_rerank(q_g, q_q, g_g, k1, k2, 0.3), atol=2e-6)
    np.testing.assert_allclose(got, dense, atol=2e-6)


def test_sparse_handles_duplicate_features():
    features, _ = identity_features(6, 5, 8, 0.5, 9)
    features = np.concatenate([features, features[:10]])  # exact duplicates
    query, gallery = features[:10], features[10:]
    dense = rerank(*blocks(query, gallery, "sqeuclidean"), k1=6, k2=3)
    got = sparse(query, gallery, k1=6, k2=3, metric="sqeuclidean", chunk_size=4)
    np.testing.assert_allclose(got, dense, atol=2e-6)


def test_chunks_cover_queries_in_order():
    features, _ = identity_features(8, 6, 8, 0.5, 10)
    query, gallery = torch.from_numpy(features[:17]), torch.from_numpy(features[17:])
    chunks = list(reranked_distance_chunks(query, gallery, k1=5, chunk_size=5))
    assert [c[0] for c in chunks] == [slice(0, 5), slice(5, 10), slice(10, 15), slice(15, 17)]
    for rows, distances in chunks:
        assert distances.shape == (rows.stop - rows.start, gallery.shape[0])
        assert distances.dtype == torch.float32
        assert distances.device == query.device


def test_rerank_features_dense_and_sparse_agree():
    features, _ = identity_features(10, 6, 8, 0.6, 12)
    query, gallery = features[:15], features[15:]
    dense = rerank_features(query, gallery, k1=8, k2=3, dense=True)
    chunked = rerank_features(query, gallery, k1=8, k2=3, dense=False, chunk_size=4)
    automatic = rerank_features(query, gallery, k1=8, k2=3)
    assert dense.shape == (15, 45)
    np.testing.assert_allclose(chunked, dense, atol=2e-6)
    np.testing.assert_array_equal(automatic, dense)


def test_sparse_runs_on_every_device(device):
    features, _ = identity_features(8, 6, 8, 0.5, 13)
    query = torch.from_numpy(features[:12]).to(device)
    gallery = torch.from_numpy(features[12:]).to(device)
    chunks = list(reranked_distance_chunks(query, gallery, k1=6, k2=3, chunk_size=5))
    assert all(d.device.type == device.type for _, d in chunks)
    got = torch.cat([d for _, d in chunks]).cpu().numpy()
    dense = rerank(*blocks(features[:12], features[12:]), k1=6, k2=3)
    np.testing.assert_allclose(got, dense, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# input validation


def _small_blocks():
    rng = np.random.default_rng(0)
    return rng.random((3, 5)), rng.random((3, 3)), rng.random((5, 5))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: (b[0], b[1][:2, :2], b[2]), "q_q_dist must be"),
        (lambda b: (b[0], b[1], b[2][:4]), "g_g_dist must be"),
        (lambda b: (b[0][0], b[1], b[2]), "must be 2-D"),
        (lambda b: (b[0][:, :0], b[1], b[2][:0, :0]), "empty"),
        (lambda b: (np.where(b[0] > 0.5, np.nan, b[0]), b[1], b[2]), "NaN"),
        (lambda b: (b[0].astype(str), b[1], b[2]), "numeric"),
    ],
)
def test_rerank_rejects_bad_matrices(change, message):
    with pytest.raises(UserInputError, match=message):
        rerank(*change(_small_blocks()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k1": 0}, "k1 must be an integer >= 1"),
        ({"k1": 2.5}, "k1 must be an integer >= 1"),
        ({"k1": True}, "k1 must be an integer >= 1"),
        ({"k2": 0}, "k2 must be an integer >= 1"),
        ({"lambda_value": -0.1}, r"lambda_value must be a number in \[0, 1\]"),
        ({"lambda_value": 1.5}, r"lambda_value must be a number in \[0, 1\]"),
        ({"lambda_value": "0.3"}, r"lambda_value must be a number in \[0, 1\]"),
    ],
)
def test_rejects_bad_parameters(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        rerank(*_small_blocks(), **kwargs)
    features = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(UserInputError, match=message):
        reranked_distance_chunks(features, features, **kwargs)  # raises before iterating


@pytest.mark.parametrize(
    ("query", "gallery", "kwargs", "message"),
    [
        (np.ones((4, 3)), np.ones((5, 2)), {}, "same dimension"),
        (np.ones((0, 3)), np.ones((5, 3)), {}, "empty"),
        (np.ones(3), np.ones((5, 3)), {}, "must be 2-D"),
        (np.full((4, 3), np.inf), np.ones((5, 3)), {}, "NaN or infinite"),
        (np.ones((4, 3)), np.ones((5, 3)), {"metric": "hamming"}, "unknown metric"),
        (np.ones((4, 3)), np.ones((5, 3)), {"chunk_size": 0}, "chunk_size"),
        (np.ones((4, 3)), np.ones((5, 3)), {"device": "gpu7"}, "device must be"),
    ],
)
def test_feature_paths_reject_bad_input(query, gallery, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        reranked_distance_chunks(query, gallery, **kwargs)
    with pytest.raises(UserInputError, match=message):
        rerank_features(query, gallery, **kwargs)
