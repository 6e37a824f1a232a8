"""The generic ``folder`` format, and the images of any folder, read by one set of rules.

A dataset is ``ROOT/{train,query,gallery}/<identity>/<file>`` (:func:`load_folder`); ``adasp
extract --folder`` and ``adasp search --query-folder`` read every image under any folder
(:func:`list_folder_images`). Both apply the same rules to each image file:

- an image is a file with one of :data:`~adasp.data.layout.IMAGE_EXTENSIONS` (``.jpg``,
  ``.png``, ``.tif``, ...);
- its identity is the name of the folder holding it: folders named by integers keep those
  ids (two names of one number, ``052`` and ``52``, are refused rather than merged); when any name is not an integer, the names are numbered ``0..n-1`` in sorted order
  over the images read together (so a name shared by query and gallery gets one id);
- its camera is the integer before the first ``_`` of the file name, as written
  (``02_5.png`` is camera 2): a rule of the file alone, so the same file has the same camera
  whichever folder is read. When no file name carries a camera, every image gets camera 0
  (and a dataset's evaluation filters nothing by camera); when only some do, reading fails;
- names such as Market's ``0001_c1s1_...``, whose leading number is the identity, are
  refused: read as cameras they would filter every match out of the evaluation.

Broken symbolic links and loops of links are skipped with a warning naming one of them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from adasp.data.assemble import assemble_dataset
from adasp.data.layout import IMAGE_EXTENSIONS, existing_folder, scan_folder, warn_dead_links
from adasp.data.sample import ReIDDataset, Sample
from adasp.errors import MissingPathError, UserInputError

FOLDER_SPLITS = ("train", "query", "gallery")
FOLDER_CAMERA = re.compile(r"^(\d+)_")
_INTEGER = re.compile(r"^-?\d+$")

#: The identity of an image that lies directly in the folder given to
#: :func:`list_folder_images` (no identity folder): unknown.
UNKNOWN_IDENTITY = -1

FOLDER_LAYOUT = """\
  ROOT/
    train/<identity>/<camera>_<anything>.jpg    e.g. train/0007/2_0001.jpg (camera 2)
    query/<identity>/...
    gallery/<identity>/...
  Identity folders named by integers keep those ids in query/gallery (any other names are
  numbered in sorted order); files without a '<camera>_' prefix mean 'no camera information'."""


def image_camera(path: str) -> int | None:
    """The camera in an image's file name (``02_5.png`` -> 2), or None when it has none."""
    match = FOLDER_CAMERA.match(os.path.basename(path))
    return int(match.group(1)) if match else None


def samples_by_folder_rules(
    items: Sequence[tuple[str | None, str]], where: str
) -> tuple[list[Sample], bool]:
    """The samples of ``(identity folder name, image path)`` pairs read together, and whether
    their file names carry cameras.

    A name of None means the image has no identity folder (:data:`UNKNOWN_IDENTITY`).
    ``where`` starts the error messages (``"folder"``, or the folder read).

    Raises:
        UserInputError: Market-style names, or cameras in only some file names.
    """
    _check_not_identity_prefixed(items, where)
    pids = _identity_ids({name for name, _ in items if name is not None})
    _check_distinct_ids(items, pids, where)
    cameras, has_cameras = _camera_ids([path for _, path in items], where)
    samples = [
        Sample(path, UNKNOWN_IDENTITY if name is None else pids[name], cameras[path])
        for name, path in items
    ]
    return samples, has_cameras


def _identity_ids(names: set[str]) -> dict[str, int]:
    if all(_INTEGER.match(n) for n in names):
        return {n: int(n) for n in names}
    return {n: i for i, n in enumerate(sorted(names))}


def _check_distinct_ids(
    items: Sequence[tuple[str | None, str]], pids: dict[str, int], where: str
) -> None:
    """Refuse two identity folders whose names are the same number (``052`` and ``52``):
    one id would silently merge two people."""
    by_id: dict[int, str] = {}
    for name, pid in sorted(pids.items()):
        other = by_id.setdefault(pid, name)
        if other != name:
            folders: dict[str | None, str] = {}
            for item_name, path in items:
                if item_name in (name, other):
                    folders.setdefault(item_name, os.path.dirname(path))
            raise UserInputError(
                f"{where}: identity folders {folders[other]} and {folders[name]} are both "
                f"identity {pid}; rename one of them (or the folders of one person to one name)"
            )


