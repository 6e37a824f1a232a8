"""Benchmark protocols through the engine: VehicleID's draws, several test sets in one run."""

from __future__ import annotations

import json

from adasp.cli import main
from tests.data.layouts import make_vehicleid, make_veriwild

MODEL = [
    "model.backbone=resnet18",
    "model.pretrained=null",
    "data.image_size=[64,32]",
    "data.num_workers=0",
]


def test_vehicleid_is_evaluated_over_ten_gallery_draws(tmp_path, capsys):
    make_vehicleid(tmp_path)
    out = tmp_path / "eval"
    code = main(["evaluate", "--config", "quickstart", "--dataset", "vehicleid",
                 "--root", str(tmp_path), "--output", str(out), *MODEL])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["test_sets"]["vehicleid-800"]
    assert summary["num_draws"] == 10 and set(summary["std"]) >= {"mAP", "rank1"}
    assert 0 <= summary["mAP"] <= 1
    assert "±" in capsys.readouterr().out


def test_several_test_sets_in_one_table(tmp_path, capsys):
    make_veriwild(tmp_path)
    out = tmp_path / "eval"
    extra = (
        "data.test_sets=[{name: veriwild-large, dataset: veriwild, options: {test_size: 10000}}]"
    )
    code = main(["evaluate", "--config", "quickstart", "--dataset", "veriwild", "--root",
                 str(tmp_path), "--output", str(out), *MODEL,
                 "data.options={test_size: 3000}", extra])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["test_sets"]) == ["veriwild-3000", "veriwild-large"]
    assert metrics["test_set"] == "veriwild-3000"
    printed = capsys.readouterr().out
    assert "veriwild-3000" in printed and "veriwild-large" in printed
