"""Export a trained model to ONNX (dynamic batch) and check it with onnxruntime.

The exported graph takes images that are already normalised with the run's data.mean and
data.std (unless --include-normalization, which puts that step inside the graph and then
takes RGB values in [0, 1]); the choice and the mean/std are stored in the ONNX metadata.

Examples:
  adasp export --checkpoint runs/q/model.pt --output runs/q/model.onnx
  adasp export --config market1501/ce-adasp --checkpoint model.pt --output model.onnx --include-normalization
"""

from __future__ import annotations

import argparse

HELP = "export a model to ONNX and verify it against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="preset or YAML (default: the checkpoint's own config)")
    parser.add_argument("--checkpoint", required=True, help="model.pt or checkpoints/last.pt")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: exporter's)")
    parser.add_argument(
        "--include-normalization",
        action="store_true",
        help="put the mean/std normalisation inside the graph (input: RGB in [0, 1])",
    )
    parser.add_argument("--atol", type=float, default=1e-4, help="allowed max |ONNX - PyTorch|")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. model.neck_feat=before",
    )


def run(args: argparse.Namespace) -> int:
    import math

    from adasp.cli.common import claim_output_file
    from adasp.errors import UserInputError
    from adasp.models.export import check_opset

    if not (math.isfinite(args.atol) and args.atol >= 0):
        raise UserInputError(f"--atol must be >= 0 (a finite number), got {args.atol:g}")
    check_opset(args.opset)
    with claim_output_file(args.output):  # checked (and its run folder locked) before any work
        return _export(args)


def _export(args: argparse.Namespace) -> int:
    import contextlib
    import os
    from pathlib import Path

    import torch

    from adasp.engine.inference import (
        build_inference_model,
        inference_preprocessing,
        resolve_run_config,
    )
    from adasp.errors import UserInputError
    from adasp.models.export import ExportVerificationError, export_onnx, verify_onnx

    config, checkpoint = resolve_run_config(args.config, args.checkpoint, list(args.overrides))
    model = build_inference_model(config, checkpoint, torch.device("cpu"), args.checkpoint)
    preprocessing = inference_preprocessing(config, checkpoint)
    size = preprocessing.image_size
    # The graph is fed RGB in 0..1 (normalised inside or outside it), whatever pixel range the
    # model was trained with: its statistics are expressed for that range.
    mean, std = preprocessing.unit_mean, preprocessing.unit_std
    path = Path(args.output).expanduser()
    # Written beside the output and verified there: a failed check leaves the previous
    # (verified) file as it was.
    unverified = path.with_name(f".{path.name}.{os.getpid()}.unverified.onnx")
    try:
        export_onnx(
            model,
            unverified,
            image_size=size,
            opset=args.opset,
            include_normalization=args.include_normalization,
            mean=mean,
            std=std,
        )
        # A batch of 3 where the graph was traced with 2: checks the dynamic batch too.
        diff = verify_onnx(model, unverified, image_size=size, batch_size=3, atol=args.atol)
        os.replace(unverified, path)
    except ExportVerificationError as error:
        raise UserInputError(f"{error}; {path} is unchanged (the export was not kept)") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            unverified.unlink()
    where = (
        "inside the graph (input: RGB in [0, 1])"
        if args.include_normalization
        else f"outside the graph (input: RGB in [0, 1] resized {preprocessing.interpolation}ly, "
        f"normalised with mean {mean}, std {std})"
    )
    print(f"exported {path} (input 1x3x{size[0]}x{size[1]}, dynamic batch; normalisation {where})")
    print(
        f"verified with onnxruntime: max |ONNX - PyTorch| = {diff:.2e} <= {args.atol:g} on a "
        "random batch of 3"
    )
    return 0
