"""What a new user trips on first: progress output, "did you mean", adasp config."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from torch import nn

from adasp.cli import COMMANDS, _command_parser, build_parser, main
from adasp.engine.config import load_config
from adasp.errors import UserInputError, did_you_mean
from tests.conftest import PROJECT_ROOT
from tests.engine.conftest import tiny_overrides


def test_every_command_takes_no_progress():
    parser = build_parser()
    for name in COMMANDS:
        options = _command_parser(parser, name)._option_string_actions
        assert "--no-progress" in options, name


@pytest.mark.slow
def test_output_to_a_pipe_has_no_bars_but_one_line_per_epoch(tmp_path):
    """stderr is a pipe here, not a terminal: no carriage-return bars, one line per epoch."""
    command = [sys.executable, "-m", "adasp", "train", "--config", "quickstart", "--output",
               str(tmp_path / "run"), *tiny_overrides(tmp_path / "data"), "train.eval_every=0"]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=PROJECT_ROOT, check=False, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\r" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "loss/adasp" in lines[0] and "img/s" in lines[0]


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["loss.temprature=0.1"], "'loss.temprature' (did you mean 'temperature'?)"),
        (["loss.name=adsp"], "unknown loss 'adsp' (did you mean 'adasp'?)"),
        (["model.backbone=resnet5"], "unknown backbone 'resnet5' (did you mean 'resnet50'?)"),
        (["--dataset", "market"], "unknown dataset 'market' (did you mean 'market1501'?)"),
        (["--config", "cpu/mobilenett"], "(did you mean 'cpu/mobilenet'?)"),
    ],
)
def test_did_you_mean(argv, suggestion, capsys):
    config = [] if "--config" in argv else ["--config", "quickstart"]
    assert main(["config", *config, *argv]) == 2
    err = capsys.readouterr().err
    assert suggestion in err and err.count("\n") == 1


def test_did_you_mean_helper():
    assert did_you_mean("adsp", ["adasp", "sp-h"]) == " (did you mean 'adasp'?)"
    assert did_you_mean("Market1501", ["market1501"]) == " (did you mean 'market1501'?)"
    assert did_you_mean("vgg16", ["resnet50", "mgn"]) == ""
    assert did_you_mean(3, ["a"]) == ""


def test_backbone_list_names_timm_once(capsys):
    assert main(["config", "--config", "quickstart", "model.backbone=vgg16"]) == 2
    err = capsys.readouterr().err
    assert err.count("timm:<") == 1 and "did you mean" not in err


def test_messages_name_the_config_key_users_type():
    from adasp.models.weights import load_pretrained

    with pytest.raises(UserInputError, match=r"model\.pretrained=null"):
        load_pretrained(nn.Linear(2, 2), "imagenet")


def test_config_prints_what_train_runs_and_validates(capsys):
    overrides = ["loss.temperature=0.05", "schedule.epochs=20"]
    assert main(["config", "--config", "quickstart", *overrides]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == load_config("quickstart", overrides).to_dict()
    assert out.rstrip().splitlines()[-1].startswith("# valid: resnet18 backbone, loss adasp")
    # An invalid value: one line, nothing printed on stdout.
    assert main(["config", "--config", "quickstart", "loss.temperature=-1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "'loss.temperature' must be > 0" in captured.err


def test_config_check_data_finds_the_dataset(pku_subset, capsys):
    argv = ["config", "--config", "quickstart", "--dataset", "folder", "--root", str(pku_subset)]
    assert main([*argv, "--check-data"]) == 0
    assert "folder found at" in capsys.readouterr().out
    assert main([*argv[:-1], str(pku_subset / "missing"), "--check-data"]) == 2
