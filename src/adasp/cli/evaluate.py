"""Evaluate a model (trained, or untrained when no checkpoint is given) on the configured test
sets and write OUT/metrics.json; optionally draw ranked lists and the CMC curve.

Examples:
  adasp evaluate --checkpoint runs/quickstart/model.pt --output runs/quickstart/eval
  adasp evaluate --config market1501/adasp --root ~/data --checkpoint model.pt --output eval
  adasp evaluate --config quickstart --output runs/untrained       # the untrained baseline
  adasp evaluate --checkpoint model.pt --output eval --visualize 10 eval.rerank=true
"""

from __future__ import annotations

import argparse

from adasp.cli.common import (
    add_config_arguments,
    add_device_argument,
    claim_output_dir,
    overrides_from,
)

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
    parser.add_argument("--topk", type=int, default=10, help="gallery images per ranked list")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adasp.engine.builders import build_evaluator
    from adasp.engine.distributed import init_distributed, shutdown_distributed
    from adasp.engine.inference import build_inference_model, resolve_run_config
    from adasp.engine.run_folder import RunFolder
    from adasp.evaluation.results import metrics_by_test_set, write_metrics
    from adasp.evaluation.tables import titled_results_table

    with claim_output_dir(args.output):
        ctx = None
        try:
            config, checkpoint = resolve_run_config(
                args.config, args.checkpoint, overrides_from(args)
            )
            ctx = init_distributed(args.device)
            model = build_inference_model(config, checkpoint, ctx.device, args.checkpoint)
            evaluator = build_evaluator(config)
            results = evaluator.evaluate(
                model, ctx.device, ctx.is_main, args.visualize > 0, ranks=ctx.ranks
            )
            if not ctx.is_main:
                return 0
            out = Path(args.output)
            metrics = metrics_by_test_set(results)
            write_metrics(RunFolder(out).metrics, metrics, checkpoint=args.checkpoint)
            title = "trained model" if args.checkpoint else "untrained model (no checkpoint)"
            print(titled_results_table(metrics, f"evaluation of the {title}"))
            if args.visualize > 0:
                from adasp.evaluation.visual_results import write_visual_results

                paths = write_visual_results(
                    results[0], out, args.visualize, args.topk, **evaluator.ranking.keywords()
                )
                print(
                    f"wrote {len(paths) - 1} ranked lists to {out / 'ranked_lists'} and {paths[-1]}"
                )
            print(f"metrics: {RunFolder(out).metrics}")
        finally:
            if ctx is not None:
                shutdown_distributed()
    return 0
