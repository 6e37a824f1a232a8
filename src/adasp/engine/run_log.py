"""A run's log: JSON lines, one object per event (the :class:`~adasp.engine.callbacks.JsonlLogger`
callback writes it on rank 0)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from adasp.utils.atomic import atomic_write_text


class RunLog:
    """Appends events to a JSON-lines file.

    Args:
        path: the log file (``RunFolder.log``).
        resume_step: the step a resumed run continues after; later events are dropped.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._drop_after(resume_step)
        self._handle = self.path.open("a", encoding="utf-8")

    def _drop_after(self, step: int) -> None:
        """Keep only the events up to ``step``: a resumed run logs the later ones again.

        A line that is not valid JSON (torn by a power loss or a full disk while it was
        appended) is dropped with a warning naming it.
        """
        if not self.path.exists():
            return
        kept = []
        text = self.path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(
                    f"{self.path}: line {number} is not a complete log event (a torn write); "
                    f"dropped: {line[:80]!r}",
                    stacklevel=3,
                )
                continue
            if isinstance(event, dict) and event.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def event(self, kind: str, step: int, **values: Any) -> None:
        """Log one event as a JSON line ``{"event": kind, "step": step, "time": ..., **values}``."""
        record = {"event": kind, "step": step, "time": round(time.time(), 3), **values}
        self._handle.write(json.dumps(record, default=float) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
