"""The generic ``folder`` format: ``ROOT/{train,query,gallery}/<identity>/<file>``.

The identity is the sub-folder's name; the camera is the integer before the first ``_`` of the
file name (``02_5.png`` is camera 2). Cameras are renumbered ``0..C-1`` in the order of their
sorted integer ids over all splits. When no file name carries a camera, every image gets
camera 0 and evaluation filters nothing by camera.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from adasp.data.assemble import assemble_dataset
from adasp.data.layout import IMAGE_EXTENSIONS, existing_folder
from adasp.data.sample import ReIDDataset, Sample
from adasp.errors import MissingPathError, UserInputError

FOLDER_SPLITS = ("train", "query", "gallery")
FOLDER_CAMERA = re.compile(r"^(\d+)_")
_INTEGER = re.compile(r"^-?\d+$")

FOLDER_LAYOUT = """\
  ROOT/
    train/<identity>/<camera>_<anything>.jpg    e.g. train/0007/2_0001.jpg (camera 2)
    query/<identity>/...
    gallery/<identity>/...
  Identity folders named by integers keep those ids in query/gallery (any other names are
  numbered in sorted order); files without a '<camera>_' prefix mean 'no camera information'."""


def _scan_split(split_dir: Path) -> list[tuple[str, str]]:
    """``[(identity_name, image_path), ...]`` of one split, sorted."""
    found = []
    with os.scandir(split_dir) as entries:
        children = sorted(entries, key=lambda e: e.name)
    for child in children:
        extension = os.path.splitext(child.name)[1].lower()
        if child.is_file() and extension in IMAGE_EXTENSIONS:
            raise UserInputError(
                f"folder: image {child.path} lies directly in {split_dir}; put each image in "
                f"a sub-folder named after its identity ({split_dir}/<identity>/{child.name})"
            )
        if not child.is_dir():
            continue
        with os.scandir(child.path) as files:
            names = sorted(
                f.name
                for f in files
                if f.is_file() and os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS
            )
        found += [(child.name, os.path.join(child.path, n)) for n in names]
    if not found:
        raise UserInputError(
            f"folder: the split {split_dir} is empty: no image in any <identity> sub-folder. "
            f"Expected layout:\n{FOLDER_LAYOUT}"
        )
    return found


def _identity_ids(names: set[str]) -> dict[str, int]:
    if all(_INTEGER.match(n) for n in names):
        return {n: int(n) for n in names}
    return {n: i for i, n in enumerate(sorted(names))}


def _camera_ids(paths: list[str]) -> tuple[dict[str, int], bool]:
    """Per path its 0-based camera, and whether cameras are known at all."""
    raw = {p: FOLDER_CAMERA.match(os.path.basename(p)) for p in paths}
    with_camera = [p for p, m in raw.items() if m is not None]
    without_camera = [p for p, m in raw.items() if m is None]
    if not with_camera:
        return {p: 0 for p in paths}, False
    if without_camera:
        raise UserInputError(
            f"folder: {len(with_camera)} file names carry a camera ('<camera>_...', e.g. "
            f"{with_camera[0]}) but {len(without_camera)} do not (e.g. {without_camera[0]}); "
            f"name all files '<camera>_<anything>' or none of them"
        )
    numbers = {p: int(m.group(1)) for p, m in raw.items() if m is not None}
    dense = {c: i for i, c in enumerate(sorted(set(numbers.values())))}
    return {p: dense[c] for p, c in numbers.items()}, True


def _check_not_identity_prefixed(items: list[tuple[str, str]]) -> None:
    """Refuse names such as Market's ``0001_c1s1_...`` whose leading number is the identity:
    read as cameras they would filter every match out of the evaluation, silently."""
    prefixes = {name: set() for name, _ in items}
    for name, path in items:
        match = FOLDER_CAMERA.match(os.path.basename(path))
        prefixes[name].add(int(match.group(1)) if match else None)
    if len(prefixes) > 1 and all(
        _INTEGER.match(name) and values == {int(name)} for name, values in prefixes.items()
    ):
        example = items[0][1]
        raise UserInputError(
            f"folder: every file name begins with its own identity (e.g. {example}), so the "
            "number before the first '_' is not a camera. Name files '<camera>_<anything>' "
            "(or without any camera prefix), or use --dataset market1501 for Market-1501-style "
            "names ('<pid>_c<camera>...')"
        )


def load_folder(
    root: str | os.PathLike, *, verify_images: bool = False, skip_unreadable: bool = False
) -> ReIDDataset:
    """A dataset in the generic folder format (see the module docstring and ``docs/datasets.md``)."""
    base = existing_folder(root)
    for split in FOLDER_SPLITS:
        if not (base / split).is_dir():
            raise MissingPathError(
                f"folder: {base / split} is missing. Expected layout:\n{FOLDER_LAYOUT}"
            )
    scanned = {split: _scan_split(base / split) for split in FOLDER_SPLITS}
    all_items = [item for items in scanned.values() for item in items]
    _check_not_identity_prefixed(all_items)
    pids = _identity_ids({name for name, _ in all_items})
    cameras, has_cameras = _camera_ids([path for _, path in all_items])
    train, query, gallery = (
        [Sample(path, pids[name], cameras[path]) for name, path in scanned[split]]
        for split in FOLDER_SPLITS
    )
    return assemble_dataset(
        "folder",
        base,
        train,
        query,
        gallery,
        camera_filter=has_cameras,
        verify_images=verify_images,
        skip_unreadable=skip_unreadable,
    )
