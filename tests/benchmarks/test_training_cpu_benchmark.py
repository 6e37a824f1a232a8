"""The CPU training benchmark (benchmarks/training_cpu.py) and the GPU gap profile
(benchmarks/gpu_gap_profile.py) run their smoke versions end to end on the CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow  # whole scripts with loader workers, in subprocesses


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rows(text: str, title: str) -> list[list[str]]:
    block = text.split(title, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_training_cpu_quick_prints_every_loop_and_ratio():
    out = run("training_cpu.py", "--quick", "--variants", "default", "cpu-preset")
    table = rows(out, "## Images/s")
    assert [r[0] for r in table] == ["peer-style", "adasp default", "adasp cpu-preset"]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in table)
    assert table[0][3] == "1.00"
    phases = rows(out, "## Per phase")
    assert len(phases) == 3 and all(float(c) >= 0 for r in phases for c in r[1:])


def test_gpu_gap_profile_smoke(tmp_path):
    run("gpu_gap_profile.py", "--smoke", "--output", str(tmp_path))
    table = (tmp_path / "gap.md").read_text()
    row = [line for line in table.splitlines() if line.startswith("| workers-1")]
    assert row and "error" not in row[0]
    assert (tmp_path / "trace-workers-1.json").exists()
