"""A run's log: JSON lines, one object per event (the :class:`~adasp.engine.callbacks.JsonlLogger`
callback writes it on rank 0)."""

from __future__ import annotations

import contextlib
import errno
import json
import time
import warnings
from pathlib import Path
from typing import Any

from adasp.errors import UserInputError
from adasp.utils.atomic import atomic_write_text


class RunLog:
    """Appends events to a JSON-lines file.

    Args:
        path: the log file (``RunFolder.log``).
        resume_step: the step the run continues after (0 when it starts from the beginning,
            as after a kill before the first checkpoint); later events, which the run logs
            again, are dropped. None keeps the log as it is.
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
            event_step = event.get("step", 0) if isinstance(event, dict) else None
            if isinstance(event_step, bool) or not isinstance(event_step, int):
                # Not an event this log wrote (edited by hand): it cannot be ordered.
                warnings.warn(
                    f"{self.path}: line {number} has no step number (step {event_step!r}); "
                    f"dropped: {line[:80]!r}",
                    stacklevel=3,
                )
                continue
            if event_step <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def event(self, kind: str, step: int, **values: Any) -> None:
        """Log one event as a JSON line ``{"event": kind, "step": step, "time": ..., **values}``."""
        record = {"event": kind, "step": step, "time": round(time.time(), 3), **values}
        try:
            self._handle.write(json.dumps(record, default=float) + "\n")
            self._handle.flush()
        except OSError as error:
            raise self._write_error(error) from None

    def _write_error(self, error: OSError) -> UserInputError:
        problem = (
            "no space left on the device"
            if error.errno == errno.ENOSPC
            else f"cannot write ({error.strerror or error})"
        )
        return UserInputError(
            f"{problem} while writing {self.path}; the last checkpoint is intact (a torn last "
            "log line is dropped on resume): free space and run again with --resume"
        )

    def close(self) -> None:
        # A write that failed (reported by event) leaves its line buffered; closing would
        # raise the same error again and hide the first report.
        with contextlib.suppress(OSError):
            self._handle.close()
