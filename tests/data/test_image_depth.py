"""16-bit and 32-bit integer images are scaled to 8 bits (value >> 8), not clipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adasp.data import read_image

#: A horizontal gradient over the whole 16-bit range: 0, 257, 514, ..., 65535 (256 columns).
GRADIENT = np.tile((np.arange(256, dtype=np.uint32) * 257).astype(np.uint16), (3, 1))
EXPECTED = torch.from_numpy(np.tile(np.arange(256, dtype=np.uint8), (3, 3, 1)))


def _check(path) -> None:
    image = read_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 3, 256)
    assert torch.equal(image, EXPECTED)  # every level kept: not only 0 and 255


def test_16_bit_png_little_endian(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(GRADIENT).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    _check(path)


def test_16_bit_big_endian_tiff(tmp_path):
    path = tmp_path / "thermal.tif"
    image = Image.frombytes("I;16B", (256, 3), GRADIENT.astype(">u2").tobytes())
    image.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == "I;16B"
    _check(path)


def test_32_bit_integer_image_is_read_as_16_bit_data(tmp_path):
    path = tmp_path / "wide.tif"
    values = GRADIENT.astype(np.int32)
    values[0, 0], values[0, 1] = -5, 70000  # out of the 16-bit range: clipped first
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode == "I"
    image = read_image(path)
    assert image[:, 0, 0].tolist() == [0, 0, 0] and image[:, 0, 1].tolist() == [255] * 3
    assert torch.equal(image[:, 1:], EXPECTED[:, 1:])


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_8_bit_modes_are_unchanged(tmp_path, mode):
    path = tmp_path / f"image_{mode}.png"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (3, 1))).convert(mode).save(path)
    image = read_image(path)
    with Image.open(path) as reference:
        expected = np.array(reference.convert("RGB"))
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))
