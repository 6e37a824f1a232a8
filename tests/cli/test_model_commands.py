"""The commands around a trained model: evaluate --visualize, extract, search, export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adasp.cli import main
from adasp.evaluation import load_embeddings


@pytest.fixture(scope="module")
def trained_run(finished_run):
    return finished_run


@pytest.mark.slow
def test_evaluate_visualize_writes_ranked_lists_and_cmc(trained_run, tmp_path, capsys):
    from adasp.evaluation.query_results import load_evaluation_queries

    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(trained_run / "model.pt"), "--output", str(out),
                 "--visualize", "3", "--visualize-worst", "2", "--topk", "5", "--html",
                 "--no-progress"]) == 0  # fmt: skip
    pngs = sorted((out / "ranked_lists").glob("*.png"))
    assert len(pngs) == 5 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    (queries,) = load_evaluation_queries(out)
    # Named after the query files; the worst two first, by AP.
    worst = [queries.query_paths[i].rsplit("/", 1)[-1].rsplit(".", 1)[0] for i in queries.worst(2)]
    assert [p.name for p in pngs[-2:]] == [f"worst-00{n}_{w}.png" for n, w in enumerate(worst, 1)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert queries.mean_ap == pytest.approx(metrics["mAP"], abs=1e-12)
    assert queries.rank1 == pytest.approx(metrics["rank1"], abs=1e-12)
    assert (out / "cmc.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") > queries.num_queries
    captured = capsys.readouterr()
    assert "evaluation of the trained model" in captured.out
    assert f"results page: {out / 'report.html'}" in captured.out
    assert "\r" not in captured.err  # no progress bars


def test_extract_then_search(trained_run, tmp_path, capsys):
    emb = tmp_path / "test.npz"
    assert main(["extract", "--checkpoint", str(trained_run / "model.pt"), "--split", "test",
                 "--output", str(emb)]) == 0  # fmt: skip
    data = load_embeddings(emb)
    assert data.features.shape[0] == len(data.paths) == len(data.pids) > 0
    assert set(np.unique(data.splits)) == {"query", "gallery"}
    results = tmp_path / "results.json"
    assert main(["search", "--embeddings", str(emb), "--topk", "3", "--output", str(results)]) == 0
    written = json.loads(results.read_text())
    assert written["topk"] == 3 and written["metric"] == "cosine"
    assert len(written["results"]) == int((data.splits == "query").sum())
    capsys.readouterr()


def test_extract_a_folder(trained_run, tmp_path, pku_subset):
    emb = tmp_path / "folder.npz"
    code = main(["extract", "--checkpoint", str(trained_run / "model.pt"),
                 "--folder", str(pku_subset / "query"), "--output", str(emb)])  # fmt: skip
    assert code == 0
    data = load_embeddings(emb)
    assert data.features.shape[0] == 28 and set(data.pids.tolist()) <= {
        4,
        12,
        17,
        18,
        23,
        32,
        33,
        46,
        52,
        55,
        73,
        88,
    }


@pytest.mark.slow
def test_search_two_folders_with_a_checkpoint(trained_run, tmp_path, pku_subset, capsys):
    results = tmp_path / "r.csv"
    code = main(["search", "--checkpoint", str(trained_run / "model.pt"),
                 "--query-folder", str(pku_subset / "query"),
                 "--gallery-folder", str(pku_subset / "gallery"), "--topk", "5",
                 "--output", str(results)])  # fmt: skip
    assert code == 0
    assert "searched 28 queries against 181 gallery images" in capsys.readouterr().out
    assert results.read_text().count("\n") > 28


@pytest.mark.slow
def test_export_onnx_says_it_verified(trained_run, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    assert (
        main(["export", "--checkpoint", str(trained_run / "model.pt"), "--output", str(path)]) == 0
    )
    out = capsys.readouterr().out
    assert path.stat().st_size > 1000
    assert "verified with onnxruntime: max |ONNX - PyTorch|" in out and "<= 0.0001" in out


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert (
        main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--output", str(tmp_path)])
        == 2
    )
    assert capsys.readouterr().err.strip().startswith("adasp evaluate: error: checkpoint not found")


@pytest.mark.slow
def test_visualize_with_reranking_draws_the_reranked_lists(trained_run, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(trained_run / "model.pt"), "--output", str(out),
                 "--visualize", "2", "eval.rerank=true", "eval.k1=5", "eval.k2=2"]) == 0  # fmt: skip
    assert len(list((out / "ranked_lists").glob("*.png"))) == 2


def test_model_file_records_its_preprocessing(trained_run):
    import torch

    from adasp.models.preprocessing import preprocessing_from_model_file

    saved = torch.load(trained_run / "model.pt", weights_only=True)
    recorded = preprocessing_from_model_file(saved)
    assert saved["preprocessing"]["interpolation"] == "bilinear"
    assert list(recorded.image_size) == saved["config"]["data"]["image_size"]
    assert list(recorded.mean) == pytest.approx(saved["config"]["data"]["mean"])
