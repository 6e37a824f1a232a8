"""A finished training run shared by the CLI tests that read it (one training, not one per module)."""

from __future__ import annotations

import pytest

from adasp.cli import main
from tests.engine.conftest import tiny_overrides


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A finished one-epoch quickstart run on a small synthetic set, as ``adasp train`` writes it.
    Tests only read it (the commands that would write onto it are refused)."""
    root = tmp_path_factory.mktemp("synthetic")
    out = tmp_path_factory.mktemp("runs") / "r"
    args = ["train", "--config", "quickstart", "--output", str(out), "--no-progress"]
    assert main([*args, *tiny_overrides(root), "schedule.epochs=1"]) == 0
    return out
