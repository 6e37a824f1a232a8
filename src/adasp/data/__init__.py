"""Datasets, sampling and loading: the seven ReID benchmarks, the generic folder format, the
synthetic default dataset, the P×K sampler, augmentation and data loaders.

Example:
    >>> from adasp.data import build_dataset, PKSampler, build_train_transform, build_train_loader
    >>> data = build_dataset("market1501", "~/datasets")
    >>> print(data.summary())
    >>> sampler = PKSampler([s.pid for s in data.train], batch_size=64, num_instances=8)
    >>> loader = build_train_loader(data.train, sampler, build_train_transform())
"""

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
