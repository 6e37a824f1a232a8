"""Bad input that used to end in a traceback (issue 23, items 14-29): each is refused in one
line naming the problem and the fix, with exit status 2, and nothing is left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adasp.cli import main
from adasp.engine.config import load_config
from adasp.engine.run_log import RunLog
from adasp.engine.typed_config import ConfigError
from adasp.errors import UserInputError
from adasp.evaluation.embeddings import Embeddings, load_embeddings, save_embeddings


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    line = err.splitlines()[-1]
    assert line.startswith(f"adasp {command}: error: "), err
    return line


# ----------------------------------------------------------------- 14: disk full in the log
def test_a_full_disk_while_logging_is_one_line_naming_the_log(tmp_path):
    log = RunLog(tmp_path / "log.jsonl")
    log._handle.close()
    log._handle = open("/dev/full", "a", encoding="utf-8")  # every write: ENOSPC
    with pytest.raises(
        UserInputError, match=r"no space left on .* while writing .*log\.jsonl"
    ) as e:
        log.event("train", 3, loss=1.0)
    assert "--resume" in str(e.value) and "\n" not in str(e.value)
    log.close()


# ------------------------------------------------------- 15: a checkpoint that is not a dict
@pytest.mark.parametrize("content", [[1, 2, 3], torch.zeros(3)], ids=["list", "tensor"])
@pytest.mark.parametrize("command", ["evaluate", "extract", "export"])
def test_a_checkpoint_that_is_not_a_mapping_is_refused_in_one_line(
    tmp_path, capsys, content, command
):
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    output = tmp_path / ("out.onnx" if command == "export" else "out.npz")
    args = [command, "--checkpoint", str(path), "--config", "quickstart", "--output", str(output)]
    if command == "extract":
        args += ["--folder", str(tmp_path)]
    assert main(args) == 2
    line = _one_line_error(capsys, command)
    kind = "list" if isinstance(content, list) else "Tensor"
    assert f"{path} holds a {kind}, not an adasp checkpoint" in line
    assert not output.exists()


# ------------------------------------------------- 16: a checkpoint that does not fit the config
def _small_model_file(path, embedding_dim: int) -> None:
    from adasp.engine.builders import build_reid_model

    config = load_config("quickstart", [f"model.embedding_dim={embedding_dim}"])
    model = build_reid_model(config.model, 5)
    torch.save(
        {"format": "adasp-model-1", "config": config.to_dict(), "num_classes": 5,
         "model": model.state_dict()},
        path,
    )  # fmt: skip


def test_a_checkpoint_of_another_embedding_dim_names_the_keys_and_the_setting(tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    _small_model_file(checkpoint, 64)
    output = tmp_path / "model.onnx"
    args = ["export", "--checkpoint", str(checkpoint), "--config", "quickstart",
            "--output", str(output), "model.embedding_dim=128"]  # fmt: skip
    assert main(args) == 2
    line = _one_line_error(capsys, "export")
    assert "does not match the config" in line and "head.neck.reduction.weight" in line
    assert "(64, 512) in the checkpoint" in line and "(128, 512) in the model" in line
    assert "model.embedding_dim: the checkpoint was trained with 64, the config says 128" in line
    assert not output.exists()


@pytest.mark.slow  # builds a ResNet-50
def test_a_resnet50_state_dict_with_the_quickstart_config_names_the_backbone(tmp_path, capsys):
    from adasp.engine.builders import build_reid_model

    checkpoint = tmp_path / "resnet50.pt"
    config = load_config("quickstart", ["model.backbone=resnet50"])
    torch.save(build_reid_model(config.model, 5).state_dict(), checkpoint)  # a bare state dict
    args = ["export", "--checkpoint", str(checkpoint), "--config", "quickstart",
            "--output", str(tmp_path / "model.onnx")]  # fmt: skip
    assert main(args) == 2
    line = _one_line_error(capsys, "export")
    assert "backbone.layer1.0.conv1.weight is (64, 64, 1, 1) in the checkpoint" in line
    assert "check model.backbone ('resnet18')" in line
    assert line.endswith("pass the config the checkpoint was trained with")


# ------------------------------------------------------------ 17, 18: odd embedding files
def test_search_refuses_an_npy_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "features.npy"
    np.save(path, np.zeros((4, 8), np.float32))
    assert main(["search", "--embeddings", str(path)]) == 2
    line = _one_line_error(capsys, "search")
    assert f"{path} is a single NumPy array (.npy)" in line and "adasp extract" in line


def _embedding_file(path, version) -> None:
    save_embeddings(path, np.ones((2, 4)), [0, 1], [0, 0], ["a.jpg", "b.jpg"], ["query", "gallery"])
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["format_version"] = version
    np.savez(path, **arrays)


@pytest.mark.parametrize("version", [np.array("one"), np.array([1, 2]), np.array(1.5)])
def test_an_embedding_file_with_an_odd_version_is_refused_in_one_line(tmp_path, version):
    path = tmp_path / "e.npz"
    _embedding_file(path, version)
    with pytest.raises(UserInputError, match=r"format_version must be one integer"):
        load_embeddings(path)


# -------------------------------------------------------------- 19: a config not in UTF-8
def test_a_config_file_not_in_utf8_is_refused_in_one_line(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("model:\n  backbone: r\xe9snet18\n".encode("latin-1"))
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "run")]) == 2
    line = _one_line_error(capsys, "train")
    assert f"{config} is not UTF-8 text" in line and "line 2" in line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------ 20: a device this machine lacks
@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_an_unavailable_mps_device_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "quickstart", "--output", str(out), "--device", "mps"]) == 2
    line = _one_line_error(capsys, "train")
    assert "device 'mps' requested but MPS is not available here; use --device cpu" in line
    assert not out.exists()


# ------------------------------------------------------- 22: out of memory selecting rows
def test_out_of_memory_selecting_embeddings_names_the_memory_and_the_option():
    rows, dim = 200_000, 2_000_000  # 1.6 TB of float32 if copied; a view costs nothing
    features = np.broadcast_to(np.zeros((1, 1), np.float32), (rows, dim))
    ids = np.zeros(rows, np.int64)
    embeddings = Embeddings(features, ids, ids, np.full(rows, "a.jpg"), np.full(rows, "query"))
    with pytest.raises(UserInputError, match=r"needs about 1600\.0 GB") as error:
        embeddings.split("query")
    assert "--query Q.npz --gallery G.npz" in str(error.value)


def test_out_of_memory_reading_an_embedding_file_is_one_line(tmp_path):
    import io
    import zipfile

    from numpy.lib import format as npy_format

    header = io.BytesIO()  # a features array declared 1.6 TB large: reading must allocate it
    npy_format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (200_000, 2_000_000)}
    )
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("features.npy", header.getvalue() + bytes(64))
    with pytest.raises(UserInputError, match=r"not enough memory to read .*huge\.npz") as error:
        load_embeddings(path)
    assert "--query Q.npz --gallery G.npz" in str(error.value)


# ---------------------------------------------------------- 23: torn sweep and run files
def _sweep_folder(folder, metrics_text: str):
    folder.mkdir()
    manifest = {
        "config": "quickstart",
        "overrides": [],
        "grid": [{"key": "loss.temperature", "values": [0.04]}],
        "runs": [{"name": "t0.04", "values": {"loss.temperature": 0.04}, "overrides": []}],
    }
    (folder / "sweep.json").write_text(json.dumps(manifest))
    (folder / "t0.04").mkdir()
    (folder / "t0.04" / "metrics.json").write_text(metrics_text)


def test_report_on_a_torn_run_metrics_file_is_one_line(tmp_path, capsys):
    _sweep_folder(tmp_path / "s", '{"test_sets": {"synthetic": {"mAP": 0.5')
    assert main(["report", str(tmp_path / "s")]) == 2
    line = _one_line_error(capsys, "report")
    assert f"{tmp_path / 's' / 't0.04' / 'metrics.json'} is not complete JSON" in line


def test_report_and_sweep_on_a_torn_manifest_are_one_line(tmp_path, capsys):
    _sweep_folder(tmp_path / "s", "{}")
    (tmp_path / "s" / "sweep.json").write_text('{"config": "quick')
    assert main(["report", str(tmp_path / "s")]) == 2
    assert "sweep.json is not complete JSON" in _one_line_error(capsys, "report")
    args = ["sweep", "--config", "quickstart", "--grid", "loss.temperature=0.04",
            "--output", str(tmp_path / "s")]  # fmt: skip
    assert main(args) == 2
    assert "sweep.json is not complete JSON" in _one_line_error(capsys, "sweep")


# ----------------------------------------------------------------- 24: seeds out of range
def test_a_train_seed_beyond_the_range_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'train.seed' must be an integer in \[0, 4294967295\]"):
        load_config("quickstart", ["train.seed=100000000000000000000000"])


def test_a_harmful_pairs_seed_beyond_the_range_is_refused(capsys):
    assert main(["harmful-pairs", "--seed", "100000000000000000000000"]) == 2
    assert "--seed must be an integer in [0, 4294967295]" in _one_line_error(
        capsys, "harmful-pairs"
    )


def test_a_sweep_with_seeds_beyond_any_plan_is_refused_at_once(tmp_path, capsys):
    args = ["sweep", "--config", "quickstart", "--seeds", "100000000000000000000000",
            "--output", str(tmp_path / "s")]  # fmt: skip
    assert main(args) == 2
    assert "at most 1000" in _one_line_error(capsys, "sweep")


# --------------------------------------------------------------- 25, 26: harmful-pairs
def test_harmful_pairs_refuses_too_many_instances_with_the_memory_estimate(capsys):
    assert main(["harmful-pairs", "--instances", "70000", "--trials", "1"]) == 2
    line = _one_line_error(capsys, "harmful-pairs")
    assert "--instances 70000 needs about" in line and "at most 4096" in line


def test_harmful_pairs_sweep_checks_its_output_before_the_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = ["harmful-pairs", "--sweep", "--instances", "4", "--trials", "10",
            "--output", str(blocker / "out")]  # fmt: skip
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "Harmful-pair sweep" not in captured.out
    assert f"lies under {blocker}, which is a file" in captured.err.strip().splitlines()[-1]


# -------------------------------------------------------------- 27: prefetch_factor
def test_prefetch_factor_zero_with_workers_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.prefetch_factor' must be >= 1"):
        load_config("quickstart", ["data.prefetch_factor=0", "data.num_workers=2"])


# ----------------------------------------------------------- 29: a log line without a step
def test_a_log_line_without_a_numeric_step_is_dropped_on_resume(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [
        {"event": "train", "step": 1},
        {"event": "train", "step": None},
        {"event": "train", "step": "2"},
        {"event": "train", "step": 2},
        {"event": "train", "step": 3},
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.warns(UserWarning) as warned:
        RunLog(log, resume_step=2).close()
    assert [str(w.message).split(": ")[1] for w in warned] == [
        "line 2 has no step number (step None); dropped",
        "line 3 has no step number (step '2'); dropped",
    ]
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2]
