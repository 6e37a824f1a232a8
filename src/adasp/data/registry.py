"""The dataset registry: names -> builders, option checking, and descriptions of each layout."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from adasp.data.folder import FOLDER_LAYOUT, load_folder
from adasp.data.market import (
    CUHK03_LAYOUT,
    CUHK03_SPLITS,
    DUKEMTMC_LAYOUT,
    MARKET1501_LAYOUT,
    load_cuhk03,
    load_dukemtmc,
    load_market1501,
)
from adasp.data.msmt17 import MSMT17_LAYOUT, MSMT17_VERSIONS, load_msmt17
from adasp.data.sample import ReIDDataset
from adasp.data.synthetic import SYNTHETIC_LAYOUT, load_synthetic
from adasp.data.vehicleid import (
    VEHICLEID_LAYOUT,
    VEHICLEID_TEST_SIZES,
    VEHICLEID_TRIALS,
    load_vehicleid,
)
from adasp.data.veri776 import VERI776_LAYOUT, load_veri776
from adasp.data.veriwild import VERIWILD_LAYOUT, VERIWILD_TEST_SIZES, load_veriwild
from adasp.errors import UserInputError

#: Dataset name -> builder ``builder(root, **options) -> ReIDDataset``.
DATASETS: dict[str, Callable[..., ReIDDataset]] = {
    "market1501": load_market1501,
    "dukemtmc": load_dukemtmc,
    "cuhk03": load_cuhk03,
    "msmt17": load_msmt17,
    "veri776": load_veri776,
    "vehicleid": load_vehicleid,
    "veriwild": load_veriwild,
    "folder": load_folder,
    "synthetic": load_synthetic,
}

#: Dataset name -> (one-line description, expected layout).
DATASET_INFO: dict[str, tuple[str, str]] = {
    "market1501": ("Market-1501: 1,501 people, 6 cameras", MARKET1501_LAYOUT),
    "dukemtmc": ("DukeMTMC-reID: 1,404 people, 8 cameras", DUKEMTMC_LAYOUT),
    "cuhk03": ("CUHK03, new protocol (767/700 people)", CUHK03_LAYOUT),
    "msmt17": ("MSMT17 V1 or V2: 4,101 people, 15 cameras", MSMT17_LAYOUT),
    "veri776": ("VeRi-776: 776 vehicles, 20 cameras", VERI776_LAYOUT),
    "vehicleid": ("VehicleID: 26,267 vehicles, no cameras", VEHICLEID_LAYOUT),
    "veriwild": ("VERI-WILD: 40,671 vehicles, 174 cameras", VERIWILD_LAYOUT),
    "folder": ("your own data: ROOT/{train,query,gallery}/<identity>/<file>", FOLDER_LAYOUT),
    "synthetic": ("synthetic pedestrians, generated on first use", SYNTHETIC_LAYOUT),
}

#: Options with a closed set of values, for listings and error messages.
_ALLOWED_VALUES: dict[tuple[str, str], tuple[Any, ...]] = {
    ("cuhk03", "split"): CUHK03_SPLITS,
    ("msmt17", "version"): MSMT17_VERSIONS,
    ("msmt17", "use_val"): (True, False),
    ("vehicleid", "test_size"): VEHICLEID_TEST_SIZES,
    ("vehicleid", "trial"): tuple(range(VEHICLEID_TRIALS)),
    ("veriwild", "test_size"): VERIWILD_TEST_SIZES,
}


#: Options every builder takes (image verification), listed once rather than per dataset.
_COMMON_OPTIONS = ("verify_images", "skip_unreadable")


def dataset_names() -> list[str]:
    """The registered dataset names, in registry order."""
    return list(DATASETS)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise UserInputError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")


def dataset_options(name: str) -> dict[str, Any]:
    """The keyword options of dataset ``name`` with their defaults."""
    _check_name(name)
    parameters = inspect.signature(DATASETS[name]).parameters
    return {
        p.name: p.default for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def describe_dataset(name: str) -> str:
    """A few lines on dataset ``name``: what it is, its options (defaults, allowed values)
    and the layout it expects."""
    _check_name(name)
    summary, layout = DATASET_INFO[name]
    lines = [f"{name}: {summary}"]
    for option, default in dataset_options(name).items():
        if option in _COMMON_OPTIONS:
            continue
        allowed = _ALLOWED_VALUES.get((name, option))
        choices = f" (one of {', '.join(map(str, allowed))})" if allowed else ""
        lines.append(f"  option {option}={default!r}{choices}")
    lines.append("  options of every dataset: verify_images=False, skip_unreadable=False")
    lines.append("  layout:")
    lines += ["  " + line for line in layout.splitlines()]
    return "\n".join(lines)


def build_dataset(name: str, root: str | os.PathLike, **options: Any) -> ReIDDataset:
    """Load dataset ``name`` from ``root`` (the dataset folder or the folder holding it).

    Options are keyword arguments of the builder (see :func:`describe_dataset` and
    ``docs/datasets.md``); every builder accepts ``verify_images`` and ``skip_unreadable``.

    Raises:
        UserInputError: unknown name or option (listing the allowed ones), an invalid option
            value, or a dataset that does not match its layout (naming the paths checked).
    """
    _check_name(name)
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserInputError(
            f"dataset {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    for option, value in options.items():
        choices = _ALLOWED_VALUES.get((name, option))
        if choices is not None and value not in choices:
            raise UserInputError(
                f"dataset {name!r}: {option}={value!r} is not allowed; allowed: "
                f"{', '.join(map(str, choices))}"
            )
    return DATASETS[name](root, **options)
