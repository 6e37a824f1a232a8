"""Fault tests of a run folder: a second writer, a deleted checkpoints/ folder, a torn log, a
full disk, a kill inside the checkpoint write. Each ends with the run intact or resumed."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from adasp.cli import main
from adasp.engine import checkpoint as checkpoint_module
from adasp.engine.checkpoint import load_checkpoint
from tests.engine.conftest import tiny_overrides

pytestmark = pytest.mark.slow


def _cli(*args):
    return [sys.executable, "-m", "adasp", *args]


def _train(out, root, *extra, expect=0):
    code = main(["train", "--config", "quickstart", "--output", str(out), "--no-progress",
                 *tiny_overrides(root), *extra])  # fmt: skip
    assert code == expect
    return out


def _same_weights(a, b):
    first, second = (
        load_checkpoint(a / "model.pt")["model"],
        load_checkpoint(b / "model.pt")["model"],
    )
    return all(torch.equal(first[k], second[k]) for k in first)


def test_a_second_training_into_a_busy_folder_stops_at_once(tmp_path, synthetic_root, capsys):
    out = tmp_path / "run"
    command = _cli("train", "--config", "quickstart", "--output", str(out), "--no-progress",
                   *tiny_overrides(synthetic_root), "schedule.epochs=4")  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lock = out / ".adasp.lock"
        deadline = time.time() + 120
        while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.05)
        started = time.perf_counter()
        assert main(["train", "--config", "quickstart", "--output", str(out),
                     *tiny_overrides(synthetic_root), "--resume"]) == 2  # fmt: skip
        assert time.perf_counter() - started < 10  # refused before building anything
        err = capsys.readouterr().err.strip()
        assert f"is in use by process {first.pid} (started at " in err
        assert err.endswith("wait for it or choose another --output") and "\n" not in err
    finally:
        _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr.decode()
    # The first run is unharmed: one run's log, its outputs complete.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == 4
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)


def test_a_finished_run_without_checkpoints_is_never_overwritten(tmp_path, synthetic_root, capsys):
    out = _train(tmp_path / "run", synthetic_root, "schedule.epochs=1")
    for path in (out / "checkpoints").iterdir():
        path.unlink()
    (out / "checkpoints").rmdir()  # a common way to save disk
    before = {
        name: (out / name).read_bytes() for name in ("model.pt", "metrics.json", "config.yaml")
    }
    _train(out, synthetic_root, "schedule.epochs=1", expect=2)
    err = capsys.readouterr().err
    assert "already holds a run (model.pt, metrics.json, config.yaml, log.jsonl)" in err
    assert "--resume" in err and "another --output" in err
    _train(out, synthetic_root, "schedule.epochs=1", "--resume", expect=2)
    assert "no checkpoints/last.pt to resume from" in capsys.readouterr().err
    assert before == {name: (out / name).read_bytes() for name in before}
    # --overwrite is for the user who means it.
    _train(out, synthetic_root, "schedule.epochs=1", "--overwrite")
    assert (out / "checkpoints" / "last.pt").exists()


def _stop_after(monkeypatch, steps):
    """Make the next training stop (like a kill) after ``steps`` optimisation steps."""
    from adasp.engine.trainer import Trainer

    original = Trainer.train_step

    def step(self, batch):
        if self.state.step == steps:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", step)
    return original


def test_a_torn_last_log_line_is_dropped_and_the_run_resumes(
    tmp_path, synthetic_root, monkeypatch, capsys
):
    reference = _train(tmp_path / "reference", synthetic_root, "train.checkpoint_every_iters=1")
    out = tmp_path / "run"
    original = _stop_after(monkeypatch, 3)
    _train(out, synthetic_root, "train.checkpoint_every_iters=1", expect=130)
    monkeypatch.setattr("adasp.engine.trainer.Trainer.train_step", original)
    log = out / "log.jsonl"
    with log.open("a") as handle:
        handle.write('{"event": "train", "step": 4, "loss/ce": 1.2')  # power loss mid-line
    lines = len(log.read_text().splitlines())
    with pytest.warns(UserWarning, match=rf"line {lines} is not a complete log event"):
        _train(out, synthetic_root, "train.checkpoint_every_iters=1", "--resume")
    events = [json.loads(x) for x in log.read_text().splitlines()]
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps == list(range(1, steps[-1] + 1))
    assert _same_weights(reference, out)


def test_a_full_disk_keeps_the_previous_checkpoint_and_resume_finishes_the_run(
    tmp_path, synthetic_root, monkeypatch, capsys
):
    reference = _train(tmp_path / "reference", synthetic_root, "train.checkpoint_every_iters=1")
    out = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    _train(out, synthetic_root, "train.checkpoint_every_iters=1", expect=2)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: no space left on " in err and f"while writing {out / 'checkpoints'}" in err
    assert "(needed about" in err and "the previous checkpoint is intact" in err
    assert "run again with --resume" in err
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.pt"]  # no temporary
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)  # space is freed
    _train(out, synthetic_root, "train.checkpoint_every_iters=1", "--resume")
    assert _same_weights(reference, out)


KILLER = """
import os, signal
import torch
from adasp.engine import checkpoint

_save = torch.save
_calls = [0]

def _save_then_die(obj, handle, *args, **kwargs):
    _calls[0] += 1
    if _calls[0] == {kill_at}:
        handle.write(b"half a checkpoint")
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, handle, *args, **kwargs)

checkpoint.torch.save = _save_then_die
"""


@pytest.mark.timeout(600)
def test_a_kill_inside_the_checkpoint_write_resumes_bit_identically(tmp_path, synthetic_root):
    common = [
        *tiny_overrides(synthetic_root),
        "schedule.epochs=3",
        "train.checkpoint_every_iters=1",
    ]
    reference = tmp_path / "reference"
    subprocess.run(_cli("train", "--config", "quickstart", "--output", str(reference),
                        "--no-progress", *common), check=True, capture_output=True)  # fmt: skip
    out = tmp_path / "run"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    env = {**__import__("os").environ, "PYTHONPATH": str(plugins)}
    for number, kill_at in enumerate((2, 3, 4)):
        name = f"kill_in_write_{number}"
        (plugins / f"{name}.py").write_text(textwrap.dedent(KILLER.format(kill_at=kill_at)))
        command = _cli("--plugin", name, "train", "--config", "quickstart", "--output", str(out),
                       "--no-progress", "--resume", *common)  # fmt: skip
        killed = subprocess.run(command, capture_output=True, env=env)
        assert killed.returncode == -9, killed.stderr.decode()[-2000:]
        assert not (out / "metrics.json").exists()
        stale = list((out / "checkpoints").glob(".last.pt.*.tmp"))
        assert stale, "the kill should leave the half-written temporary behind"
    subprocess.run(_cli("train", "--config", "quickstart", "--output", str(out), "--no-progress",
                        "--resume", *common), check=True, capture_output=True, env=env)  # fmt: skip
    assert not list((out / "checkpoints").glob(".last.pt.*.tmp"))
    assert json.loads((out / "metrics.json").read_text()) == json.loads(
        (reference / "metrics.json").read_text()
    )
    assert _same_weights(reference, out)
