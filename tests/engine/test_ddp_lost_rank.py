"""Two ranks started by hand (issue 23, item 21): when one is killed, the other ends with one
line naming itself and the fix, not a traceback, and the last checkpoint stays readable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from adasp.engine.checkpoint import load_checkpoint
from adasp.engine.distributed import lost_peer_message
from tests.engine.conftest import tiny_overrides

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.timeout(600)
def test_a_killed_rank_leaves_the_other_with_one_line(tmp_path, synthetic_root):
    out = tmp_path / "run"
    port = _free_port()
    command = [sys.executable, "-m", "adasp", "train", "--config", "quickstart",
               "--output", str(out), "--device", "cpu", "--no-progress",
               *tiny_overrides(synthetic_root), "schedule.epochs=100",
               "train.checkpoint_every_iters=1"]  # fmt: skip
    ranks = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        ranks.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        log, deadline = out / "log.jsonl", time.monotonic() + 400
        while not (log.exists() and log.stat().st_size) and time.monotonic() < deadline:
            assert ranks[0].poll() is None, ranks[0].communicate()[1][-3000:]
            time.sleep(0.2)
        ranks[1].send_signal(signal.SIGKILL)
        _, err = ranks[0].communicate(timeout=120)
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert ranks[0].returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("adasp train: error: rank 0 of 2 lost contact with the process group")
    assert "start every rank again with --resume" in line
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] >= 1


def test_only_errors_of_a_lost_peer_in_a_group_are_translated(monkeypatch):
    lost = RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:17123. GLHF!")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert lost_peer_message(lost, "train") is None  # a single process has no peer
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert lost_peer_message(lost, "evaluate") == (
        "rank 1 of 2 lost contact with the process group (Connection closed by peer): another "
        "rank stopped or was killed (its own output says why); start every rank again"
    )
    assert lost_peer_message(RuntimeError("size mismatch"), "train") is None
