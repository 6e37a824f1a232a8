"""The CUDA-graph path of the Sparse Pairwise losses (``loss.cuda_graph``): on the CPU, the
captured function with renamed labels equals the eager loss; on CUDA, the replayed graph."""

from __future__ import annotations

import pytest
import torch

from adasp.engine.builders import build_objective
from adasp.engine.config import LossConfig
from adasp.losses import AdaSPLoss
from adasp.losses.class_layout import ClassLayout
from adasp.losses.graphed import GraphedSparsePairwise, canonical_labels, layout_loss


def batch(seed=0, p=8, k=4, dim=32):
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.randperm(100, generator=gen)[:p] * 7).repeat_interleave(k)
    order = torch.randperm(p * k, generator=gen)
    return torch.randn(p * k, dim, generator=gen), labels[order]


def test_canonical_labels_rename_by_first_appearance():
    labels = torch.tensor([9, 3, 9, 5, 3, 5, 7])
    assert canonical_labels(labels).tolist() == [0, 1, 0, 2, 1, 2, 3]
    # The same partition with other names renames the same way.
    assert torch.equal(canonical_labels(labels * 11 + 2), canonical_labels(labels))


@pytest.mark.parametrize("mode", ["adasp", "sp-h", "sp-lh"])
def test_layout_loss_with_renamed_labels_equals_the_eager_loss(mode):
    features, labels = batch()
    eager_x = features.clone().requires_grad_(True)
    eager = AdaSPLoss(0.04, mode)(eager_x, labels)
    eager.backward()
    x = features.clone().requires_grad_(True)
    layout = ClassLayout.from_labels(canonical_labels(labels))
    value = layout_loss(x, layout, 0.04, mode)
    value.backward()
    # Classes in another order: the same sums, added in another order.
    torch.testing.assert_close(value, eager, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(x.grad, eager_x.grad, rtol=1e-5, atol=1e-8)


def test_graphed_loss_is_the_eager_loss_off_cuda():
    features, labels = batch(1)
    loss = AdaSPLoss()
    graphed = GraphedSparsePairwise(loss)
    x = features.clone().requires_grad_(True)
    assert torch.equal(graphed(x, labels), loss(x, labels))
    assert not graphed._graphs


def test_config_switch_wraps_only_sparse_pairwise_losses():
    objective = build_objective(LossConfig(name="adasp", cuda_graph=True), check_finite=False)
    assert isinstance(objective.losses["adasp"], GraphedSparsePairwise)
    assert not isinstance(objective.losses["ce"], GraphedSparsePairwise)
    plain = build_objective(LossConfig(name="adasp"))
    assert isinstance(plain.losses["adasp"], AdaSPLoss)
    triplet = build_objective(LossConfig(name="triplet", cuda_graph=True))
    assert not any(isinstance(m, GraphedSparsePairwise) for m in triplet.losses.values())
    # Objective totals agree with and without the switch (eager on the CPU).
    features, labels = batch(2)
    outputs = {"features": features, "logits": torch.randn(len(labels), 700)}
    torch.testing.assert_close(objective(outputs, labels)[0], plain(outputs, labels)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CUDA graphs)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_replays_the_eager_loss(dtype):
    loss = AdaSPLoss()
    graphed = GraphedSparsePairwise(loss)
    for seed in range(3):  # the first call captures, the next ones replay
        features, labels = batch(seed)
        features = features.cuda().to(dtype)
        x = features.clone().requires_grad_(True)
        value = graphed(x, labels)
        value.backward()
        y = features.clone().requires_grad_(True)
        reference = layout_loss(
            y, ClassLayout.from_labels(canonical_labels(labels), device="cuda"), 0.04, "adasp"
        )
        reference.backward()
        torch.testing.assert_close(value, reference)
        torch.testing.assert_close(x.grad, y.grad)
    assert len(graphed._graphs) == 1
