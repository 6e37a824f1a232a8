"""Heads: pooling (GeM gradient on p), BNNeck before/after, reduction, inference-only models."""

from __future__ import annotations

import pytest
import torch

from adasp.errors import UserInputError
from adasp.models import BNNeck, GeMPool, build_model, build_pooling
from adasp.models.pooling import pool_stripes, stripe_bounds

IMAGES = torch.randn(4, 3, 64, 32)


def test_pooling_values():
    x = torch.rand(2, 3, 4, 5) + 0.1
    torch.testing.assert_close(build_pooling("avg")(x), x.mean((2, 3)))
    torch.testing.assert_close(build_pooling("max")(x), x.amax((2, 3)))
    torch.testing.assert_close(GeMPool(1.0)(x), x.mean((2, 3)))
    torch.testing.assert_close(GeMPool(3.0)(x), x.pow(3).mean((2, 3)).pow(1 / 3))
    assert torch.all(GeMPool(50.0)(x) <= x.amax((2, 3)) + 1e-5)
    with pytest.raises(UserInputError, match="unknown pooling 'mean'; allowed: avg, max, gem"):
        build_pooling("mean")
    with pytest.raises(UserInputError, match="gem_p must be > 0"):
        build_pooling("gem", 0.0)


def test_gem_p_is_learned():
    model = build_model("resnet18", 5, pooling="gem", gem_p=3.0)
    out = model(IMAGES)
    (out["logits"].sum() + out["features"].pow(2).sum()).backward()
    p = model.head.pool.p
    assert p.requires_grad and p.grad is not None and torch.isfinite(p.grad) and p.grad != 0
    assert float(p.detach()) == 3.0


def test_gem_is_finite_in_half_precision():
    x = (torch.rand(2, 8, 4, 4) * 200).half()  # 200^3 overflows float16
    out = GeMPool(3.0)(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_stripes_match_adaptive_pooling_bins():
    assert stripe_bounds(16, 2) == [(0, 8), (8, 16)]
    assert stripe_bounds(16, 3) == [(0, 6), (5, 11), (10, 16)]
    assert stripe_bounds(2, 3) == [(0, 1), (0, 2), (1, 2)]
    x = torch.randn(2, 3, 16, 8)
    stripes = torch.stack(pool_stripes(build_pooling("avg"), x, 3), dim=2)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, (3, 1)).squeeze(3)
    torch.testing.assert_close(stripes, expected)


def test_bnneck_feature_before_and_after_bn():
    torch.manual_seed(0)
    neck = BNNeck(16, 5, neck_feat="after")
    x = torch.randn(8, 16) * 3 + 2
    out = neck(x)
    torch.testing.assert_close(out.feature, x)  # the metric loss gets the feature before BN
    torch.testing.assert_close(
        out.embedding, torch.nn.functional.batch_norm(x, None, None, training=True)
    )
    assert out.logits.shape == (8, 5)
    assert not neck.bn.bias.requires_grad and neck.classifier.bias is None
    neck.eval()
    running = neck(x).embedding
    torch.testing.assert_close(running, neck.bn(x))
    before = BNNeck(16, 5, neck_feat="before").eval()
    torch.testing.assert_close(before(x).embedding, x)
    assert before(x).logits is None  # no logits in eval mode


def test_model_neck_feat_before_returns_the_pre_bn_feature():
    torch.manual_seed(0)
    after = build_model("resnet18", 5, neck_feat="after").eval()
    before = build_model("resnet18", 5, neck_feat="before").eval()
    before.load_state_dict(after.state_dict())
    with torch.no_grad():
        pooled = after.backbone(IMAGES).mean((2, 3))
        torch.testing.assert_close(before(IMAGES), pooled)
        torch.testing.assert_close(after(IMAGES), after.head.neck.bn(pooled))


def test_embedding_dim_reduces_the_feature():
    model = build_model("resnet18", 5, embedding_dim=128, dropout=0.2)
    out = model(IMAGES)
    assert out["features"].shape == (4, 128) and out["logits"].shape == (4, 5)
    assert model.embedding_dim == 128 and model.eval()(IMAGES).shape == (4, 128)


def test_no_neck_uses_the_feature_itself():
    model = build_model("resnet18", 5, neck="none").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(IMAGES), model.backbone(IMAGES).mean((2, 3)))


def test_inference_only_model_has_no_classifier():
    model = build_model("resnet18", 0)
    out = model(IMAGES)
    assert set(out) == {"features"} and out["features"].shape == (4, 512)
    assert model.head.neck.classifier is None and model.num_classes == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"neck": "bn"}, "unknown neck 'bn'; allowed: bnneck, none"),
        ({"neck_feat": "middle"}, "unknown neck_feat 'middle'; allowed: after, before"),
        ({"embedding_dim": -1}, "embedding_dim must be an integer >= 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"pretrained": True}, "pretrained must be None, 'imagenet' or the path"),
    ],
)
def test_invalid_head_options(options, message):
    with pytest.raises(UserInputError, match=message):
        build_model("resnet18", 5, **options)
    with pytest.raises(UserInputError, match="num_classes must be an integer >= 0"):
        build_model("resnet18", -3)
