"""Figures for the PNGs adasp writes, without pyplot.

Figures are made with matplotlib's object API (``matplotlib.figure.Figure``), which renders
with Agg on its own: the library never selects a backend, so a user's interactive session or
notebook keeps the backend it chose.
"""

from __future__ import annotations

import os
from typing import Any


def new_figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A new ``(figure, axes)`` of ``figsize`` inches, outside pyplot's figure manager."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots()


def save_figure(figure: Any, path: str | os.PathLike) -> None:
    """Save ``figure`` as PNG to ``path`` atomically."""
    from adasp.utils.atomic import atomic_write_with

    atomic_write_with(path, lambda handle: figure.savefig(handle, format="png", dpi=120))
