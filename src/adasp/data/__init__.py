"""Datasets, sampling and loading: the seven ReID benchmarks, the generic folder format, the
synthetic default dataset, the P×K sampler, augmentation and data loaders.

Example:
    >>> from adasp.data import build_dataset, PKSampler, build_train_transform, build_train_loader
    >>> data = build_dataset("market1501", "~/datasets")
    >>> print(data.summary())
    >>> sampler = PKSampler([s.pid for s in data.train], batch_size=64, num_instances=8)
    >>> loader = build_train_loader(data.train, sampler, build_train_transform())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adasp.data.folder import list_folder_images
    from adasp.data.images import find_unreadable, read_image
    from adasp.data.loading import (
        ImageDataset,
        TrainLoader,
        build_test_loader,
        build_train_loader,
        collate_batch,
        one_intra_op_thread,
    )
    from adasp.data.registry import (
        DATASETS,
        DEFAULT_SYNTHETIC_ROOT,
        DatasetInfo,
        build_dataset,
        dataset_names,
        dataset_options,
        dataset_root,
        describe_dataset,
    )
    from adasp.data.sample import ReIDDataset, Sample, relabel
    from adasp.data.sampler import PKSampler
    from adasp.data.synthetic import generate_synthetic_dataset, synthetic_dataset_folder
    from adasp.data.transforms import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        build_test_transform,
        build_train_transform,
    )
    from adasp.data.vehicleid import vehicleid_trial_split

# Imported on first use (PEP 562): `adasp datasets` and the config checks read the
# registry without importing torch and torchvision (several seconds).
_EXPORTS: dict[str, str] = {
    "list_folder_images": "adasp.data.folder",
    "find_unreadable": "adasp.data.images",
    "read_image": "adasp.data.images",
    "ImageDataset": "adasp.data.loading",
    "TrainLoader": "adasp.data.loading",
    "build_test_loader": "adasp.data.loading",
    "build_train_loader": "adasp.data.loading",
    "collate_batch": "adasp.data.loading",
    "one_intra_op_thread": "adasp.data.loading",
    "DATASETS": "adasp.data.registry",
    "DEFAULT_SYNTHETIC_ROOT": "adasp.data.registry",
    "DatasetInfo": "adasp.data.registry",
    "build_dataset": "adasp.data.registry",
    "dataset_names": "adasp.data.registry",
    "dataset_options": "adasp.data.registry",
    "dataset_root": "adasp.data.registry",
    "describe_dataset": "adasp.data.registry",
    "ReIDDataset": "adasp.data.sample",
    "Sample": "adasp.data.sample",
    "relabel": "adasp.data.sample",
    "PKSampler": "adasp.data.sampler",
    "generate_synthetic_dataset": "adasp.data.synthetic",
    "synthetic_dataset_folder": "adasp.data.synthetic",
    "IMAGENET_MEAN": "adasp.data.transforms",
    "IMAGENET_STD": "adasp.data.transforms",
    "build_test_transform": "adasp.data.transforms",
    "build_train_transform": "adasp.data.transforms",
    "vehicleid_trial_split": "adasp.data.vehicleid",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adasp.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DATASETS",
    "DEFAULT_SYNTHETIC_ROOT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetInfo",
    "ImageDataset",
    "PKSampler",
    "ReIDDataset",
    "Sample",
    "TrainLoader",
    "build_dataset",
    "build_test_loader",
    "build_test_transform",
    "build_train_loader",
    "build_train_transform",
    "collate_batch",
    "dataset_names",
    "dataset_options",
    "dataset_root",
    "describe_dataset",
    "find_unreadable",
    "generate_synthetic_dataset",
    "list_folder_images",
    "one_intra_op_thread",
    "read_image",
    "relabel",
    "synthetic_dataset_folder",
    "vehicleid_trial_split",
]
