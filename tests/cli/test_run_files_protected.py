"""Issue 23, items 1, 2, 10 and 11: the commands around a trained model never write over a
run's files, never leave a failed ONNX export in place of a verified one, honour (or refuse)
the opset asked for, and refuse NaN embeddings."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from adasp.cli import main
from adasp.engine.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(finished_run):
    """A finished one-epoch run, as ``adasp train`` writes it, and its test embeddings beside it."""
    embeddings = finished_run.parent / "test.npz"
    if not embeddings.exists():
        checkpoint = str(finished_run / "model.pt")
        assert main(["extract", "--checkpoint", checkpoint, "--output", str(embeddings)]) == 0
    return finished_run


def _digests(folder):
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".adasp.lock"
    }


def _one_line(capsys, command):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"adasp {command}: error: ")
    return err


def _commands(run, output):
    model = str(run / "model.pt")
    return {
        "evaluate": ["evaluate", "--checkpoint", model, "--output", str(output), "eval.rerank=true"],
        "extract": ["extract", "--checkpoint", model, "--split", "query", "--output", str(output)],
        "export": ["export", "--checkpoint", model, "--output", str(output)],
        "search": ["search", "--embeddings", str(run.parent / "test.npz"), "--output",
                   str(output)],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("command", "target"),
    [
        ("evaluate", "."),
        ("evaluate", "checkpoints"),
        ("extract", "model.pt"),
        ("extract", "checkpoints/last.pt"),
        ("export", "checkpoints/last.pt"),
        ("export", "model.pt"),
        ("search", "metrics.json"),
        ("search", "checkpoints/results.csv"),
    ],
)
def test_no_command_writes_onto_a_runs_files(run, command, target, tmp_path, capsys):
    shutil.copy(run.parent / "test.npz", tmp_path)
    run = Path(shutil.copytree(run, tmp_path / "r"))
    before = _digests(run)
    output = (run / target).resolve() if target != "." else run
    assert main(_commands(run, output)[command]) == 2
    line = _one_line(capsys, command)
    assert str(run) in line and "belong" in line and "e.g." in line
    assert _digests(run) == before  # so --resume still works


def test_a_new_file_beside_the_runs_files_is_fine(run, tmp_path, capsys):
    output = run / "exports" / "query.npz"
    assert main(_commands(run, output)["extract"]) == 0
    assert output.is_file()
    output.unlink()
    output.parent.rmdir()
    capsys.readouterr()


def _nan_checkpoint(run, tmp_path):
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.dim() == 4)
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    path = tmp_path / "nan.pt"
    save_checkpoint(path, state)
    return path


def test_a_failed_onnx_verification_keeps_the_verified_file(run, tmp_path, capsys):
    onnx = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(run / "model.pt"), "--output", str(onnx)]) == 0
    verified = onnx.read_bytes()
    capsys.readouterr()
    bad = _nan_checkpoint(run, tmp_path)
    assert main(["export", "--checkpoint", str(bad), "--output", str(onnx)]) == 2
    line = _one_line(capsys, "export")
    assert str(onnx) in line and "unchanged" in line
    assert onnx.read_bytes() == verified
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "nan.pt"]


def test_a_negative_atol_is_refused_before_any_work(run, tmp_path, capsys):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"previous")
    argv = ["export", "--checkpoint", str(run / "model.pt"), "--output", str(onnx), "--atol", "-1"]
    assert main(argv) == 2
    assert "--atol must be" in _one_line(capsys, "export")
    assert onnx.read_bytes() == b"previous"


@pytest.mark.parametrize("opset", [1, 17, 999])
def test_an_unsupported_opset_is_refused(run, tmp_path, opset, capsys):
    onnx = tmp_path / "model.onnx"
    argv = ["export", "--checkpoint", str(run / "model.pt"), "--output", str(onnx)]
    assert main([*argv, "--opset", str(opset)]) == 2
    line = _one_line(capsys, "export")
    assert f"--opset {opset}" in line and "18" in line
    assert not onnx.exists()


def test_the_opset_asked_for_is_the_one_written(run, tmp_path, capsys):
    import onnx as onnx_lib

    onnx = tmp_path / "model.onnx"
    argv = ["export", "--checkpoint", str(run / "model.pt"), "--output", str(onnx)]
    assert main([*argv, "--opset", "20"]) == 0
    versions = {i.domain: i.version for i in onnx_lib.load(str(onnx)).opset_import}
    assert versions[""] == 20
    capsys.readouterr()


def test_extract_refuses_nan_embeddings(run, tmp_path, capsys):
    bad = _nan_checkpoint(run, tmp_path)
    output = tmp_path / "e.npz"
    argv = ["extract", "--checkpoint", str(bad), "--split", "query", "--output", str(output)]
    assert main(argv) == 2
    line = _one_line(capsys, "extract")
    assert "not finite" in line and str(bad) in line
    assert not output.exists()
