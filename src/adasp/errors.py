"""Errors for bad user input: a message that names the problem and the fix.

The command line prints these without a traceback; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserInputError(ValueError):
    """Bad input from the user: a path, a file's content, a config value or an option."""


class MissingPathError(UserInputError, FileNotFoundError):
    """A file or folder the user pointed to (or that a layout requires) does not exist."""


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'adasp'?)`` for the allowed value closest to a misspelled ``name``
    (stdlib ``difflib``), or ``""`` when none is close; for "unknown X" messages."""
    if not isinstance(name, str):
        return ""
    options = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if not close:  # 'market' for 'market1501', 'Adasp' for 'adasp'
        lowered = {c.lower(): c for c in options}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=1)]
        close = close or [c for c in options if name and c.lower().startswith(name.lower())][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""
