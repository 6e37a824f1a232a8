"""Tuning with the same budget per method (adasp sweep --group): plans, selection, confirmation
seeds, the report, and a real run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adasp.cli import main
from adasp.engine.sweep import expand_grid, parse_grid
from adasp.engine.tuning import TUNING_MANIFEST, Tuning, load_tuning, parse_group_axes
from adasp.engine.typed_config import ConfigError
from adasp.errors import UserInputError
from adasp.evaluation.tuning_report import write_tuning_report
from tests.engine.conftest import tiny_overrides

GROUPS = parse_grid("loss.name=none,adasp,triplet")


def _tuning(root, output, extra=(), **kwargs):
    per_group = parse_group_axes(
        ["adasp:loss.temperature=0.04,0.08", "triplet:loss.options={triplet: {margin: 0.3}},"
         "{triplet: {margin: 0.3, normalize: true}}", "none:loss.label_smoothing=0.0,0.1"],
        GROUPS,
    )  # fmt: skip
    return Tuning(
        "quickstart",
        GROUPS,
        [parse_grid("loss.weight=0.1,1.0")],
        per_group,
        output,
        overrides=[*tiny_overrides(root), *extra],
        **kwargs,
    )


def _finish(folder: Path, **metrics: float) -> None:
    """Write a finished run's metrics.json (what the trainer leaves) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"rank5": 0.9, **metrics}))


def test_plan_drops_axes_that_change_nothing_and_counts_the_budget(synthetic_root, tmp_path):
    tuning = _tuning(synthetic_root, tmp_path / "t")
    plans = {p.value: p for p in tuning.plans}
    # CE alone ignores the metric-loss weight: it is not trained twice.
    assert plans["none"].dropped == ("loss.weight",)
    assert [a.key for a in plans["none"].axes] == ["loss.label_smoothing"]
    assert plans["none"].budget == 2
    assert plans["adasp"].budget == plans["triplet"].budget == 4
    assert plans["adasp"].folder == "loss.name=adasp"


