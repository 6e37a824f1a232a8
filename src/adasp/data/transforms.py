"""Training and test image transforms (``torchvision.transforms.v2``).

Both accept a ``uint8`` image tensor ``(3, H, W)`` (what :func:`adasp.data.read_image` returns)
or a PIL image, and return a normalised ``float32`` tensor ``(3, height, width)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from adasp.errors import UserInputError
from adasp.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD


def _size(size: Sequence[int]) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size)
    ):
        raise UserInputError(f"image size must be (height, width) positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def _probability(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UserInputError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def build_train_transform(
    size: Sequence[int] = (256, 128),
    flip_p: float = 0.5,
    padding: int = 10,
    random_erasing_p: float = 0.5,
    autoaugment_p: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """The ReID training augmentation.

    Resize to ``size`` (height, width) → AutoAugment (ImageNet policy) with probability
    ``autoaugment_p`` → horizontal flip with probability ``flip_p`` → zero-pad by ``padding``
    pixels and randomly crop back to ``size`` → float in [0, 1] → normalise with ``mean`` and
    ``std`` → random erasing with probability ``random_erasing_p`` (erased pixels are set to 0
    after normalisation, i.e. the mean colour).
    """
    height, width = _size(size)
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if _probability(autoaugment_p, "autoaugment_p") > 0:
        steps.append(v2.RandomApply([v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)], autoaugment_p))
    if _probability(flip_p, "flip_p") > 0:
        steps.append(v2.RandomHorizontalFlip(flip_p))
    if padding < 0:
        raise UserInputError(f"padding must be >= 0 pixels, got {padding}")
    if padding > 0:
        steps += [v2.Pad(padding, fill=0), v2.RandomCrop((height, width))]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if _probability(random_erasing_p, "random_erasing_p") > 0:
        steps.append(v2.RandomErasing(p=random_erasing_p, value=0))
    return v2.Compose(steps)


def build_test_transform(
    size: Sequence[int] = (256, 128),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Resize to ``size`` (height, width) → float in [0, 1] → normalise."""
    height, width = _size(size)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((height, width), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
