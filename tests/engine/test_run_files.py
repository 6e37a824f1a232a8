"""One owner of a run folder's file names, and the versioned file formats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import adasp
from adasp.engine import run_folder
from adasp.engine.checkpoint import (
    CHECKPOINT_KIND,
    FORMAT_VERSIONS,
    MODEL_KIND,
    ModelFile,
    read_model_file,
    read_versioned,
    save_checkpoint,
    upgrade_state,
    write_model_file,
)
from adasp.errors import UserInputError

SRC = Path(adasp.__file__).parent


def test_run_folder_file_names_appear_only_in_run_folder_py():
    names = [
        value
        for key, value in vars(run_folder).items()
        if key.endswith(("_NAME", "_DIR")) and isinstance(value, str)
    ]
    assert {"config.yaml", "model.pt", "metrics.json", "log.jsonl", "last.pt"} <= set(names)
    # torch.hub's own cache has a "checkpoints" folder, unrelated to run folders.
    elsewhere = {("models/weights.py", "checkpoints")}
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "run_folder.py":
            continue
        text = path.read_text(encoding="utf-8")
        for name in names:
            # As a string literal: "metrics.json", 'tensorboard', "checkpoints/..."
            where = path.relative_to(SRC).as_posix()
            if (where, name) in elsewhere:
                continue
            if re.search(rf"[\"']{re.escape(name)}[\"'/]", text):
                found.append(f"{where}: {name}")
    assert not found, found


def test_run_folder_names_every_file():
    run = run_folder.RunFolder("runs/q")
    assert run.checkpoint == Path("runs/q/checkpoints/last.pt")
    assert run.model_variant("ema") == Path("runs/q/model_ema.pt")
    assert run.best_model.name == "best.pt" and run.lock.name == ".adasp.lock"


def _model_file(tmp_path, **extra):
    path = tmp_path / "model.pt"
    write_model_file(path, ModelFile({"w": torch.ones(2)}, {"a": 1}, 3, extra))
    return path


def test_model_file_round_trip_keeps_extra_fields(tmp_path):
    path = _model_file(tmp_path, preprocessing={"mean": [0.5, 0.5, 0.5]})
    read = read_model_file(path)
    assert read.num_classes == 3 and read.config == {"a": 1}
    assert read.extra == {"preprocessing": {"mean": [0.5, 0.5, 0.5]}}
    assert torch.equal(read.weights["w"], torch.ones(2))


def test_a_file_of_a_newer_adasp_is_refused_in_one_line(tmp_path):
    path = tmp_path / "model.pt"
    newer = f"{MODEL_KIND}-{FORMAT_VERSIONS[MODEL_KIND] + 1}"
    save_checkpoint(path, {"format": newer, "model": {}, "config": None, "num_classes": 0})
    with pytest.raises(UserInputError) as caught:
        read_model_file(path)
    message = str(caught.value)
    assert str(path) in message and newer in message and "newer adasp" in message
    assert "\n" not in message


def test_a_foreign_file_is_refused_and_a_bare_state_dict_is_weights(tmp_path):
    path = tmp_path / "other.pt"
    save_checkpoint(path, {"format": "fastreid-7", "model": {}})
    with pytest.raises(UserInputError, match=r"not an adasp file \(format 'fastreid-7'\)"):
        read_model_file(path)
    save_checkpoint(path, {"w": torch.zeros(1)})
    assert read_model_file(path).weights.keys() == {"w"}
    with pytest.raises(UserInputError, match="not an adasp file"):
        read_versioned(path, (CHECKPOINT_KIND,))


def test_a_version_1_checkpoint_is_upgraded(tmp_path):
    old = {
        "format": f"{CHECKPOINT_KIND}-1",
        "monitor": {"steps": 3},
        "history": [{"epoch": 1, "step": 4, "test_sets": {}, "harmful_pairs": {"all": 0.1}}],
    }
    new = upgrade_state(old, "last.pt")
    assert new["format"] == f"{CHECKPOINT_KIND}-{FORMAT_VERSIONS[CHECKPOINT_KIND]}"
    assert new["callbacks"] == {"harmful_pairs": {"steps": 3}}
    assert new["history"][0]["extras"] == {"harmful_pairs": {"all": 0.1}}


def test_a_training_checkpoint_reads_as_a_model_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": f"{CHECKPOINT_KIND}-2", "model": {"w": torch.ones(1)},
                           "config": None, "num_classes": 5, "optimizer": {}})  # fmt: skip
    assert read_model_file(path).num_classes == 5
