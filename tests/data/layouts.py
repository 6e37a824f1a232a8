"""Tiny on-disk fixture trees in each benchmark's layout (8×4 JPEGs written with PIL)."""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

#: Every name the dataset registry must know.
DATASET_NAMES = [
    "market1501",
    "dukemtmc",
    "cuhk03",
    "msmt17",
    "veri776",
    "vehicleid",
    "veriwild",
    "folder",
    "synthetic",
]


@functools.cache
def tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 8), (200, 40, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


@functools.cache
def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 8), (40, 40, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder: Path, names: Iterable[str]) -> list[Path]:
    """Write a tiny valid image for each name (PNG for ``.png`` names, JPEG otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_png() if name.endswith(".png") else tiny_jpeg())
        paths.append(path)
    return paths


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


# Market-1501: train identities 7, 2, 100 (unsorted on purpose), junk -1 in every split,
# distractors 0000 in the gallery, a Thumbs.db as in the real download.
MARKET_TRAIN = [
    "0007_c1s1_000151_01.jpg",
    "0007_c3s2_000201_02.jpg",
    "0002_c1s1_000451_03.jpg",
    "0002_c6s1_000452_01.jpg",
    "0002_c2s1_000453_01.jpg",
    "0100_c5s3_011111_00.jpg",
    "-1_c1s1_000001_00.jpg",
]
MARKET_QUERY = ["0003_c1s1_001051_00.jpg", "0005_c4s1_001052_00.jpg"]
MARKET_GALLERY = [
    "0003_c2s1_001151_01.jpg",
    "0003_c1s1_001152_01.jpg",
    "0005_c6s1_001153_01.jpg",
    "0000_c1s1_000151_01.jpg",
    "0000_c3s1_000152_01.jpg",
    "-1_c2s1_000153_01.jpg",
]


def make_market(root: Path, folder: str = "Market-1501-v15.09.15") -> Path:
    base = root / folder
    write_images(base / "bounding_box_train", MARKET_TRAIN)
    write_images(base / "query", MARKET_QUERY)
    write_images(base / "bounding_box_test", MARKET_GALLERY)
    (base / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")
    return base


def make_duke(root: Path, folder: str = "DukeMTMC-reID") -> Path:
    base = root / folder
    write_images(
        base / "bounding_box_train",
        ["0001_c2_f0046182.jpg", "0001_c8_f0046183.jpg", "0004_c1_f0000001.jpg"],
    )
    write_images(base / "query", ["0005_c2_f0000002.jpg"])
    write_images(base / "bounding_box_test", ["0005_c7_f0000003.jpg", "0000_c1_f0000004.jpg"])
    return base


def make_cuhk03(root: Path, folder: str = "cuhk03-np") -> Path:
    base = root / folder
    for split, offset in (("labeled", 0), ("detected", 10)):
        write_images(
            base / split / "bounding_box_train",
            [
                f"{1 + offset:04d}_c1_1.png",
                f"{1 + offset:04d}_c2_2.png",
                f"{3 + offset:04d}_c1_1.png",
            ],
        )
        write_images(base / split / "query", [f"{20 + offset:04d}_c1_1.png"])
        write_images(
            base / split / "bounding_box_test",
            [f"{20 + offset:04d}_c2_2.png", f"{21 + offset:04d}_c1_1.png"],
        )
    return base


MSMT_TRAIN = [
    ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
    ("0000/0000_001_05_0303morning_0016_0.jpg", 0),
    ("0004/0004_000_15_0303noon_0100_1.jpg", 4),
]
MSMT_VAL = [("0009/0009_000_02_0303noon_0200_0.jpg", 9), ("0000/0000_002_03_0303_0300_0.jpg", 0)]
MSMT_QUERY = [("0000/0000_000_07_0303morning_0015_0.jpg", 0)]
MSMT_GALLERY = [
    ("0000/0000_001_08_0303morning_0016_0.jpg", 0),
    ("0001/0001_000_07_0303noon_0017_0.jpg", 1),
]


def make_msmt17(root: Path, version: str = "v1", folder: str | None = None) -> Path:
    train_dir, test_dir = (
        ("train", "test") if version == "v1" else ("mask_train_v2", "mask_test_v2")
    )
    base = root / (folder or ("MSMT17_V1" if version == "v1" else "MSMT17_V2"))
    for name, records, image_dir in (
        ("list_train.txt", MSMT_TRAIN, train_dir),
        ("list_val.txt", MSMT_VAL, train_dir),
        ("list_query.txt", MSMT_QUERY, test_dir),
        ("list_gallery.txt", MSMT_GALLERY, test_dir),
    ):
        write_images(base / image_dir, [rel for rel, _ in records])
        write_lines(base / name, [f"{rel} {pid}" for rel, pid in records])
    return base


def make_veri776(root: Path, folder: str = "VeRi") -> Path:
    base = root / folder
    write_images(
        base / "image_train",
        ["0001_c001_00016450_0.jpg", "0001_c002_00016460_0.jpg", "0003_c020_00000001_1.jpg"],
    )
    write_images(base / "image_query", ["0002_c002_00084190_0.jpg"])
    write_images(base / "image_test", ["0002_c003_00084200_0.jpg", "0002_c002_00084210_0.jpg"])
    (base / "name_train.txt").write_text("ignored\n")
    return base


VEHICLEID_TRAIN = [("0000001", 5), ("0000002", 5), ("0000003", 9)]
# Vehicles 11 (3 images), 12 (2 images), 13 (1 image).
VEHICLEID_TEST = [
    ("0000010", 11),
    ("0000011", 11),
    ("0000012", 11),
    ("0000020", 12),
    ("0000021", 12),
    ("0000030", 13),
]


def make_vehicleid(root: Path, folder: str = "VehicleID_V1.0") -> Path:
    base = root / folder
    records = VEHICLEID_TRAIN + VEHICLEID_TEST
    write_images(base / "image", [f"{img}.jpg" for img, _ in records])
    split = base / "train_test_split"
    write_lines(split / "train_list.txt", [f"{img} {vid}" for img, vid in VEHICLEID_TRAIN])
    for size in (800, 1600, 2400):
        write_lines(
            split / f"test_list_{size}.txt", [f"{img} {vid}" for img, vid in VEHICLEID_TEST]
        )
    return base


# VERI-WILD: camera ids 7, 31, 150 -> 0, 1, 2 (sorted).
VERIWILD_INFO = {
    "00001/000001": 31,
    "00001/000002": 7,
    "00003/000010": 150,
    "00020/000100": 7,
    "00020/000101": 31,
    "00021/000200": 150,
}


def make_veriwild(root: Path, folder: str = "VERI-Wild") -> Path:
    base = root / folder
    write_images(base / "images", [f"{key}.jpg" for key in VERIWILD_INFO])
    split = base / "train_test_split"
    write_lines(split / "train_list.txt", ["00001/000001", "00001/000002", "00003/000010"])
    for size in (3000, 5000, 10000):
        write_lines(split / f"test_{size}_query.txt", ["00020/000100"])
        write_lines(split / f"test_{size}.txt", ["00020/000101", "00021/000200"])
    write_lines(
        split / "vehicle_info.txt",
        ["id/image;Camera ID;Time;Model;Type;Color"]
        + [f"{key};{cam};2018-03-01 10:00:00;Audi;SUV;white" for key, cam in VERIWILD_INFO.items()],
    )
    return base


def make_folder(root: Path, with_cameras: bool = True) -> Path:
    """``folder`` format: identities 12 and 3 in train, 40 and 41 in test."""
    name = (
        (lambda cam, n: f"{cam}_{n}.jpg") if with_cameras else (lambda cam, n: f"img{cam}{n}.jpg")
    )
    write_images(root / "train" / "12", [name(1, 1), name(5, 2)])
    write_images(root / "train" / "3", [name(1, 3)])
    write_images(root / "query" / "40", [name(1, 1)])
    write_images(root / "gallery" / "40", [name(5, 1), name(9, 2)])
    write_images(root / "gallery" / "41", [name(1, 3)])
    return root
