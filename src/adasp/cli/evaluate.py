"""Evaluate a model (trained, or untrained when no checkpoint is given) on the configured test
sets and write OUT/metrics.json and each query's results (OUT/queries/<test set>.npz: AP,
first-match rank, top-20 gallery items; what adasp compare reads); optionally the results
page (OUT/report.html) and PNG ranked lists with the CMC curve.

Examples:
  adasp evaluate --checkpoint runs/quickstart/model.pt --output runs/quickstart/eval
  adasp evaluate --config market1501/adasp --root ~/data --checkpoint model.pt --output eval
  adasp evaluate --config quickstart --output runs/untrained       # the untrained baseline
  adasp evaluate --checkpoint model.pt --output eval --visualize 10 eval.rerank=true
  adasp evaluate --checkpoint model.pt --output eval --html --visualize-worst 20
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from adasp.cli.common import (
    add_config_arguments,
    add_device_argument,
    claim_output_dir,
    overrides_from,
    show_progress,
)

if TYPE_CHECKING:
    from adasp.evaluation.query_results import QueryResults
    from adasp.evaluation.results import TestSetResult

HELP = "evaluate a model on the configured test sets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, config_required=False)
    parser.add_argument("--checkpoint", help="model.pt or checkpoints/last.pt of a run")
    parser.add_argument("--output", required=True, help="folder for metrics.json and pictures")
    add_device_argument(parser)
    parser.add_argument(
        "--visualize",
        type=int,
        default=0,
        metavar="N",
        help="write ranked-list PNGs of N queries (spread over the query list) and the CMC curve",
    )
    parser.add_argument(
        "--visualize-worst",
        type=int,
        default=0,
        metavar="N",
        help="write ranked-list PNGs of the N queries of lowest AP (and the CMC curve)",
    )
    parser.add_argument(
        "--html",
        action="store_true",
        help="write OUT/report.html: metrics, CMC and every query's ranked list, to browse offline",
    )
    parser.add_argument(
        "--topk",
        type=int,
        default=10,
        help="gallery images per ranked list (1 to 20, the number evaluate keeps per query)",
    )


def run(args: argparse.Namespace) -> int:
    from adasp.engine.builders import build_evaluator
    from adasp.engine.distributed import init_distributed, shutdown_distributed
    from adasp.engine.inference import (
        build_inference_model,
        inference_preprocessing,
        resolve_run_config,
    )
    from adasp.engine.run_folder import RunFolder
    from adasp.errors import UserInputError
    from adasp.evaluation.query_results import KEPT_RANKS
    from adasp.evaluation.results import metrics_by_test_set, write_metrics
    from adasp.evaluation.tables import titled_results_table

    if not 1 <= args.topk <= KEPT_RANKS:
        raise UserInputError(f"--topk must be between 1 and {KEPT_RANKS}; got {args.topk}")
    if args.visualize < 0 or args.visualize_worst < 0:
        raise UserInputError("--visualize and --visualize-worst take a number of queries >= 0")
    with claim_output_dir(args.output):
        ctx = None
        try:
            config, checkpoint = resolve_run_config(
                args.config, args.checkpoint, overrides_from(args)
            )
            ctx = init_distributed(args.device)
            model = build_inference_model(config, checkpoint, ctx.device, args.checkpoint)
            transform = inference_preprocessing(config, checkpoint).transform()
            evaluator = build_evaluator(config, transform=transform)
            results = evaluator.evaluate(
                model,
                ctx.device,
                progress=ctx.is_main and show_progress(args),
                keep_details=True,
                ranks=ctx.ranks,
            )
            if not ctx.is_main:
                return 0
            out = Path(args.output)
            metrics = metrics_by_test_set(results)
            write_metrics(RunFolder(out).metrics, metrics, checkpoint=args.checkpoint)
            title = "trained model" if args.checkpoint else "untrained model (no checkpoint)"
            print(titled_results_table(metrics, f"evaluation of the {title}"))
            queries = write_query_results(out, results, evaluator.ranking.metric)
            if args.visualize > 0 or args.visualize_worst > 0:
                from adasp.evaluation.visual_results import write_visual_results

                if not queries:
                    raise UserInputError(
                        f"--visualize draws single query/gallery splits; {results[0].name} is "
                        "evaluated over several draws"
                    )
                paths = write_visual_results(
                    queries[0],
                    out,
                    args.visualize,
                    args.topk,
                    worst=args.visualize_worst,
                )
                print(
                    f"wrote {len(paths) - 1} ranked lists to {out / 'ranked_lists'} and {paths[-1]}"
                )
            if args.html:
                from adasp.evaluation.results_page import write_results_page

                page = write_results_page(
                    out / "report.html",
                    queries,
                    metrics,
                    title=f"adasp evaluation: {out}",
                    topk=args.topk,
                    notes=f"{title}: {args.checkpoint}" if args.checkpoint else title,
                )
                print(f"results page: {page}")
            print(f"metrics: {RunFolder(out).metrics}")
        finally:
            if ctx is not None:
                shutdown_distributed()
    return 0


def write_query_results(
    out: Path, results: Sequence[TestSetResult], metric: str
) -> list[QueryResults]:
    """Save each single-split test set's per-query results under OUT/queries; returns them."""
    from adasp.evaluation.query_results import QueryResults, query_results_path

    saved = []
    for result in results:
        if result.details is None:  # a draws protocol (VehicleID): no single query list
            continue
        queries = QueryResults.from_evaluation(
            result.name, result.details.result, result.details.dataset, metric
        )
        queries.save(query_results_path(out, result.name))
        saved.append(queries)
    return saved
