"""Top-k search against brute force, torch against faiss, and the `adasp search` command."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from adasp.cli import search as search_cli
from adasp.errors import UserInputError
from adasp.evaluation import pairwise_distances, save_embeddings, search
from adasp.evaluation.search import FAISS_MIN_GALLERY, faiss_available, resolve_backend

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")


def features(seed=0, num_q=20, num_g=300, dim=12):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((num_q, dim)).astype(np.float32),
        rng.standard_normal((num_g, dim)).astype(np.float32),
    )


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_torch_search_equals_brute_force(metric):
    query, gallery = features()
    distances, indices = search(
        query, gallery, topk=7, metric=metric, backend="torch", chunk_size=6
    )
    full = pairwise_distances(query, gallery, metric).numpy()
    expected = np.argsort(full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(distances, np.take_along_axis(full, expected, 1), atol=1e-6)
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    assert np.all(np.diff(distances, axis=1) >= 0)


@needs_faiss
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_and_torch_give_the_same_neighbours(metric):
    query, gallery = features(1)
    d_torch, i_torch = search(query, gallery, topk=10, metric=metric, backend="torch")
    d_faiss, i_faiss = search(query, gallery, topk=10, metric=metric, backend="faiss")
    np.testing.assert_array_equal(i_faiss, i_torch)
    np.testing.assert_allclose(d_faiss, d_torch, atol=1e-4)


def test_topk_larger_than_gallery_returns_the_whole_gallery_sorted():
    query, gallery = features(2, num_g=4)
    _, indices = search(query, gallery, topk=10, backend="torch")
    assert indices.shape == (20, 4)
    assert sorted(indices[0].tolist()) == [0, 1, 2, 3]


def test_search_on_every_device(device):
    query, gallery = features(3)
    expected = search(query, gallery, topk=5, backend="torch")[1]
    q = torch.as_tensor(query, device=device)
    g = torch.as_tensor(gallery, device=device)
    np.testing.assert_array_equal(search(q, g, topk=5, backend="torch")[1], expected)


def test_auto_backend_choice():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", FAISS_MIN_GALLERY - 1, cpu) == "torch"
    expected = "faiss" if faiss_available() else "torch"
    assert resolve_backend("auto", FAISS_MIN_GALLERY, cpu) == expected
    assert resolve_backend("auto", 10**7, torch.device("cuda")) == "torch"
    assert resolve_backend("torch", 10**7, cpu) == "torch"


def test_search_errors():
    query, gallery = features(4)
    with pytest.raises(UserInputError, match="topk"):
        search(query, gallery, topk=0)
    with pytest.raises(UserInputError, match="backend must be one of auto, torch, faiss"):
        search(query, gallery, backend="annoy")
    with pytest.raises(UserInputError, match="dimension"):
        search(query, gallery[:, :3])
    with pytest.raises(UserInputError, match="empty"):
        search(query, gallery[:0])


# ------------------------------------------------------------------------- the command


def write_embeddings(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((5, 8))
    q_pids, g_pids = np.arange(5), np.repeat(np.arange(5), 3)
    query = centres[q_pids] + 0.05 * rng.standard_normal((5, 8))
    gallery = centres[g_pids] + 0.05 * rng.standard_normal((15, 8))
    q_paths = [f"query/{p}_{i}.png" for i, p in enumerate(q_pids)]
    g_paths = [f"gallery/{p}_{i}.png" for i, p in enumerate(g_pids)]
    save_embeddings(tmp_path / "q.npz", query, q_pids, np.zeros(5, int), q_paths)
    save_embeddings(tmp_path / "g.npz", gallery, g_pids, np.ones(15, int), g_paths)
    save_embeddings(
        tmp_path / "all.npz",
        np.concatenate([query, gallery]),
        np.concatenate([q_pids, g_pids]),
        np.zeros(20, int),
        q_paths + g_paths,
        ["query"] * 5 + ["gallery"] * 15,
    )


def run_command(argv):
    parser = argparse.ArgumentParser()
    search_cli.add_arguments(parser)
    return search_cli.run(parser.parse_args(argv))


def test_command_writes_json(tmp_path, capsys):
    write_embeddings(tmp_path)
    out = tmp_path / "results.json"
    argv = ["--query", str(tmp_path / "q.npz"), "--gallery", str(tmp_path / "g.npz")]
    assert run_command([*argv, "--topk", "3", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "searched 5 queries against 15 gallery images" in printed
    assert "query/0_0.png" in printed
    data = json.loads(out.read_text())
    assert data["topk"] == 3 and data["metric"] == "cosine" and len(data["results"]) == 5
    for record in data["results"]:
        # Tight clusters: the 3 nearest are the query's own identity.
        assert record["gallery_pids"] == [record["query_pid"]] * 3
        assert len(record["gallery"]) == 3 and record["distances"] == sorted(record["distances"])


def test_command_with_one_file_and_csv(tmp_path, capsys):
    write_embeddings(tmp_path)
    out = tmp_path / "results.csv"
    argv = ["--embeddings", str(tmp_path / "all.npz"), "--topk", "2", "--output", str(out)]
    assert run_command([*argv, "--metric", "euclidean", "--backend", "torch", "--show", "0"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 * 2
    assert rows[0].keys() == {"query", "query_pid", "rank", "gallery", "gallery_pid", "distance"}
    assert [r["rank"] for r in rows[:2]] == ["1", "2"]
    assert "query/" not in capsys.readouterr().out  # --show 0: no table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no embeddings given"),
        (["--embeddings", "E", "--query", "Q"], "not both"),
        (["--query", "{d}/q.npz", "--gallery", "{d}/missing.npz"], "not found"),
        (["--embeddings", "{d}/q.npz"], "no 'splits' array"),
        (["--query", "{d}/q.npz", "--gallery", "{d}/g.npz", "--output", "r.txt"], ".json or .csv"),
        (["--query", "{d}/q.npz", "--gallery", "{d}/g.npz", "--topk", "0"], "at least 1"),
    ],
)
def test_command_errors(tmp_path, argv, message):
    write_embeddings(tmp_path)
    with pytest.raises(UserInputError, match=message):
        run_command([a.format(d=tmp_path) for a in argv])


def test_command_through_the_main_entry_point_when_registered(tmp_path, capsys):
    from adasp.cli import COMMANDS, main

    if "search" not in COMMANDS:
        pytest.skip("`adasp search` is not registered in adasp.cli.COMMANDS yet")
    write_embeddings(tmp_path)
    assert main(["search", "--embeddings", str(tmp_path / "all.npz")]) == 0
    assert main(["search"]) == 2
    assert "no embeddings given" in capsys.readouterr().err


def test_same_camera_matches_of_the_query_identity_are_left_out_like_the_evaluation():
    from adasp.evaluation import Embeddings, evaluate_features
    from adasp.evaluation.search import search_embeddings

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, 8))
    q_pids, g_pids = np.array([0, 1, 2, 3]), np.repeat(np.arange(4), 4)
    q_cams, g_cams = np.zeros(4, int), np.tile([0, 0, 1, 2], 4)
    q = centres[q_pids] + 0.05 * rng.standard_normal((4, 8))
    g = centres[g_pids] + 0.05 * rng.standard_normal((16, 8))
    g[0] = q[0]  # a byte-identical copy of query 0 in the gallery, same camera
    query = Embeddings(q.astype(np.float32), q_pids, q_cams, np.array([f"q{i}" for i in range(4)]))
    gallery = Embeddings(
        g.astype(np.float32), g_pids, g_cams, np.array([f"g{i}" for i in range(16)])
    )
    for backend in ("torch", "faiss") if faiss_available() else ("torch",):
        result = search_embeddings(query, gallery, topk=5, backend=backend)
        assert result.same_camera_excluded
        same = (g_pids[result.indices] == q_pids[:, None]) & (
            g_cams[result.indices] == q_cams[:, None]
        )
        assert not same.any()
        assert result.indices.shape == (4, 5) and np.all(np.diff(result.distances, axis=1) >= 0)
        # The first hits are the identity's other-camera images, as the evaluation ranks them.
        assert (g_pids[result.indices[:, :2]] == q_pids[:, None]).all()
    kept = search_embeddings(query, gallery, topk=5, exclude_same_camera=False)
    assert kept.indices[0, 0] == 0 and not kept.same_camera_excluded
    # Unknown cameras (-1): nothing is left out by default.
    unknown = Embeddings(query.features, q_pids, np.full(4, -1), query.paths)
    assert not search_embeddings(unknown, gallery, topk=5).same_camera_excluded
    # Rank 1 of the search equals the evaluation's rank-1 hits.
    result = search_embeddings(query, gallery, topk=1)
    r1 = evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams)["cmc"][0]
    assert (g_pids[result.indices[:, 0]] == q_pids).mean() == r1


def test_command_says_what_it_left_out(tmp_path, capsys):
    write_embeddings(tmp_path)
    argv = ["--query", str(tmp_path / "q.npz"), "--gallery", str(tmp_path / "g.npz")]
    assert run_command(argv) == 0
    assert "left out: gallery images of the query's identity" in capsys.readouterr().out
    assert run_command([*argv, "--keep-same-camera"]) == 0
    assert "left out" not in capsys.readouterr().out
