"""adasp.FeatureExtractor: every input kind, bad input, and adasp extract's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adasp import FeatureExtractor


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A small model file as adasp train writes it (random weights, non-trivial BN stats)."""
    from adasp.engine.checkpoint import save_checkpoint
    from adasp.engine.config import ExperimentConfig, ModelConfig
    from adasp.engine.inference import model_file_preprocessing
    from adasp.models import build_model

    config = ExperimentConfig()
    config.model = ModelConfig(backbone="osnet_x0_25")
    config.data.image_size = (64, 32)
    torch.manual_seed(0)
    model = build_model("osnet_x0_25", 0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(
        path,
        {
            "format": "adasp-model-1",
            "config": config.to_dict(),
            "num_classes": 0,
            "model": model.state_dict(),
            "preprocessing": model_file_preprocessing(config),
        },
    )
    return path


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    return [generator.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((70, 30), (128, 64))]


def test_every_input_kind_gives_the_same_normalised_embeddings(model_file, crops, tmp_path):
    fx = FeatureExtractor(model_file, batch_size=1)
    from_arrays = fx(crops)
    assert from_arrays.shape == (2, fx.embedding_dim) and from_arrays.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(from_arrays, axis=1), 1.0, rtol=1e-5)
    pil = [Image.fromarray(c) for c in crops]
    paths = []
    for index, image in enumerate(pil):
        paths.append(tmp_path / f"{index}.png")
        image.save(paths[-1])
    np.testing.assert_allclose(fx(pil), from_arrays, atol=1e-6)
    np.testing.assert_allclose(fx([str(p) for p in paths]), from_arrays, atol=1e-6)
    np.testing.assert_allclose(fx([c[..., ::-1] for c in crops], bgr=True), from_arrays, atol=1e-6)
    np.testing.assert_allclose(fx(crops[0]), from_arrays[:1], atol=1e-6)  # one image
    batch = torch.stack([fx.preprocessing.transform()(p) for p in pil])
    np.testing.assert_allclose(fx(batch), from_arrays, atol=1e-6)
    raw = FeatureExtractor(model_file, normalize=False)(crops)
    np.testing.assert_allclose(
        raw / np.linalg.norm(raw, axis=1, keepdims=True), from_arrays, atol=1e-5
    )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "no images given"),
        ([np.zeros((4, 4, 3), dtype=np.float32)], "image 0: expected a uint8 HxWx3 array"),
        ([np.zeros((4, 4, 4), dtype=np.uint8)], "image 0: expected a uint8 HxWx3 array"),
        (["/no/such/file.jpg"], "image 0: cannot read /no/such/file.jpg"),
        ([3], "image 0: unsupported input int"),
        (torch.zeros(2, 3, 8, 4, dtype=torch.uint8), "preprocessed float batch"),
    ],
)
def test_bad_input_is_one_value_error_line(model_file, bad, message):
    fx = FeatureExtractor(model_file)
    with pytest.raises(ValueError, match=message) as caught:
        fx(bad)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_same_numbers_as_adasp_extract(model_file, pku_subset, tmp_path):
    from adasp.cli import main
    from adasp.evaluation import load_embeddings

    out = tmp_path / "q.npz"
    assert main(["extract", "--checkpoint", str(model_file), "--folder",
                 str(pku_subset / "query"), "--output", str(out), "--device", "cpu"]) == 0  # fmt: skip
    saved = load_embeddings(out)
    fx = FeatureExtractor(model_file, normalize=False, batch_size=7)
    np.testing.assert_allclose(fx([str(p) for p in saved.paths]), saved.features, atol=1e-5)


@pytest.mark.slow
def test_a_0_255_model_exports_with_its_normalisation_inside(model_file, crops, tmp_path):
    """A model fed 0..255 pixels (fast-reid's) exports with the statistics in 0..1 units:
    ONNX Runtime on 0..1 RGB gives FeatureExtractor's embeddings."""
    ort = pytest.importorskip("onnxruntime")
    from adasp.cli import main
    from adasp.engine.checkpoint import save_checkpoint

    saved = torch.load(model_file, weights_only=True)
    pre = saved["preprocessing"]
    saved["preprocessing"] = pre | {
        "pixel_range": 255.0,
        "mean": [m * 255 for m in pre["mean"]],
        "std": [s * 255 for s in pre["std"]],
    }
    wide = tmp_path / "wide.pt"
    save_checkpoint(wide, saved)
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(wide), "--output", str(onnx_path),
                 "--include-normalization"]) == 0  # fmt: skip
    fx = FeatureExtractor(wide, normalize=False)
    resized = [fx.preprocessing.resize()(torch.from_numpy(c).permute(2, 0, 1)) for c in crops]
    batch = torch.stack(resized).float().numpy() / 255
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: batch})[0]
    np.testing.assert_allclose(out, fx(crops), atol=1e-4, rtol=1e-4)
