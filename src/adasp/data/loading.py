"""The image ``Dataset`` and the train / test ``DataLoader`` builders."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from adasp.data.images import read_image
from adasp.data.sample import Sample
from adasp.data.seeding import SeededBatches, SeededDataset
from adasp.errors import UserInputError


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread, then restore the count.

    Decoding, augmenting and stacking one batch of small images is far too little work for
    torch's intra-op threads: in the main process (``num_workers=0``) they made loading 10-40×
    slower on a busy 2-core machine (``benchmarks/data_loading.py``). Workers already run with
    one thread. Only the main thread changes the setting, since it is process-wide.
    """
    threads = torch.get_num_threads()
    if threads == 1 or threading.current_thread() is not threading.main_thread():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class ImageDataset(Dataset):
    """Decodes and transforms the images of ``samples``.

    Item ``i`` is ``{"image": Tensor (3, H, W) float, "pid": int, "camid": int, "index": i}``.
    A file that cannot be decoded raises :class:`UserInputError` naming it.

    Args:
        samples: the images.
        transform: applied to the decoded ``uint8`` tensor ``(3, H, W)``, e.g.
            :func:`adasp.data.build_train_transform`; ``None`` returns floats in [0, 1].
        cache_decoded: keep every decoded image in memory (in each worker process) and
            decode each file once: the same items, less CPU from the second epoch on.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Any], torch.Tensor] | None,
        cache_decoded: bool = False,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.cache_decoded = cache_decoded
        self._decoded: dict[int, torch.Tensor] = {}

    def _read(self, index: int) -> torch.Tensor:
        if not self.cache_decoded:
            return read_image(self.samples[index].path)
        image = self._decoded.get(index)
        if image is None:
            image = self._decoded[index] = read_image(self.samples[index].path)
        return image.clone()  # the transform may work in place

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        with one_intra_op_thread():
            image = self._read(index)
            image = self.transform(image) if self.transform is not None else image.float() / 255
        return {"image": image, "pid": sample.pid, "camid": sample.camid, "index": index}


def collate_batch(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` (stack images, tensorise ids) under :func:`one_intra_op_thread`."""
    with one_intra_op_thread():
        return default_collate(items)


def _pin_memory(pin_memory: bool | None) -> bool:
    # Pinned host memory only helps (and only works) when batches go to a CUDA device.
    return torch.cuda.is_available() if pin_memory is None else bool(pin_memory)


def _workers(num_workers: int) -> int:
    if not isinstance(num_workers, int) or num_workers < 0:
        raise UserInputError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    return num_workers


class TrainLoader:
    """Training batches that a resumed run replays exactly: a ``DataLoader`` over a batch
    sampler (e.g. :class:`adasp.data.PKSampler`) whose augmentation is seeded per sample.

    Every sample of batch ``b`` of ``epoch`` is transformed with torch's generator seeded by
    ``mix_seed(seed, epoch, b, position)`` (:mod:`adasp.data.seeding`), so which worker decodes
    it does not matter and a run resumed mid-epoch sees the images the uninterrupted run saw.

    Each batch is ``{"image": (B, 3, H, W), "pid": (B,), "camid": (B,), "index": (B,)}``.

    Args:
        samples: the training samples; ``sampler`` yields lists of indices into them.
        sampler: a batch sampler; with ``set_epoch``/``state_dict``/``load_state_dict`` (as
            :class:`~adasp.data.PKSampler` has) epochs reshuffle and mid-epoch resume works.
        transform: the training transform (PIL image -> tensor).
        seed: the base seed of the augmentation (mix in the DDP rank for one stream per rank).
        num_workers: decoding processes (0: decode in the main process).
        pin_memory: page-locked batches for faster, asynchronous copies to the GPU; ``None``:
            when CUDA is available.
        persistent_workers: keep worker processes between epochs (ignored with 0 workers).
        prefetch_factor: batches each worker prepares ahead (ignored with 0 workers).
        cache_decoded: each worker keeps the images it decoded (see :class:`ImageDataset`);
            for datasets that fit in memory once per worker.

    The training loop hands each batch to :meth:`to_device`. A subclass that loads differently
    replaces :meth:`make_dataset`, :attr:`collate_fn` and :meth:`to_device` (e.g.
    :class:`adasp.data.gpu_decode.GPUDecodeTrainLoader`, which decodes on the GPU).
    """

    collate_fn = staticmethod(collate_batch)

    def __init__(
        self,
        samples: Sequence[Sample],
        sampler: Sampler[list[int]],
        transform: Callable[[Any], torch.Tensor],
        *,
        seed: int = 0,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
        cache_decoded: bool = False,
    ) -> None:
        workers = _workers(num_workers)
        self.cache_decoded = cache_decoded
        self.sampler = sampler
        self.batches = SeededBatches(sampler, seed)
        self.loader = DataLoader(
            SeededDataset(self.make_dataset(samples, transform)),
            batch_sampler=self.batches,
            collate_fn=self.collate_fn,
            num_workers=workers,
            pin_memory=_pin_memory(pin_memory),
            persistent_workers=persistent_workers and workers > 0,
            prefetch_factor=prefetch_factor if workers > 0 else None,
            # Worker seeds come from this generator, not from torch's global stream, so
            # starting an epoch leaves the caller's random numbers untouched.
            generator=torch.Generator().manual_seed(seed),
        )

    def make_dataset(self, samples: Sequence[Sample], transform: Any) -> Dataset:
        """The per-sample dataset the workers index (run under a per-sample seed)."""
        return ImageDataset(samples, transform, cache_decoded=self.cache_decoded)

    def to_device(
        self, batch: dict[str, Any], device: torch.device | str, non_blocking: bool = True
    ) -> dict[str, Any]:
        """Put ``batch["image"]`` on ``device`` (in place; returns ``batch``)."""
        batch["image"] = batch["image"].to(device, non_blocking=non_blocking)
        return batch

    @property
    def pin_memory(self) -> bool:
        return self.loader.pin_memory

    @property
    def persistent_workers(self) -> bool:
        return self.loader.persistent_workers

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Shuffle for ``epoch`` and start at batch ``start_batch`` (after a mid-epoch resume,
        call :meth:`load_state_dict` first)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.batches.set_epoch(epoch, start_batch)

    def state_dict(self, batches_done: int) -> dict[str, Any]:
        """The sampler's position after ``batches_done`` batches of the current epoch."""
        state = getattr(self.sampler, "state_dict", None)
        return state(batches_done) if state is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)

    def __len__(self) -> int:
        """Batches in a whole epoch."""
        return len(self.sampler)  # type: ignore[arg-type]


def build_train_loader(
    samples: Sequence[Sample],
    sampler: Sampler[list[int]],
    transform: Callable[[Any], torch.Tensor],
    num_workers: int = 2,
    pin_memory: bool | None = None,
    persistent_workers: bool = True,
    seed: int = 0,
) -> TrainLoader:
    """A :class:`TrainLoader` of training batches drawn by ``sampler``."""
    return TrainLoader(
        samples,
        sampler,
        transform,
        seed=seed,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
    )


def build_test_loader(
    samples: Sequence[Sample],
    transform: Callable[[Any], torch.Tensor],
    batch_size: int = 128,
    num_workers: int = 2,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A loader of ``samples`` in order, ``batch_size`` at a time (the last batch may be
    smaller), for feature extraction."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    workers = _workers(num_workers)
    return DataLoader(
        ImageDataset(samples, transform),
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        collate_fn=collate_batch,
        num_workers=workers,
        pin_memory=_pin_memory(pin_memory),
    )
