"""Typed configs: YAML with _base_, overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from adasp.engine.config import (
    PRESET_DIR,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
)
from adasp.engine.typed_config import ConfigError
from adasp.errors import MissingPathError


def _write(path, text):
    path.write_text(text)
    return path


def test_defaults_and_round_trip(tmp_path):
    config = load_config(None)
    assert isinstance(config, ExperimentConfig)
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    assert config_from_dict(config.to_dict()) == config


def test_base_inheritance_and_overrides(tmp_path):
    _write(
        tmp_path / "base.yaml",
        "data:\n  batch_size: 32\n  num_instances: 4\nloss:\n  weight: 0.5\n",
    )
    child = _write(
        tmp_path / "child.yaml",
        "_base_: base.yaml\nloss:\n  temperature: 0.05\nmodel:\n  backbone: resnet18\n",
    )
    config = load_config(
        child, ["loss.weight=0.1", "data.image_size=[64,32]", "model.pretrained=null"]
    )
    assert config.data.batch_size == 32 and config.data.num_instances == 4
    assert config.loss.weight == 0.1 and config.loss.temperature == 0.05
    assert config.data.image_size == (64, 32) and config.model.pretrained is None


def test_presets_are_found_by_name():
    assert (PRESET_DIR / "quickstart.yaml").is_file()
    assert load_config("quickstart").model.backbone == "resnet18"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["loss.temprature=0.1"],
            "unknown config key 'loss.temprature' (did you mean 'temperature'",
        ),
        (["loss.temperature=-0.1"], "'loss.temperature' must be > 0"),
        (["data.num_instances=16", "data.batch_size=8"], "larger than 'data.batch_size'"),
        (["data.batch_size=60"], "must be a multiple of 'data.num_instances'"),
        (["loss.name=arcface"], "unknown loss 'arcface'; allowed: none, adasp"),
        (["model.backbone=vgg16"], "unknown backbone 'vgg16'; allowed: "),
        (["data.dataset=market"], "unknown dataset 'market' (did you mean 'market1501'"),
        (
            ["model.pooling=mean"],
            "'model.pooling': unknown pooling 'mean'; allowed: avg, max, gem",
        ),
        (["optim.lr=fast"], "'optim.lr': expected a number"),
        (["train.deterministic=1"], "'train.deterministic': expected true or false"),
        (["loss.options={triplet: {margn: 0.3}}"], "loss 'triplet' has no option margn"),
        (["loss.options={adasp: {temperature: 0.1}}"], "its temperature is loss.temperature"),
        (["schedule.cosine_delay_epochs=-1"], "'schedule.cosine_delay_epochs' must be >= 0"),
        (["loss.weight"], "not of the form key=value"),
        (["loss.options={triplet: {margin: -1}}"], "'loss.options.triplet': margin must be >= 0"),
        (["loss.options={supcon: {temperature: 0}}"], "'loss.options.supcon': temperature"),
        (["optim.bias_lr_factor=-1"], "'optim.bias_lr_factor' must be >= 0"),
        (["optim.bias_weight_decay=-1"], "'optim.bias_weight_decay' must be >= 0"),
        (["optim.optimizer=sgd", "optim.nesterov=true", "optim.momentum=0"], "nesterov"),
        (["loss.weight=0", "loss.ce_weight=0"], "nothing would be trained"),
        (["data.std=[0,0,0]"], "'data.std' must be positive"),
    ],
)
def test_invalid_values_fail_at_load_time_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, overrides)


def test_missing_file_and_base_cycle(tmp_path):
    with pytest.raises(MissingPathError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    _write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(tmp_path / "a.yaml")


def test_override_into_new_nested_mapping():
    assert apply_overrides({}, ["loss.options.triplet.margin=0"]) == {
        "loss": {"options": {"triplet": {"margin": 0}}}
    }


def test_multistep_schedule_ignores_the_cosine_delay():
    config = load_config(None, ["schedule.scheduler=multistep", "schedule.epochs=5"])
    assert config.schedule.epochs == 5
