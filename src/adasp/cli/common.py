"""Arguments and steps shared by the commands that run a model (train, evaluate, extract...)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any


def add_config_arguments(parser: argparse.ArgumentParser, config_required: bool) -> None:
    """``--config``, ``--dataset``, ``--root`` and ``key=value`` overrides (anywhere among the
    flags: :func:`adasp.cli.parse_command_line` collects those after other flags)."""
    parser.add_argument(
        "--config",
        required=config_required,
        help="a preset name (e.g. quickstart, market1501/adasp) or a YAML file",
    )
    parser.add_argument("--dataset", help="dataset name (overrides data.dataset)")
    parser.add_argument("--root", help="dataset root folder (overrides data.root)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides applied last, anywhere among the flags, e.g. "
        "loss.temperature=0.05 schedule.epochs=10",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N"
    )


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they are off by themselves when stderr is not a terminal)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only for a person watching: not with ``--no-progress``, and not when
    stderr goes to a file or a pipe (carriage-return bars would fill it)."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def overrides_from(args: argparse.Namespace) -> list[str]:
    """``--dataset``/``--root`` as overrides, then the user's own (which win)."""
    # JSON strings are YAML strings: a path such as "/data/set #2" or "~" stays as written.
    flags = []
    if args.dataset:
        flags.append(f"data.dataset={json.dumps(args.dataset)}")
        if not args.root:
            # A different dataset must not inherit the preset's root folder.
            flags.append("data.root=null")
    if args.root:
        flags.append(f"data.root={json.dumps(args.root)}")
    return flags + list(args.overrides)


class OutputClaim:
    """An output location claimed before any work: the lock of the run folder there (a no-op
    lock elsewhere) and the folders the claim created.

    ``release(failed=True)``, or leaving a ``with`` block by an exception, also removes the
    folders the claim created while they are still empty, so a command that stops on bad input
    leaves nothing behind.
    """

    def __init__(self, lock: Any, created: list[Path]) -> None:
        self.lock = lock
        self.created = created  # deepest first

    def release(self, failed: bool = False) -> None:
        self.lock.release()
        if failed:
            for folder in self.created:
                with contextlib.suppress(OSError):  # not empty (or gone): keep it
                    folder.rmdir()

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self.release(failed=kind is not None)


def claim_output_file(path: str, what: str = "--output") -> OutputClaim:
    """Check, before any work, that the file ``path`` can be written and is none of a training
    run's own files; lock its folder when a run lives there (one writer per run folder).
    Release the claim when done."""
    from adasp.engine.run_folder import (
        check_not_run_files,
        check_output_file,
        lock_if_run_folder,
        missing_folders,
    )
    from adasp.utils.distributed import ProcessRanks

    check_not_run_files(path, what)
    created = missing_folders(Path(path).expanduser().parent)
    target = check_output_file(path, what)
    return OutputClaim(
        lock_if_run_folder(target.parent, enabled=ProcessRanks.current().is_main), created
    )


def claim_output_dir(path: str, what: str = "--output") -> OutputClaim:
    """Create the folder ``path`` and check, before any work, that it can be written and holds
    no training run; lock it when a run lives there. Release the claim when done."""
    from adasp.engine.run_folder import (
        check_not_run_files,
        lock_if_run_folder,
        missing_folders,
        prepare_output_dir,
    )
    from adasp.utils.distributed import ProcessRanks

    check_not_run_files(path, what, folder=True)
    created = missing_folders(Path(path).expanduser())
    folder = prepare_output_dir(path, what)
    return OutputClaim(lock_if_run_folder(folder, enabled=ProcessRanks.current().is_main), created)