def test_bad_tunings_are_refused_before_anything_runs(synthetic_root, tmp_path):
    with pytest.raises(ConfigError, match="GROUP:key"):
        parse_group_axes(["loss.temperature=0.1"], GROUPS)
    with pytest.raises(ConfigError, match=r"'sp-h' is not a value of --group loss\.name"):
        parse_group_axes(["sp-h:loss.temperature=0.1,0.2"], GROUPS)
    with pytest.raises(ConfigError, match=r"sets train\.seed itself"):
        _tuning(synthetic_root, tmp_path / "a", extra=["train.seed=3"])
    with pytest.raises(UserInputError, match="--select-by 'accuracy'"):
        _tuning(synthetic_root, tmp_path / "b", select_by="accuracy")
    with pytest.raises(ConfigError, match="appears twice"):
        Tuning("quickstart", GROUPS, [parse_grid("loss.name=adasp")], {}, tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_selection_takes_the_best_cell_on_seed_0_then_fresh_seeds(synthetic_root, tmp_path):
    out = tmp_path / "t"
    tuning = _tuning(synthetic_root, out, seeds=2)
    # The selection runs of adasp: the second cell wins on mAP.
    sel = out / "loss.name=adasp" / "selection"
    for name, m in {
        "loss.weight=0.1,loss.temperature=0.04": 0.50,
        "loss.weight=0.1,loss.temperature=0.08": 0.70,
        "loss.weight=1.0,loss.temperature=0.04": 0.60,
    }.items():
        _finish(sel / name, mAP=m, rank1=0.5)
    summary = tuning.summary()
    adasp = next(s for s in summary.selections if s.group == "adasp")
    assert adasp.winner is None  # one cell has not finished: nothing is selected yet
    _finish(sel / "loss.weight=1.0,loss.temperature=0.08", mAP=0.70, rank1=0.9)
    adasp = next(s for s in tuning.summary().selections if s.group == "adasp")
    # A tie on mAP goes to the first cell in grid order, whatever the other metrics say.
    assert adasp.winner == "loss.weight=0.1,loss.temperature=0.08"
    assert adasp.winner_overrides == ("loss.weight=0.1", "loss.temperature=0.08")
    seeds = tuning._seed_sweep(tuning.plans[1], adasp.winner_overrides)
    assert [r.name for r in seeds.runs] == ["train.seed=1", "train.seed=2"]
    assert seeds.overrides[-2:] == ["loss.weight=0.1", "loss.temperature=0.08"]


def test_report_shows_every_cell_the_winner_and_paired_differences(synthetic_root, tmp_path):
    out = tmp_path / "t"
    tuning = _tuning(synthetic_root, out, seeds=3)
    tuning._claim_folder()
    for plan in tuning.plans:
        for i, run in enumerate(expand_grid(plan.axes)):
            _finish(out / plan.folder / "selection" / run.name, mAP=0.4 + 0.01 * i, rank1=0.5)
        base = {"none": 0.60, "adasp": 0.70, "triplet": 0.61}[plan.value]
        for seed, noise in zip((1, 2, 3), (0.0, 0.01, -0.01), strict=True):
            _finish(out / plan.folder / "seeds" / f"train.seed={seed}", mAP=base + noise,
                    rank1=base + 2 * noise)  # fmt: skip
    summary = load_tuning(out).summary()
    assert summary.equal_budget is False  # CE alone: 2 cells, the others 4
    assert summary.seeded["adasp"]["2"]["mAP"] == pytest.approx(0.71)
    paths = write_tuning_report(out, summary, ["mAP"], ["triplet"])
    report = paths["report"].read_text()
    assert "**selected**" in report and "unequal budgets" in report
    assert "loss.weight changes nothing here" in report
    assert "| adasp − triplet | mAP | +9.00 | [+9.00, +9.00] | 3 | distinguishable (higher) |" in (
        report
    )
    assert "none − triplet, mAP: −1.00 points" in report
    assert paths["mAP bars"].stat().st_size > 1000
    saved = json.loads((out / TUNING_MANIFEST).read_text())["summary"]
    assert saved["winners"]["adasp"] == "loss.weight=1.0,loss.temperature=0.08"


def test_a_different_tuning_in_the_same_folder_is_refused(synthetic_root, tmp_path):
    _tuning(synthetic_root, tmp_path / "t")._claim_folder()
    other = Tuning(
        "quickstart", GROUPS, [parse_grid("loss.weight=0.1,0.3")], {}, tmp_path / "t",
        overrides=tiny_overrides(synthetic_root),
    )  # fmt: skip
    with pytest.raises(UserInputError, match="holds a different tuning"):
        other._claim_folder()


def test_report_refuses_an_unknown_baseline_group(synthetic_root, tmp_path, capsys):
    _tuning(synthetic_root, tmp_path / "t")._claim_folder()
    assert main(["report", str(tmp_path / "t"), "--baseline", "loss.name=sp-h"]) == 2
    assert "--baseline 'sp-h' is not a group" in capsys.readouterr().err


@pytest.mark.slow
def test_tuning_command_on_real_pedestrians(real_tuning):
    """The selection command end to end on the PKU subset (the session's `real_tuning`)."""
    out = real_tuning.output
    assert "loss.name=adasp: 2 cells, selected loss.weight=" in real_tuning.printed
    summary = json.loads((out / TUNING_MANIFEST).read_text())["summary"]
    assert summary["equal_budget"] is True
    for group in ("adasp", "triplet"):
        assert sorted(summary["seeded"][group]) == ["1", "2"]
        assert all(0.0 < m["mAP"] <= 1.0 for m in summary["seeded"][group].values())
    # Everything is finished: the same command trains nothing more and reports again.
    assert main(real_tuning.command) == 0
    assert main(["report", str(out), "--baseline", "triplet"]) == 0
    report = (out / "report.md").read_text()
    assert "adasp − triplet" in report
    assert "95 % t-interval" in report