def _camera_ids(paths: list[str], where: str) -> tuple[dict[str, int], bool]:
    """Per path its camera (0 when no name carries one), and whether cameras are known."""
    raw = {p: image_camera(p) for p in paths}
    with_camera = [p for p, c in raw.items() if c is not None]
    without_camera = [p for p, c in raw.items() if c is None]
    if not with_camera:
        return {p: 0 for p in paths}, False
    if without_camera:
        raise UserInputError(
            f"{where}: {len(with_camera)} file names carry a camera ('<camera>_...', e.g. "
            f"{with_camera[0]}) but {len(without_camera)} do not (e.g. {without_camera[0]}); "
            f"name all files '<camera>_<anything>' or none of them"
        )
    return {p: c for p, c in raw.items() if c is not None}, True


def _check_not_identity_prefixed(items: Sequence[tuple[str | None, str]], where: str) -> None:
    """Refuse names such as Market's ``0001_c1s1_...`` whose leading number is the identity:
    read as cameras they would filter every match out of the evaluation, silently."""
    prefixes: dict[str, set[int | None]] = {}
    for name, path in items:
        if name is not None:
            prefixes.setdefault(name, set()).add(image_camera(path))
    if len(prefixes) > 1 and all(
        _INTEGER.match(name) and values == {int(name)} for name, values in prefixes.items()
    ):
        example = next(path for name, path in items if name is not None)
        raise UserInputError(
            f"{where}: every file name begins with its own identity (e.g. {example}), so the "
            "number before the first '_' is not a camera. Name files '<camera>_<anything>' "
            "(or without any camera prefix), or use --dataset market1501 for Market-1501-style "
            "names ('<pid>_c<camera>...')"
        )


# ---------------------------------------------------------------- any folder


def list_folder_images(folder: str | os.PathLike) -> list[Sample]:
    """Every image under ``folder`` (recursively, sorted by path) as a :class:`Sample`, by the
    rules of the module docstring: ``adasp extract --folder`` and ``adasp search``.

    Images directly in ``folder`` have identity :data:`UNKNOWN_IDENTITY` (-1). Linked
    folders are followed, each folder read once (under the first of its names, in name order).

    Raises:
        MissingPathError: ``folder`` does not exist.
        UserInputError: ``folder`` is a file or holds no image, or a rule is broken.
    """
    root = existing_folder(folder, "folder")
    items: list[tuple[str | None, str]] = []
    dead: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        current = pending.pop()
        info = current.stat()
        if (info.st_dev, info.st_ino) in seen:  # a link back to a folder already read
            continue
        seen.add((info.st_dev, info.st_ino))
        entries = scan_folder(current)
        name = None if current == root else current.name
        items += [(name, str(current / image)) for image in entries.images]
        dead += entries.dead_links
        # Depth first in name order, so that of two links to one folder the first name wins.
        pending += [current / child for child in reversed(entries.folders)]
    warn_dead_links(dead, str(root))
    if not items:
        raise UserInputError(
            f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {root}"
        )
    items.sort(key=lambda item: item[1])
    return samples_by_folder_rules(items, str(root))[0]


# ---------------------------------------------------------------- the dataset


def _scan_split(split_dir: Path, dead: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``[(identity_name, image_path), ...]`` of one split, sorted; dead links into ``dead``."""
    top = scan_folder(split_dir)
    dead += top.dead_links
    if top.images:
        raise UserInputError(
            f"folder: image {split_dir / top.images[0]} lies directly in {split_dir}; put each "
            f"image in a sub-folder named after its identity "
            f"({split_dir}/<identity>/{top.images[0]})"
        )
    found = []
    for identity in top.folders:
        entries = scan_folder(split_dir / identity)
        dead += entries.dead_links
        found += [(identity, os.path.join(split_dir, identity, n)) for n in entries.images]
    if not found:
        raise UserInputError(
            f"folder: the split {split_dir} is empty: no image in any <identity> sub-folder. "
            f"Expected layout:\n{FOLDER_LAYOUT}"
        )
    return found


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
    dead: list[tuple[str, str]] = []
    scanned = {split: _scan_split(base / split, dead) for split in FOLDER_SPLITS}
    warn_dead_links(dead, "folder")
    all_items = [item for items in scanned.values() for item in items]
    samples, has_cameras = samples_by_folder_rules(all_items, "folder")
    by_path = {s.path: s for s in samples}
    train, query, gallery = (
        [by_path[path] for _, path in scanned[split]] for split in FOLDER_SPLITS
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
