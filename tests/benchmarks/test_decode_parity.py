"""benchmarks/decode_parity.py on the CPU: on JPEG files it prints the three rows, and where
both decoders are libjpeg-turbo the decoders agree exactly and the path within a grey level."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def decode_parity():
    return load_benchmark("decode_parity")


def test_rows_on_jpeg_files(decode_parity, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(6):
        folder = tmp_path / f"{i // 2:03d}"
        folder.mkdir(exist_ok=True)
        shape = (80 + 8 * i, 40 + 4 * i, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
            folder / f"0_{i}.jpg", quality=90
        )
    assert (
        decode_parity.main(["--root", str(tmp_path), "--device", "cpu", "--size", "64", "32"]) == 0
    )
    rows = {
        line.split("|")[1].strip(): [float(c) for c in line.split("|")[2:5]]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and "max" not in line
    }
    assert list(rows) == [
        "decoders alone (file size)",
        "path, no augmentation (64×32)",
        "path, recipe augmentation (64×32)",
    ]
    assert rows["decoders alone (file size)"] == [0.0, 0.0, 0.0]
    for name in list(rows)[1:]:
        largest, mean, _ = rows[name]
        assert largest <= 1.0 + 1e-3 and mean < 0.5


def test_no_jpeg_files_is_one_line(decode_parity, tmp_path, capsys):
    assert decode_parity.main(["--root", str(tmp_path)]) == 2
    assert "no .jpg/.jpeg files under" in capsys.readouterr().err
