"""MSMT17 (V1 and V2): splits from the list files ``list_{train,val,query,gallery}.txt``.

Each list line is ``relative/path.jpg pid``; the camera is the third ``_``-separated field of
the file name (1-based, 15 cameras), e.g. ``0000_000_01_0303morning_0015_0.jpg`` is camera 1.
Identity 0 is a real identity here (no distractor convention).
"""

from __future__ import annotations

import os
from pathlib import Path

from adasp.data.assemble import assemble_dataset
from adasp.data.layout import find_dataset_folder
from adasp.data.list_files import check_files_exist, parse_list_file
from adasp.data.sample import ReIDDataset, Sample
from adasp.errors import MissingPathError, UserInputError

MSMT17_VERSIONS = ("auto", "v1", "v2")

#: version -> (accepted folder names, train image folder, test image folder)
_VERSIONS = {
    "v1": (("MSMT17_V1", "MSMT17", "msmt17", "msmt17_v1"), "train", "test"),
    "v2": (("MSMT17_V2", "MSMT17", "msmt17", "msmt17_v2"), "mask_train_v2", "mask_test_v2"),
}

MSMT17_LAYOUT = """\
  MSMT17_V1/                          or  MSMT17_V2/
    train/0000/0000_000_01_0303morning_0015_0.jpg ...   mask_train_v2/...
    test/0000/...                                       mask_test_v2/...
    list_train.txt  list_val.txt  list_query.txt  list_gallery.txt
                    (lines 'relative/path.jpg pid'; camera = 3rd '_' field of the name)"""

_LINE_FORMAT = "relative/path.jpg pid"


def _parse_line(fields: list[str]) -> tuple[str, int, int]:
    if len(fields) != 2:
        raise ValueError(f"{len(fields)} fields instead of 2")
    relative, pid_text = fields
    pid = int(pid_text)
    name_fields = os.path.basename(relative).split("_")
    if len(name_fields) < 3 or not name_fields[2].isdigit():
        raise ValueError("the file name has no camera as its third '_'-separated field")
    camera = int(name_fields[2])
    if camera < 1:
        raise ValueError("cameras are 1-based")
    return relative, pid, camera - 1


def read_msmt17_list(list_file: Path, image_dir: Path) -> list[Sample]:
    """The samples listed in one MSMT17 list file, paths made absolute under ``image_dir``."""
    records = parse_list_file(list_file, _parse_line, _LINE_FORMAT)
    samples = [Sample(os.fspath(image_dir / rel), pid, cam) for _, (rel, pid, cam) in records]
    check_files_exist([s.path for s in samples], list_file, [n for n, _ in records])
    return samples


def _find(root: str | os.PathLike, version: str, use_val: bool) -> tuple[str, Path]:
    lists = ["list_train.txt", "list_query.txt", "list_gallery.txt"]
    lists += ["list_val.txt"] if use_val else []
    candidates = ("v1", "v2") if version == "auto" else (version,)
    found: dict[str, Path] = {}
    errors = []
    for v in candidates:
        spellings, train_dir, test_dir = _VERSIONS[v]
        try:
            found[v] = find_dataset_folder(
                root, spellings, [train_dir, test_dir, *lists], MSMT17_LAYOUT, f"msmt17 ({v})"
            )
        except MissingPathError as error:
            errors.append(str(error).split(". Expected layout")[0])
    if len(found) == 2:
        raise UserInputError(
            f"msmt17: both V1 ({found['v1']}) and V2 ({found['v2']}) found under {root}; "
            f"choose one with version='v1' or version='v2'"
        )
    if not found:
        raise MissingPathError(
            "; ".join(errors) + f". Expected layout (root may be the dataset folder or the "
            f"folder holding it):\n{MSMT17_LAYOUT}"
        )
    return next(iter(found.items()))


def load_msmt17(
    root: str | os.PathLike,
    *,
    version: str = "auto",
    use_val: bool = True,
    verify_images: bool = False,
    skip_unreadable: bool = False,
) -> ReIDDataset:
    """MSMT17 (4,101 identities, 15 cameras), V1 or V2.

    Args:
        version: ``"v1"``, ``"v2"`` or ``"auto"`` (whichever is present; an error if both are).
        use_val: merge ``list_val.txt`` into the training set (default True: the standard
            32,621-image / 1,041-identity training set that published results use; the
            validation images are further images of the training identities).
    """
    if version not in MSMT17_VERSIONS:
        raise UserInputError(
            f"msmt17: unknown version {version!r}; allowed: {', '.join(MSMT17_VERSIONS)}"
        )
    if not isinstance(use_val, bool):
        raise UserInputError(f"msmt17: use_val must be true or false, got {use_val!r}")
    found_version, dataset_dir = _find(root, version, use_val)
    _, train_dir, test_dir = _VERSIONS[found_version]
    train = read_msmt17_list(dataset_dir / "list_train.txt", dataset_dir / train_dir)
    if use_val:
        train += read_msmt17_list(dataset_dir / "list_val.txt", dataset_dir / train_dir)
    query = read_msmt17_list(dataset_dir / "list_query.txt", dataset_dir / test_dir)
    gallery = read_msmt17_list(dataset_dir / "list_gallery.txt", dataset_dir / test_dir)
    return assemble_dataset(
        "msmt17",
        dataset_dir,
        train,
        query,
        gallery,
        options={"version": found_version, "use_val": use_val},
        verify_images=verify_images,
        skip_unreadable=skip_unreadable,
    )
