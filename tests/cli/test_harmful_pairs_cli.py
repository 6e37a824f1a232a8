"""``adasp harmful-pairs`` end to end, in-process and as a console script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adasp.cli import main


def test_table_output(capsys):
    assert (
        main(
            ["harmful-pairs", "--ids", "4", "--instances", "6", "--harmful", "2", "--trials", "200"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "SP (sparse)" in out and "dense" in out and "closed form" in out
    assert "guaranteed to pick no harmful pair" in out


def test_json_output(capsys):
    assert (
        main(["harmful-pairs", "--instances", "4", "--harmful", "2", "--trials", "500", "--json"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert {"p_sp", "p_dense", "p_sp_ci", "p_dense_ci", "p_sp_exact", "p_dense_exact"} <= set(data)
    assert 0 < data["p_sp"] < data["p_dense"] <= 1
    assert data["sp_guaranteed_harmless"] is False


def test_sweep_writes_files(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "harmful-pairs",
                "--instances",
                "4",
                "--trials",
                "100",
                "--sweep",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "contradicted" in printed
    assert (out / "harmful_pairs.png").stat().st_size > 1000
    assert (out / "harmful_pairs.csv").exists() and (out / "harmful_pairs.md").exists()


def test_bad_input_is_one_clear_line(capsys):
    assert main(["harmful-pairs", "--instances", "4", "--harmful", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "adasp harmful-pairs: error: --harmful must be between 0 and M(M-1)/2 = 6"
    )
    assert "Traceback" not in err


@pytest.mark.slow
def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "adasp", "harmful-pairs", "--trials", "50", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "p_sp" in json.loads(proc.stdout)


@pytest.mark.parametrize(
    "argv",
    [
        ["--trials", "1000000000000"],
        ["--sweep", "--instances", "300"],
        ["--ids", "100000000", "--trials", "100000"],
    ],
)
def test_work_beyond_the_limit_is_refused_at_once(argv, tmp_path, capsys):
    """Issue 23, item 7: years of simulation are refused up front, with the estimate."""
    assert main(["harmful-pairs", *argv, "--output", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "similarities" in err and "limit" in err
    assert "lower --trials" in err
    assert not (tmp_path / "s").exists()


def test_long_simulations_show_progress(capsys):
    from adasp.analysis.harmful_pairs import simulate_harmful_pairs, sweep_harmful_pairs

    simulate_harmful_pairs(4, 6, 2, trials=50, progress_above=0, max_chunk_elements=1000)
    assert "simulating" in capsys.readouterr().err
    sweep_harmful_pairs(2, 3, trials=5, progress_above=0)
    assert "sweeping K" in capsys.readouterr().err
    simulate_harmful_pairs(4, 6, 2, trials=50)  # short: silent
    assert capsys.readouterr().err == ""
