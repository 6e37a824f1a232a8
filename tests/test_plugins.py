"""Plugins: a user's own module registers a dataset, a backbone and a loss, used from Python
and through ``adasp --plugin``; installed entry points load by themselves; failures are one
clear line."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from adasp import plugins
from adasp.cli import main
from adasp.data import DATASETS, build_dataset, describe_dataset
from adasp.errors import UserInputError
from adasp.losses import LOSSES, LossTerm, Objective, loss_options
from adasp.models import BACKBONES, build_model
from adasp.plugins import load_plugins
from tests.engine.conftest import tiny_overrides

PLUGIN = '''
"""A user's plugin: synthetic people under a new name, a tiny CNN and a class-centre loss."""

import torch
import torch.nn.functional as F
from torch import nn

from adasp.data import DATASETS, DatasetInfo
from adasp.data.synthetic import load_synthetic
from adasp.losses import LOSSES, LossInfo
from adasp.models import BACKBONES

BUILT_LOSSES = []


@DATASETS.register(
    "my_people",
    info=DatasetInfo("my people, from a plugin", "ROOT/ (generated)", {"num_identities": (8, 16)}),
)
def load_my_people(root, *, num_identities=16, images_per_identity=8, image_size=(64, 32),
                   verify_images=False, skip_unreadable=False):
    return load_synthetic(root, num_identities=num_identities,
                          images_per_identity=images_per_identity, image_size=image_size,
                          verify_images=verify_images, skip_unreadable=skip_unreadable)


class TinyNet(nn.Module):
    def __init__(self, last_stride, width):
        super().__init__()
        self.out_channels = width
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=4, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=last_stride, padding=1),
        )

    def forward(self, x):
        return self.body(x)


@BACKBONES.register("my_net")
def my_net(*, last_stride=1, width=16):
    return TinyNet(last_stride, width)


@LOSSES.register("my_centre", info=LossInfo(from_config=("temperature",)))
class CentreLoss(nn.Module):
    input_key = "features"

    def __init__(self, temperature=1.0, scale=1.0):
        super().__init__()
        self.temperature, self.scale = temperature, scale
        BUILT_LOSSES.append({"temperature": temperature, "scale": scale})

    def forward(self, features, labels):
        f = F.normalize(features, dim=1)
        onehot = F.one_hot(labels).to(f.dtype)
        centres = (onehot.T @ f) / onehot.sum(0).clamp(min=1)[:, None]
        return self.scale * ((f - centres[labels]) ** 2).sum(1).mean() / self.temperature
