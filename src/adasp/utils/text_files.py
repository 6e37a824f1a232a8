"""Reading text files the user points to (configs) or adasp wrote (JSON): UTF-8 or a one-line
error naming the file and the line of the first bad byte."""

from __future__ import annotations

import os
from pathlib import Path

from adasp.errors import UserInputError


def read_utf8(path: str | os.PathLike, fix: str, error: type[Exception] = UserInputError) -> str:
    """The text of ``path``.

    Args:
        fix: what to do when the file is not UTF-8 (one clause, ends the message).
        error: the exception type to raise.

    Raises:
        error: the file is not UTF-8 text.
    """
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as failure:
        line = raw.count(b"\n", 0, failure.start) + 1
        raise error(
            f"{path} is not UTF-8 text (byte {raw[failure.start]:#04x} on line {line}); {fix}"
        ) from None
