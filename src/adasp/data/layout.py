"""Finding a dataset's own folder under the root a user points to, with errors that show the
expected layout.

Users point adasp either at the folder that *contains* the dataset (``~/data`` holding
``Market-1501-v15.09.15``) or at the dataset folder itself, and the dataset folder is spelled
differently by different distributions and toolkits (``VeRi``, ``veri``, ``VeRi_with_plate``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

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
    # Broken or looping links among the root's other children are none of our business here.
    children = scan_folder(base).folders
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


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class FolderEntries(NamedTuple):
    """One folder's entries, sorted by name: image files, sub-folders, and the symbolic links
    that lead nowhere (``(path, reason)``: broken, or a loop of links)."""

    images: list[str]
    folders: list[str]
    dead_links: list[tuple[str, str]]


def scan_folder(folder: str | os.PathLike) -> FolderEntries:
    """List ``folder`` once (``os.scandir``): its images, sub-folders and dead links.

    Links are followed. A broken link or a loop of links (``a -> b -> a``, which makes ``stat``
    fail with "Too many levels of symbolic links") is neither an image nor a folder: it is
    returned in ``dead_links`` for the caller to report (see :func:`warn_dead_links`).
    """
    images: list[str] = []
    folders: list[str] = []
    dead: list[tuple[str, str]] = []
    with os.scandir(os.fspath(folder)) as entries:
        for entry in entries:
            try:
                if entry.is_dir():
                    folders.append(entry.name)
                elif entry.is_file():
                    if is_image_name(entry.name):
                        images.append(entry.name)
                elif entry.is_symlink():
                    os.stat(entry.path)  # raises for a broken link
            except OSError as error:
                dead.append((entry.path, error.strerror or type(error).__name__))
    return FolderEntries(sorted(images), sorted(folders), sorted(dead))


def warn_dead_links(dead_links: Sequence[tuple[str, str]], what: str, stacklevel: int = 3) -> None:
    """One warning for the broken or looping links skipped while reading ``what``.

    Broken links are skipped (their target is gone), and so are loops of links, rather than
    stopping a whole dataset for one entry; the warning names one and the count.
    """
    if dead_links:
        path, reason = dead_links[0]
        warnings.warn(
            f"{what}: skipped {len(dead_links)} symbolic link(s) that lead to no file, e.g. "
            f"{path} ({reason}); fix or delete the link(s)",
            stacklevel=stacklevel,
        )


def list_images(folder: Path, what: str = "dataset") -> list[Path]:
    """The image files directly inside ``folder``, sorted by name (other files are ignored,
    e.g. the ``Thumbs.db`` files shipped inside Market-1501; dead links with a warning)."""
    entries = scan_folder(folder)
    warn_dead_links(entries.dead_links, what)
    return [folder / n for n in entries.images]


def _list_paths(paths: Iterable[Path]) -> str:
    return ", ".join(str(p) for p in paths)
