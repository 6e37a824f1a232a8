"""OSNet (every published variant) and non-local ResNets as adasp backbones."""

from __future__ import annotations

import pytest
import torch

from adasp.losses import LOSSES
from adasp.models import BACKBONES, build_backbone, build_model
from adasp.models.non_local import NonLocal, non_local_positions
from adasp.models.osnet import OSNET_VARIANTS


@pytest.mark.parametrize("name", sorted(OSNET_VARIANTS))
def test_every_osnet_variant_is_a_backbone_with_a_16x_map(name):
    assert name in BACKBONES
    torch.manual_seed(0)
    net = build_backbone(name).eval()
    out = net(torch.randn(2, 3, 64, 32))
    assert out.shape == (2, OSNET_VARIANTS[name].channels[3], 4, 2)
    assert net.out_channels == out.shape[1]


def test_osnet_instance_norm_placement():
    def count(name: str) -> int:
        return sum(isinstance(m, torch.nn.InstanceNorm2d) for m in build_backbone(name).modules())

    assert count("osnet_x1_0") == 0
    assert count("osnet_ibn_x1_0") == 1 + 2  # the stem and the first stage's two blocks
    assert count("osnet_ain_x1_0") == 1 + 4  # the stem and the four "in" blocks


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["avg", "max", "gem"])
def test_osnet_trains_with_bnneck_pooling_and_a_metric_loss(pooling):
    torch.manual_seed(0)
    model = build_model("osnet_x0_25", num_classes=4, pooling=pooling, embedding_dim=32)
    images = torch.randn(8, 3, 64, 32)
    labels = torch.arange(4).repeat_interleave(2)
    out = model(images)
    loss = torch.nn.functional.cross_entropy(out["logits"], labels) + LOSSES.get("adasp")()(
        out["features"], labels
    )
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    assert model(images).shape == (8, 32)


def test_osnet_under_autocast():
    model = build_model("osnet_x0_25", num_classes=0).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 64, 32))
    assert out.shape == (2, 128) and torch.isfinite(out.float()).all()


def test_non_local_block_starts_as_the_identity_and_mixes_positions():
    block = NonLocal(8).eval()
    x = torch.randn(2, 8, 4, 3)
    assert torch.equal(block(x), x)
    torch.nn.init.ones_(block.W[1].weight)
    y = block(x)
    assert y.shape == x.shape and not torch.allclose(y, x)


def test_non_local_positions_follow_agw():
    assert non_local_positions((3, 4, 6, 3)) == ((), (2, 3), (3, 4, 5), ())
    assert non_local_positions((3, 4, 23, 3))[2] == tuple(range(14, 23))
    assert non_local_positions((2, 2, 2, 2)) == ((), (), (), ())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "resnet50_ibn_a"])
def test_resnet_with_non_local_blocks(name):
    torch.manual_seed(0)
    net = build_backbone(name, non_local=True, stem_pool="ceil").eval()
    keys = [k for k in net.state_dict() if k.startswith("non_local.")]
    assert {k.split(".")[1] for k in keys} == {"layer2", "layer3"}
    assert len({".".join(k.split(".")[:3]) for k in keys}) == 5
    plain = build_backbone(name, stem_pool="ceil").eval()
    plain.load_state_dict(net.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 32)
    assert torch.equal(net(x), plain(x))  # zero-initialised: the identity at the start


def test_unknown_stem_pool_is_one_line():
    from adasp.errors import UserInputError

    with pytest.raises(UserInputError, match="stem_pool 'x'; allowed: pad, ceil"):
        build_backbone("resnet18", stem_pool="x")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backbone", "options"), [("osnet_ain_x0_25", {}), ("resnet18", {"non_local": True})]
)
def test_osnet_and_non_local_export_to_onnx(tmp_path, backbone, options):
    pytest.importorskip("onnxruntime")
    from adasp.models import export_onnx, verify_onnx

    torch.manual_seed(0)
    model = build_model(backbone, num_classes=0, backbone_options=options).eval()
    if options:  # make the non-local blocks do something
        for module in model.modules():
            if isinstance(module, NonLocal):
                torch.nn.init.ones_(module.W[1].weight)
    path = export_onnx(model, tmp_path / "m.onnx", image_size=(64, 32))
    assert verify_onnx(model, path, image_size=(64, 32), batch_size=3) < 1e-4


@pytest.mark.parametrize(
    ("name", "channels"), [("mobilenetv2_x1_0", 1280), ("mobilenetv2_x1_4", 1792)]
)
def test_torchreid_mobilenets_are_backbones(name, channels):
    net = build_backbone(name).eval()
    assert net(torch.randn(1, 3, 64, 32)).shape == (1, channels, 2, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["model.backbone=osnet_ain_x0_25", "model.pooling=gem", "loss.name=triplet"],
        ["model.backbone=osnet_ibn_x1_0", "model.neck_activation=relu", "model.embedding_dim=64"],
        ["model.backbone=resnet50_ibn_a", "model.backbone_options={non_local: true}"],
    ],
)
def test_osnet_and_non_local_train_and_evaluate(tmp_path, overrides):
    import json

    from adasp.cli import main
    from tests.engine.conftest import tiny_overrides

    out = tmp_path / "run"
    args = ["train", "--config", "quickstart", "--output", str(out), "--no-progress"]
    assert main([*args, *tiny_overrides(tmp_path / "data"), "schedule.epochs=1", *overrides]) == 0
    assert json.loads((out / "metrics.json").read_text())["mAP"] > 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_osnet_trains_in_two_process_ddp(tmp_path):
    import json
    import subprocess
    import sys

    from tests.engine.conftest import tiny_overrides

    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "adasp", "train", "--config", "quickstart", "--output", str(out), "--device", "cpu",
        "--no-progress", *tiny_overrides(tmp_path / "data"), "schedule.epochs=1",
        "model.backbone=osnet_ain_x0_25", "model.pooling=gem",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 0 <= json.loads((out / "metrics.json").read_text())["mAP"] <= 1
