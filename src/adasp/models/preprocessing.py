"""How a model's input images are made: size, resize interpolation, pixel range, mean and std.

A model reproduces its embeddings only on inputs made as in its training. fast-reid resizes
bicubically and feeds pixels in 0..255 to a model that subtracts a 0..255 mean; torchreid and
adasp resize bilinearly and normalise pixels in 0..1. Every adasp model file records its
:class:`Preprocessing` (under ``"preprocessing"``); files written before it existed get
:func:`preprocessing_from_model_file`'s defaults, the settings of their config (bilinear,
0..1).

The test-time transform: RGB image -> resize to ``image_size`` (antialiased) -> float in
``0..pixel_range`` -> ``(x - mean) / std`` per channel, ``(3, H, W)`` float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

from adasp.errors import UserInputError

#: Resize interpolations by name.
INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """A model's input recipe.

    Attributes:
        image_size: ``(height, width)`` the image is resized to.
        interpolation: ``"bilinear"`` or ``"bicubic"``.
        pixel_range: 1.0 (pixels in 0..1) or 255.0 (pixels in 0..255, fast-reid).
        mean, std: per RGB channel, in the units of ``pixel_range``.
    """

    image_size: tuple[int, int] = (256, 128)
    interpolation: str = "bilinear"
    pixel_range: float = 1.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise UserInputError(
                f"unknown interpolation {self.interpolation!r}; allowed: "
                f"{', '.join(INTERPOLATIONS)}"
            )
        if self.pixel_range not in (1.0, 255.0):
            raise UserInputError(f"pixel_range must be 1.0 or 255.0, got {self.pixel_range!r}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise UserInputError(f"image_size must be (height, width), got {self.image_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UserInputError(
                f"mean and std need 3 values (std > 0), got {self.mean!r}, {self.std!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, floats, strings) for a model file."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`.

        Raises:
            UserInputError: a missing, unknown or invalid field, named.
        """
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise UserInputError(f"unknown preprocessing field(s): {', '.join(unknown)}")
        try:
            return cls(
                image_size=_pair(values["image_size"]),
                interpolation=str(values["interpolation"]),
                pixel_range=float(values["pixel_range"]),
                mean=_triple(values["mean"]),
                std=_triple(values["std"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UserInputError(f"invalid preprocessing record {dict(values)!r}") from error

    @property
    def unit_mean(self) -> tuple[float, float, float]:
        """The mean for pixels in 0..1 (what a graph fed 0..1 RGB subtracts)."""
        return _triple([m / self.pixel_range for m in self.mean])

    @property
    def unit_std(self) -> tuple[float, float, float]:
        """The std for pixels in 0..1."""
        return _triple([s / self.pixel_range for s in self.std])

    def resize(self) -> v2.Resize:
        """The resize step alone (PIL images and ``(..., H, W)`` tensors)."""
        return v2.Resize(
            self.image_size, interpolation=INTERPOLATIONS[self.interpolation], antialias=True
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(..., 3, H, W)`` float pixels in 0..1 -> the model's input."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device)
        scaled = images * self.pixel_range if self.pixel_range != 1.0 else images
        return (scaled - mean[:, None, None]) / std[:, None, None]

    def transform(self) -> v2.Compose:
        """The test-time transform: image (PIL or uint8 tensor) -> ``(3, H, W)`` float32."""
        return v2.Compose(
            [
                v2.ToImage(),
                self.resize(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Lambda(self.normalize),
            ]
        )


def _pair(value: Sequence[Any]) -> tuple[int, int]:
    height, width = (int(v) for v in value)
    return (height, width)


def _triple(value: Sequence[Any]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return (a, b, c)


def preprocessing_from_model_file(model_file: Mapping[str, Any]) -> Preprocessing:
    """The :class:`Preprocessing` an adasp model file or checkpoint records; for a file
    written before it was recorded, the one of its stored config (``data.image_size``,
    ``data.mean``, ``data.std``, bilinear, 0..1), else the defaults."""
    record = model_file.get("preprocessing")
    if isinstance(record, Mapping):
        return Preprocessing.from_dict(record)
    config = model_file.get("config")
    data = config.get("data", {}) if isinstance(config, Mapping) else {}
    default = Preprocessing()
    return Preprocessing(
        image_size=_pair(data.get("image_size", default.image_size)),
        mean=_triple(data.get("mean", default.mean)),
        std=_triple(data.get("std", default.std)),
    )
