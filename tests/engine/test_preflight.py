"""What a training start checks before it trains or deletes anything (issue 23, items 3 and 4;
issue 20, newcomer item 3): the test split decodes, the test set has valid queries, a failed
start leaves no folder behind, and ``--overwrite`` removes the old run only once the new one
has written its first checkpoint."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from adasp.cli import main
from tests.engine.conftest import tiny_overrides

pytestmark = pytest.mark.slow


def make_folder_dataset(root, *, query_ids=(0, 1, 2, 3), gallery_ids=(0, 1, 2, 3)):
    """A tiny ``folder`` dataset of noise images: 8 training identities of 8 images (cameras
    1-4), query images from camera 1 and gallery images from cameras 2 and 3."""
    rng = np.random.default_rng(0)

    def write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(path)

    for pid in range(8):
        for n in range(8):
            write(root / "train" / f"{pid:03d}" / f"{n % 4 + 1}_{n}.jpg")
    for pid in query_ids:
        write(root / "query" / f"{100 + pid}" / "1_0.jpg")
    for pid in gallery_ids:
        for camera in (2, 3):
            write(root / "gallery" / f"{100 + pid}" / f"{camera}_0.jpg")
    return root


def folder_overrides(root):
    return [*tiny_overrides(root), "data.dataset=folder", f"data.root={root}", "data.options={}"]


def _train(out, root, *extra):
    return main(["train", "--config", "quickstart", "--output", str(out), "--no-progress",
                 *folder_overrides(root), "schedule.epochs=1", *extra])  # fmt: skip


def _digests(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".adasp.lock"
    }


def _error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A good dataset and a finished run trained on it."""
    root = make_folder_dataset(tmp_path_factory.mktemp("data") / "good")
    out = tmp_path_factory.mktemp("runs") / "r"
    assert _train(out, root) == 0
    return root, out


def _copy_run(finished, tmp_path):
    import shutil

    return shutil.copytree(finished[1], tmp_path / "r")


def test_overwrite_with_an_undecodable_test_image_keeps_the_old_run(finished, tmp_path, capsys):
    out = _copy_run(finished, tmp_path)
    before = _digests(out)
    root = make_folder_dataset(tmp_path / "data")
    (root / "gallery" / "102" / "2_0.jpg").write_bytes(b"not a jpeg")
    assert _train(out, root, "--overwrite") == 2
    line = _error(capsys)
    assert "2_0.jpg" in line and "cannot be decoded" in line and "before training" in line
    assert _digests(out) == before  # refused before any training: not a line logged


def test_overwrite_failing_in_the_first_epoch_keeps_the_old_run(finished, tmp_path, capsys):
    out = _copy_run(finished, tmp_path)
    before = _digests(out)
    root = make_folder_dataset(tmp_path / "data")
    for image in (root / "train").glob("*/*.jpg"):
        image.write_bytes(b"not a jpeg")  # training images are decoded while training
    assert _train(out, root, "--overwrite") == 2
    assert "cannot decode image" in _error(capsys)
    assert _digests(out) == before
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in finished[1].iterdir() if not p.name.startswith(".")
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".adasp.lock"]


def test_overwrite_replaces_the_run_once_the_new_one_checkpoints(finished, tmp_path, capsys):
    out = _copy_run(finished, tmp_path)
    (out / "notes.txt").write_text("mine")
    assert _train(out, finished[0], "--overwrite", "train.seed=1") == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".adasp.lock"]
    from adasp.engine.checkpoint import load_checkpoint

    assert load_checkpoint(out / "model.pt")["config"]["train"]["seed"] == 1
    capsys.readouterr()


def test_a_test_set_without_valid_query_is_refused_before_training(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data", query_ids=(0, 1), gallery_ids=(2, 3))
    out = tmp_path / "runs" / "r"
    assert _train(out, root) == 2
    line = _error(capsys)
    assert "no query has a valid match" in line and "before training" in line
    assert "2 have an identity absent from the gallery" in line
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing left behind


def test_same_camera_only_matches_are_named(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data")
    for folder in (root / "gallery").iterdir():
        for n, image in enumerate(sorted(folder.iterdir())):
            image.rename(folder / f"1_{n}.jpg")  # camera 1, the queries' camera
    assert _train(tmp_path / "r", root) == 2
    line = _error(capsys)
    assert "4 have gallery images of their identity only from their own camera" in line
    assert "before training" in line and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "bad",
    [["data.root=/no/such/folder"], ["model.pretrained=/no/such/weights.pt"]],
    ids=["dataset-root", "weights"],
)
def test_a_failed_start_leaves_nothing_behind(bad, finished, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert _train(out, finished[0], *bad) == 2
    assert "/no/such/" in _error(capsys)
    assert list(tmp_path.iterdir()) == []
    # A folder that existed before is kept, and so are its files.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert _train(tmp_path / "mine", finished[0], *bad) == 2
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    capsys.readouterr()


@pytest.mark.parametrize("new_run_failed", [False, True])
def test_a_set_aside_run_is_restored_or_kept(tmp_path, new_run_failed):
    """Unit level: what ``--overwrite`` set aside goes back on failure, and a folder holding
    only a set-aside run (an ``--overwrite`` killed at once) is not a free folder."""
    from adasp.engine.run_folder import (
        PREVIOUS_RUN,
        check_run_outputs,
        restore_set_aside_run,
        set_aside_run_outputs,
    )
    from adasp.errors import UserInputError

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_text("old checkpoint")
    (tmp_path / "model.pt").write_text("old model")
    set_aside_run_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS_RUN]
    if new_run_failed:
        (tmp_path / "config.yaml").write_text("new")  # what the new run wrote before failing
        restore_set_aside_run(tmp_path)
        assert (tmp_path / "model.pt").read_text() == "old model"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "model.pt"]
    else:
        with pytest.raises(UserInputError, match=PREVIOUS_RUN):
            check_run_outputs(tmp_path, resume=False, overwrite=False)
