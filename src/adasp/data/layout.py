"""Finding a dataset's own folder under the root a user points to, with errors that show the
expected layout.

Users point adasp either at the folder that *contains* the dataset (``~/data`` holding
``Market-1501-v15.09.15``) or at the dataset folder itself, and the dataset folder is spelled
differently by different distributions and toolkits (``VeRi``, ``veri``, ``VeRi_with_plate``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from adasp.errors import MissingPathError, UserInputError

#: File name extensions treated as images (compared lower-case).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def normalise_folder_name(name: str) -> str:
    """``"Market-1501-v15.09.15"`` -> ``"market1501v150915"``: lower case, letters and digits."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def existing_folder(root: str | os.PathLike, what: str = "dataset root") -> Path:
    """``root`` as an absolute :class:`Path`, checked to be an existing folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise MissingPathError(f"{what} {path} does not exist; check the path")
    if not path.is_dir():
        raise UserInputError(f"{what} {path} is a file, not a folder; pass the folder instead")
    return path.resolve()


def find_dataset_folder(
    root: str | os.PathLike,
    spellings: Sequence[str],
    required: Sequence[str],
    layout: str,
    dataset: str,
) -> Path:
    """The dataset folder: ``root`` itself or a child of it named like one of ``spellings``.

    A candidate is accepted when every entry of ``required`` (relative paths) exists in it.
    Child names are compared after :func:`normalise_folder_name`, so ``market-1501`` matches the
    spelling ``Market-1501``.

    Raises:
        MissingPathError: naming every folder checked and the expected ``layout``.
    """
    base = existing_folder(root)
    wanted = {normalise_folder_name(s) for s in spellings}
    candidates = [base]
    candidates += [base / s for s in spellings if (base / s).is_dir()]
    with os.scandir(base) as entries:
        children = sorted(e.name for e in entries if e.is_dir())
    candidates += [base / c for c in children if normalise_folder_name(c) in wanted]
    checked: list[Path] = []
    for candidate in dict.fromkeys(candidates):  # keeps order, drops duplicates
        checked.append(candidate)
        if all((candidate / r).exists() for r in required):
            return candidate
    missing = ", ".join(required)
    raise MissingPathError(
        f"no {dataset} dataset found under {base}: checked {_list_paths(checked)} for "
        f"{missing}. Expected layout (root may be the dataset folder or the folder holding it; "
        f"accepted folder names: {', '.join(spellings)}):\n{layout}"
    )


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name (other files are ignored,
    e.g. the ``Thumbs.db`` files shipped inside Market-1501)."""
    with os.scandir(folder) as entries:
        names = sorted(
            e.name
            for e in entries
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )
    return [folder / n for n in names]


def _list_paths(paths: Iterable[Path]) -> str:
    return ", ".join(str(p) for p in paths)
