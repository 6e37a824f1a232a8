"""Matplotlib set-up shared by the plots adasp writes (headless, atomic PNG files)."""

from __future__ import annotations

import os
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (works without a display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | os.PathLike) -> None:
    """Save ``figure`` as PNG to ``path`` atomically and close it."""
    from adasp.utils.atomic import atomic_write_with

    try:
        atomic_write_with(path, lambda handle: figure.savefig(handle, format="png", dpi=120))
    finally:
        pyplot().close(figure)
