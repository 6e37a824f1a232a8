"""Train every combination of a grid of config values and collect their metrics.

Each --grid key=v1,v2,... adds an axis; runs go to OUTPUT/<key>=<value>,.../; finished runs are
skipped and interrupted ones resumed, so the same command completes a sweep.
OUTPUT/results.csv and OUTPUT/results.md collect the metrics; `adasp report OUTPUT` draws them.
--seeds N repeats every combination with train.seed=0..N-1 (the same as --grid
train.seed=0,...,N-1); `adasp report` then gives mean ± std over seeds per combination, and
paired differences against a --baseline combination.

Examples (the supplementary's studies on VeRi-776):
  adasp sweep --config veri776/ce-adasp --root ~/data --grid loss.weight=0.1,0.3,0.5,0.7,0.9 --output runs/table-s3
  adasp sweep --config veri776/ce-adasp --root ~/data --grid loss.temperature=0.01,0.02,0.03,0.04,0.05,0.06,0.07,0.08,0.09 --output runs/table-s4
  adasp sweep --config veri776/adasp --root ~/data --grid loss.name=sp-h,sp-lh,adasp,triplet,supcon,ms,circle,ep --grid data.num_instances=8,16,32 --output runs/figure-s1
  adasp sweep --config quickstart --grid loss.name=adasp,triplet --seeds 3 --output runs/seeds

Tuning with the same budget for every method (--group): each value of the --group axis is a
method; every cell of the shared --grid axes times its own --grid-for axes trains once with
train.seed=0, the cell with the best --select-by metric wins, and the winner trains again with
train.seed=1..N (--seeds N). `adasp report OUTPUT --baseline VALUE` shows the selection and the
paired differences. Tune on a validation split, never on the test set:
  adasp sweep --config cpu/mobilenet --dataset market1501 --root ../shared/data/conreid-train \\
      --group loss.name=none,adasp,triplet --grid loss.weight=0.1,1.0 \\
      --grid-for adasp:loss.temperature=0.04,0.08 \\
      --grid-for "triplet:loss.options={triplet: {margin: 0.3, normalize: false}},{triplet: {margin: 0.3, normalize: true}}" \\
      --select-by mAP --seeds 3 --output runs/tuning
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "train every combination of a grid of config values"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset name or YAML file")
    parser.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="an axis (repeatable)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="repeat every combination with train.seed=0..N-1 (adds a seed axis)",
    )
    parser.add_argument(
        "--group",
        metavar="KEY=V1,V2,...",
        help="tune each value (a method) separately on the grid and compare the selected "
        "recipes over --seeds (see above)",
    )
    parser.add_argument(
        "--grid-for",
        action="append",
        default=[],
        metavar="VALUE:KEY=V1,V2,...",
        help="an axis for one --group value only (repeatable)",
    )
    parser.add_argument(
        "--select-by",
        default="mAP",
        metavar="METRIC",
        help="with --group: the metric that selects each group's cell (default mAP)",
    )
    parser.add_argument("--output", required=True, help="sweep folder")
    parser.add_argument("--dataset", help="dataset name for every run (overrides data.dataset)")
    parser.add_argument("--root", help="dataset root for every run (overrides data.root)")
    parser.add_argument("--device", default="auto", help="device of in-process runs")
    parser.add_argument(
        "--processes", action="store_true", help="run each combination as its own process"
    )
    parser.add_argument("--jobs", type=int, default=1, help="process runs at once (--processes)")
    parser.add_argument(
        "--devices", default="", help="comma-separated devices for process runs, e.g. cuda:0,cuda:1"
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="run again the runs that failed before"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides for every run"
    )


def run(args: argparse.Namespace) -> int:
    from adasp.cli.common import overrides_from
    from adasp.engine.run_folder import RunFolderLock, prepare_output_dir

    # One sweep writes a sweep folder at a time; each run in it takes its own lock too.
    with RunFolderLock(prepare_output_dir(args.output)):
        if args.group is not None:
            return _tune(args, overrides_from(args))
        return _sweep(args, overrides_from(args))


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """How every run of a sweep (or of a tuning's sweeps) is trained."""
    from adasp.cli.common import show_progress

    return {
        "device": args.device,
        "processes": args.processes,
        "jobs": args.jobs,
        "devices": [d for d in args.devices.split(",") if d],
        "retry_failed": args.retry_failed,
        "progress": show_progress(args),
    }


def _tune(args: argparse.Namespace, overrides: list[str]) -> int:
    from adasp.engine.sweep import parse_grid
    from adasp.engine.tuning import Tuning, parse_group_axes
    from adasp.evaluation.tuning_report import write_tuning_report

    groups = parse_grid(args.group)
    tuning = Tuning(
        args.config,
        groups,
        [parse_grid(g) for g in args.grid],
        parse_group_axes(args.grid_for, groups),
        args.output,
        select_by=args.select_by,
        seeds=3 if args.seeds is None else args.seeds,
        overrides=overrides,
        **_run_options(args),
    )
    summary = tuning.run()
    report = write_tuning_report(args.output, summary)["report"]
    unfinished = [s.group for s in summary.selections if s.winner is None] + [
        g for g, seeds in summary.seeded.items() if len(seeds) < summary.seeds
    ]
    for selection in summary.selections:
        print(
            f"{groups.key}={selection.group}: {selection.budget} cells, selected {selection.winner}"
        )
    print(f"report: {report} (adasp report {args.output} --baseline VALUE for paired differences)")
    if unfinished:
        print(f"unfinished: {', '.join(sorted(set(unfinished)))} (run the same command again)")
        return 1
    return 0


def _sweep(args: argparse.Namespace, overrides: list[str]) -> int:
    from adasp.engine.sweep import Sweep, parse_grid, seed_axis
    from adasp.engine.typed_config import ConfigError
    from adasp.evaluation.seed_statistics import SEED_KEY

    if args.grid_for:
        raise ConfigError("--grid-for needs --group (the axis whose values it names)")
    axes = [parse_grid(g) for g in args.grid]
    if args.seeds is not None:
        if any(a.key == SEED_KEY for a in axes):
            raise ConfigError(
                f"--seeds {args.seeds} and --grid {SEED_KEY}=... both set the seeds; use one"
            )
        axes.append(seed_axis(args.seeds))
    sweep = Sweep(
        args.config,
        axes,
        args.output,
        overrides=overrides,
        **_run_options(args),
    )
    rows = sweep.run()
    print(f"{len(rows)} of {len(sweep.runs)} runs finished; results: {sweep.output / 'results.md'}")
    failures = sweep.failures()
    for name, error in failures.items():
        print(f"failed: {name}: {error}")
    for error in sweep.interrupted.values():
        print(f"stopped: {error}")
    if failures:
        print(f"{len(failures)} runs failed (skipped when re-run; --retry-failed runs them again)")
    if failures or sweep.interrupted:
        return 1
    return 0
