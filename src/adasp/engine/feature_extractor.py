"""``adasp.FeatureExtractor``: embeddings of image crops from an adasp model file, in Python.

    >>> fx = FeatureExtractor("runs/mine/model.pt", device="cpu")     # or "cuda"; batch_size=...
    >>> emb = fx(["a.jpg", "b.jpg"])                        # (N, D) float32, L2-normalised
    >>> emb = fx(bgr_crops, bgr=True)                       # uint8 HxWx3 arrays from OpenCV

The model file's own preprocessing (:class:`~adasp.models.preprocessing.Preprocessing`) makes
the inputs, exactly as ``adasp extract`` makes them, and the config's ``eval.flip`` is
honoured, so the numbers are ``adasp extract``'s (L2-normalised unless ``normalize=False``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from adasp.engine.inference import (
    build_inference_model,
    inference_preprocessing,
    resolve_run_config,
)

#: What one image may be: a file path, a PIL image or a uint8 H×W×3 array.
ImageInput = str | os.PathLike | Image.Image | np.ndarray


class FeatureExtractor:
    """Embed image crops with an adasp model file (trained, or converted by ``adasp convert``).

    Args:
        model: the model file (``model.pt``, ``checkpoints/last.pt``, a converted file).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`.
        batch_size: images per forward pass.
        amp: float16 autocast on CUDA (ignored on other devices).
        normalize: L2-normalise the embeddings (for cosine similarity = dot product).

    Call it with a list of images (paths, PIL images, uint8 ``H×W×3`` numpy arrays, RGB or,
    with ``bgr=True``, BGR as OpenCV gives them; sizes may differ), or with a float tensor
    ``(N, 3, H, W)`` already preprocessed. Returns a ``(N, D)`` float32 array.

    Raises:
        ValueError: bad input (empty list, wrong dtype or channel count, unreadable file):
            one line naming the item.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        device: str | torch.device = "cpu",
        *,
        batch_size: int = 64,
        amp: bool = False,
        normalize: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        path = str(Path(model).expanduser())
        config, checkpoint = resolve_run_config(None, path, [])
        self.device = torch.device(device)
        self.model = build_inference_model(config, checkpoint, self.device, path)
        self.preprocessing = inference_preprocessing(config, checkpoint)
        self.flip = config.eval.flip
        self.batch_size = batch_size
        self.amp = amp and self.device.type == "cuda"
        self.normalize = normalize
        self._transform = self.preprocessing.transform()

    @property
    def embedding_dim(self) -> int:
        """Size D of an embedding."""
        dim: int = getattr(self.model, "embedding_dim")  # noqa: B009 (an nn.Module attribute)
        return dim

    def __call__(
        self, images: Sequence[ImageInput] | ImageInput | torch.Tensor, *, bgr: bool = False
    ) -> np.ndarray:
        if isinstance(images, torch.Tensor):
            batch = _checked_tensor(images)
        else:
            items = [images] if _is_single(images) else list(images)  # type: ignore[arg-type]
            if not items:
                raise ValueError("no images given (an empty list)")
            batch = torch.stack(
                [self._transform(_as_image(item, index, bgr)) for index, item in enumerate(items)]
            )
        return self.embed_preprocessed(batch)

    def embed_preprocessed(self, batch: torch.Tensor) -> np.ndarray:
        """Embeddings of a preprocessed ``(N, 3, H, W)`` float batch, ``batch_size`` at a time."""
        out = []
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=self.amp):
            for start in range(0, batch.shape[0], self.batch_size):
                images = batch[start : start + self.batch_size].to(self.device)
                embedding = self.model(images).float()
                if self.flip:
                    embedding = (embedding + self.model(images.flip(3)).float()) / 2
                out.append(embedding)
        features = torch.cat(out)
        if self.normalize:
            features = torch.nn.functional.normalize(features, dim=1)
        return features.cpu().numpy().astype(np.float32)


def _is_single(images: Any) -> bool:
    if isinstance(images, np.ndarray):
        return images.ndim == 3
    return isinstance(images, (str, os.PathLike, Image.Image))


def _checked_tensor(batch: torch.Tensor) -> torch.Tensor:
    if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
        raise ValueError(
            f"a tensor input must be a preprocessed float batch (N, 3, H, W), got "
            f"{batch.dtype} {tuple(batch.shape)}"
        )
    if batch.shape[0] == 0:
        raise ValueError("no images given (an empty batch)")
    return batch


def _as_image(item: Any, index: int, bgr: bool) -> Image.Image | torch.Tensor:
    """One input as what the transform takes: an RGB PIL image or a uint8 ``(3, H, W)``."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as opened:
                return opened.convert("RGB")
        except (OSError, ValueError) as error:
            raise ValueError(f"image {index}: cannot read {item}: {error}") from None
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
            raise ValueError(
                f"image {index}: expected a uint8 HxWx3 array, got {item.dtype} {item.shape}"
            )
        if min(item.shape[:2]) == 0:
            raise ValueError(f"image {index}: empty array {item.shape}")
        pixels = item[..., ::-1] if bgr else item
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    raise ValueError(
        f"image {index}: unsupported input {type(item).__name__}; give paths, PIL images, "
        "uint8 HxWx3 arrays or a preprocessed float tensor batch"
    )
