"""Compare two evaluated runs query by query: how many queries improved, worsened or stayed,
the queries that changed most, and paired bootstrap intervals of ΔmAP and ΔR1 over the
queries. RUN_A and RUN_B are output folders of adasp evaluate (their queries/*.npz) on the
same test set; B is compared with A (Δ = B - A).

Examples:
  adasp compare runs/triplet/eval runs/adasp/eval
  adasp compare runs/triplet/eval runs/adasp/eval --html compare.html --resamples 5000
"""

from __future__ import annotations

import argparse

HELP = "per-query AP differences between two evaluated runs (bootstrap intervals)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", metavar="RUN_A", help="adasp evaluate --output folder (A)")
    parser.add_argument("run_b", metavar="RUN_B", help="adasp evaluate --output folder (B)")
    parser.add_argument("--html", metavar="FILE", help="also write the comparison page FILE")
    parser.add_argument(
        "--test-set", help="compare only this test set (default: every one both runs have)"
    )
    parser.add_argument(
        "--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="|ΔAP| up to which a query counts as the same (default 0.001)",
    )
    parser.add_argument("--top", type=int, default=10, help="largest changes listed (10)")
    parser.add_argument(
        "--topk", type=int, default=10, help="gallery images per ranked list on the page (10)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")


def run(args: argparse.Namespace) -> int:
    import contextlib

    from adasp.cli.common import claim_output_file
    from adasp.errors import UserInputError
    from adasp.evaluation.query_results import KEPT_RANKS, load_evaluation_queries
    from adasp.evaluation.run_comparison import compare_query_results, format_comparison

    runs_a = {q.test_set: q for q in load_evaluation_queries(args.run_a)}
    runs_b = {q.test_set: q for q in load_evaluation_queries(args.run_b)}
    common = [name for name in runs_a if name in runs_b]
    if args.test_set is not None:
        if args.test_set not in common:
            raise UserInputError(
                f"test set {args.test_set!r} is not in both runs; both have: "
                f"{', '.join(common) or 'none'}"
            )
        common = [args.test_set]
    if not common:
        raise UserInputError(
            f"the runs share no test set: A has {', '.join(runs_a)}; B has {', '.join(runs_b)}"
        )
    if args.html and not 1 <= args.topk <= KEPT_RANKS:
        raise UserInputError(f"--topk must be between 1 and {KEPT_RANKS}; got {args.topk}")
    # The page's location is checked (and locked, in a run folder) before any work.
    claim = claim_output_file(args.html, "--html") if args.html else contextlib.nullcontext()
    with claim:
        comparisons = [
            compare_query_results(
                runs_a[name],
                runs_b[name],
                resamples=args.resamples,
                tolerance=args.tolerance,
                seed=args.seed,
            )
            for name in common
        ]
        print(f"A: {args.run_a}\nB: {args.run_b}")
        for comparison in comparisons:
            print()
            print(format_comparison(comparison, args.top))
        if args.html:
            from adasp.evaluation.results_page import write_comparison_page

            page = write_comparison_page(
                args.html,
                comparisons,
                title=f"adasp compare: A = {args.run_a}, B = {args.run_b}",
                topk=args.topk,
            )
            print(f"\ncomparison page: {page}")
    return 0
