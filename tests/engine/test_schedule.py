"""The learning-rate schedule: warm-up, multi-step, cosine after a delay."""

from __future__ import annotations

import math

import pytest
import torch

from adasp.engine.schedule import LRSchedule


def test_linear_warmup_then_constant_until_cosine_delay():
    s = LRSchedule(iters_per_epoch=10, epochs=10, warmup_iters=20, warmup_factor=0.1,
                   scheduler="cosine", cosine_delay_epochs=5, min_lr_factor=0.0)  # fmt: skip
    assert s.factor(0) == pytest.approx(0.1)
    assert s.factor(10) == pytest.approx(0.55)
    assert s.factor(20) == pytest.approx(1.0)
    assert s.factor(49) == pytest.approx(1.0)
    assert s.factor(75) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s.factor(100) == pytest.approx(0.0, abs=1e-12)


def test_multistep_decays_at_milestone_epochs():
    s = LRSchedule(
        iters_per_epoch=4, epochs=10, scheduler="multistep", milestones=(3, 6), gamma=0.1
    )
    assert s.factor(11) == 1.0
    assert s.factor(12) == pytest.approx(0.1)
    assert s.factor(24) == pytest.approx(0.01)


def test_apply_sets_each_group_from_its_initial_lr():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 2.0}], lr=1.0)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    s = LRSchedule(
        iters_per_epoch=1, epochs=2, warmup_iters=2, warmup_factor=0.5, scheduler="multistep"
    )
    s.apply(opt, 0)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 1.0]
