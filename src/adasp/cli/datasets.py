"""List the supported datasets with their options and layouts, or check a dataset on disk.

Examples:
  adasp datasets
  adasp datasets --dataset market1501 --root ~/datasets
  adasp datasets --dataset cuhk03 --root ~/datasets --option split=detected
  adasp datasets --dataset vehicleid --root ~/datasets --option test_size=1600 --option trial=3
  adasp datasets --dataset synthetic --root ~/.cache/adasp/synthetic --option num_identities=200
"""

from __future__ import annotations

import argparse
from typing import Any

from adasp.errors import UserInputError

HELP = "list supported datasets, or check one on disk and print its summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=None, help="dataset name (see the listing)")
    parser.add_argument(
        "--root",
        default=None,
        help="the dataset folder or the folder holding it (synthetic: the cache folder, "
        "default ~/.cache/adasp/synthetic)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dataset option, e.g. split=detected, test_size=1600, use_val=false, "
        "image_size=[128,64] (repeatable)",
    )


def parse_option(text: str) -> tuple[str, Any]:
    """``"test_size=1600"`` -> ``("test_size", 1600)``: values are read as YAML scalars
    (integers, floats, true/false, lists like ``[128,64]``), anything else as a string."""
    from adasp.engine.config import parse_value

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserInputError(f"--option {text!r} is not KEY=VALUE, e.g. --option split=detected")
    value = parse_value(raw)
    if isinstance(value, list):
        value = tuple(value)
    return key, value


def run(args: argparse.Namespace) -> int:
    from adasp.data import build_dataset, dataset_names, describe_dataset

    if args.dataset is None:
        if args.root is not None or args.option:
            raise UserInputError("--root and --option need --dataset NAME")
        print("Supported datasets (adasp datasets --dataset NAME --root DIR to check one):\n")
        print("\n\n".join(describe_dataset(name) for name in dataset_names()))
        return 0
    from adasp.data.registry import dataset_root

    options = dict(parse_option(text) for text in args.option)
    dataset = build_dataset(args.dataset, dataset_root(args.dataset, args.root), **options)
    print(f"{dataset.name} at {dataset.root}")
    if dataset.options:
        print("options: " + ", ".join(f"{k}={v}" for k, v in dataset.options.items()))
    print(dataset.summary())
    notes = [f"training identities relabelled 0..{dataset.num_train_pids - 1}"]
    notes.append(
        "evaluation removes same-identity same-camera gallery images"
        if dataset.camera_filter
        else "no camera information: evaluation filters nothing by camera"
    )
    for mark, paths in dataset.marks.items():
        notes.append(f"{len(paths)} images marked {mark}")
    print("; ".join(notes))
    from adasp.data.duplicates import find_cross_split_duplicates

    duplicates = find_cross_split_duplicates(
        {
            split: [str(s.path) for s in getattr(dataset, split)]
            for split in ("train", "query", "gallery")
        }
    )
    for found in duplicates:
        print(f"duplicates: {found.describe()}")
    if not duplicates:
        print("duplicates: no byte-identical files across train, query and gallery")
    return 0
