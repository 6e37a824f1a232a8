"""The metric loss on the gathered global batch: two gloo processes equal one process."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adasp.losses import LOSSES, build_loss

WORLD = 2
METRIC_LOSSES = [n for n in LOSSES if n != "ce"]


def _data():
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(24, 10, generator=g, dtype=torch.float64)
    labels = torch.arange(6).repeat_interleave(4)[torch.randperm(24, generator=g)]
    weight = torch.randn(8, 10, generator=g, dtype=torch.float64)
    return inputs, labels, weight


def _worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        inputs, labels, weight = _data()
        rows = slice(rank * 12, (rank + 1) * 12)
        out = {}
        for name in METRIC_LOSSES:
            w = weight.clone().requires_grad_()
            loss = build_loss(name, gather_distributed=True)(inputs[rows] @ w.T, labels[rows])
            loss.backward()
            grad = w.grad.clone()
            dist.all_reduce(grad)
            grad /= WORLD  # what DDP does to parameter gradients
            out[name] = (loss.item(), grad)
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gathered_loss_equals_single_process_global_batch(tmp_path):
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(str(tmp_path / "init"), results), nprocs=WORLD, join=True)
    inputs, labels, weight = _data()
    for name in METRIC_LOSSES:
        w = weight.clone().requires_grad_()
        loss = build_loss(name)(inputs @ w.T, labels)
        loss.backward()
        for rank in range(WORLD):
            value, grad = results[rank][name]
            assert value == pytest.approx(loss.item(), rel=1e-12)
            torch.testing.assert_close(grad, w.grad, rtol=1e-10, atol=1e-12)


def test_gather_is_identity_without_process_group():
    f, y = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    plain = build_loss("adasp")(f, y)
    assert build_loss("adasp", gather_distributed=True)(f, y) == plain
