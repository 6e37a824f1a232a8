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
