"""Arguments and steps shared by the commands that run a model (train, evaluate, extract...)."""

from __future__ import annotations

import argparse
import json


def add_config_arguments(parser: argparse.ArgumentParser, config_required: bool) -> None:
    """``--config``, ``--dataset``, ``--root`` and trailing ``key=value`` overrides."""
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
        help="config overrides applied last, e.g. loss.temperature=0.05 schedule.epochs=10",
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
