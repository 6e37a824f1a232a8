"""Convert a model trained with fast-reid or torchreid into an adasp model file.

Examples:
  adasp convert --from fastreid --config logs/market/agw/config.yaml \\
      --weights logs/market/agw/model_final.pth --output agw.pt
  adasp convert --from torchreid --arch osnet_x1_0 --weights model.pth.tar-60 --output osnet.pt

The output is read by evaluate, extract, search, export and adasp.FeatureExtractor, and
model.pretrained=<output> fine-tunes from it. See docs/switching.md.
"""

from __future__ import annotations

import argparse

from adasp.cli.common import claim_output_file

HELP = "convert a fast-reid or torchreid model into an adasp model file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="peer", required=True, choices=("fastreid", "torchreid"))
    parser.add_argument("--weights", required=True, help="the peer's checkpoint file")
    parser.add_argument("--output", required=True, help="the adasp model file to write")
    parser.add_argument("--config", help="fast-reid: the config.yaml it dumped beside the weights")
    parser.add_argument("--arch", help="torchreid: the model name, e.g. osnet_x1_0")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(256, 128),
        metavar=("HEIGHT", "WIDTH"),
        help="torchreid: the training input size (its files do not record it; default 256 128)",
    )


def run(args: argparse.Namespace) -> int:
    from adasp.engine.model_conversion import fine_tune_overrides, write_converted_model
    from adasp.errors import UserInputError
    from adasp.models.convert_fastreid import convert_fastreid
    from adasp.models.convert_torchreid import convert_torchreid

    if args.peer == "fastreid" and not args.config:
        raise UserInputError("--from fastreid needs --config (the config.yaml fast-reid dumped)")
    if args.peer == "torchreid" and not args.arch:
        raise UserInputError("--from torchreid needs --arch (e.g. osnet_x1_0)")
    with claim_output_file(args.output):
        if args.peer == "fastreid":
            conversion = convert_fastreid(args.config, args.weights)
        else:
            conversion = convert_torchreid(args.arch, args.weights, tuple(args.image_size))
        content = write_converted_model(conversion, args.output)
    pre = conversion.preprocessing
    options = conversion.model_options
    print(
        f"wrote {args.output}: {conversion.source} as backbone {options['backbone']}, "
        f"{len(content['model'])} tensors, classifier "
        f"{'kept (' + str(conversion.num_classes) + ' identities)' if conversion.num_classes else 'dropped'}"
    )
    print(
        f"preprocessing: {pre.image_size[0]}x{pre.image_size[1]} {pre.interpolation}, "
        f"pixels 0..{pre.pixel_range:g}, mean {pre.mean}, std {pre.std}"
    )
    for line in conversion.dropped:
        print(f"dropped {line}")
    print("fine-tune with: " + " ".join(fine_tune_overrides(conversion, args.output)))
    return 0
