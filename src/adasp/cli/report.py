"""Tables (in the shape of the supplementary's Tables S2-S4) and plots (metric against the
swept value; Figure S1's bars of the drop relative to the best value) of a sweep folder.

Example:
  adasp report runs/table-s4
"""

from __future__ import annotations

import argparse

HELP = "tables and plots of a sweep folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="the --output folder of adasp sweep")
    parser.add_argument(
        "--metrics", nargs="+", default=["mAP", "rank1"], help="metrics to show (mAP rank1)"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adasp.analysis.report import write_report

    paths = write_report(args.folder, args.metrics)
    print(Path(paths["report"]).read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
