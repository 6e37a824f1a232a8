"""Issue 23, item 9: after a SIGKILL before the first checkpoint, ``--resume`` logs each step
once in ``log.jsonl`` (it starts again from step 0, so the killed run's events go)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.engine.conftest import tiny_overrides
from tests.engine.test_run_faults import KILLER

pytestmark = pytest.mark.slow


def _steps(out):
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(e["event"], e["step"]) for e in events]


def test_a_kill_before_the_first_checkpoint_logs_each_step_once(tmp_path, synthetic_root):
    out = tmp_path / "run"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "kill_at_first_save.py").write_text(textwrap.dedent(KILLER.format(kill_at=1)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), *sys.path])}
    command = [sys.executable, "-m", "adasp", "train", "--config", "quickstart", "--output",
               str(out), "--no-progress", *tiny_overrides(synthetic_root), "schedule.epochs=1"]  # fmt: skip
    killed = subprocess.run(
        [*command[:3], "--plugin", "kill_at_first_save", *command[3:]], capture_output=True, env=env
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not (out / "checkpoints" / "last.pt").exists()
    logged = [step for kind, step in _steps(out) if kind == "train"]
    assert logged[:2] == [1, 2]  # logged, never checkpointed
    subprocess.run([*command, "--resume"], check=True, capture_output=True, env=env)
    steps = _steps(out)
    assert len(steps) == len(set(steps)), steps
    assert [step for kind, step in steps if kind == "train"] == logged
