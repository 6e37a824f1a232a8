"""Checking numeric options: one rule for every float option of the losses and the config.

A float option must be a real number (not a string, not a bool), finite, and inside its
allowed range; the error names the option and the range, so ``temperature="abc"``,
``temperature=inf`` and ``temperature=-1`` all read the same way.
"""

from __future__ import annotations

import math
from typing import Any


def describe_range(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> str:
    """``"> 0"``, ``">= 0"``, ``"in [0, 1)"``, ... (``""`` when unbounded)."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    note: str = "",
    error: type[Exception] = ValueError,
) -> float:
    """``value`` as a ``float`` after checking it is a finite real number inside the range.

    Args:
        name: how the message names the option (``"temperature"``, ``"config key 'x.y'"``).
        low, high: bounds (None: unbounded); ``low_open``/``high_open`` exclude them.
        note: a few words appended to the range in the message (e.g. what 0 means).
        error: the exception type raised (a ``ValueError`` unless the caller needs its own).

    Raises:
        ``error``: ``"temperature must be > 0 (a finite number), got 'abc'"``.
    """
    number = _as_float(value)
    ok = number is not None and math.isfinite(number)
    if number is not None and ok and low is not None:
        ok = number > low if low_open else number >= low
    if number is not None and ok and high is not None:
        ok = number < high if high_open else number <= high
    if number is None or not ok:
        bounds = describe_range(low, high, low_open=low_open, high_open=high_open)
        wanted = f"{bounds} (a finite number)" if bounds else "a finite number"
        if note:
            wanted = f"{wanted[:-1]}; {note})" if bounds else f"{wanted} ({note})"
        shown = value if number is not None else repr(value)
        raise error(f"{name} must be {wanted}, got {shown}")
    return number


def _as_float(value: Any) -> float | None:
    """``float(value)`` for real numbers (Python, NumPy, one-element tensors); None otherwise.

    Strings are not numbers here (``float("1e-3")`` would accept them), nor are bools.
    """
    if isinstance(value, (bool, str, bytes)) or not hasattr(type(value), "__float__"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # e.g. complex, a tensor of several values
        return None


#: The largest seed: every generator seeded from it (Python, NumPy, torch, per-sample mixes)
#: takes any value up to 2**32 - 1.
MAX_SEED = 2**32 - 1


def check_seed(name: str, value: Any, error: type[Exception] = ValueError) -> int:
    """``value`` as a seed: an integer in ``[0, MAX_SEED]`` (the error names ``name``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise error(f"{name} must be an integer in [0, {MAX_SEED}], got {value!r}")
    return value
