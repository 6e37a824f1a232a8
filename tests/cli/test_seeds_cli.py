"""``adasp sweep --seeds N`` and ``adasp report --baseline KEY=VALUE``: parsing, the seed axis
they make, and their errors (no training: runs are stubbed or hand-written)."""

from __future__ import annotations

import json

import pytest

from adasp.cli import main, parse_command_line
from adasp.engine.sweep import Sweep


@pytest.fixture
def no_training(monkeypatch):
    """Sweeps plan and record their runs but train none."""
    monkeypatch.setattr(Sweep, "_attempt", lambda self, run, device: None)


def _sweep(out, *extra: str) -> int:
    return main(["sweep", "--config", "quickstart", "--output", str(out), *extra])


def test_seeds_and_a_seed_grid_make_the_same_sweep(tmp_path, no_training):
    args = parse_command_line(
        ["sweep", "--config", "quickstart", "--output", "x", "--seeds", "3", "loss.weight=0.5"]
    )
    assert args.seeds == 3 and args.overrides == ["loss.weight=0.5"]

    assert _sweep(tmp_path / "a", "--grid", "loss.name=adasp,triplet", "--seeds", "2") == 0
    manifest = json.loads((tmp_path / "a" / "sweep.json").read_text())
    assert manifest["grid"][-1] == {"key": "train.seed", "values": ["0", "1"]}
    assert [r["name"] for r in manifest["runs"]] == [
        "loss.name=adasp,train.seed=0",
        "loss.name=adasp,train.seed=1",
        "loss.name=triplet,train.seed=0",
        "loss.name=triplet,train.seed=1",
    ]
    assert manifest["runs"][1]["overrides"] == ["loss.name=adasp", "train.seed=1"]

    grid = ["--grid", "loss.name=adasp,triplet", "--grid", "train.seed=0,1"]
    assert _sweep(tmp_path / "b", *grid) == 0
    same = json.loads((tmp_path / "b" / "sweep.json").read_text())
    assert {k: same[k] for k in ("grid", "runs")} == {k: manifest[k] for k in ("grid", "runs")}

    # Seeds alone are a sweep too.
    assert _sweep(tmp_path / "c", "--seeds", "3") == 0
    only = json.loads((tmp_path / "c" / "sweep.json").read_text())
    assert [r["name"] for r in only["runs"]] == [f"train.seed={s}" for s in range(3)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0"], "--seeds must be a positive integer"),
        (["--seeds", "2", "--grid", "train.seed=0,1"], "both set the seeds; use one"),
        (["--seeds", "2", "train.seed=5"], "both an override and a sweep axis"),
    ],
)
def test_seed_options_that_conflict_are_refused(tmp_path, no_training, capsys, extra, message):
    assert _sweep(tmp_path / "s", *extra) == 2
    assert message in capsys.readouterr().err


def _finished_sweep(folder, maps: dict[str, list[float]]) -> None:
    """A sweep folder of loss × seed runs with hand-written metrics.json files."""
    seeds = [str(s) for s in range(len(next(iter(maps.values()))))]
    runs = []
    for loss, values in maps.items():
        for seed, value in zip(seeds, values, strict=True):
            name = f"loss.name={loss},train.seed={seed}"
            runs.append(
                {
                    "name": name,
                    "values": {"loss.name": loss, "train.seed": seed},
                    "overrides": [f"loss.name={loss}", f"train.seed={seed}"],
                }
            )
            (folder / name).mkdir(parents=True)
            metrics = {"mAP": value, "rank1": value + 0.2, "rank5": 0.9, "rank10": 0.95}
            (folder / name / "metrics.json").write_text(json.dumps({**metrics, "mINP": 0.1}))
    manifest = {
        "config": "quickstart.yaml",
        "overrides": [],
        "grid": [
            {"key": "loss.name", "values": list(maps)},
            {"key": "train.seed", "values": seeds},
        ],
        "runs": runs,
    }
    (folder / "sweep.json").write_text(json.dumps(manifest))


def test_report_baseline_is_parsed_and_applied(tmp_path, capsys):
    args = parse_command_line(
        ["report", "runs/x", "--baseline", "loss.name=triplet", "--baseline", "data.k=4"]
    )
    assert args.baseline == ["loss.name=triplet", "data.k=4"]
    assert parse_command_line(["report", "runs/x"]).baseline == []

    _finished_sweep(tmp_path, {"triplet": [0.50, 0.52, 0.54], "adasp": [0.53, 0.551, 0.572]})
    assert main(["report", str(tmp_path), "--baseline", "loss.name=triplet"]) == 0
    printed = capsys.readouterr().out
    assert "Paired differences against the baseline loss.name=triplet" in printed
    assert "| adasp | loss.name=triplet | 3 | +3.10 | [+2.85, +3.35] | distinguishable" in printed
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "summary.csv").is_file()
    # results.csv keeps one row per run.
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 1 + 6

    assert main(["report", str(tmp_path), "--baseline", "loss.name=circle"]) == 2
    assert "loss.name has no value 'circle'" in capsys.readouterr().err


def test_a_sweep_grows_by_more_seeds_but_no_other_change(tmp_path, no_training, capsys):
    grid = ["--grid", "loss.name=adasp,triplet"]
    assert _sweep(tmp_path / "s", *grid, "--seeds", "2") == 0
    assert _sweep(tmp_path / "s", *grid, "--seeds", "4") == 0  # two more seeds per cell
    manifest = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert manifest["grid"][-1]["values"] == ["0", "1", "2", "3"]
    assert len(manifest["runs"]) == 8
    # Fewer seeds, or any other axis changed, is another sweep.
    assert _sweep(tmp_path / "s", *grid, "--seeds", "3") == 2
    assert _sweep(tmp_path / "s", "--grid", "loss.name=adasp,ms", "--seeds", "4") == 2
    assert "holds a different sweep" in capsys.readouterr().err
