"""Tables (in the shape of the supplementary's Tables S2-S4) and plots (metric against the
swept value; Figure S1's bars of the drop relative to the best value) of a sweep folder.

A sweep with seeds (adasp sweep --seeds N) is aggregated over them: mean ± std per
combination of the other axes in report.md, summary.md and summary.csv, error bars on the
plots, and with --baseline KEY=VALUE the paired per-seed difference of every other combination
against the baseline with a 95 % Student t-interval, stated as distinguishable from seed noise
or not.

With --html, also FOLDER/report.html: the runs' table (sortable), the plots and links to the
runs' own results pages (adasp evaluate --html), in one file that opens offline.

Examples:
  adasp report runs/table-s4
  adasp report runs/table-s4 --html
  adasp report runs/seeds --baseline loss.name=triplet

A tuning folder (adasp sweep --group ...) gets its selection tables (every cell tried, the
winner marked, the budget per group) and the selected recipes over seeds, with paired
differences against each --baseline group (VALUE or KEY=VALUE).
"""

from __future__ import annotations

import argparse

HELP = "tables and plots of a sweep folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="the --output folder of adasp sweep")
    parser.add_argument(
        "--metrics", nargs="+", default=["mAP", "rank1"], help="metrics to show (mAP rank1)"
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the cell other cells are compared with, seed by seed (repeatable for several "
        "keys; axes not named keep each cell's own value)",
    )
    parser.add_argument(
        "--html", action="store_true", help="also write FOLDER/report.html (opens offline)"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adasp.engine.sweep import collect_results, read_manifest
    from adasp.engine.tuning import is_tuning_folder, load_tuning
    from adasp.evaluation.sweep_report import write_report
    from adasp.evaluation.tuning_report import baseline_groups, write_tuning_report

    if is_tuning_folder(args.folder):
        summary = load_tuning(args.folder).summary()
        paths = write_tuning_report(
            args.folder,
            summary,
            args.metrics,
            baseline_groups(args.baseline, summary.group_key),
        )
        print(Path(paths["report"]).read_text())
        for name, path in paths.items():
            print(f"{name}: {path}")
        return 0
    manifest, rows = read_manifest(args.folder), collect_results(args.folder)
    paths = write_report(args.folder, manifest, rows, args.metrics, baseline=args.baseline)
    if args.html:
        from adasp.evaluation.sweep_page import write_sweep_page

        paths["page"] = write_sweep_page(args.folder, manifest, rows, dict(paths))
    print(Path(paths["report"]).read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
