"""Simulate the supplementary's harmful-pair model: how often do dense and Sparse Pairwise
sampling pick a harmful positive pair (one with no shared visual cue)?

Examples:
  adasp harmful-pairs --ids 16 --instances 8 --harmful 3 --trials 2000
  adasp harmful-pairs --instances 8 --json
  adasp harmful-pairs --instances 8 --sweep --output runs/harmful-pairs
"""

from __future__ import annotations

import argparse
import json

HELP = "simulate how often SP and dense sampling pick harmful positive pairs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ids", type=int, default=16, help="N identities per batch (16)")
    parser.add_argument("--instances", type=int, default=8, help="M instances per identity (8)")
    parser.add_argument(
        "--harmful",
        type=int,
        default=3,
        help="K harmful pairs per identity (3; ignored by --sweep)",
    )
    parser.add_argument("--trials", type=int, default=2000, help="T simulated batches (2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="run every K from 0 to M(M-1)/2 and write a table and a plot",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="folder for the --sweep files (default: harmful-pairs-M<M>)",
    )


def run(args: argparse.Namespace) -> int:
    from adasp.analysis.harmful_pairs import (
        check_model,
        check_work,
        simulate_harmful_pairs,
        sweep_harmful_pairs,
    )
    from adasp.analysis.harmful_pairs_report import (
        result_table,
        sweep_findings,
        sweep_table,
        write_sweep,
    )

    check_work(args.ids, args.instances, args.trials, sweep=args.sweep)  # before any file
    if args.sweep:
        from adasp.cli.common import claim_output_dir

        check_model(args.ids, args.instances, 0, args.trials)
        out = args.output or f"harmful-pairs-M{args.instances}"
        with claim_output_dir(out):  # checked before the simulation, not after it
            results = sweep_harmful_pairs(args.ids, args.instances, args.trials, args.seed)
            paths = write_sweep(results, out)
        if args.json:
            print(json.dumps([r.to_dict() for r in results], indent=2))
            return 0
        print(
            f"Harmful-pair sweep: N = {args.ids} identities, M = {args.instances} instances, "
            f"T = {args.trials} trials, seed {args.seed}"
        )
        print(sweep_table(results))
        print()
        for line in sweep_findings(results):
            print(line)
        print()
        for kind, path in paths.items():
            print(f"{kind}: {path}")
        return 0
    result = simulate_harmful_pairs(args.ids, args.instances, args.harmful, args.trials, args.seed)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result_table(result))
    return 0
