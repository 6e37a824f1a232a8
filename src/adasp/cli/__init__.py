"""The ``adasp`` command line: one module per sub-command.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and keeps heavy imports inside ``run`` so that ``adasp --help`` is fast.
Every command takes ``--no-progress``; progress bars are shown only when stderr is a terminal
(:func:`adasp.cli.common.show_progress`). Bad input (:class:`adasp.errors.UserInputError`) is
reported as one clear message with exit
status 2; ``adasp --debug`` shows the traceback instead. ``--plugin MODULE`` (before or after
the command) imports a module that registers datasets, backbones or losses before the
command runs (see :mod:`adasp.plugins`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import sys
import warnings
from collections.abc import Iterator, Sequence

from adasp import __version__
from adasp.cli.common import add_progress_argument
from adasp.errors import UserInputError
from adasp.plugins import load_plugins

#: Sub-command name -> module implementing it.
COMMANDS: dict[str, str] = {
    "train": "adasp.cli.train",
    "evaluate": "adasp.cli.evaluate",
    "compare": "adasp.cli.compare",
    "extract": "adasp.cli.extract",
    "search": "adasp.cli.search",
    "export": "adasp.cli.export",
    "convert": "adasp.cli.convert",
    "datasets": "adasp.cli.datasets",
    "config": "adasp.cli.config",
    "sweep": "adasp.cli.sweep",
    "report": "adasp.cli.report",
    "harmful-pairs": "adasp.cli.harmful_pairs",
}


def _add_plugin_argument(parser: argparse.ArgumentParser, dest: str) -> None:
    # Two dests: a sub-command's values replace, rather than extend, the main parser's.
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        dest=dest,
        metavar="MODULE",
        help="import MODULE first, for the datasets, backbones and losses it registers "
        "(repeatable)",
    )


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
    _add_plugin_argument(parser, "plugins")
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
        add_progress_argument(command)  # every command, so scripts can pass it to any
        _add_plugin_argument(command, "command_plugins")
        command.set_defaults(run=module.run)
    return parser


#: A ``key=value`` config override (not a flag).
OVERRIDE = re.compile(r"^[^-=\s][^=\s]*=")


def parse_command_line(
    argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """Parse ``adasp`` arguments, with ``key=value`` overrides anywhere among the flags.

    argparse gives a sub-command's ``nargs="*"`` positional only the first run of positional
    words (``--output R a=1 --resume b=2`` leaves ``b=2`` over), and ``parse_intermixed_args``
    does not support sub-commands: so the leftovers of ``parse_known_args`` that are
    ``key=value`` words join the command's ``overrides``, after the first run, in command-line
    order (a later override wins). Any other leftover is still an error.

    Raises:
        SystemExit: (status 2, argparse's usage message) for unknown arguments.
    """
    parser = parser or build_parser()
    args, extras = parser.parse_known_args(argv)
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    unknown = [item for item in extras if not (takes_overrides and OVERRIDE.match(item))]
    if takes_overrides:
        args.overrides += [item for item in extras if OVERRIDE.match(item)]
    if unknown:
        hint = ""
        if not takes_overrides and any(OVERRIDE.match(item) for item in unknown):
            hint = f" (adasp {args.command} takes no key=value config overrides)"
        _command_parser(parser, args.command).error(
            f"unrecognized arguments: {' '.join(unknown)}{hint}"
        )
    return args


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-command's own parser (its usage line makes the better error message)."""
    for action in parser._actions:  # argparse keeps sub-parsers in this (stable) action type
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


@contextlib.contextmanager
def _one_line_warnings(command: str, enabled: bool = True) -> Iterator[None]:
    """Show warnings as ``adasp COMMAND: warning: MESSAGE`` (no source line), as errors are.

    Only the formatting changes, so code that records warnings (``catch_warnings``) still does.
    """
    if not enabled:
        yield
        return
    original = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        return f"adasp {command}: warning: {message}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = original


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``adasp`` and ``python -m adasp``; returns the exit status."""
    parser = build_parser()
    args = parse_command_line(argv, parser)
    try:
        with _one_line_warnings(args.command, enabled=not args.debug):
            load_plugins([*args.plugins, *args.command_plugins])
            return int(args.run(args) or 0)
    except UserInputError as error:
        if args.debug:
            raise
        print(f"adasp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adasp {args.command}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:
        message = _distributed_failure(error, args.command)
        if message is None or args.debug:
            raise
        print(f"adasp {args.command}: error: {message}", file=sys.stderr)
        return 1


def _distributed_failure(error: RuntimeError, command: str) -> str | None:
    """The one-line report of a multi-process run whose peer went away (None otherwise)."""
    if "torch.distributed" not in sys.modules:  # no process group: nothing to translate
        return None
    from adasp.engine.distributed import lost_peer_message

    return lost_peer_message(error, command)
