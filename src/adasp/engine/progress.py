"""What training prints when there are no progress bars (stderr is not a terminal, or
``--no-progress``): one line per epoch, so a log file reads like a table, not like hundreds of
carriage-return redraws."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


def epoch_line(epoch: int, epochs: int, values: Mapping[str, Any]) -> str:
    """E.g. ``epoch 3/10: loss/ce 1.2345, loss/adasp 0.4567, lr 3.50e-04, 812 img/s``
    from the values logged at the epoch's last step."""
    parts = [f"{k} {v:.4f}" for k, v in values.items() if k.startswith("loss/")]
    if "lr" in values:
        parts.append(f"lr {values['lr']:.2e}")
    if "images_per_sec" in values:
        parts.append(f"{values['images_per_sec']:.0f} img/s")
    return f"epoch {epoch}/{epochs}: " + ", ".join(parts)


def print_epoch_line(epoch: int, epochs: int, values: Mapping[str, Any]) -> None:
    print(epoch_line(epoch, epochs, values), file=sys.stderr, flush=True)
