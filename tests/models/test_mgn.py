"""MGN: branch maps, training outputs for the losses, eval embedding, ImageNet weight mapping."""

from __future__ import annotations

import pytest
import torch

from adasp.models import MGNBackbone, build_model

IMAGES = torch.randn(2, 3, 64, 32)


@pytest.fixture(scope="module")
def mgn():
    torch.manual_seed(0)
    return build_model("mgn", num_classes=6)


def test_mgn_outputs(mgn):
    assert isinstance(mgn.backbone, MGNBackbone)
    mgn.train()
    maps = mgn.backbone(IMAGES)
    assert [tuple(m.shape) for m in maps] == [(2, 2048, 2, 1), (2, 2048, 4, 2), (2, 2048, 4, 2)]
    out = mgn.head(maps)
    # The AdaSP code's metric-loss inputs: 3 globals, then the 2 and 3 stripes concatenated.
    assert [tuple(f.shape) for f in out["features"]] == [(2, 256)] * 3 + [(2, 512), (2, 768)]
    assert len(out["logits"]) == 8 and all(z.shape == (2, 6) for z in out["logits"])
    # No ReLU in the reduction: the metric loss sees signed features.
    assert any(bool((f < 0).any()) for f in out["features"])
    mgn.eval()
    with torch.no_grad():
        embedding = mgn(IMAGES)
    assert embedding.shape == (2, 2048) == (2, mgn.embedding_dim)


def test_mgn_branch_strides_and_names(mgn):
    branches = mgn.backbone.branches
    assert branches[0].layer4[0].conv2.stride == (2, 2)
    assert branches[1].layer4[0].conv2.stride == (1, 1)
    assert branches[2].layer4[0].downsample[0].stride == (1, 1)
    names = mgn.backbone.state_dict()
    assert "stem.layer3.0.bn1.IN.weight" in names and "stem.layer3.1.conv1.weight" not in names
    assert "branches.2.layer3.5.conv3.weight" in names and "branches.0.layer4.2.bn3.bias" in names


def test_mgn_remaps_resnet50_ibn_a_names(mgn):
    fake = {
        "conv1.weight": 1,
        "layer3.0.conv1.weight": 2,
        "layer3.4.bn1.IN.weight": 3,
        "layer4.1.conv2.weight": 4,
        "fc.weight": 5,
    }
    mapped = mgn.backbone.remap_state_dict(fake)
    assert mapped["stem.conv1.weight"] == 1 and mapped["stem.layer3.0.conv1.weight"] == 2
    assert [mapped[f"branches.{b}.layer3.4.bn1.IN.weight"] for b in range(3)] == [3, 3, 3]
    assert [mapped[f"branches.{b}.layer4.1.conv2.weight"] for b in range(3)] == [4, 4, 4]
    assert mapped["fc.weight"] == 5
    assert mgn.backbone.remap_state_dict({"stem.conv1.weight": 1}) == {"stem.conv1.weight": 1}


def test_mgn_inference_only_and_reduction_size():
    model = build_model("mgn", 0, embedding_dim=64, pooling="max")
    model.train()
    out = model(IMAGES)
    assert set(out) == {"features"} and out["features"][0].shape == (2, 64)
    assert model.embedding_dim == 8 * 64
