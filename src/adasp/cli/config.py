"""Print the resolved configuration (the preset or YAML file with its _base_ files merged, then
--dataset/--root and key=value overrides applied): exactly what adasp train would run, as
YAML. It is validated as train validates it (keys, types, ranges, names, loss options), so a
mistake shows here, in one line, without starting anything; --check-data also reads the
dataset's file lists.

Examples:
  adasp config --config market1501/adasp
  adasp config --config my.yaml loss.temperature=0.05 > resolved.yaml
  adasp config --config quickstart --dataset market1501 --root ~/datasets --check-data
"""

from __future__ import annotations

import argparse

from adasp.cli.common import add_config_arguments

HELP = "print the resolved config and validate it, without training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, config_required=True)
    parser.add_argument(
        "--check-data",
        action="store_true",
        help="also find the dataset on disk and read its file lists (no images are decoded)",
    )


def run(args: argparse.Namespace) -> int:
    import yaml

    from adasp.cli.common import overrides_from
    from adasp.engine.config import load_config

    config = load_config(args.config, overrides_from(args))
    print(yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip())
    summary = (
        f"# valid: {config.model.backbone} backbone, loss {config.loss.name}, dataset "
        f"{config.data.dataset}, {config.schedule.epochs} epochs"
    )
    if args.check_data:
        from adasp.engine.builders import build_datasets

        dataset = build_datasets(config.data)
        summary += (
            f"; {dataset.name} found at {dataset.root}: {len(dataset.train)} train, "
            f"{len(dataset.query)} query, {len(dataset.gallery)} gallery images"
        )
    print(summary)
    return 0
