"""Embed the images of a dataset split or of a folder and save them, with their paths,
identities and cameras, to an .npz file (the input of `adasp search`).

Examples:
  adasp extract --checkpoint runs/q/model.pt --split test --output runs/q/test.npz
  adasp extract --checkpoint model.pt --folder ~/photos/crops --output crops.npz
"""

from __future__ import annotations

import argparse

from adasp.cli.common import (
    add_config_arguments,
    add_device_argument,
    claim_output_file,
    overrides_from,
    show_progress,
)

HELP = "save embeddings of a split or a folder to an .npz file"
SPLITS = ("query", "gallery", "test", "train", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, config_required=False)
    parser.add_argument("--checkpoint", help="model.pt or checkpoints/last.pt of a run")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--split", choices=SPLITS, default="test", help="dataset split (test = query + gallery)"
    )
    source.add_argument(
        "--folder",
        help="embed every image under this folder instead (identity = the image's folder, "
        "camera = the number before '_' in its name: the rules of the folder dataset)",
    )
    parser.add_argument("--output", required=True, help="the .npz file to write")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from adasp.data.folder import list_folder_images
    from adasp.engine.builders import build_datasets, build_evaluator
    from adasp.engine.distributed import init_distributed, shutdown_distributed
    from adasp.engine.inference import (
        build_inference_model,
        inference_preprocessing,
        resolve_run_config,
    )
    from adasp.evaluation import save_embeddings
    from adasp.evaluation.extraction import NonFiniteEmbeddingsError

    with claim_output_file(args.output):  # before any embedding is computed
        ctx = None
        try:
            config, checkpoint = resolve_run_config(
                args.config, args.checkpoint, overrides_from(args)
            )
            ctx = init_distributed(args.device)
            if args.folder:
                samples, splits = list_folder_images(args.folder), None
            else:
                dataset = build_datasets(config.data)
                parts = {
                    "query": ["query"],
                    "gallery": ["gallery"],
                    "test": ["query", "gallery"],
                    "train": ["train"],
                    "all": ["train", "query", "gallery"],
                }[args.split]
                samples, splits = [], []
                for part in parts:
                    chosen = getattr(dataset, part)
                    samples += list(chosen)
                    splits += [part] * len(chosen)
            model = build_inference_model(config, checkpoint, ctx.device, args.checkpoint)
            transform = inference_preprocessing(config, checkpoint).transform()
            evaluator = build_evaluator(config, test_sets=[], transform=transform)
            try:
                features = evaluator.embed(
                    model, samples, ctx.device, progress=ctx.is_main and show_progress(args)
                )
            except NonFiniteEmbeddingsError as error:
                raise NonFiniteEmbeddingsError(f"{args.checkpoint}: {error}") from None
            if ctx.is_main:
                save_embeddings(
                    args.output,
                    features.numpy(),
                    [s.pid for s in samples],
                    [s.camid for s in samples],
                    [s.path for s in samples],
                    splits,
                )
                print(
                    f"wrote {len(samples)} embeddings of dimension {features.shape[1]} to {args.output}"
                )
        finally:
            if ctx is not None:
                shutdown_distributed()
    return 0
