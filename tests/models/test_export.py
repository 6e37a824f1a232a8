"""ONNX export: parity with PyTorch through onnxruntime, dynamic batch, recorded normalisation."""

from __future__ import annotations

import pytest
import torch

from adasp.errors import UserInputError
from adasp.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExportVerificationError,
    build_model,
    export_onnx,
    read_onnx_metadata,
    verify_onnx,
)

pytest.importorskip("onnxruntime", reason="ONNX export is an optional feature")
pytest.importorskip("onnxscript", reason="ONNX export is an optional feature")

SIZE = (64, 32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("resnet18", 5, pooling="gem", embedding_dim=64)
    # Non-trivial BN statistics, so a mistake in eval-mode export would show.
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, *SIZE))
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", image_size=SIZE)
    return model, path


@pytest.mark.slow
def test_onnx_embeddings_equal_pytorch(exported):
    model, path = exported
    assert model.training  # the mode is restored after export
    difference = verify_onnx(model, path, image_size=SIZE, batch_size=3)  # 3 != export's 2
    assert difference <= 1e-4
    meta = read_onnx_metadata(path)
    assert meta["adasp.input_normalization"] == "outside"
    assert meta["adasp.embedding_dim"] == "64" and meta["adasp.l2_normalized"] == "false"
    assert meta["adasp.mean"] == str(list(IMAGENET_MEAN))
    assert '"backbone": "resnet18"' in meta["adasp.model"]
    assert not list(path.parent.glob(".*.tmp"))  # written atomically


@pytest.mark.slow
def test_verify_raises_when_the_model_changed(exported):
    model, path = exported
    changed = build_model("resnet18", 5, pooling="gem", embedding_dim=64)
    with pytest.raises(ExportVerificationError, match="differ from PyTorch's by up to"):
        verify_onnx(changed, path, image_size=SIZE)
    assert verify_onnx(model, path, image_size=SIZE, batch_size=1) <= 1e-4


@pytest.mark.slow
def test_normalisation_inside_the_graph(tmp_path):
    model = build_model("resnet18_ibn_a", 0, neck_feat="before")
    path = export_onnx(
        model, tmp_path / "m.onnx", image_size=SIZE, include_normalization=True, l2_normalize=True
    )
    meta = read_onnx_metadata(path)
    assert meta["adasp.input_normalization"] == "inside" and meta["adasp.l2_normalized"] == "true"
    assert meta["adasp.input_range"].startswith("[0, 1]")
    assert verify_onnx(model, path, image_size=SIZE, batch_size=2) <= 1e-4
    stats = (IMAGENET_MEAN, IMAGENET_STD)
    assert verify_onnx(model, path, image_size=SIZE, normalization=stats) <= 1e-4
    with pytest.raises(UserInputError, match="records its input normalisation as inside"):
        verify_onnx(model, path, image_size=SIZE, normalization=((0.5,) * 3, (0.5,) * 3))


@pytest.mark.slow
def test_normalization_shorthand_records_the_given_statistics(exported, tmp_path):
    model, outside = exported
    with pytest.raises(UserInputError, match="as outside the graph"):
        verify_onnx(model, outside, image_size=SIZE, normalization=((0.5,) * 3, (0.25,) * 3))
    stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    path = export_onnx(model, tmp_path / "m.onnx", image_size=SIZE, normalization=stats)
    meta = read_onnx_metadata(path)
    assert meta["adasp.input_normalization"] == "inside"
    assert meta["adasp.mean"] == "[0.5, 0.5, 0.5]" and meta["adasp.std"] == "[0.25, 0.25, 0.25]"
    assert verify_onnx(model, path, image_size=SIZE, batch_size=3, normalization=stats) <= 1e-4


def test_export_input_errors(tmp_path):
    model = build_model("resnet18", 0)
    with pytest.raises(UserInputError, match="image_size must be"):
        export_onnx(model, tmp_path / "m.onnx", image_size=(64,))
    with pytest.raises(UserInputError, match="std must be 3 numbers"):
        export_onnx(model, tmp_path / "m.onnx", image_size=SIZE, std=(0.2, 0.2, 0.0))
