"""VehicleID: list-based, no cameras; the test protocol draws its own query/gallery split.

For a test size (800, 1600 or 2400 vehicles) one random image of each vehicle is the gallery
and all its other images are queries; results are averaged over 10 such draws. Features are
extracted once for the whole test list and re-split per draw with
:func:`vehicleid_trial_split`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adasp.data.assemble import assemble_dataset
from adasp.data.layout import find_dataset_folder
from adasp.data.list_files import check_files_exist, parse_list_file
from adasp.data.sample import ReIDDataset, Sample
from adasp.errors import UserInputError

VEHICLEID_TEST_SIZES = (800, 1600, 2400)
VEHICLEID_TRIALS = 10
VEHICLEID_SPELLINGS = ("VehicleID_V1.0", "VehicleID", "vehicleid", "PKU-VehicleID", "VehicleID_V1")

VEHICLEID_LAYOUT = """\
  VehicleID_V1.0/      (also VehicleID, vehicleid)
    image/0000001.jpg ...
    train_test_split/train_list.txt          (lines 'IMGID vid', no extension)
    train_test_split/test_list_800.txt  test_list_1600.txt  test_list_2400.txt"""

_LINE_FORMAT = "IMGID vid"


def _parse_line(fields: list[str]) -> tuple[str, int]:
    if len(fields) != 2:
        raise ValueError(f"{len(fields)} fields instead of 2")
    return fields[0], int(fields[1])


def read_vehicleid_list(list_file: Path, image_dir: Path) -> list[Sample]:
    """The samples of one VehicleID list file (camera 0 for every image)."""
    records = parse_list_file(list_file, _parse_line, _LINE_FORMAT)
    samples = [Sample(os.fspath(image_dir / f"{img}.jpg"), vid, 0) for _, (img, vid) in records]
    check_files_exist([s.path for s in samples], list_file, [n for n, _ in records])
    return samples


def _check_trial(trial: int, seed: int) -> None:
    if not isinstance(trial, (int, np.integer)) or not 0 <= trial < VEHICLEID_TRIALS:
        raise UserInputError(
            f"vehicleid: trial must be an integer in 0..{VEHICLEID_TRIALS - 1} (the protocol's "
            f"{VEHICLEID_TRIALS} draws), got {trial!r}"
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserInputError(f"vehicleid: seed must be a non-negative integer, got {seed!r}")


def vehicleid_trial_split(
    test_samples: Sequence[Sample], trial: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The query/gallery split of draw ``trial``: one random gallery image per vehicle.

    The draw depends only on ``(seed, trial)`` and the set of samples, not on their order
    (random keys are assigned in path order), so any ordering of the same test list splits
    the same way.

    Args:
        test_samples: the whole test list (``N`` samples), e.g. ``dataset.query +
            dataset.gallery``.
        trial: the draw, ``0..9``.
        seed: the protocol's seed.

    Returns:
        ``(query_indices, gallery_indices)``: sorted ``int64`` arrays indexing ``test_samples``
        that partition ``0..N-1``; the gallery holds exactly one index per vehicle.
    """
    _check_trial(trial, seed)
    n = len(test_samples)
    if n == 0:
        raise UserInputError("vehicleid: the test list is empty")
    pids = np.fromiter((s.pid for s in test_samples), dtype=np.int64, count=n)
    canonical = np.argsort(np.array([s.path for s in test_samples]), kind="stable")
    keys = np.empty(n)
    keys[canonical] = np.random.default_rng([int(seed), int(trial)]).random(n)
    by_pid_then_key = np.lexsort((keys, pids))
    sorted_pids = pids[by_pid_then_key]
    first_of_pid = np.ones(n, dtype=bool)
    first_of_pid[1:] = sorted_pids[1:] != sorted_pids[:-1]
    gallery = np.sort(by_pid_then_key[first_of_pid])
    is_query = np.ones(n, dtype=bool)
    is_query[gallery] = False
    return np.flatnonzero(is_query).astype(np.int64), gallery.astype(np.int64)


def load_vehicleid(
    root: str | os.PathLike,
    *,
    test_size: int = 800,
    trial: int = 0,
    seed: int = 0,
    verify_images: bool = False,
    skip_unreadable: bool = False,
) -> ReIDDataset:
    """VehicleID (26,267 vehicles; 13,164 for training).

    Args:
        test_size: the test list, 800 (small), 1600 (medium) or 2400 (large) vehicles.
        trial: which of the protocol's 10 random query/gallery draws to use (0..9).
        seed: the seed of the draws.

    ``query`` + ``gallery`` is always the whole test list; every image has camera 0 and
    ``camera_filter`` is False (no camera information).
    """
    if test_size not in VEHICLEID_TEST_SIZES:
        raise UserInputError(
            f"vehicleid: test_size must be one of {', '.join(map(str, VEHICLEID_TEST_SIZES))}, "
            f"got {test_size!r}"
        )
    _check_trial(trial, seed)
    split_dir = "train_test_split"
    dataset_dir = find_dataset_folder(
        root,
        VEHICLEID_SPELLINGS,
        ["image", f"{split_dir}/train_list.txt", f"{split_dir}/test_list_{test_size}.txt"],
        VEHICLEID_LAYOUT,
        "vehicleid",
    )
    image_dir = dataset_dir / "image"
    train = read_vehicleid_list(dataset_dir / split_dir / "train_list.txt", image_dir)
    test = read_vehicleid_list(dataset_dir / split_dir / f"test_list_{test_size}.txt", image_dir)
    query_idx, gallery_idx = vehicleid_trial_split(test, trial, seed)
    return assemble_dataset(
        "vehicleid",
        dataset_dir,
        train,
        [test[i] for i in query_idx],
        [test[i] for i in gallery_idx],
        camera_filter=False,
        options={"test_size": test_size, "trial": trial, "seed": seed},
        verify_images=verify_images,
        skip_unreadable=skip_unreadable,
    )
