"""VeRi-776: vehicles named ``VVVV_cCCC_TTTTTTTT_N.jpg`` (vehicle, 1-based camera, time, index),
read with the Market-format parser and evaluated with the Market protocol."""

from __future__ import annotations

import os

from adasp.data.assemble import assemble_dataset
from adasp.data.layout import find_dataset_folder
from adasp.data.market import read_market_splits
from adasp.data.sample import ReIDDataset

VERI776_SPELLINGS = ("VeRi", "veri", "VeRi_with_plate", "VeRi-776", "veri776", "VeRi776")
VERI776_FOLDERS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}

VERI776_LAYOUT = """\
  VeRi/            (also VeRi_with_plate, veri, VeRi-776)
    image_train/0001_c001_00016450_0.jpg ...   (VVVV_cCCC_..., 20 cameras)
    image_query/...
    image_test/..."""


def load_veri776(
    root: str | os.PathLike, *, verify_images: bool = False, skip_unreadable: bool = False
) -> ReIDDataset:
    """VeRi-776 (776 vehicles, 20 cameras; 576 for training, 200 for test)."""
    dataset_dir = find_dataset_folder(
        root, VERI776_SPELLINGS, list(VERI776_FOLDERS.values()), VERI776_LAYOUT, "veri776"
    )
    train, query, gallery = read_market_splits(dataset_dir, "veri776", VERI776_FOLDERS)
    return assemble_dataset(
        "veri776",
        dataset_dir,
        train,
        query,
        gallery,
        verify_images=verify_images,
        skip_unreadable=skip_unreadable,
    )
