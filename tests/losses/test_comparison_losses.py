"""The paper's comparison losses against loop-based definitions, plus their shared contract."""

from __future__ import annotations

import pytest
import torch

from adasp.losses import (
    CircleLoss,
    CrossEntropyLabelSmooth,
    EPLoss,
    MultiSimilarityLoss,
    SupConLoss,
    TripletLoss,
)
from tests.losses import naive


def _batch(sizes, dim=12, seed=0, spread=0.6):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(sizes), dim, generator=g, dtype=torch.float64)
    labels = torch.cat([torch.full((n,), 50 - 3 * c) for c, n in enumerate(sizes)])
    idx = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    feats = centres[idx] + spread * torch.randn(len(idx), dim, generator=g, dtype=torch.float64)
    perm = torch.randperm(len(idx), generator=g)
    return feats[perm], labels[perm]


CASES = [
    (TripletLoss(margin=0.3), lambda f, y: naive.naive_triplet(f, y, 0.3)),
    (TripletLoss(margin=0.0), lambda f, y: naive.naive_triplet(f, y, 0.0)),
    (SupConLoss(0.07), lambda f, y: naive.naive_supcon(f, y, 0.07)),
    (MultiSimilarityLoss(), naive.naive_multi_similarity),
    (CircleLoss(), naive.naive_circle),
    (EPLoss(0.1), naive.naive_easy_positive),
]
IDS = ["triplet", "triplet-soft", "supcon", "ms", "circle", "ep"]
SIZES = [[4, 4, 4], [1, 3, 5, 2], [2, 6], [1, 1, 4, 3]]


@pytest.mark.parametrize(("loss", "reference"), CASES, ids=IDS)
@pytest.mark.parametrize("sizes", SIZES)
def test_matches_naive_definition(loss, reference, sizes):
    feats, labels = _batch(sizes)
    f1 = feats.clone().requires_grad_()
    f2 = feats.clone().requires_grad_()
    ours, ref = loss(f1, labels), reference(f2, labels)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-10)
    ours.backward()
    if ref.requires_grad:
        ref.backward()
        torch.testing.assert_close(f1.grad, f2.grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(("loss", "reference"), CASES, ids=IDS)
def test_invariant_to_batch_order(loss, reference):
    feats, labels = _batch([3, 5, 2, 4], spread=0.9)
    value = loss(feats, labels)
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss(feats[perm], labels[perm]), value)


@pytest.mark.parametrize(("loss", "reference"), CASES, ids=IDS)
def test_single_identity_and_singletons_are_finite(loss, reference):
    feats = torch.randn(5, 8, requires_grad=True)
    for labels in (torch.zeros(5, dtype=torch.long), torch.arange(5)):
        value = loss(feats, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(feats.grad).all()


@pytest.mark.parametrize(("loss", "reference"), CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_finite(loss, reference, dtype):
    feats, labels = _batch([4, 4, 4, 4], dim=32)
    f = feats.to(dtype).requires_grad_()
    value = loss(f, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(f.grad).all() and f.grad.dtype == dtype
    torch.testing.assert_close(
        value.double(), loss(feats.to(dtype).double(), labels), rtol=2e-3, atol=2e-3
    )


# Circle loss takes its pair weights without gradient by definition, so finite differences do
# not match its gradient; its gradient is checked against the naive definition above instead.
GRADCHECK = [(loss, ref) for loss, ref in CASES if not isinstance(loss, CircleLoss)]


@pytest.mark.parametrize(("loss", "reference"), GRADCHECK, ids=[i for i in IDS if i != "circle"])
def test_gradcheck(loss, reference):
    feats, labels = _batch([3, 2, 3], dim=5, spread=0.8)
    feats.requires_grad_()
    assert torch.autograd.gradcheck(lambda f: loss(f, labels), (feats,))


@pytest.mark.parametrize(("loss", "reference"), CASES, ids=IDS)
def test_bad_input(loss, reference):
    with pytest.raises(ValueError, match="integer"):
        loss(torch.randn(3, 4), torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="empty batch"):
        loss(torch.randn(0, 4), torch.zeros(0, dtype=torch.long))


def test_triplet_hinge_is_zero_when_separated_by_margin():
    labels = torch.tensor([0, 0, 1, 1])
    feats = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
    assert TripletLoss(margin=0.3)(feats, labels).item() == 0.0


def test_cross_entropy_label_smooth_matches_naive():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    ours = CrossEntropyLabelSmooth(0.1)(logits, labels)
    torch.testing.assert_close(ours, naive.naive_cross_entropy(logits, labels, 0.1))
    no_smooth = CrossEntropyLabelSmooth(0.0)(logits, labels)
    torch.testing.assert_close(no_smooth, torch.nn.functional.cross_entropy(logits, labels))


def test_cross_entropy_bad_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        CrossEntropyLabelSmooth()(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="2-D"):
        CrossEntropyLabelSmooth()(torch.randn(2), torch.tensor([0, 1]))


def test_invalid_options():
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-1)
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=0)
    with pytest.raises(ValueError, match="sigma"):
        EPLoss(sigma=-0.1)
    with pytest.raises(ValueError, match="epsilon"):
        CrossEntropyLabelSmooth(1.0)
