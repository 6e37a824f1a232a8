"""The one-call GPU benchmark (benchmarks/gpu.py) runs its CPU smoke version end to end: every
section is there, every row holds measured numbers and none failed or was skipped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

# The whole benchmark script in a subprocess: outside the fast loop.
pytestmark = pytest.mark.slow

SCRIPT = PROJECT_ROOT / "benchmarks" / "gpu.py"
SECTIONS = {
    "a": "## (a) Sparse Pairwise loss forward+backward vs the floor",
    "b1": "## (b1) Training step, pre-made batches on the device",
    "b2": "## (b2) Training with the real loader",
    "c": "## (c) Evaluation and re-ranking on the device",
}


def tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each ``## `` section's table rows as ``{column: cell}``."""
    out: dict[str, list[dict[str, str]]] = {}
    for block in text.split("\n## ")[1:]:
        title, *lines = block.splitlines()
        rows = [line.strip().strip("|").split("|") for line in lines if line.startswith("|")]
        columns = [c.strip() for c in rows[0]]
        out["## " + title] = [
            dict(zip(columns, (c.strip() for c in row), strict=True)) for row in rows[2:]
        ]
    return out


def number(cell: str) -> float:
    return float(cell.rstrip("×"))


def test_smoke_run_writes_every_section_with_numbers(tmp_path: Path) -> None:
    output = tmp_path / "tmp" / "gpu.md"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    text = output.read_text()
    assert done.stdout.strip().endswith(text.strip().splitlines()[-1])  # printed too
    assert "- date: " in text and f"torch {__import__('torch').__version__}" in text
    assert "error" not in text and "skipped" not in text, text
    found = tables(text)
    assert set(SECTIONS.values()) <= set(found), sorted(found)

    loss = found[SECTIONS["a"]]
    assert {(r["B"], r["dtype"]) for r in loss} == {
        (b, d) for b in ("16", "32") for d in ("fp32", "bf16", "fp16")
    }
    for row in loss:
        assert number(row["loss ms"]) > 0 and number(row["floor ms"]) > 0
        ratio = number(row["loss ms"]) / number(row["floor ms"])
        assert abs(number(row["× floor"]) - ratio) <= 0.01 * ratio + 0.01
        assert row["target"].startswith(("PASS", "FAIL"))

    steps = found[SECTIONS["b1"]]
    assert {r["loop"] for r in steps} == {"peer-style", "trainer"}
    assert len(steps) == 5
    for row in steps:
        assert number(row["images/s"]) > 0
        assert number(row["loss"]) > 0  # a finite loss came out of the step
        if row["loop"] == "trainer":
            assert number(row["× peer-style"]) > 0

    loader = found[SECTIONS["b2"]]
    assert len(loader) == 5  # CPU and data.decode=gpu loaders, alone and with the step, raw decode
    for row in loader:
        assert number(row["images/s"]) > 0
        assert number(row["vs the step in memory"]) > 0

    evaluation = found[SECTIONS["c"]]
    assert len(evaluation) == 3
    for row in evaluation:
        assert number(row["seconds"]) >= 0  # tiny sizes: may round to 0
        assert 0 < number(row["mAP"]) <= 1 and 0 <= number(row["R1"]) <= 1

    assert seconds < 120, f"the smoke run took {seconds:.0f} s"
