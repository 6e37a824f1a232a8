"""Two-process DDP training on CPU with the gloo backend, launched by torchrun."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adasp.cli import main
from tests.engine.conftest import tiny_overrides

# Two-process torchrun training runs: minutes on a busy CPU, so outside the fast loop.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
@pytest.mark.parametrize("ce_weight", ["1.0", "0.0"], ids=["ce+adasp", "adasp-alone"])
def test_two_process_gloo_run(tmp_path, synthetic_root, ce_weight):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "adasp", "train", "--config", "quickstart", "--output", str(out), "--device", "cpu",
        "--no-progress", *tiny_overrides(synthetic_root), "schedule.epochs=2",
        f"loss.ce_weight={ce_weight}",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["mAP"] <= 1
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # One log written by rank 0 only: each step appears once.
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps == sorted(set(steps)) and len(steps) == 8  # 2 epochs of 69 // 16 batches
    assert proc.stdout.count("results after epoch 2") == 1
    # Every rank embedded with rank 0's BatchNorm statistics, the ones saved in model.pt: a
    # single process evaluating model.pt gets the run's own numbers.
    assert (
        main(["evaluate", "--checkpoint", str(out / "model.pt"), "--output", str(tmp_path / "e")])
        == 0
    )
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["mAP"] == pytest.approx(metrics["mAP"], abs=1e-6)


PID_PLUGIN = """
import os, pathlib
folder = pathlib.Path(os.environ["ADASP_TEST_PIDS"])
folder.mkdir(exist_ok=True)
(folder / os.environ.get("RANK", "0")).write_text(str(os.getpid()))
"""


@pytest.mark.timeout(600)
def test_a_stopped_rank_ends_the_others_with_one_line(tmp_path, synthetic_root):
    """Issue 23, item 6: SIGSTOP one of two gloo ranks; the other exits after
    ``train.ddp_timeout_s`` with one line naming the stopped rank, the checkpoint intact."""
    import os
    import signal
    import time

    from adasp.engine.checkpoint import load_checkpoint

    out = tmp_path / "ddp"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "record_pid.py").write_text(PID_PLUGIN)
    pids = tmp_path / "pids"
    env = {**os.environ, "ADASP_TEST_PIDS": str(pids),
           "PYTHONPATH": os.pathsep.join([str(plugins), *sys.path])}  # fmt: skip
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "adasp", "--plugin", "record_pid", "train", "--config", "quickstart",
        "--output", str(out), "--device", "cpu", "--no-progress",
        *tiny_overrides(synthetic_root), "schedule.epochs=50", "train.eval_every=0",
        "train.ddp_timeout_s=8",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    stopped = None
    try:
        checkpoint = out / "checkpoints" / "last.pt"
        deadline = time.time() + 300
        while time.time() < deadline and not (checkpoint.exists() and (pids / "1").exists()):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        stopped = int((pids / "1").read_text())
        os.kill(stopped, signal.SIGSTOP)
        _, stderr = proc.communicate(timeout=240)
    finally:
        if stopped is not None:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    err = stderr.decode()
    ours = [line for line in err.splitlines() if line.startswith("adasp train: error:")]
    assert len(ours) == 1, err[-4000:]
    assert "rank 1 of 2 did not answer within 8 s (train.ddp_timeout_s)" in ours[0]
    state = load_checkpoint(checkpoint)  # intact: it loads, and it is a finished epoch
    assert state["batches_done"] == 0 and state["epoch"] >= 1
