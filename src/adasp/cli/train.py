"""Train a model from a config; evaluate it; write metrics, checkpoints and logs.

Examples:
  adasp train --config quickstart --output runs/quickstart
  adasp train --config market1501/adasp --root ~/data --output runs/market-adasp
  adasp train --config quickstart --output runs/q loss.temperature=0.05 schedule.epochs=10
  torchrun --nproc_per_node=4 -m adasp train --config msmt17/adasp --root ~/data --output runs/m

A run killed at any moment continues from its last checkpoint with the same command plus
--resume, and ends with the same metrics.
"""

from __future__ import annotations

import argparse

from adasp.cli.common import (
    add_config_arguments,
    add_device_argument,
    overrides_from,
    show_progress,
)

HELP = "train and evaluate a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, config_required=True)
    parser.add_argument("--output", required=True, help="run folder for checkpoints, logs, metrics")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run --output holds (without it a finished run is never overwritten)",
    )
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from adasp.engine.config import load_config
    from adasp.engine.distributed import rank_timeout_error, shutdown_distributed
    from adasp.engine.trainer import Trainer
    from adasp.evaluation.results import read_metrics
    from adasp.evaluation.tables import titled_results_table

    config = load_config(args.config, overrides_from(args))
    try:
        trainer = Trainer.from_config(
            config,
            args.output,
            device=args.device,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=show_progress(args),
        )
        metrics = trainer.fit()
        if trainer.ctx.is_main:
            epoch = metrics["epoch"]
            print(titled_results_table(read_metrics(metrics), f"results after epoch {epoch}"))
            print(f"outputs: {trainer.output_dir} ({', '.join(trainer.run_folder.present())})")
    except RuntimeError as error:
        timeout = rank_timeout_error(error, config.train.ddp_timeout_s)
        if timeout is None:
            raise
        raise timeout from None
    finally:
        shutdown_distributed()
        sys.stdout.flush()
    return 0
