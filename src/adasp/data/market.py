"""Market-format datasets: Market-1501, DukeMTMC-reID and CUHK03-np.

All three name each image ``PPPP_cC...`` (identity, ``_c``, 1-based camera, then anything):
many users lay out their own data this way too, so only that prefix is parsed. Identity ``-1``
marks junk images (dropped everywhere); identity ``0`` marks distractors (kept in the gallery,
where they are never a match, and dropped from train and query).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from adasp.data.assemble import assemble_dataset
from adasp.data.layout import find_dataset_folder, list_images
from adasp.data.sample import ReIDDataset, Sample
from adasp.errors import UserInputError

#: Identity (possibly ``-1``), ``_c``, camera; the rest of the name is free.
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")

JUNK_PID = -1
DISTRACTOR_PID = 0

MARKET1501_SPELLINGS = ("Market-1501-v15.09.15", "Market-1501", "market1501", "Market1501")
DUKEMTMC_SPELLINGS = ("DukeMTMC-reID", "dukemtmc-reid", "DukeMTMC-ReID", "dukemtmcreid", "DukeMTMC")
CUHK03_SPELLINGS = ("cuhk03-np", "cuhk03_np", "CUHK03-NP", "cuhk03np", "cuhk03", "CUHK03")
CUHK03_SPLITS = ("labeled", "detected")

MARKET_SPLIT_FOLDERS = {
    "train": "bounding_box_train",
    "query": "query",
    "gallery": "bounding_box_test",
}

MARKET1501_LAYOUT = """\
  Market-1501-v15.09.15/
    bounding_box_train/0002_c1s1_000451_03.jpg ...   (PPPP_cC..., identity -1 = junk)
    bounding_box_test/0000_c1s1_000151_01.jpg ...    (identity 0 = distractor)
    query/0001_c1s1_001051_00.jpg ..."""

DUKEMTMC_LAYOUT = """\
  DukeMTMC-reID/
    bounding_box_train/0001_c2_f0046182.jpg ...
    bounding_box_test/...
    query/..."""

CUHK03_LAYOUT = """\
  cuhk03-np/
    labeled/{bounding_box_train,bounding_box_test,query}/0001_c1_1.png ...
    detected/{bounding_box_train,bounding_box_test,query}/..."""


def parse_market_name(name: str) -> tuple[int, int] | None:
    """``(pid, camera)`` from a name starting ``PPPP_cC`` (camera as written, 1-based), or None."""
    match = MARKET_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def read_market_folder(folder: Path, split: str, dataset: str) -> list[Sample]:
    """The samples of one Market-named folder, cameras made 0-based.

    Junk (pid -1) is dropped; distractors (pid 0) are kept only when ``split == "gallery"``.

    Raises:
        UserInputError: a file name that does not start ``PPPP_cC`` or has camera 0 (naming the
            file), or a folder with no usable image.
    """
    samples = []
    for path in list_images(folder, dataset):
        parsed = parse_market_name(path.name)
        if parsed is None:
            raise UserInputError(
                f"{dataset}: cannot read identity and camera from {path}: Market-format names "
                f"start with PPPP_cC (identity, '_c', 1-based camera), e.g. 0002_c1s1_000451_03.jpg"
            )
        pid, camera = parsed
        if camera < 1:
            raise UserInputError(
                f"{dataset}: {path} has camera c{camera}; Market-format cameras start at c1"
            )
        if pid == JUNK_PID or (pid == DISTRACTOR_PID and split != "gallery"):
            continue
        if pid < 0:
            raise UserInputError(
                f"{dataset}: {path} has identity {pid}; identities are >= 0 (-1 marks junk)"
            )
        samples.append(Sample(os.fspath(path), pid, camera - 1))
    if not samples:
        raise UserInputError(
            f"{dataset}: the {split} split is empty: no image named PPPP_cC... (identity >= "
            f"{1 if split != 'gallery' else 0}) in {folder}"
        )
    return samples


def read_market_splits(
    dataset_dir: Path, dataset: str, folders: dict[str, str] | None = None
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """``(train, query, gallery)`` of a Market-format dataset folder (training pids original)."""
    folders = folders or MARKET_SPLIT_FOLDERS
    return tuple(  # type: ignore[return-value]
        read_market_folder(dataset_dir / folders[split], split, dataset)
        for split in ("train", "query", "gallery")
    )


def _load(
    name: str,
    root: str | os.PathLike,
    spellings: tuple[str, ...],
    layout: str,
    verify_images: bool,
    skip_unreadable: bool,
    options: dict,
) -> ReIDDataset:
    required = list(MARKET_SPLIT_FOLDERS.values())
    dataset_dir = find_dataset_folder(root, spellings, required, layout, name)
    train, query, gallery = read_market_splits(dataset_dir, name)
    return assemble_dataset(
        name,
        dataset_dir,
        train,
        query,
        gallery,
        options=options,
        verify_images=verify_images,
        skip_unreadable=skip_unreadable,
    )


def load_market1501(
    root: str | os.PathLike, *, verify_images: bool = False, skip_unreadable: bool = False
) -> ReIDDataset:
    """Market-1501 (1,501 identities, 6 cameras). See ``docs/datasets.md``."""
    return _load(
        "market1501",
        root,
        MARKET1501_SPELLINGS,
        MARKET1501_LAYOUT,
        verify_images,
        skip_unreadable,
        {},
    )


def load_dukemtmc(
    root: str | os.PathLike, *, verify_images: bool = False, skip_unreadable: bool = False
) -> ReIDDataset:
    """DukeMTMC-reID (1,404 identities plus distractors, 8 cameras)."""
    return _load(
        "dukemtmc", root, DUKEMTMC_SPELLINGS, DUKEMTMC_LAYOUT, verify_images, skip_unreadable, {}
    )


def load_cuhk03(
    root: str | os.PathLike,
    *,
    split: str = "labeled",
    verify_images: bool = False,
    skip_unreadable: bool = False,
) -> ReIDDataset:
    """CUHK03 in the new protocol (767 training / 700 test identities), the cuhk03-np layout.

    Args:
        split: ``"labeled"`` (hand-drawn boxes) or ``"detected"`` (detector boxes).
    """
    if split not in CUHK03_SPLITS:
        raise UserInputError(
            f"cuhk03: unknown split {split!r}; allowed: {', '.join(CUHK03_SPLITS)}"
        )
    required = [f"{split}/{folder}" for folder in MARKET_SPLIT_FOLDERS.values()]
    dataset_dir = find_dataset_folder(root, CUHK03_SPELLINGS, required, CUHK03_LAYOUT, "cuhk03")
    train, query, gallery = read_market_splits(dataset_dir / split, "cuhk03")
    return assemble_dataset(
        "cuhk03",
        dataset_dir,
        train,
        query,
        gallery,
        options={"split": split},
        verify_images=verify_images,
        skip_unreadable=skip_unreadable,
    )
