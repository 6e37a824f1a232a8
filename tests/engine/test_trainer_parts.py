"""The Trainer over explicit parts: built by hand, or from a config with one part replaced; and
what it does with parts that are not the built-in ones."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from adasp.engine import Trainer, TrainingDiverged, TrainingSettings, builders, load_config
from adasp.engine.checkpoint import load_checkpoint
from adasp.engine.loss_meter import LossMeter
from adasp.engine.schedule import LRSchedule
from adasp.errors import UserInputError
from adasp.losses import LossTerm, MetricLoss, Objective
from tests.engine.conftest import tiny_overrides


def _parts(root, *extra):
    config = load_config("quickstart", [*tiny_overrides(root), *extra])
    dataset = builders.build_datasets(config.data)
    model = builders.build_reid_model(config.model, dataset.num_train_pids)
    loader = builders.build_train_loader(config, dataset)
    return config, dataset, model, loader


@pytest.mark.slow
def test_a_trainer_built_by_hand_trains_evaluates_and_writes_its_folder(tmp_path, synthetic_root):
    config, dataset, model, loader = _parts(synthetic_root)
    trainer = Trainer(
        model,
        builders.build_objective(config.loss),
        loader,
        builders.build_optimizer(config.optim, model),
        builders.build_schedule(config.schedule, len(loader)),
        settings=TrainingSettings(epochs=1, log_every=1),
        evaluator=builders.build_evaluator(config, builders.build_test_sets(config.data, dataset)),
        output_dir=tmp_path / "run",
        device="cpu",
        progress=False,
    )
    metrics = trainer.fit()
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written == metrics and written["epoch"] == 1 and 0 <= written["mAP"] <= 1
    assert not (tmp_path / "run" / "config.yaml").exists()  # no config was given
    assert load_checkpoint(tmp_path / "run" / "model.pt")["config"] is None


def test_from_config_takes_the_part_passed_in(tmp_path, synthetic_root):
    config, dataset, _, _ = _parts(synthetic_root)
    mine = builders.build_reid_model(config.model, dataset.num_train_pids)
    with torch.no_grad():
        next(mine.parameters()).fill_(0.5)  # recognisable
    trainer = Trainer.from_config(
        config, tmp_path / "run", device="cpu", progress=False, model=mine
    )
    assert trainer.model is mine and trainer.config is config
    trainer.close()


class _ScalarTerm(nn.Module):
    """A plugin-style loss: labels expected beside its input, a (1,)-shaped value."""

    input_key = "features"

    def forward(self, features, labels):
        assert labels.device == features.device, (labels.device, features.device)
        return (features.mean() * 0 + labels.float().mean()).reshape(1)


def test_a_loss_without_host_label_support_gets_device_labels(monkeypatch):
    from adasp.losses import LOSSES

    monkeypatch.setattr(LOSSES, "_entries", dict(LOSSES._entries))
    LOSSES.register("scalar-term", _ScalarTerm)
    objective = Objective([LossTerm("scalar-term"), LossTerm("adasp")], check_finite=False)
    features = torch.randn(8, 4, device="meta")
    total, parts = objective({"features": features}, torch.arange(8) // 2)  # host labels
    assert total.device.type == "meta" and set(parts) == {"scalar-term", "adasp"}


def test_a_metric_loss_subclass_written_before_host_labels_still_works():
    class Mean(MetricLoss):
        def compute(self, features, labels):
            return features.mean() + labels.float().mean() * 0

    value = Mean()(torch.ones(4, 3), torch.tensor([0, 0, 1, 1]))
    assert value.item() == 1.0


def test_the_loss_meter_takes_one_value_terms_and_names_changed_terms():
    meter = LossMeter(["a"], "cpu")
    step = torch.zeros((), dtype=torch.int64)
    meter.add({"a": torch.tensor([2.0])}, torch.tensor(2.0), step + 1)
    assert meter.read().means == {"a": 2.0, "total": 2.0}
    with pytest.raises(UserInputError, match="the same terms every step"):
        meter.add({"b": torch.tensor(1.0)}, torch.tensor(1.0), step + 2)


def test_nan_features_from_a_checking_objective_stop_as_a_divergence(tmp_path, synthetic_root):
    config, _, model, loader = _parts(synthetic_root)

    class Poisoned(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            out = self.inner(images)
            if self.training:
                out["features"] = out["features"] * float("nan")
            return out

    trainer = Trainer(
        Poisoned(model),
        builders.build_objective(config.loss),  # checks its inputs for NaN (library default)
        loader,
        builders.build_optimizer(config.optim, model),
        builders.build_schedule(config.schedule, len(loader)),
        settings=TrainingSettings(epochs=1),
        output_dir=tmp_path / "run",
        device="cpu",
        progress=False,
    )
    with pytest.raises(TrainingDiverged, match="NaN or Inf"):
        trainer.fit()


@pytest.mark.slow
def test_a_plain_loader_resumes_by_replaying_its_epoch_with_the_right_steps(
    tmp_path, synthetic_root
):
    config, dataset, _, loader = _parts(synthetic_root, "train.checkpoint_every_iters=1")
    batches = list(loader)  # a plain list: no set_epoch, no sampler state

    def build(resume):
        torch.manual_seed(0)
        net = builders.build_reid_model(config.model, dataset.num_train_pids)
        return Trainer(
            net,
            builders.build_objective(config.loss),
            batches,
            builders.build_optimizer(config.optim, net),
            LRSchedule(len(batches), 2),
            settings=TrainingSettings(epochs=2, checkpoint_every_iters=1),
            output_dir=tmp_path / "run",
            device="cpu",
            progress=False,
            resume=resume,
        )

    first = build(False)
    original = first.train_step

    def stop_after_one(batch):
        if first.state.step == len(batches) + 1:  # one batch into the second epoch
            raise KeyboardInterrupt
        return original(batch)

    first.train_step = stop_after_one
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = build(True)
    assert (resumed.state.step, resumed.state.batches_done) == (len(batches), 0)
    resumed.fit()
    assert resumed.state.step == 2 * len(batches)


def test_a_failing_constructor_releases_the_run_folder(tmp_path, synthetic_root):
    config, _, model, _ = _parts(synthetic_root)

    def build(loader):
        return Trainer(
            model,
            builders.build_objective(config.loss),
            loader,
            builders.build_optimizer(config.optim, model),
            LRSchedule(2, 1),
            settings=TrainingSettings(epochs=1),
            output_dir=tmp_path / "run",
            device="cpu",
            progress=False,
        )

    with pytest.raises(TypeError):
        build(iter([]))  # no length
    build([]).close()  # the folder is free again


def test_resume_and_overwrite_together_are_refused(tmp_path, synthetic_root):
    config = load_config("quickstart", tiny_overrides(synthetic_root))
    with pytest.raises(UserInputError, match="pass one"):
        Trainer.from_config(config, tmp_path / "run", resume=True, overwrite=True)
