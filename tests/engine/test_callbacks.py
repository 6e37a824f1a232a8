"""Callbacks: the built-ins (ema, precise_bn, keep_best, TensorBoard, MLflow), a user's own
from Python and from a plugin, their states restored exactly by a resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from adasp.engine import CALLBACKS, Callback, Trainer, load_config
from adasp.engine.callbacks import TensorBoardLogger
from adasp.engine.checkpoint import load_checkpoint, read_model_file
from adasp.engine.typed_config import ConfigError
from tests.engine.conftest import tiny_overrides


class EventRecorder(Callback):
    """Records the events it sees, and keeps a count as its state."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.count = 0

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_step_end(self, trainer, step):
        assert step.total.ndim == 0 and "image" in step.batch
        self.count += 1

    def on_epoch_end(self, trainer):
        self.events.append(f"epoch_end {trainer.state.epoch}")

    def on_evaluation_end(self, trainer, record):
        self.events.append(f"evaluation {record.epoch}")
        record.extras["recorder"] = {"steps": self.count}

    def on_fit_end(self, trainer):
        self.events.append("fit_end")

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


@pytest.mark.slow
def test_builtin_callbacks_and_a_python_callback_in_one_run(tmp_path, synthetic_root, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    callbacks = ("train.callbacks=[{ema: {decay: 0.9}}, {keep_best: {metric: rank1}}, "
                 f"{{precise_bn: {{batches: 2}}}}, {{mlflow: {{tracking_uri: '{store.as_uri()}', "
                 "experiment: tiny}}]")  # fmt: skip
    config = load_config("quickstart", [*tiny_overrides(synthetic_root), callbacks])
    recorder = EventRecorder()
    out = tmp_path / "run"
    trainer = Trainer.from_config(config, out, progress=False, callbacks=[recorder])
    metrics = trainer.fit()

    # A user's callbacks come before the built-in evaluation schedule and checkpointing.
    assert recorder.events == ["fit_start", "epoch_end 1", "evaluation 1", "epoch_end 2",
                               "evaluation 2", "fit_end"]  # fmt: skip
    assert metrics == json.loads((out / "metrics.json").read_text())
    assert metrics["recorder"] == {"steps": 8}
    # EMA: evaluated, reported, logged and saved beside the raw model.
    assert set(metrics["ema"]["test_sets"]) == set(metrics["test_sets"])
    assert 0 <= metrics["ema"]["mAP"] <= 1
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "eval/ema"] == [1, 2]
    raw, ema = read_model_file(out / "model.pt"), read_model_file(out / "model_ema.pt")
    assert raw.config == ema.config and set(raw.weights) == set(ema.weights)
    assert any(not torch.equal(raw.weights[k], ema.weights[k]) for k in raw.weights)
    # keep_best: best.pt holds the best rank-1 evaluation's weights.
    assert metrics["best"]["rank1"] == max(e["rank1"] for e in events if e["event"] == "eval")
    assert read_model_file(out / "best.pt").num_classes == raw.num_classes
    # TensorBoard: scalars, the config as text and the hyper-parameters.
    assert (out / "tensorboard" / "hparams").is_dir()
    # MLflow: a real local file store with params, per-step metrics and the model file.
    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.data.params["loss.name"] == "adasp"
    history = client.get_metric_history(run.info.run_id, "train/loss/total")
    assert [m.step for m in history] == list(range(1, 9))
    assert "model.pt" in [f.path for f in client.list_artifacts(run.info.run_id)]
    assert run.info.status == "FINISHED"


def test_precise_bn_recomputes_the_statistics_and_leaves_the_random_state(synthetic_root, tmp_path):
    config = load_config("quickstart", [*tiny_overrides(synthetic_root), "train.tensorboard=false",
                                        "train.callbacks=[{precise_bn: {batches: 1}}]"])  # fmt: skip
    trainer = Trainer.from_config(config, tmp_path / "run", progress=False)
    assert not any(isinstance(c, TensorBoardLogger) for c in trainer.callbacks)
    (precise,) = [c for c in trainer.callbacks if type(c).__name__ == "PreciseBN"]
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    rng = torch.get_rng_state()
    trainer.train_loader.set_epoch(0)
    precise.on_evaluation_start(trainer)
    assert not torch.equal(before, bn.running_mean) and bn.momentum == 0.1
    assert torch.equal(rng, torch.get_rng_state())
    trainer.close()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("[nope]", "unknown callback 'nope'; allowed: "),
        ("[{ema: {decay: 2}}]", "callback 'ema': decay must be in (0, 1)"),
        ("[{ema: {speed: 2}}]", "callback 'ema': "),
        ("[{keep_best: {metric: accuracy}}]", "unknown metric 'accuracy'"),
        ("[[ema]]", "expected a callback name or {name: {options}}"),
    ],
)
def test_bad_callback_configs_are_one_line_errors(spec, message, synthetic_root, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.callbacks") as caught:
        config = load_config("quickstart", [*tiny_overrides(synthetic_root),
                                            f"train.callbacks={spec}"])  # fmt: skip
        Trainer.from_config(config, tmp_path / "run", progress=False).close()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_registered_callbacks_are_listed():
    assert {"ema", "precise_bn", "keep_best", "mlflow", "harmful_pairs"} <= set(CALLBACKS)


def _cli(*args):
    return [sys.executable, "-m", "adasp", "--plugin", "tests.engine.callback_plugin", *args]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_after_sigkill_is_bit_identical_with_ema_and_a_user_callback(
    tmp_path, synthetic_root
):
    def command(out):
        return _cli("train", "--config", "quickstart", "--output", str(out), "--no-progress",
                    *tiny_overrides(synthetic_root), "schedule.epochs=3",
                    "train.checkpoint_every_iters=1", "data.num_workers=1",
                    f"train.callbacks=[{{ema: {{decay: 0.9}}}}, {{loss_sum: {{path: {out}.json}}}}]")  # fmt: skip

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run(command(reference), check=True, capture_output=True)
    proc = subprocess.Popen(command(resumed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    checkpoint = resumed / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists() and load_checkpoint(checkpoint)["step"] >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(checkpoint)["callbacks"]
    assert saved["loss_sum"]["steps"] == load_checkpoint(checkpoint)["step"]
    subprocess.run([*command(resumed), "--resume"], check=True, capture_output=True)

    for name in ("model.pt", "model_ema.pt"):
        a, b = load_checkpoint(reference / name)["model"], load_checkpoint(resumed / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    ref, res = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("reference", "resumed"))
    assert ref == res and ref["steps"] == 12 and ref["epochs"] == [1, 2, 3]
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    res_metrics = json.loads((resumed / "metrics.json").read_text())
    assert ref_metrics == res_metrics
