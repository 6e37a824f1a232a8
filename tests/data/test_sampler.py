"""PKSampler: P×K structure, determinism, DDP splitting and exact resume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adasp.data import PKSampler
from adasp.errors import UserInputError


def _pids(seed: int = 0, identities: int = 30) -> list[int]:
    """Labels in shuffled order with 1..12 images per identity and non-contiguous values."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 13, size=identities)
    labels = np.repeat(np.arange(identities) * 7 + 3, counts)
    return rng.permutation(labels).tolist()


def _batches(sampler: PKSampler) -> list[list[int]]:
    return list(iter(sampler))


def test_batches_are_p_by_k():
    pids = _pids()
    sampler = PKSampler(pids, batch_size=32, num_instances=4, seed=1)
    batches = _batches(sampler)
    assert len(batches) == len(sampler) == 30 // 8
    used = []
    for batch in batches:
        assert len(batch) == 32
        counts = Counter(pids[i] for i in batch)
        assert len(counts) == 8 and set(counts.values()) == {4}
        # Instances of one identity are contiguous: blocks of K.
        assert all(len({pids[i] for i in batch[k : k + 4]}) == 1 for k in range(0, 32, 4))
        used += list(counts)
    assert len(used) == len(set(used))  # an epoch visits each identity at most once


