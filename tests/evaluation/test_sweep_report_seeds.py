"""The seed aggregation of ``adasp report``: mean ± std per cell, paired t-intervals against a
baseline, the noise statement, summary.csv / summary.md and error-bar plots, on hand-made rows."""

from __future__ import annotations

import csv
import math
import re

import pytest

import adasp.evaluation.sweep_report as sweep_report
from adasp.errors import UserInputError
from adasp.evaluation.seed_statistics import (
    SeedSummary,
    paired_difference,
    t_quantile,
)
from adasp.evaluation.sweep_report import aggregate_seeds, write_report

#: Two-sided 95 % Student t quantiles t(0.975, df) from a printed table.
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 29: 2.0452}

#: mAP per (loss, seed): triplet is the baseline; adasp beats it by 3.0-3.2 points on every
#: seed (a consistent gain); sp-h by 1, 2 and 1 points (a gain the seeds do not pin down).
MAP = {
    "triplet": (0.50, 0.52, 0.54),
    "adasp": (0.53, 0.551, 0.572),
    "sp-h": (0.51, 0.54, 0.55),
}


def _manifest(axes: list[tuple[str, list[str]]]) -> dict:
    import itertools

    runs = []
    for combo in itertools.product(*(values for _, values in axes)):
        values = {k: v for (k, _), v in zip(axes, combo, strict=True)}
        runs.append({"name": ",".join(f"{k}={v}" for k, v in values.items()), "values": values})
    return {
        "config": "quickstart.yaml",
        "overrides": [],
        "grid": [{"key": k, "values": v} for k, v in axes],
        "runs": runs,
    }


def _rows(skip: tuple[str, str] | None = None) -> list[dict]:
    rows = []
    for loss, maps in MAP.items():
        for seed, value in enumerate(maps):
            if skip == (loss, str(seed)):
                continue
            rows.append(
                {
                    "run": f"loss.name={loss},train.seed={seed}",
                    "loss.name": loss,
                    "train.seed": str(seed),
                    "mAP": value,
                    "rank1": 0.7 + 0.01 * seed,
                }
            )
    return rows


MANIFEST = _manifest([("loss.name", list(MAP)), ("train.seed", ["0", "1", "2"])])


def test_t_quantile_matches_the_printed_table():
    for df, value in T975.items():
        assert t_quantile(0.975, df) == pytest.approx(value, abs=5e-5)
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
    assert t_quantile(0.975, 0) == pytest.approx(1.959964, abs=1e-6)  # the normal
    with pytest.raises(UserInputError, match="df must be"):
        t_quantile(0.975, -1)
    with pytest.raises(UserInputError, match="p must be"):
        t_quantile(1.0, 3)


@pytest.mark.slow
def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 60), 200, 10**4, 10**6]:
        for p in (0.6, 0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), abs=1e-9)


def test_seed_summary_is_mean_and_sample_std():
    summary = SeedSummary.of([0.50, 0.52, 0.54])
    assert (summary.n, summary.mean) == (3, pytest.approx(0.52))
    assert summary.std == pytest.approx(0.02)  # ddof=1 (ddof=0 would give 0.0163)
    assert math.isnan(SeedSummary.of([0.5]).std)


def test_paired_t_interval_and_verdict():
    consistent = paired_difference(
        dict(zip("012", MAP["adasp"], strict=True)), dict(zip("012", MAP["triplet"], strict=True))
    )
    assert consistent.differences == pytest.approx((0.03, 0.031, 0.032))
    half = T975[2] * 0.001 / math.sqrt(3)
    assert (consistent.low, consistent.high) == (
        pytest.approx(0.031 - half, abs=1e-6),
        pytest.approx(0.031 + half, abs=1e-6),
    )
    assert consistent.distinguishable and consistent.verdict == "distinguishable (higher)"

    shaky = paired_difference(
        dict(zip("012", MAP["sp-h"], strict=True)), dict(zip("012", MAP["triplet"], strict=True))
    )
    # mean 1.33 points, std 0.577: half-width 4.303 * 0.577 / sqrt(3) = 1.43 points > the mean
    assert shaky.low < 0 < shaky.high
    assert shaky.low == pytest.approx(0.013333 - T975[2] * 0.0057735 / math.sqrt(3), abs=1e-5)
    assert not shaky.distinguishable and shaky.verdict == "noise"

    # Only the seeds both cells finished are paired; one pair has no interval.
    single = paired_difference({"0": 0.6, "1": 0.7}, {"1": 0.5, "2": 0.4})
    assert single.seeds == ("1",) and math.isnan(single.low) and not single.distinguishable


def test_aggregate_seeds_gives_one_row_per_cell():
    reduced, cells = aggregate_seeds(MANIFEST, _rows(skip=("sp-h", "2")), ["mAP"])
    assert [a["key"] for a in reduced["grid"]] == ["loss.name"]
    assert [c["loss.name"] for c in cells] == ["triplet", "adasp", "sp-h"]
    triplet, _, sph = cells
    assert triplet["n_seeds"] == 3 and triplet["mAP"] == pytest.approx(0.52)
    assert triplet["mAP_std"] == pytest.approx(0.02)
    assert sph["n_seeds"] == 2 and sph["seeds"] == ["0", "1"]
    assert sph["mAP"] == pytest.approx(0.525)
    assert sph["mAP_std"] == pytest.approx(math.sqrt(2) * 0.015)


