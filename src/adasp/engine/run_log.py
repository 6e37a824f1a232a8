"""A run's logs: JSON lines (one object per event) and TensorBoard scalars, on rank 0 only."""

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
    """Appends events to ``OUT/log.jsonl`` and scalars to TensorBoard under ``OUT/tensorboard``.

    Args:
        output_dir: the run folder.
        enabled: False on non-main ranks (then every call is a no-op).
        tensorboard: also write TensorBoard event files.
        resume_step: the step the run continues after (0 when it starts from the beginning,
            as after a kill before the first checkpoint); later events, which the run logs
            again, are dropped. None keeps the log as it is.
    """

    def __init__(
        self,
        output_dir: str | Path,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self.path = Path(output_dir) / "log.jsonl"
        self._writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                self._drop_after(resume_step)
            self._handle = self.path.open("a", encoding="utf-8")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops the events a killed run wrote after its last checkpoint.
                self._writer = SummaryWriter(
                    log_dir=str(Path(output_dir) / "tensorboard"),
                    purge_step=None if resume_step is None else resume_step + 1,
                )

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
        """Log one event: a JSON line, and each numeric value as ``kind/name`` in TensorBoard."""
        if not self.enabled:
            return
        record = {"event": kind, "step": step, "time": round(time.time(), 3), **values}
        try:
            self._handle.write(json.dumps(record, default=float) + "\n")
            self._handle.flush()
        except OSError as error:
            raise self._write_error(error) from None
        if self._writer is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{kind}/{name}", value, step)

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
        if not self.enabled:
            return
        # A write that failed (reported by event) leaves its line buffered; closing would
        # raise the same error again and hide the first report.
        with contextlib.suppress(OSError):
            self._handle.close()
        if self._writer is not None:
            self._writer.close()
