"""A run folder written by adasp 0.1 (before the engine was re-homed) still resumes, and ends
with the metrics its uninterrupted run had.

The fixture (``fixtures/run-v0.1-interrupted``) was written by ``fixtures/make_run_v0_1.py``
with the 0.1 code: a tiny quick-start run stopped after its first step, and the metrics of the
same run left to finish (``fixtures/run-v0.1-complete-metrics.json``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adasp.cli import main
from tests.engine.fixtures.make_run_v0_1 import OVERRIDES  # what the fixture was trained with

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.slow
def test_a_run_folder_of_version_0_1_resumes_to_the_same_metrics(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run-v0.1-interrupted", run)
    monkeypatch.chdir(tmp_path)  # data.root is relative, as when the fixture was written
    code = main(["train", "--config", "quickstart", "--output", str(run), "--resume",
                 "--device", "cpu", "--no-progress", *OVERRIDES])  # fmt: skip
    assert code == 0
    expected = json.loads((FIXTURES / "run-v0.1-complete-metrics.json").read_text())
    assert json.loads((run / "metrics.json").read_text()) == expected
