"""Backbones: output shapes for every architecture, torchvision equivalence, IBN-a, timm."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from adasp.errors import UserInputError
from adasp.models import BACKBONES, IBN, build_backbone, build_model
from adasp.models.ibn import resnet50_ibn_a
from adasp.models.resnet import IMAGENET_URLS, resnet18, resnet50

IMAGES = torch.randn(2, 3, 64, 32)
#: Built-in backbones with their embedding size at default options.
WIDTHS = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "resnet18_ibn_a": 512,
    "resnet34_ibn_a": 512,
    "resnet50_ibn_a": 2048,
    "resnet101_ibn_a": 2048,
    "mgn": 2048,
}


def test_registry_has_every_required_backbone():
    assert set(WIDTHS) <= set(BACKBONES)
    assert "timm:resnet18" in BACKBONES and "timm:" not in BACKBONES
    assert "resnet9000" not in BACKBONES


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in WIDTHS if n != "mgn"])  # MGN: test_mgn.py
def test_every_backbone_gives_training_outputs_and_eval_embedding(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    out = model(IMAGES)
    assert set(out) == {"features", "logits"}
    assert out["features"].shape == (2, WIDTHS[name])
    assert out["logits"].shape == (2, 7)
    model.eval()
    with torch.no_grad():
        embedding = model(IMAGES)
    assert embedding.shape == (2, WIDTHS[name]) == (2, model.embedding_dim)
    assert model.num_classes == 7


@pytest.mark.slow
@pytest.mark.parametrize(("last_stride", "size"), [(1, (4, 2)), (2, (2, 1))])
def test_last_stride_sets_the_final_map_size(last_stride, size):
    backbone = build_backbone("resnet50", last_stride=last_stride)
    assert backbone(IMAGES).shape == (2, 2048, *size)
    ibn = build_backbone("resnet50_ibn_a", last_stride=last_stride)
    assert ibn(IMAGES).shape == (2, 2048, *size)


@pytest.mark.slow
def test_resnet_matches_torchvision_exactly_with_the_same_weights():
    for ours, theirs in (
        (resnet18, torchvision.models.resnet18),
        (resnet50, torchvision.models.resnet50),
    ):
        reference = theirs(weights=None).eval()
        model = ours(last_stride=2).eval()
        state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
        assert model.load_state_dict(state, strict=True)
        trunk = nn.Sequential(*list(reference.children())[:-2])  # without avgpool and fc
        with torch.no_grad():
            torch.testing.assert_close(model(IMAGES), trunk(IMAGES))


def test_imagenet_urls_are_torchvisions_v1_weights():
    for name, url in IMAGENET_URLS.items():
        weights = getattr(torchvision.models, name.replace("resnet", "ResNet") + "_Weights")
        assert url == weights.IMAGENET1K_V1.url


def test_ibn_a_layout_norms_half_the_channels_in_stages_1_to_3():
    model = resnet50_ibn_a()
    for stage in (model.layer1, model.layer2, model.layer3):
        assert all(isinstance(block.bn1, IBN) for block in stage)
    assert not any(isinstance(m, IBN) for m in model.layer4.modules())
    block = model.layer2[0].bn1
    assert block.IN.num_features == 64 and block.BN.num_features == 64
    assert "layer1.0.bn1.IN.weight" in model.state_dict()
    assert "layer1.0.bn1.BN.running_var" in model.state_dict()


def test_ibn_computes_instance_norm_then_batch_norm_on_the_halves():
    torch.manual_seed(0)
    ibn = IBN(6)
    with torch.no_grad():
        ibn.IN.weight.uniform_(0.5, 2)
        ibn.IN.bias.uniform_(-1, 1)
    x = torch.randn(4, 6, 5, 3) * 3 + 1
    out = ibn(x)
    first, rest = x[:, :3], x[:, 3:]
    mean, var = first.mean((2, 3), keepdim=True), first.var((2, 3), unbiased=False, keepdim=True)
    inst = (first - mean) / torch.sqrt(var + 1e-5) * ibn.IN.weight.view(1, 3, 1, 1)
    torch.testing.assert_close(out[:, :3], inst + ibn.IN.bias.view(1, 3, 1, 1))
    mean, var = (
        rest.mean((0, 2, 3), keepdim=True),
        rest.var((0, 2, 3), unbiased=False, keepdim=True),
    )
    torch.testing.assert_close(out[:, 3:], (rest - mean) / torch.sqrt(var + 1e-5))


def test_zero_init_residual_starts_each_block_as_identity():
    model = build_backbone("resnet18", zero_init_residual=True)
    assert all(not block.bn2.weight.any() for block in model.layer1)


def test_unknown_names_and_options_list_the_allowed_values():
    with pytest.raises(
        UserInputError,
        match=r"unknown backbone 'resnet51' \(did you mean 'resnet50'\?\); allowed: resnet18.*timm:<name>$",
    ):
        build_model("resnet51", 10)
    with pytest.raises(UserInputError, match="has no option depth; allowed: zero_init_residual"):
        build_model("resnet18", 10, backbone_options={"depth": 3})
    with pytest.raises(UserInputError, match="last_stride must be 1 or 2"):
        build_model("resnet18", 10, last_stride=3)


@pytest.mark.slow
def test_timm_backbone_by_name():
    pytest.importorskip("timm", reason="timm is an optional dependency")
    model = build_model("timm:resnet18", 5)
    out = model(IMAGES)
    assert out["features"].shape == (2, 512) and out["logits"].shape == (2, 5)
    # A token model gives its patch tokens as a map (4x2 patches of 16 px at 64x32).
    vit = build_backbone(
        "timm:vit_tiny_patch16_224", img_size=(64, 32), depth=2
    )  # depth 2 keeps the test fast
    assert vit(IMAGES).shape == (2, 192, 4, 2)
    model = build_model(
        "timm:vit_tiny_patch16_224", 0, backbone_options={"img_size": (64, 32), "depth": 2}
    )
    assert model.eval()(IMAGES).shape == (2, 192)


def test_timm_errors_are_clear():
    pytest.importorskip("timm", reason="timm is an optional dependency")
    with pytest.raises(UserInputError, match="timm has no model 'resnet_18'; did you mean"):
        build_model("timm:resnet_18", 5)
    with pytest.raises(UserInputError, match="does not accept the backbone options"):
        build_model("timm:resnet18", 5, backbone_options={"no_such_option": 1})
