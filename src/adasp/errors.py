"""Errors for bad user input: a message that names the problem and the fix.

The command line prints these without a traceback; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: a path, a file's content, a config value or an option."""


class MissingPathError(UserInputError, FileNotFoundError):
    """A file or folder the user pointed to (or that a layout requires) does not exist."""