def test_replacement_only_when_needed():
    pids = _pids(3)
    counts = Counter(pids)
    sampler = PKSampler(pids, batch_size=48, num_instances=6, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        for batch in sampler:
            per_identity: dict[int, list[int]] = {}
            for i in batch:
                per_identity.setdefault(pids[i], []).append(i)
            for pid, indices in per_identity.items():
                distinct = len(set(indices))
                # Without replacement when possible; every image used when there are fewer.
                assert distinct == min(counts[pid], 6)


def test_deterministic_given_seed_and_epoch():
    pids = _pids()
    a = PKSampler(pids, 16, 4, seed=5)
    b = PKSampler(pids, 16, 4, seed=5)
    assert _batches(a) == _batches(b)
    b.set_epoch(1)
    assert _batches(a) != _batches(b)
    a.set_epoch(1)
    assert _batches(a) == _batches(b)
    assert _batches(PKSampler(pids, 16, 4, seed=6)) != _batches(PKSampler(pids, 16, 4, seed=5))


def test_epochs_cover_identities_evenly():
    pids = _pids(1, identities=24)
    sampler = PKSampler(pids, 32, 4)
    seen: Counter[int] = Counter()
    for epoch in range(60):
        sampler.set_epoch(epoch)
        for batch in sampler:
            seen.update({pids[i] for i in batch})
    # 24 identities, 3 batches of 8 per epoch: every identity every epoch.
    assert set(seen.values()) == {60}


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_are_disjoint_and_union_is_global_batch(world_size):
    pids = _pids(2, identities=40)
    single = PKSampler(pids, 64, 4, seed=3, rank=0, world_size=1)
    ranks = [
        PKSampler(pids, 64, 4, seed=3, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for epoch in (0, 1):
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        per_rank = [_batches(s) for s in ranks]
        assert {len(b) for b in per_rank} == {len(single)}
        for step, global_batch in enumerate(_batches(single)):
            parts = [per_rank[r][step] for r in range(world_size)]
            assert all(len(p) == 64 // world_size for p in parts)
            identities = [{pids[i] for i in p} for p in parts]
            assert all(len(ids) == 16 // world_size for ids in identities)
            for r in range(world_size):
                for q in range(r + 1, world_size):
                    assert not identities[r] & identities[q]
            assert [i for p in parts for i in p] == global_batch


def test_resume_mid_epoch():
    pids = _pids(4, identities=50)
    sampler = PKSampler(pids, 24, 3, seed=9)
    sampler.set_epoch(2)
    full = _batches(sampler)
    state = sampler.state_dict(batches_consumed=3)
    assert state["epoch"] == 2 and state["batches_consumed"] == 3

    fresh = PKSampler(pids, 24, 3, seed=9)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # the trainer's loop sets the epoch again: the position is kept
    assert _batches(fresh) == full[3:]
    assert _batches(fresh) == full  # the next pass over the same epoch starts at its beginning
    fresh.load_state_dict(state)
    fresh.set_epoch(3)  # moving on to another epoch starts it from its first batch
    sampler.set_epoch(3)
    assert _batches(fresh) == _batches(sampler)


def test_resume_with_a_different_world_size():
    pids = _pids(5, identities=40)
    sampler = PKSampler(pids, 32, 4, seed=2, rank=0, world_size=1)
    full = _batches(sampler)
    state = sampler.state_dict(2)
    resumed = [PKSampler(pids, 32, 4, seed=2, rank=r, world_size=2) for r in range(2)]
    for s in resumed:
        s.load_state_dict(state)
    parts = [_batches(s) for s in resumed]
    assert [a + b for a, b in zip(*parts, strict=True)] == full[2:]


def test_resume_checks_compatibility():
    sampler = PKSampler(_pids(), 16, 4)
    state = sampler.state_dict(1)
    with pytest.raises(UserInputError, match="num_instances"):
        PKSampler(_pids(), 16, 2).load_state_dict(state)
    with pytest.raises(UserInputError, match="num_samples"):
        PKSampler(_pids()[:-1], 16, 4).load_state_dict(state)
    assert len(sampler) == 7
    with pytest.raises(UserInputError, match=r"0\.\.7"):
        sampler.state_dict(8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 30, "num_instances": 4}, r"30 is not divisible by num_instances 4.*28"),
        (
            {"batch_size": 24, "num_instances": 4, "rank": 0, "world_size": 4},
            r"P = .* = 6 .* 4 processes",
        ),
        ({"batch_size": 256, "num_instances": 4}, r"30 identities but a batch needs P = 64"),
        ({"batch_size": 0, "num_instances": 4}, "positive integer"),
        (
            {"batch_size": 16, "num_instances": 4, "rank": 2, "world_size": 2},
            r"rank must be in 0\.\.1",
        ),
        ({"batch_size": 16, "num_instances": 4, "seed": -1}, "seed"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        PKSampler(_pids(), **kwargs)


def test_rejects_non_integer_labels():
    with pytest.raises(UserInputError, match="integers"):
        PKSampler([0.5, 1.5], 2, 1)
    with pytest.raises(UserInputError, match="non-empty"):
        PKSampler([], 2, 1)


def test_accepts_numpy_and_tensor_labels():
    pids = _pids()
    expected = _batches(PKSampler(pids, 16, 4))
    assert _batches(PKSampler(np.array(pids), 16, 4)) == expected
    assert _batches(PKSampler(torch.tensor(pids), 16, 4)) == expected


def test_defaults_to_torch_distributed(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        sampler = PKSampler(_pids(), 16, 4)
        assert (sampler.rank, sampler.world_size) == (0, 1)
    finally:
        dist.destroy_process_group()


def test_works_as_dataloader_batch_sampler():
    pids = _pids()
    dataset = torch.utils.data.TensorDataset(torch.tensor(pids))
    sampler = PKSampler(pids, 16, 4)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    batches = [b[0] for b in loader]
    assert len(batches) == len(loader) == len(sampler)
    assert all(b.shape == (16,) and len(set(b.tolist())) == 4 for b in batches)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 9), min_size=2, max_size=40),
    k=st.integers(1, 5),
    p_per_rank=st.integers(1, 3),
    world_size=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 1000),
)
def test_properties_for_any_label_layout(counts, k, p_per_rank, world_size, seed, epoch):
    p = p_per_rank * world_size
    assume(len(counts) >= p)
    pids = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)) * 3, counts))
    samplers = [
        PKSampler(pids, p * k, k, seed=seed, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for s in samplers:
        s.set_epoch(epoch)
    per_rank = [_batches(s) for s in samplers]
    assert all(len(b) == len(counts) // p for b in per_rank)
    for step in range(len(per_rank[0])):
        union = [i for r in range(world_size) for i in per_rank[r][step]]
        labels = Counter(pids[union].tolist())
        assert len(labels) == p and set(labels.values()) == {k}
        for pid in labels:
            chosen = [i for i in union if pids[i] == pid]
            assert len(set(chosen)) == min(k, int((pids == pid).sum()))


def test_batches_per_epoch_chains_fresh_rounds_of_distinct_identities():
    pids = np.repeat(np.arange(10), 7)  # 10 identities x 7 images
    sampler = PKSampler(pids, batch_size=12, num_instances=4, seed=3, batches_per_epoch=11)
    assert len(sampler) == 11  # a round holds 10 // 3 = 3 batches: 4 rounds, 11 batches kept
    batches = list(sampler)
    assert len(batches) == 11
    for batch in batches:
        ids = pids[batch].reshape(3, 4)
        assert (ids == ids[:, :1]).all() and len(set(ids[:, 0])) == 3
    # Rounds draw afresh: the same identity gets other images in another round.
    seen = {}
    for batch in batches:
        for group in np.asarray(batch).reshape(3, 4):
            seen.setdefault(int(pids[group[0]]), set()).add(tuple(sorted(group)))
    assert any(len(groups) > 1 for groups in seen.values())
    # Resume mid-epoch continues with the same batches.
    state = sampler.state_dict(5)
    other = PKSampler(pids, batch_size=12, num_instances=4, seed=3, batches_per_epoch=11)
    other.load_state_dict(state)
    assert list(other) == batches[5:]
    with pytest.raises(UserInputError, match="batches_per_epoch"):
        PKSampler(pids, batch_size=12, num_instances=4, seed=3).load_state_dict(state)
