"""Plain Python values from NumPy/torch scalars and arrays, for JSON files and checkpoints."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def plain(value: Any) -> Any:
    """``value`` with NumPy/torch scalars as ``int``/``float`` and arrays as lists, recursively.

    Checkpoints are read with ``weights_only=True``, which refuses NumPy objects, and JSON has
    no NumPy types either.
    """
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value
