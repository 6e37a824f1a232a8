"""VERI-WILD: list-based vehicles, cameras read from ``vehicle_info.txt``.

Test sets: small (3,000 vehicles), medium (5,000) and large (10,000); the queries are
``test_N_query.txt`` and the gallery is ``test_N.txt``, evaluated with the Market protocol.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from adasp.data.assemble import assemble_dataset
from adasp.data.layout import find_dataset_folder
from adasp.data.list_files import check_files_exist, parse_list_file
from adasp.data.sample import ReIDDataset, Sample
from adasp.errors import UserInputError

VERIWILD_TEST_SIZES = (3000, 5000, 10000)
VERIWILD_SPELLINGS = ("VERI-Wild", "VERI-WILD", "veri-wild", "VeRi-Wild", "veriwild", "VERIWild")

VERIWILD_LAYOUT = """\
  VERI-Wild/          (also VERI-WILD, veri-wild)
    images/00001/000001.jpg ...                (images/VID/IMGID.jpg)
    train_test_split/train_list.txt            (lines 'VID/IMGID')
    train_test_split/test_3000.txt  test_3000_query.txt  (also 5000 and 10000)
    train_test_split/vehicle_info.txt          (a header, then 'VID/IMGID;camera;time;model;type;color')"""

_LIST_FORMAT = "VID/IMGID"
_INFO_FORMAT = "VID/IMGID;camera;time;model;type;color"


def _parse_entry(fields: list[str]) -> tuple[str, int]:
    if len(fields) != 1:
        raise ValueError(f"{len(fields)} fields instead of 1")
    key = fields[0].removesuffix(".jpg")
    vid, _, image = key.partition("/")
    if not image:
        raise ValueError("no '/' between vehicle and image id")
    return key, int(vid)


def _parse_info(fields: list[str]) -> tuple[str, int]:
    if len(fields) < 2:
        raise ValueError("fewer than 2 ';'-separated fields")
    return fields[0].strip().removesuffix(".jpg"), int(fields[1])


def read_vehicle_cameras(info_file: Path) -> dict[str, int]:
    """``"VID/IMGID"`` -> 0-based camera (cameras numbered in the order of their sorted ids)."""
    records = parse_list_file(info_file, _parse_info, _INFO_FORMAT, separator=";", skip_header=True)
    raw = np.fromiter((cam for _, (_, cam) in records), dtype=np.int64, count=len(records))
    _, dense = np.unique(raw, return_inverse=True)
    return {key: int(c) for (_, (key, _)), c in zip(records, dense, strict=True)}


def read_veriwild_list(list_file: Path, image_dir: Path, cameras: dict[str, int]) -> list[Sample]:
    """The samples of one VERI-WILD list file with their cameras."""
    records = parse_list_file(list_file, _parse_entry, _LIST_FORMAT)
    samples = []
    for number, (key, vid) in records:
        camera = cameras.get(key)
        if camera is None:
            raise UserInputError(
                f"{list_file}, line {number}: image {key} has no entry in vehicle_info.txt, "
                f"which gives its camera; use the vehicle_info.txt of the same release"
            )
        samples.append(Sample(os.fspath(image_dir / f"{key}.jpg"), vid, camera))
    check_files_exist([s.path for s in samples], list_file, [n for n, _ in records])
    return samples


def load_veriwild(
    root: str | os.PathLike,
    *,
    test_size: int = 3000,
    verify_images: bool = False,
    skip_unreadable: bool = False,
) -> ReIDDataset:
    """VERI-WILD (40,671 vehicles, 174 cameras; 30,671 for training).

    Args:
        test_size: the test set, 3000 (small), 5000 (medium) or 10000 (large) vehicles.
    """
    if test_size not in VERIWILD_TEST_SIZES:
        raise UserInputError(
            f"veriwild: test_size must be one of {', '.join(map(str, VERIWILD_TEST_SIZES))}, "
            f"got {test_size!r}"
        )
    split = "train_test_split"
    lists = {
        "train": f"{split}/train_list.txt",
        "query": f"{split}/test_{test_size}_query.txt",
        "gallery": f"{split}/test_{test_size}.txt",
    }
    dataset_dir = find_dataset_folder(
        root,
        VERIWILD_SPELLINGS,
        ["images", *lists.values(), f"{split}/vehicle_info.txt"],
        VERIWILD_LAYOUT,
        "veriwild",
    )
    cameras = read_vehicle_cameras(dataset_dir / split / "vehicle_info.txt")
    image_dir = dataset_dir / "images"
    train, query, gallery = (
        read_veriwild_list(dataset_dir / lists[s], image_dir, cameras)
        for s in ("train", "query", "gallery")
    )
    return assemble_dataset(
        "veriwild",
        dataset_dir,
        train,
        query,
        gallery,
        options={"test_size": test_size},
        verify_images=verify_images,
        skip_unreadable=skip_unreadable,
    )
