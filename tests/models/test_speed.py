"""prepare_model: device placement, channels-last, torch.compile (CUDA only)."""

from __future__ import annotations

import logging

import pytest
import torch

from adasp.errors import UserInputError
from adasp.models import ReIDModel, build_model, prepare_model


def test_channels_last_gives_the_same_embeddings(device):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 32, device=device)
    reference = build_model("resnet18_ibn_a", 4).eval()
    fast = build_model("resnet18_ibn_a", 4).eval()
    fast.load_state_dict(reference.state_dict())
    prepare_model(reference, device)
    assert prepare_model(fast, device, channels_last=True) is fast
    assert fast.channels_last
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # TF32 convolutions (cuDNN's default on CUDA) differ by ~1e-3 between memory formats.
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        torch.testing.assert_close(fast(images), reference(images), atol=1e-4, rtol=1e-4)
    fast.train()
    out = fast(images)
    (out["logits"].sum() + out["features"].sum()).backward()
    assert fast.backbone.conv1.weight.grad is not None


def test_compile_is_skipped_off_cuda(caplog):
    model = build_model("resnet18", 4)
    with caplog.at_level(logging.WARNING, logger="adasp.models.speed"):
        prepared = prepare_model(model, "cpu", compile=True)
    assert isinstance(prepared, ReIDModel) and "CUDA only" in caplog.text
    assert prepared.eval()(torch.randn(1, 3, 64, 32)).shape == (1, 512)


def test_prepare_model_errors():
    model = build_model("resnet18", 4)
    with pytest.raises(UserInputError, match="unknown compile_mode 'fastest'"):
        prepare_model(model, "cpu", compile=True, compile_mode="fastest")
    with pytest.raises(UserInputError, match="invalid device 'gpu0'"):
        prepare_model(model, "gpu0")
