"""A run that cannot go on says why in one line (issue 23, items 14, 15 and 28): a full disk
while logging between checkpoints, a checkpoint that is not a mapping, a training set whose
identities changed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from adasp.cli import main
from adasp.data import build_dataset
from adasp.engine.checkpoint import load_checkpoint
from adasp.engine.run_log import RunLog
from tests.engine.conftest import SYNTHETIC_OPTIONS, tiny_overrides

pytestmark = pytest.mark.slow

MARKET_NAME = re.compile(r"^(\d+)_c(\d+)s1_(\d+)_00\.jpg$")


def _folder_dataset(synthetic_root, root):
    """The synthetic images as a ``folder`` dataset (ROOT/{train,query,gallery}/<id>/), whose
    training identities can be changed by adding a folder."""
    first = build_dataset("synthetic", synthetic_root, **SYNTHETIC_OPTIONS).train[0].path
    source = Path(first).parent.parent
    for split, part in (("train", "bounding_box_train"), ("query", "query"),
                        ("gallery", "bounding_box_test")):  # fmt: skip
        for image in (source / part).glob("*.jpg"):
            pid, cam, number = MARKET_NAME.match(image.name).groups()
            target = root / split / str(int(pid)) / f"{int(cam)}_{number}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target)
    return root


def _train(out, data_root, *extra):
    overrides = [*tiny_overrides(data_root), "data.dataset=folder", "data.options={}"]
    return main(["train", "--config", "quickstart", "--output", str(out), "--no-progress",
                 *overrides, "schedule.epochs=1", *extra])  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_root):
    data = _folder_dataset(synthetic_root, tmp_path_factory.mktemp("folder"))
    out = tmp_path_factory.mktemp("runs") / "run"
    assert _train(out, data) == 0
    return out, data


def _copy(run, tmp_path):
    out, data = run
    shutil.copytree(out, tmp_path / "run")
    return tmp_path / "run", data


@pytest.mark.parametrize("content", [[1, 2], torch.ones(2)], ids=["list", "tensor"])
def test_resume_from_a_checkpoint_that_is_not_a_mapping_is_one_line(
    finished_run, tmp_path, capsys, content
):
    out, data = _copy(finished_run, tmp_path)
    torch.save(content, out / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert _train(out, data, "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    kind = "list" if isinstance(content, list) else "Tensor"
    assert err.startswith("adasp train: error: ")
    assert f"{out / 'checkpoints' / 'last.pt'} holds a {kind}, not an adasp checkpoint" in err


def test_resume_after_an_identity_was_added_says_the_training_set_changed(
    synthetic_root, tmp_path, capsys
):
    data = _folder_dataset(synthetic_root, tmp_path / "data")
    out = tmp_path / "run"
    assert _train(out, data) == 0
    before = (out / "model.pt").read_bytes()
    first = sorted((data / "train").iterdir())[0]
    shutil.copytree(first, data / "train" / "999")
    capsys.readouterr()
    assert _train(out, data, "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("adasp train: error: ") and "the training set changed" in err
    assert "trained on 8 identities, the training split now has 9" in err
    assert (out / "model.pt").read_bytes() == before  # the finished run is untouched


def test_a_full_disk_while_logging_between_checkpoints_is_one_line_and_resumes(
    synthetic_root, tmp_path, capsys, monkeypatch
):
    data = _folder_dataset(synthetic_root, tmp_path / "data")
    out = tmp_path / "run"
    event = RunLog.event
    calls = {"n": 0}

    def event_on_a_full_disk(log, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after the first checkpoint: the disk fills up
            log._handle = open("/dev/full", "a", encoding="utf-8")  # every write: ENOSPC
        return event(log, *args, **kwargs)

    monkeypatch.setattr(RunLog, "event", event_on_a_full_disk)
    assert _train(out, data, "train.checkpoint_every_iters=1") == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    line = err.splitlines()[-1]
    assert line.startswith("adasp train: error: no space left on the device while writing ")
    assert f"{out / 'log.jsonl'}; the last checkpoint is intact" in line
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2
    monkeypatch.setattr(RunLog, "event", event)  # space is freed
    assert _train(out, data, "train.checkpoint_every_iters=1", "--resume") == 0
    assert (out / "metrics.json").exists()
