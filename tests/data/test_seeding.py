"""Per-sample seeded augmentation: independent of workers and of where an epoch starts."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from adasp.data.seeding import SeededBatches, SeededDataset, mix_seed


class RandomItems(Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, index):
        return {"index": index, "noise": torch.rand(3)}


def _batches():
    return [list(range(i, i + 4)) for i in range(0, 40, 4)]


def _collect(start: int, workers: int):
    batches = SeededBatches(_batches()[start:], base_seed=7)
    batches.set_epoch(2, start_batch=start)
    loader = DataLoader(SeededDataset(RandomItems()), batch_sampler=batches, num_workers=workers)
    return [b["noise"] for b in loader]


def test_same_numbers_with_and_without_workers_and_after_a_mid_epoch_start():
    full = _collect(0, 0)
    assert torch.equal(torch.stack(full), torch.stack(_collect(0, 2)))
    resumed = _collect(6, 2)
    assert all(torch.equal(a, b) for a, b in zip(full[6:], resumed, strict=True))


def test_callers_random_stream_is_untouched():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    SeededDataset(RandomItems())[(3, 99)]
    assert torch.equal(torch.rand(2), expected)


def test_mix_seed_spreads_and_is_deterministic():
    seeds = {mix_seed(1, e, b, p) for e in range(3) for b in range(10) for p in range(8)}
    assert len(seeds) == 240
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3) != mix_seed(1, 3, 2)