'''


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A folder on ``sys.path`` for plugin modules; what they register and the modules
    themselves are removed after the test."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    registries = (DATASETS, BACKBONES, LOSSES)
    before = [set(r) for r in registries]
    yield folder
    for registry, names in zip(registries, before, strict=True):
        for name in set(registry) - names:
            registry.unregister(name)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(folder)):
            del sys.modules[name]


@pytest.fixture
def my_plugin(plugin_path):
    (plugin_path / "my_reid_plugin.py").write_text(PLUGIN)
    return "my_reid_plugin"


def test_a_plugin_registers_a_dataset_a_backbone_and_a_loss(my_plugin, tmp_path):
    assert "my_net" not in BACKBONES
    load_plugins([my_plugin])
    load_plugins([my_plugin])  # loading again is harmless
    assert plugins.loaded_plugins()[-1] == my_plugin
    assert DATASETS.names()[-1] == "my_people" and "my_net" in BACKBONES

    data = build_dataset("my_people", tmp_path / "data", num_identities=8)
    assert data.num_train_pids > 0 and data.query and data.gallery
    assert "my people, from a plugin" in describe_dataset("my_people")
    assert "option num_identities=16 (one of 8, 16)" in describe_dataset("my_people")
    with pytest.raises(UserInputError, match="num_identities=9 is not allowed; allowed: 8, 16"):
        build_dataset("my_people", tmp_path / "data", num_identities=9)

    model = build_model("my_net", num_classes=5, backbone_options={"width": 8})
    out = model(torch.randn(4, 3, 64, 32))
    assert out["features"].shape == (4, 8) and out["logits"].shape == (4, 5)
    with pytest.raises(UserInputError, match="backbone 'my_net' has no option depth"):
        build_model("my_net", num_classes=5, backbone_options={"depth": 3})

    assert loss_options("my_centre") == ["temperature", "scale"]
    objective = Objective([LossTerm("ce"), LossTerm("my_centre", 0.5, {"temperature": 0.5})])
    labels = torch.tensor([0, 0, 1, 1])
    total, parts = objective(out, labels)
    assert parts["my_centre"] > 0 and torch.isclose(total, parts["ce"] + 0.5 * parts["my_centre"])


@pytest.mark.slow
def test_cli_trains_with_a_plugins_dataset_backbone_and_loss(my_plugin, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", "quickstart", "--output", str(out), "--no-progress",
            *tiny_overrides(tmp_path / "data"), "data.dataset=my_people", "model.backbone=my_net",
            "loss.name=my_centre", "loss.temperature=0.5", "loss.options={my_centre: {scale: 2}}",
            "--plugin", my_plugin]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert "loss/my_centre" in next(e for e in events if e["event"] == "train")
    # The loss declared that its temperature is loss.temperature; its own options stay apart.
    assert sys.modules[my_plugin].BUILT_LOSSES[-1] == {"temperature": 0.5, "scale": 2}

    capsys.readouterr()
    assert main(["--plugin", my_plugin, "datasets"]) == 0
    assert "my_people: my people, from a plugin" in capsys.readouterr().out

    # The model file records the plugin; a later command without it names it.
    from adasp.engine.checkpoint import load_checkpoint

    assert load_checkpoint(out / "model.pt")["plugins"] == [my_plugin]
    for registry, name in ((BACKBONES, "my_net"), (LOSSES, "my_centre"), (DATASETS, "my_people")):
        registry.unregister(name)
    plugins._loaded.remove(my_plugin)  # as in a new process that was not given --plugin
    del sys.modules[my_plugin]
    evaluate = ["evaluate", "--checkpoint", str(out / "model.pt"), "--output", str(tmp_path / "e")]
    assert main(evaluate) == 2
    err = capsys.readouterr().err.strip()
    assert f"model.pt was trained with --plugin {my_plugin}; add --plugin {my_plugin}" in err
    assert main([*evaluate, "--plugin", my_plugin]) == 0


def test_without_the_plugin_its_names_are_unknown(plugin_path, tmp_path, capsys):
    args = ["train", "--config", "quickstart", "--output", str(tmp_path / "run"),
            "model.backbone=my_net"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adasp train: error: config key 'model.backbone': unknown backbone")
    assert "allowed: resnet18" in err and "\n" not in err


def test_plugins_that_fail_to_import_are_one_clear_line(plugin_path, capsys):
    with pytest.raises(UserInputError, match=r"cannot import plugin 'no_such_plugin_x': No module"):
        load_plugins(["no_such_plugin_x"])
    (plugin_path / "broken_plugin.py").write_text("raise RuntimeError('needs a GPU licence')\n")
    assert main(["datasets", "--plugin", "broken_plugin"]) == 2
    assert capsys.readouterr().err == (
        "adasp datasets: error: cannot import plugin 'broken_plugin': "
        "RuntimeError: needs a GPU licence\n"
    )
    (plugin_path / "clash_plugin.py").write_text(
        "from adasp.models import BACKBONES\nBACKBONES.register('resnet50', object())\n"
    )
    with pytest.raises(UserInputError, match="backbone 'resnet50' is already registered"):
        load_plugins(["clash_plugin"])
    with pytest.raises(UserInputError, match=r"plugin file not found: .*my_plugin\.py"):
        load_plugins(["my_plugin.py"])


def test_a_plugin_given_as_a_file_path_works_and_is_recorded(tmp_path, capsys):
    folder = tmp_path / "not_on_sys_path"
    folder.mkdir()
    (folder / "file_plugin.py").write_text(
        "from adasp.models import BACKBONES\n"
        "from adasp.models.resnet import resnet18\n"
        "BACKBONES.register('file_net', resnet18)\n"
    )
    try:
        load_plugins([str(folder / "file_plugin.py")])
        assert "file_net" in BACKBONES
        assert BACKBONES.origin("file_net") == str((folder / "file_plugin.py").resolve())
        assert plugins.loaded_plugins()[-1] == str((folder / "file_plugin.py").resolve())
        from adasp.engine.config import load_config
        from adasp.engine.plugin_use import plugins_used

        config = load_config("quickstart", ["model.backbone=file_net"])
        assert plugins_used(config) == [str((folder / "file_plugin.py").resolve())]
        assert plugins_used(load_config("quickstart")) == []
    finally:
        if "file_net" in BACKBONES:
            BACKBONES.unregister("file_net")


def _install(folder, package, entry_points, modules):
    """A distribution ``package`` in ``folder`` (a dist-info, as pip writes) with entry points."""
    info = folder / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[adasp.plugins]\n" + entry_points)
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(text))


def test_installed_entry_points_load_at_the_first_lookup(plugin_path, monkeypatch):
    _install(
        plugin_path,
        "adasp_people",
        "people = ep_people\nsetup = ep_nets:setup\n",
        {
            "ep_people": """
                from adasp.data import DATASETS
                from adasp.data.synthetic import load_synthetic
                DATASETS.register("ep_people", load_synthetic)
            """,
            "ep_nets": """
                from adasp.models import BACKBONES
                from adasp.models.resnet import resnet18
                def setup():
                    BACKBONES.register("ep_net", resnet18)
            """,
        },
    )
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    assert "ep_people" in DATASETS and "ep_net" in BACKBONES
    assert describe_dataset("ep_people").startswith("ep_people\n")


def test_a_broken_installed_plugin_names_its_package(plugin_path, monkeypatch):
    _install(plugin_path, "adasp_broken", "broken = ep_broken\n", {"ep_broken": "import nope\n"})
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    with pytest.raises(
        UserInputError,
        match=r"installed adasp plugin 'broken' \(ep_broken, from adasp_broken\) failed to load: "
        r"No module named 'nope'.*fix or uninstall",
    ):
        load_plugins()
