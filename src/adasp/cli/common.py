"""Arguments and steps shared by the commands that run a model (train, evaluate, extract...)."""

from __future__ import annotations

import argparse
import contextlib
import json
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
    """Check, before any work, that the file ``path`` can be written; lock its folder when a
    run lives there (one writer per run folder). Release the claim when done."""
    from adasp.engine.run_folder import check_output_file, lock_if_run_folder, missing_folders
    from adasp.utils.distributed import ProcessRanks

    created = missing_folders(Path(path).expanduser().parent)
    target = check_output_file(path, what)
    return OutputClaim(
        lock_if_run_folder(target.parent, enabled=ProcessRanks.current().is_main), created
    )


def claim_output_dir(path: str, what: str = "--output") -> OutputClaim:
    """Create the folder ``path`` and check, before any work, that it can be written; lock it
    when a run lives there. Release the claim when done."""
    from adasp.engine.run_folder import lock_if_run_folder, missing_folders, prepare_output_dir
    from adasp.utils.distributed import ProcessRanks

    created = missing_folders(Path(path).expanduser())
    folder = prepare_output_dir(path, what)
    return OutputClaim(lock_if_run_folder(folder, enabled=ProcessRanks.current().is_main), created)
