"""The CPU speed switches: decoded-image cache, fused CPU Adam, intra-op thread count."""

from __future__ import annotations

import pytest
import torch

from adasp.data import PKSampler, TrainLoader, build_train_transform
from adasp.engine.builders import build_optimizer
from adasp.engine.config import OptimConfig, load_config
from adasp.engine.cpu_speed import set_intra_op_threads
from adasp.errors import UserInputError
from tests.data.test_transforms_loading import samples  # noqa: F401 (fixture)


def batches(samples, cache):  # noqa: F811
    sampler = PKSampler([s.pid for s in samples], batch_size=8, num_instances=2, seed=0)
    loader = TrainLoader(
        samples, sampler, build_train_transform((16, 8)), num_workers=0, cache_decoded=cache
    )
    out = []
    for epoch in range(3):  # the cache fills in the first epoch, then serves
        loader.set_epoch(epoch)
        out += list(loader)
    return out


def test_cached_decoding_gives_the_same_batches(samples):  # noqa: F811
    plain, cached = batches(samples, False), batches(samples, True)
    assert len(plain) == len(cached) == 3
    for a, b in zip(plain, cached, strict=True):
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["index"], b["index"])


def test_cache_holds_each_image_once_and_hands_out_copies(samples):  # noqa: F811
    loader = TrainLoader(
        samples,
        PKSampler([s.pid for s in samples], batch_size=8, num_instances=2),
        build_train_transform((16, 8)),
        num_workers=0,
        cache_decoded=True,
    )
    dataset = loader.loader.dataset.dataset  # SeededDataset -> ImageDataset
    first = dataset._read(0)
    first.zero_()  # a transform working in place must not reach the cache
    assert not torch.equal(dataset._read(0), first)
    assert list(dataset._decoded) == [0]


def test_fused_cpu_adam_is_opt_in():
    model = torch.nn.Linear(4, 2)
    assert not build_optimizer(OptimConfig(), model).defaults.get("fused")
    assert build_optimizer(OptimConfig(fused_cpu=True), model).defaults["fused"]


def test_intra_op_threads():
    before = torch.get_num_threads()
    try:
        set_intra_op_threads(None)
        assert torch.get_num_threads() == before
        set_intra_op_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(UserInputError, match="intra_op_threads"):
            set_intra_op_threads(bad)  # type: ignore[arg-type]


def test_cpu_presets_use_the_switches():
    config = load_config("cpu/mobilenet")
    assert config.data.cache_decoded and config.optim.fused_cpu and config.train.reuse_host_memory


def test_reuse_host_memory_applies_on_glibc_and_changes_nothing_else():
    import sys

    from adasp.engine.cpu_speed import apply_cpu_settings, reuse_freed_host_memory

    before = torch.get_num_threads()
    applied = reuse_freed_host_memory()
    assert applied == sys.platform.startswith("linux") or not applied
    apply_cpu_settings(None, True)  # idempotent, no thread change
    assert torch.get_num_threads() == before
    x = torch.randn(1 << 22)  # a block above the old mmap threshold, freed and reused
    assert torch.equal(x.clone(), x)
