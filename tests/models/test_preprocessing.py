"""The preprocessing a model file records, and its test-time transform."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from adasp.data import build_test_transform
from adasp.errors import UserInputError
from adasp.models.preprocessing import Preprocessing, preprocessing_from_model_file


def _image() -> Image.Image:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (61, 23, 3), dtype=torch.uint8, generator=generator)
    return Image.fromarray(pixels.numpy())


def test_defaults_give_exactly_the_configured_test_transform():
    image = _image()
    expected = build_test_transform(size=(32, 16))(image)
    assert torch.equal(Preprocessing(image_size=(32, 16)).transform()(image), expected)


def test_pixel_range_255_is_the_same_normalisation_in_other_units():
    unit = Preprocessing(image_size=(32, 16))
    wide = Preprocessing(
        image_size=(32, 16),
        pixel_range=255.0,
        mean=tuple(m * 255 for m in unit.mean),
        std=tuple(s * 255 for s in unit.std),
    )
    image = _image()
    torch.testing.assert_close(wide.transform()(image), unit.transform()(image))
    assert wide.unit_mean == pytest.approx(unit.mean)


def test_bicubic_differs_from_bilinear():
    image = _image()
    a = Preprocessing(image_size=(32, 16)).transform()(image)
    b = Preprocessing(image_size=(32, 16), interpolation="bicubic").transform()(image)
    assert a.shape == b.shape == (3, 32, 16) and not torch.equal(a, b)


def test_round_trip_and_older_files():
    record = Preprocessing((64, 32), "bicubic", 255.0, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert preprocessing_from_model_file({"preprocessing": record.to_dict()}) == record
    old = {"config": {"data": {"image_size": [128, 64], "mean": [0.5] * 3, "std": [0.25] * 3}}}
    assert preprocessing_from_model_file(old) == Preprocessing(
        (128, 64), mean=(0.5,) * 3, std=(0.25,) * 3
    )
    assert preprocessing_from_model_file({}) == Preprocessing()


def test_bad_records_are_one_line():
    with pytest.raises(UserInputError, match="interpolation 'nearest'"):
        Preprocessing(interpolation="nearest")
    with pytest.raises(UserInputError, match="pixel_range"):
        Preprocessing(pixel_range=2.0)
    with pytest.raises(UserInputError, match="unknown preprocessing field"):
        Preprocessing.from_dict({"size": 1})
