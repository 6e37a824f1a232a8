"""CPU-sized Table S4 and Figure S1 on the synthetic set: sweep, resume, report, plots."""

from __future__ import annotations

import csv

import pytest

from adasp.cli import main
from tests.engine.conftest import tiny_overrides


def _overrides(root):
    return [o for o in tiny_overrides(root) if not o.startswith("train.eval_every")] + [
        "schedule.epochs=1",
        "train.eval_every=0",
    ]


@pytest.mark.slow
def test_temperature_sweep_is_resumable_and_reported_like_table_s4(
    tmp_path, synthetic_root, capsys
):
    out = tmp_path / "table-s4"
    args = ["sweep", "--config", "quickstart", "--grid", "loss.temperature=0.02,0.05",
            "--output", str(out), *_overrides(synthetic_root)]  # fmt: skip
    assert main(args) == 0
    assert (out / "loss.temperature=0.02" / "metrics.json").is_file()
    capsys.readouterr()
    assert main(args) == 0  # everything done: nothing runs again
    assert "2 done, 0 failed before, 0 to run" in capsys.readouterr().err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["loss.temperature"] for r in rows] == ["0.02", "0.05"]
    assert main(["report", str(out), "--html"]) == 0
    assert (out / "report.html").read_text().count("<tr>") == 3  # header and two runs
    report = (out / "report.md").read_text()
    assert (
        "| loss.temperature | 0.02 | 0.05 |" in report
        and "| mAP |" in report
        and "| R1 |" in report
    )
    assert (out / "plots" / "mAP_vs_loss_temperature.png").stat().st_size > 1000


@pytest.mark.slow
def test_loss_by_instances_sweep_reported_like_figure_s1(tmp_path, synthetic_root):
    out = tmp_path / "figure-s1"
    args = ["sweep", "--config", "quickstart", "--grid", "loss.name=sp-h,adasp,triplet",
            "--grid", "data.num_instances=2,4", "--output", str(out), *_overrides(synthetic_root),
            "train.callbacks=[harmful_pairs]",
            "data.options={num_identities: 16, images_per_identity: 8, image_size: [64, 32], "
            "harmful_fraction: 0.3}"]  # fmt: skip
    assert main(args) == 0
    assert main(["report", str(out), "--metrics", "mAP"]) == 0
    report = (out / "report.md").read_text()
    assert "data.num_instances=2 mAP" in report and "| triplet |" in report
    assert "Harmful positive pairs selected during training" in report
    bars = out / "plots" / "mAP_drop_by_data_num_instances.png"
    assert bars.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 6 and all(0 <= float(r["harmful_pairs/sp-h"]) <= 1 for r in rows)
    # With 30% of the images cue-free, batches hold harmful pairs and batch-hard triplet,
    # which takes every anchor's hardest positive, selects some of them.
    assert all(float(r["harmful_pairs/all"]) > 0 for r in rows)
    assert any(float(r["harmful_pairs/triplet"]) > 0 for r in rows)


@pytest.mark.slow
def test_sweep_refuses_another_grid_in_the_same_folder(tmp_path, synthetic_root, capsys):
    out = tmp_path / "s"
    base = ["sweep", "--config", "quickstart", "--output", str(out), *_overrides(synthetic_root)]
    assert main([*base, "--grid", "loss.weight=0.5"]) == 0
    assert main([*base, "--grid", "loss.weight=0.7"]) == 2
    assert "holds a different sweep" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_runs_as_separate_processes(tmp_path, synthetic_root):
    out = tmp_path / "p"
    args = ["sweep", "--config", "quickstart", "--grid", "loss.name+loss.weight=sp-lh+0.5",
            "--output", str(out), "--processes", "--jobs", "1", "--device", "cpu",
            *_overrides(synthetic_root)]  # fmt: skip
    assert main(args) == 0
    run = out / "loss.name+loss.weight=sp-lh+0.5"
    assert (run / "metrics.json").is_file() and (run / "train.log").stat().st_size > 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows[0]["loss.name+loss.weight"] == "sp-lh+0.5"


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, synthetic_root, capsys):
    out = tmp_path / "f"
    # The folder format finds no train/query/gallery under the synthetic cache: that run fails.
    args = ["sweep", "--config", "quickstart", "--grid", "data.dataset=folder,synthetic",
            "--output", str(out), *_overrides(synthetic_root)]  # fmt: skip
    args = [a for a in args if not a.startswith("data.dataset=synthetic")]
    assert main(args) == 1
    printed = capsys.readouterr()
    assert "failed: data.dataset=folder" in printed.out
    assert (out / "data.dataset=folder" / "failed.json").is_file()
    assert (out / "data.dataset=synthetic" / "metrics.json").is_file()
    assert main(args) == 1  # failed runs are skipped, not retried, unless asked
    assert "1 done, 1 failed before, 0 to run" in capsys.readouterr().err


def test_a_killed_run_process_is_not_recorded_as_failed(tmp_path, synthetic_root, monkeypatch):
    import subprocess

    import adasp.engine.sweep as sweep_module

    exits = iter([-9, 2])  # SIGKILL (e.g. the OOM killer), then adasp's bad-input status
    monkeypatch.setattr(
        sweep_module.subprocess,
        "run",
        lambda command, **kw: subprocess.CompletedProcess(command, next(exits)),
    )
    out = tmp_path / "killed"
    sweep = sweep_module.Sweep(
        "quickstart",
        [sweep_module.parse_grid("loss.temperature=0.02,0.05")],
        out,
        overrides=_overrides(synthetic_root),
        processes=True,
    )
    sweep.run()
    # The killed run is resumed by the next invocation; the bad-input one is skipped.
    assert list(sweep.interrupted) == ["loss.temperature=0.02"]
    assert "exit -9" in sweep.interrupted["loss.temperature=0.02"]
    assert sweep.failures().keys() == {"loss.temperature=0.05"}
    assert sweep.status() == {"loss.temperature=0.02": "todo", "loss.temperature=0.05": "failed"}
