"""The dataset registry: names -> builders, option checking, and descriptions of each layout."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
from adasp.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """What ``adasp datasets`` shows about a dataset, registered with it
    (``DATASETS.info(name)``).

    Attributes:
        description: one line, e.g. ``"Market-1501: 1,501 people, 6 cameras"``.
        layout: the folder layout the builder expects (a few lines).
        allowed_values: option -> its closed set of values, checked before the builder runs
            and listed in descriptions and error messages.
    """

    description: str
    layout: str = ""
    allowed_values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


#: Dataset name -> builder ``builder(root, *, option=default, ..., verify_images=False,
#: skip_unreadable=False) -> ReIDDataset``, with a :class:`DatasetInfo`. Register your own
#: with ``@DATASETS.register("name", info=DatasetInfo(...))`` (see :mod:`adasp.plugins`).
DATASETS: Registry[Callable[..., ReIDDataset]] = Registry("dataset")
DATASETS.register(
    "market1501",
    load_market1501,
    info=DatasetInfo("Market-1501: 1,501 people, 6 cameras", MARKET1501_LAYOUT),
)
DATASETS.register(
    "dukemtmc",
    load_dukemtmc,
    info=DatasetInfo("DukeMTMC-reID: 1,404 people, 8 cameras", DUKEMTMC_LAYOUT),
)
DATASETS.register(
    "cuhk03",
    load_cuhk03,
    info=DatasetInfo(
        "CUHK03, new protocol (767/700 people)", CUHK03_LAYOUT, {"split": CUHK03_SPLITS}
    ),
)
DATASETS.register(
    "msmt17",
    load_msmt17,
    info=DatasetInfo(
        "MSMT17 V1 or V2: 4,101 people, 15 cameras",
        MSMT17_LAYOUT,
        {"version": MSMT17_VERSIONS, "use_val": (True, False)},
    ),
)
DATASETS.register(
    "veri776", load_veri776, info=DatasetInfo("VeRi-776: 776 vehicles, 20 cameras", VERI776_LAYOUT)
)
DATASETS.register(
    "vehicleid",
    load_vehicleid,
    info=DatasetInfo(
        "VehicleID: 26,267 vehicles, no cameras",
        VEHICLEID_LAYOUT,
        {"test_size": VEHICLEID_TEST_SIZES, "trial": tuple(range(VEHICLEID_TRIALS))},
    ),
)
DATASETS.register(
    "veriwild",
    load_veriwild,
    info=DatasetInfo(
        "VERI-WILD: 40,671 vehicles, 174 cameras",
        VERIWILD_LAYOUT,
        {"test_size": VERIWILD_TEST_SIZES},
    ),
)
DATASETS.register(
    "folder",
    load_folder,
    info=DatasetInfo("your own data: ROOT/{train,query,gallery}/<identity>/<file>", FOLDER_LAYOUT),
)
DATASETS.register(
    "synthetic",
    load_synthetic,
    info=DatasetInfo("synthetic pedestrians, generated on first use", SYNTHETIC_LAYOUT),
)


def _info(name: str) -> DatasetInfo:
    info = DATASETS.info(name)
    # A dataset registered without a DatasetInfo is described by its name alone.
    return info if isinstance(info, DatasetInfo) else DatasetInfo("")


#: Options every builder takes (image verification), listed once rather than per dataset.
_COMMON_OPTIONS = ("verify_images", "skip_unreadable")


def dataset_names() -> list[str]:
    """The registered dataset names, in registry order."""
    return DATASETS.names()


def dataset_options(name: str) -> dict[str, Any]:
    """The keyword options of dataset ``name`` with their defaults.

    Raises:
        UserInputError: an unknown name, listing the allowed ones.
    """
    parameters = inspect.signature(DATASETS.get(name)).parameters
    return {
        p.name: p.default for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def describe_dataset(name: str) -> str:
    """A few lines on dataset ``name``: what it is, its options (defaults, allowed values)
    and the layout it expects."""
    info = _info(name)
    lines = [f"{name}: {info.description}" if info.description else name]
    for option, default in dataset_options(name).items():
        if option in _COMMON_OPTIONS:
            continue
        allowed = info.allowed_values.get(option)
        choices = f" (one of {', '.join(map(str, allowed))})" if allowed else ""
        lines.append(f"  option {option}={default!r}{choices}")
    lines.append("  options of every dataset: verify_images=False, skip_unreadable=False")
    if info.layout:
        lines.append("  layout:")
        lines += ["  " + line for line in info.layout.splitlines()]
    return "\n".join(lines)


def build_dataset(name: str, root: str | os.PathLike, **options: Any) -> ReIDDataset:
    """Load dataset ``name`` from ``root`` (the dataset folder or the folder holding it).

    Options are keyword arguments of the builder (see :func:`describe_dataset` and
    ``docs/datasets.md``); every builder accepts ``verify_images`` and ``skip_unreadable``.

    Raises:
        UserInputError: unknown name or option (listing the allowed ones), an invalid option
            value, or a dataset that does not match its layout (naming the paths checked).
    """
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserInputError(
            f"dataset {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    allowed_values = _info(name).allowed_values
    for option, value in options.items():
        choices = allowed_values.get(option)
        if choices is not None and value not in choices:
            raise UserInputError(
                f"dataset {name!r}: {option}={value!r} is not allowed; allowed: "
                f"{', '.join(map(str, choices))}"
            )
    return DATASETS.get(name)(root, **options)


#: Where ``--dataset synthetic`` generates its images when no root is given.
DEFAULT_SYNTHETIC_ROOT = Path("~/.cache/adasp/synthetic")


def dataset_root(dataset: str, root: str | os.PathLike | None) -> Path:
    """The root folder of ``dataset``: the given one, or the synthetic set's cache folder.

    Raises:
        UserInputError: no root for a dataset other than ``synthetic``.
    """
    if root:
        return Path(root).expanduser()
    if dataset == "synthetic":
        return DEFAULT_SYNTHETIC_ROOT.expanduser()
    raise UserInputError(
        f"no root folder given for dataset {dataset!r}: pass --root DIR (the folder that holds "
        "the dataset, or the dataset folder itself) or set data.root in the config"
    )
