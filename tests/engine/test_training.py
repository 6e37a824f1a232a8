"""End-to-end training: outputs, evaluation, exact resume after SIGKILL, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from adasp.cli import main
from adasp.engine.checkpoint import load_checkpoint
from adasp.engine.config import load_config
from adasp.engine.trainer import Trainer, TrainingDiverged
from tests.engine.conftest import poison_objective, tiny_overrides

METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")


def _train(tmp_path, root, name, extra=()):
    out = tmp_path / name
    code = main(["train", "--config", "quickstart", "--output", str(out), "--no-progress",
                 *tiny_overrides(root), *extra])  # fmt: skip
    assert code == 0
    return out


@pytest.mark.slow
def test_train_writes_every_output_and_evaluate_reproduces_its_metrics(
    tmp_path, synthetic_root, capsys
):
    out = _train(tmp_path, synthetic_root, "run")
    metrics = json.loads((out / "metrics.json").read_text())
    for key in METRICS:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["epoch"] == 2 and metrics["test_set"] in metrics["test_sets"]
    assert (out / "config.yaml").is_file() and (out / "model.pt").is_file()
    assert (out / "checkpoints" / "last.pt").is_file()
    assert any((out / "tensorboard").iterdir())
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_events = [e for e in events if e["event"] == "train"]
    assert (
        len(train_events) == 8 and "loss/adasp" in train_events[0] and "loss/ce" in train_events[0]
    )
    assert [e["epoch"] for e in events if e["event"] == "eval"] == [1, 2]
    assert "results after epoch 2" in capsys.readouterr().out

    assert (
        main(["evaluate", "--checkpoint", str(out / "model.pt"), "--output", str(tmp_path / "ev")])
        == 0
    )
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in METRICS:
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6)


@pytest.mark.slow
def test_training_improves_over_the_untrained_model(tmp_path, synthetic_root):
    # A larger set than the other tests': more batches per epoch, so 6 epochs take mAP well
    # clear of the untrained model's (measured 0.27 untrained, 0.39 trained).
    larger = "data.options={num_identities: 24, images_per_identity: 12, image_size: [64, 32]}"
    out = _train(
        tmp_path, synthetic_root, "run", [larger, "schedule.epochs=6", "train.eval_every=0"]
    )
    trained = json.loads((out / "metrics.json").read_text())["mAP"]
    assert main(["evaluate", "--config", "quickstart", "--output", str(tmp_path / "untrained"),
                 *tiny_overrides(synthetic_root), larger]) == 0  # fmt: skip
    untrained = json.loads((tmp_path / "untrained" / "metrics.json").read_text())["mAP"]
    assert trained > untrained + 0.05, (trained, untrained)


def _cli(*args):
    return [sys.executable, "-m", "adasp", *args]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_and_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, synthetic_root):
    common = [*tiny_overrides(synthetic_root), "schedule.epochs=3", "train.checkpoint_every_iters=1",
              "data.num_workers=1"]  # fmt: skip
    reference = tmp_path / "reference"
    subprocess.run(_cli("train", "--config", "quickstart", "--output", str(reference), "--no-progress",
                        *common), check=True, capture_output=True)  # fmt: skip
    resumed = tmp_path / "resumed"
    command = _cli(
        "train", "--config", "quickstart", "--output", str(resumed), "--no-progress", *common
    )
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    checkpoint = resumed / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists() and load_checkpoint(checkpoint)["step"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (resumed / "metrics.json").exists()
    subprocess.run([*command, "--resume"], check=True, capture_output=True)
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    res_metrics = json.loads((resumed / "metrics.json").read_text())
    assert {k: ref_metrics[k] for k in METRICS} == {k: res_metrics[k] for k in METRICS}
    ref_model = load_checkpoint(reference / "model.pt")["model"]
    res_model = load_checkpoint(resumed / "model.pt")["model"]
    assert all(torch.equal(ref_model[k], res_model[k]) for k in ref_model)
    # The log holds every step once: what the killed run logged after its checkpoint is gone.
    events = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps == list(range(1, steps[-1] + 1))


@pytest.mark.slow
def test_output_folder_of_another_run_is_not_overwritten(tmp_path, synthetic_root, capsys):
    out = _train(tmp_path, synthetic_root, "run", ["schedule.epochs=1"])
    before = (out / "checkpoints" / "last.pt").read_bytes()
    assert (
        main(
            [
                "train",
                "--config",
                "quickstart",
                "--output",
                str(out),
                *tiny_overrides(synthetic_root),
            ]
        )
        == 2
    )
    assert "pass --resume" in capsys.readouterr().err
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.slow
def test_resume_accepts_changed_evaluation_settings(tmp_path, synthetic_root, capsys):
    out = _train(tmp_path, synthetic_root, "run", ["schedule.epochs=1"])
    cosine = json.loads((out / "metrics.json").read_text())
    code = main(["train", "--config", "quickstart", "--output", str(out), "--resume",
                 *tiny_overrides(synthetic_root), "schedule.epochs=1", "eval.metric=euclidean",
                 "train.log_every=5", "data.num_workers=1"])  # fmt: skip
    assert code == 0
    assert "evaluating it again with the changed evaluation settings" in capsys.readouterr().err
    # The finished run's results now follow the settings its config.yaml records.
    assert "metric: euclidean" in (out / "config.yaml").read_text()
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["mAP"] != cosine["mAP"]  # unnormalised features rank differently
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--output",
                 str(tmp_path / "ev")]) == 0  # fmt: skip
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in METRICS:
        assert evaluated[key] == pytest.approx(resumed[key], abs=1e-6)


@pytest.mark.slow
def test_resume_refuses_a_different_config(tmp_path, synthetic_root, capsys):
    out = _train(tmp_path, synthetic_root, "run", ["schedule.epochs=1"])
    code = main(["train", "--config", "quickstart", "--output", str(out), "--resume",
                 *tiny_overrides(synthetic_root), "schedule.epochs=1", "loss.weight=0.5"])  # fmt: skip
    assert code == 2
    assert "loss.weight: saved 1.0, now 0.5" in capsys.readouterr().err


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_term(tmp_path, synthetic_root):
    config = load_config(
        "quickstart", [*tiny_overrides(synthetic_root), "train.checkpoint_every_iters=1"]
    )
    trainer = Trainer.from_config(config, tmp_path / "run", device="cpu", progress=False)
    poison_objective(trainer, at_call=6, value=float("nan"))
    with pytest.raises(
        TrainingDiverged, match=r"epoch 2, iteration 2 of 4 \(global step 6\).*term 'adasp' = nan"
    ):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 5


def test_config_errors_are_one_line(tmp_path, capsys):
    assert (
        main(["train", "--config", "quickstart", "--output", str(tmp_path), "loss.temperature=-1"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.strip() == (
        "adasp train: error: config key 'loss.temperature' must be > 0 (a finite number), got -1.0"
    )


@pytest.mark.slow
def test_training_on_the_real_subset_through_folder(tmp_path, pku_subset):
    out = tmp_path / "pku"
    overrides = [
        o
        for o in tiny_overrides("unused")
        if not o.startswith(("data.dataset", "data.root", "data.options"))
    ]
    code = main(["train", "--config", "quickstart", "--dataset", "folder", "--root", str(pku_subset),
                 "--output", str(out), "--no-progress", *overrides, "schedule.epochs=1"])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_set"] == "folder" and metrics["num_valid_queries"] == 28


@pytest.mark.slow
def test_backbone_stays_frozen_for_the_first_iterations(tmp_path, synthetic_root):
    overrides = [*tiny_overrides(synthetic_root), "schedule.epochs=1", "train.eval_every=0",
                 "schedule.freeze_backbone_iters=100"]  # fmt: skip
    trainer = Trainer.from_config(
        load_config("quickstart", overrides), tmp_path / "run", progress=False
    )
    backbone = [p.detach().clone() for p in trainer.model.backbone.parameters()]
    head = [p.detach().clone() for p in trainer.model.head.parameters()]
    trainer.fit()
    now = list(trainer.model.backbone.parameters())
    assert all(torch.equal(a, b) for a, b in zip(backbone, now, strict=True))
    moved = [
        not torch.equal(a, b) for a, b in zip(head, trainer.model.head.parameters(), strict=True)
    ]
    assert any(moved)


def test_untrained_baseline_is_the_model_training_starts_from(tmp_path, synthetic_root):
    from adasp.engine.inference import build_inference_model

    config = load_config("quickstart", tiny_overrides(synthetic_root))
    untrained = build_inference_model(config, None, torch.device("cpu"))
    trainer = Trainer.from_config(config, tmp_path / "run", progress=False)
    start = trainer.model.state_dict()
    for key, value in untrained.state_dict().items():
        assert torch.equal(value, start[key]), key
