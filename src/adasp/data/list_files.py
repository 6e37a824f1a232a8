"""Reading the split list files of list-based benchmarks (MSMT17, VehicleID, VERI-WILD), with
errors that name the file, the line and the expected format."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from adasp.errors import MissingPathError, UserInputError

T = TypeVar("T")


def parse_list_file(
    path: Path,
    parse: Callable[[list[str]], T],
    expected: str,
    *,
    separator: str | None = None,
    skip_header: bool = False,
) -> list[tuple[int, T]]:
    """Parse each non-blank line of ``path`` as ``parse(line.split(separator))``.

    Args:
        path: the list file.
        parse: turns the fields of one line into a record; raises ``ValueError`` (or
            ``IndexError``) for a line it cannot read.
        expected: the line format, for error messages (e.g. ``"relative/path.jpg pid"``).
        separator: field separator (``None``: any whitespace).
        skip_header: ignore the first line.

    Returns:
        ``[(line_number, record), ...]``, line numbers 1-based.

    Raises:
        MissingPathError: the file does not exist.
        UserInputError: a line that does not parse (naming the file, the line and the format),
            or a file with no entry.
    """
    if not path.is_file():
        raise MissingPathError(f"list file {path} is missing (lines: {expected})")
    records = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if skip_header and number == 1:
                continue
            text = line.strip()
            if not text:
                continue
            try:
                records.append((number, parse(text.split(separator))))
            except (ValueError, IndexError) as error:
                detail = f" ({error})" if str(error) else ""
                raise UserInputError(
                    f"{path}, line {number}: cannot parse {text!r}{detail}; expected lines "
                    f"'{expected}'"
                ) from error
    if not records:
        raise UserInputError(f"list file {path} has no entry (expected lines '{expected}')")
    return records


def check_files_exist(paths: Sequence[str], list_file: Path, line_numbers: Sequence[int]) -> None:
    """Raise naming the list file and line of the first listed image that does not exist.

    Each folder is listed once (``os.scandir``) instead of one ``stat`` per file, which is much
    faster for the hundreds of thousands of images of VehicleID or VERI-WILD.
    """
    present: dict[str, set[str]] = {}
    missing = []
    for i, path in enumerate(paths):
        folder, name = os.path.split(path)
        if folder not in present:
            try:
                with os.scandir(folder) as entries:
                    present[folder] = {e.name for e in entries}
            except (FileNotFoundError, NotADirectoryError):
                present[folder] = set()
        if name not in present[folder]:
            missing.append(i)
    if missing:
        first = missing[0]
        raise MissingPathError(
            f"{list_file}, line {line_numbers[first]}: image {paths[first]} does not exist "
            f"({len(missing)} of {len(paths)} listed images are missing); check that the "
            f"images were extracted next to the list files"
        )
