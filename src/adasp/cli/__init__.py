"""The ``adasp`` command line: one module per sub-command.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and keeps heavy imports inside ``run`` so that ``adasp --help`` is fast.
Bad input (:class:`adasp.errors.UserInputError`) is reported as one clear message with exit
status 2; ``adasp --debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from adasp import __version__
from adasp.errors import UserInputError

#: Sub-command name -> module implementing it.
COMMANDS: dict[str, str] = {
    "train": "adasp.cli.train",
    "evaluate": "adasp.cli.evaluate",
    "extract": "adasp.cli.extract",
    "search": "adasp.cli.search",
    "export": "adasp.cli.export",
    "datasets": "adasp.cli.datasets",
    "sweep": "adasp.cli.sweep",
    "report": "adasp.cli.report",
    "harmful-pairs": "adasp.cli.harmful_pairs",
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="adasp",
        description="Re-identification with the Sparse Pairwise loss family (SP-H, SP-LH, AdaSP).",
    )
    parser.add_argument("--version", action="version", version=f"adasp {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks for input errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=(module.__doc__ or module.HELP).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``adasp`` and ``python -m adasp``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserInputError as error:
        if args.debug:
            raise
        print(f"adasp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adasp {args.command}: interrupted", file=sys.stderr)
        return 130
