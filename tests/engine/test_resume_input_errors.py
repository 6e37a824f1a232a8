"""A resume that cannot continue the run says why in one line (issue 23, items 15 and 28): a
checkpoint that is not a mapping, a training set whose identities changed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from adasp.cli import main
from adasp.data import build_dataset
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
