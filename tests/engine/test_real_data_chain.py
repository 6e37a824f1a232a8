"""The chain of docs/REPRODUCE.md's "Real pedestrians on a CPU", small enough for CI: the
`cpu/mobilenet` preset (ImageNet MobileNetV2, offline) on the shared PKU-Reid subset, two
methods tuned and confirmed on two seeds (the session's `real_tuning`, which
tests/engine/test_tuning.py checks), then the same epoch from scratch, which the ImageNet start
must beat by far."""

from __future__ import annotations

import json

import pytest

from adasp.cli import main
from adasp.engine.tuning import TUNING_MANIFEST
from tests.engine.conftest import ONE_REAL_EPOCH

pytestmark = pytest.mark.slow


def test_imagenet_start_beats_scratch_on_real_images(real_tuning, tmp_path, pku_subset):
    summary = json.loads((real_tuning.output / TUNING_MANIFEST).read_text())["summary"]
    adasp = next(s for s in summary["selections"] if s["group"] == "adasp")
    winner = adasp["cells"][adasp["winner_index"]]["overrides"]
    imagenet_map = summary["seeded"]["adasp"]["1"]["mAP"]
    # Fine-tuning from ImageNet against a random init, same recipe and budget (one epoch, seed 1).
    scratch = tmp_path / "scratch"
    code = main(["train", "--config", "cpu/mobilenet", "--root", str(pku_subset),
                 "--output", str(scratch), "--no-progress", "loss.name=adasp", *winner,
                 "model.pretrained=null", "train.seed=1", *ONE_REAL_EPOCH])  # fmt: skip
    assert code == 0
    scratch_map = json.loads((scratch / "metrics.json").read_text())["mAP"]
    # By far: measured 28.2 against 13.2 mAP (torch 2.14, seed 0); the margin leaves room for
    # the kernels of other torch versions.
    assert imagenet_map > max(1.5 * scratch_map, scratch_map + 0.1), (imagenet_map, scratch_map)