def test_summary_files_state_which_differences_are_noise(tmp_path):
    paths = write_report(tmp_path, MANIFEST, _rows(), ["mAP"], baseline=["loss.name=triplet"])
    summary = (tmp_path / "summary.md").read_text()
    print(summary)
    assert paths["summary"] == tmp_path / "summary.md"
    assert "Student t-interval" in summary and "t(0.975, 2) = 4.303" in summary
    assert "| triplet | 3 | 0 1 2 | 52.00 ± 2.00 |" in summary
    assert (
        "| adasp | loss.name=triplet | 3 | +3.10 | [+2.85, +3.35] | distinguishable (higher) |"
        in (summary)
    )
    assert "| sp-h | loss.name=triplet | 3 | +1.33 | [−0.10, +2.77] | noise |" in summary
    assert "| loss.name=sp-h | mAP | +1.00 | +2.00 | +1.00 |" in summary  # per seed
    assert (
        "- loss.name=sp-h vs loss.name=triplet: mAP +1.33 points, 95 % CI [−0.10, +2.77] over "
        "3 seeds: noise: not distinguishable from seed noise (the interval contains 0)."
    ) in summary
    assert "- loss.name=adasp vs loss.name=triplet: mAP +3.10 points" in summary
    assert "distinguishable from seed noise (higher than the baseline" in summary

    rows = {r["loss.name"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    assert float(rows["triplet"]["mAP_mean"]) == pytest.approx(0.52)
    assert float(rows["triplet"]["mAP_std"]) == pytest.approx(0.02)
    assert rows["triplet"]["n_seeds"] == "3" and rows["triplet"]["mAP_verdict"] == ""
    adasp = rows["adasp"]
    assert float(adasp["mAP_diff"]) == pytest.approx(0.031)
    half = T975[2] * 0.001 / math.sqrt(3)
    assert float(adasp["mAP_diff_ci95_low"]) == pytest.approx(0.031 - half, abs=1e-6)
    assert adasp["mAP_diff_n"] == "3" and adasp["baseline"] == "loss.name=triplet"
    assert rows["sp-h"]["mAP_verdict"] == "noise"

    report = (tmp_path / "report.md").read_text()
    assert "| mAP | 52.00 ± 2.00 | 55.10 ± 2.10 | 53.33 ± 2.08 |" in report
    assert "Paired differences against the baseline loss.name=triplet" in report


def test_baseline_is_matched_within_the_other_axes(tmp_path):
    manifest = _manifest(
        [("loss.name", ["triplet", "adasp"]), ("data.num_instances", ["4", "8"]),
         ("train.seed", ["0", "1"])]
    )  # fmt: skip
    rows = [
        {"loss.name": loss, "data.num_instances": k, "train.seed": s,
         "mAP": 0.5 + (0.1 if loss == "adasp" else 0) + (0.2 if k == "8" else 0) + 0.01 * int(s)}
        for loss in ("triplet", "adasp") for k in ("4", "8") for s in ("0", "1")
    ]  # fmt: skip
    write_report(tmp_path, manifest, rows, ["mAP"], baseline=["loss.name=triplet"])
    summary = (tmp_path / "summary.md").read_text()
    # adasp at K=8 is compared with triplet at K=8 (not K=4): +10 points on both seeds.
    assert (
        "| adasp | 8 | loss.name=triplet, data.num_instances=8 | 2 | +10.00 | [+10.00, +10.00]"
        in (summary)
    )
    assert summary.count("| triplet | ") == 2  # the summary table only: baselines not compared


def test_error_bars_are_drawn(tmp_path, monkeypatch):
    from matplotlib.container import BarContainer, ErrorbarContainer

    figures = {}
    real_save = sweep_report.save_figure

    def save(figure, path):
        figures[path.name] = figure
        real_save(figure, path)

    monkeypatch.setattr(sweep_report, "save_figure", save)
    manifest = _manifest(
        [("loss.name", ["triplet", "adasp"]), ("data.num_instances", ["4", "8"]),
         ("train.seed", ["0", "1", "2"])]
    )  # fmt: skip
    rows = [
        {"loss.name": loss, "data.num_instances": k, "train.seed": s,
         "mAP": 0.5 + 0.05 * int(s) + (0.1 if k == "8" else 0), "rank1": 0.8}
        for loss in ("triplet", "adasp") for k in ("4", "8") for s in ("0", "1", "2")
    ]  # fmt: skip
    paths = write_report(tmp_path, manifest, rows, ["mAP"])
    curve = paths["mAP curve"]
    assert curve.name == "mAP_vs_data_num_instances.png" and curve.read_bytes()[:4] == b"\x89PNG"
    (ax,) = figures[curve.name].axes
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2  # one line per loss
    # Each point's bar spans mean ± std over the seeds: 55 ± 5 (K=4) and 65 ± 5 (K=8) points.
    segments = bars[0].lines[2][0].get_segments()
    spans = sorted((seg[0][1], seg[1][1]) for seg in segments)
    assert spans == [pytest.approx((50.0, 60.0)), pytest.approx((60.0, 70.0))]
    (ax,) = figures["mAP_drop_by_data_num_instances.png"].axes
    assert any(isinstance(c, BarContainer) and c.errorbar is not None for c in ax.containers)
    # No baseline: the summary says how to get one.
    assert "--baseline key=value" in (tmp_path / "summary.md").read_text()


def test_seeds_only_sweep_plots_each_seed(tmp_path):
    manifest = _manifest([("train.seed", ["0", "1", "2"])])
    rows = [{"train.seed": s, "mAP": v} for s, v in zip("012", MAP["adasp"], strict=True)]
    paths = write_report(tmp_path, manifest, rows, ["mAP"])
    assert paths["mAP over seeds"].read_bytes()[:4] == b"\x89PNG"
    assert "| all runs | 3 | 0 1 2 | 55.10 ± 2.10 |" in (tmp_path / "summary.md").read_text()


def test_a_sweep_without_seeds_is_reported_per_run(tmp_path):
    manifest = _manifest([("loss.name", ["triplet", "adasp"])])
    rows = [{"loss.name": "triplet", "mAP": 0.5}, {"loss.name": "adasp", "mAP": 0.55}]
    paths = write_report(tmp_path, manifest, rows, ["mAP"])
    assert "summary" not in paths and not (tmp_path / "summary.md").exists()
    report = (tmp_path / "report.md").read_text()
    assert "| loss.name | triplet | adasp |" in report and "| mAP | 50.0 | 55.0 |" in report
    assert "±" not in report
    with pytest.raises(UserInputError, match=r"no train\.seed axis"):
        write_report(tmp_path, manifest, rows, ["mAP"], baseline=["loss.name=triplet"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("loss.name", "not of the form key=value"),
        ("loss.weight=1", "not a swept key; swept: loss.name"),
        ("loss.name=circle", "has no value 'circle'; its values: triplet, adasp, sp-h"),
        ("train.seed=0", "a cell of the other axes"),
    ],
)
def test_bad_baselines_are_named(tmp_path, spec, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        write_report(tmp_path, MANIFEST, _rows(), ["mAP"], baseline=[spec])


def test_unfinished_runs_are_left_out_of_the_pairs(tmp_path):
    # sp-h seed 2 unfinished: sp-h is compared on seeds 0 and 1 only.
    write_report(
        tmp_path, MANIFEST, _rows(skip=("sp-h", "2")), ["mAP"], baseline=["loss.name=sp-h"]
    )
    summary = (tmp_path / "summary.md").read_text()
    assert "| sp-h | 2 | 0 1 | 52.50 ± 2.12 |" in summary
    assert "| triplet | loss.name=sp-h | 2 | −1.50 |" in summary
    assert "| loss.name=triplet | mAP | −1.00 | −2.00 | – |" in summary
    # No finished baseline run at all: said so, no interval.
    rows = [r for r in _rows() if r["loss.name"] != "triplet"]
    write_report(tmp_path, MANIFEST, rows, ["mAP"], baseline=["loss.name=triplet"])
    summary = (tmp_path / "summary.md").read_text()
    assert "- loss.name=adasp vs loss.name=triplet: mAP: baseline not finished." in summary


def test_a_categorical_axis_is_drawn_as_bars_from_zero(tmp_path, monkeypatch):
    from matplotlib.container import BarContainer

    figures = {}
    real_save = sweep_report.save_figure

    def save(figure, path):
        figures[path.name] = figure
        real_save(figure, path)

    monkeypatch.setattr(sweep_report, "save_figure", save)
    manifest = _manifest([("train.seed", ["0", "1", "2"]), ("loss.name", list(MAP))])
    rows = [r for r in _rows()]
    paths = write_report(tmp_path, manifest, rows, ["mAP"])
    (ax,) = figures[paths["mAP curve"].name].axes
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3 and bars.errorbar is not None  # one bar per loss, mean ± std
    heights = [b.get_height() for b in bars]
    assert heights == pytest.approx([100 * sum(v) / 3 for v in MAP.values()])
    assert ax.get_ylim()[0] == 0  # not a zoomed axis
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "-"]  # no trend line


def test_sweep_page(tmp_path):
    from adasp.evaluation.sweep_page import write_sweep_page

    paths = write_report(tmp_path, MANIFEST, _rows(), ["mAP"])
    run = tmp_path / _rows()[0]["run"] / "eval"
    run.mkdir(parents=True)
    (run / "report.html").write_text("<html></html>")
    page = write_sweep_page(tmp_path, MANIFEST, _rows(), paths).read_text()
    assert page.count("<tr>") == 1 + len(_rows())
    assert "data:image/png;base64," in page and "http" not in page  # offline
    assert f'href="{_rows()[0]["run"]}/eval/report.html"' in page
