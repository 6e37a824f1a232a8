"""Augmentation randomness that depends on (seed, epoch, batch, position) only.

A DataLoader's workers draw augmentation from per-worker random streams, so which random
numbers an image gets depends on which worker loaded it and what that worker loaded before.
After a mid-epoch resume the assignment changes and the run diverges. Here every sample of a
batch carries its own seed, and the dataset seeds torch's generator with it around the
transform, so a resumed run sees exactly the images an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

_MASK = (1 << 63) - 1


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 steps)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return state & _MASK


class SeededBatches:
    """Wraps a batch sampler: each index becomes ``(index, seed)``.

    The seed of the sample at ``position`` of batch ``batch`` in ``epoch`` is
    ``mix_seed(base_seed, epoch, batch, position)``; ``set_epoch(epoch, start_batch)`` must
    agree with where the wrapped sampler starts (e.g. after a mid-epoch resume).
    """

    def __init__(self, batch_sampler: Iterable[list[int]], base_seed: int) -> None:
        self.batch_sampler = batch_sampler
        self.base_seed = int(base_seed)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b, batch in enumerate(self.batch_sampler, start=self.start_batch):
            yield [
                (int(index), mix_seed(self.base_seed, self.epoch, b, p))
                for p, index in enumerate(batch)
            ]

    def __len__(self) -> int:
        return len(self.batch_sampler) - self.start_batch  # type: ignore[arg-type]


class SeededDataset(Dataset):
    """Wraps a map-style dataset; ``dataset[(index, seed)]`` runs ``dataset[index]`` with torch's
    CPU generator seeded by ``seed`` (restored afterwards, so the caller's stream is untouched)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
