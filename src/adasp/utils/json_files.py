"""Reading the JSON files adasp writes (metrics, sweep manifests, failure records).

They are written atomically, but a copy cut short, a full disk on another tool's write or a
hand edit can still leave one torn; reading it is refused in one line naming the file and the
fix, never a ``JSONDecodeError`` traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from adasp.errors import UserInputError
from adasp.utils.text_files import read_utf8


def read_json_object(path: str | os.PathLike, fix: str) -> dict[str, Any]:
    """The JSON object (a mapping) in ``path``.

    Args:
        path: the file.
        fix: what the user should do when the file is torn or not an object (one clause).

    Raises:
        UserInputError: the file is not UTF-8, not complete JSON or not a JSON object.
    """
    path = Path(path)
    try:
        data = json.loads(read_utf8(path, fix))
    except json.JSONDecodeError as error:
        raise UserInputError(
            f"{path} is not complete JSON (line {error.lineno}, column {error.colno}: "
            f"{error.msg}; the file was cut short or edited); {fix}"
        ) from None
    if not isinstance(data, dict):
        raise UserInputError(
            f"{path} holds a JSON {type(data).__name__}, not the object adasp writes; {fix}"
        )
    return data
