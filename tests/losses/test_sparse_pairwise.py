"""AdaSP / SP-H / SP-LH: agreement with the definitions, invariances, precision, robustness."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from adasp.losses import AdaSPLoss, adaptive_weight, sparse_pairwise_loss, sparse_pairwise_stats
from tests.losses.naive import naive_sparse_pairwise

MODES = ["adasp", "sp-h", "sp-lh"]


def _batch(sizes, dim=16, seed=0, dtype=torch.float64, spread=1.0):
    """Features for identities with the given instance counts, shuffled, with arbitrary labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(sizes), dim, generator=g, dtype=dtype)
    labels = torch.cat([torch.full((n,), 1000 + 7 * c) for c, n in enumerate(sizes)])
    feats = centres[torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))]
    feats = feats + spread * torch.randn(feats.shape, generator=g, dtype=dtype)
    perm = torch.randperm(labels.numel(), generator=g)
    return feats[perm].to(dtype), labels[perm]


def _close_batch(dtype, n_ids=6, k=4, dim=64, seed=1):
    """Features whose cosine similarities all lie near 1 (a collapsed early-training state)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(dim, generator=g, dtype=torch.float64)
    ids = 0.02 * torch.randn(n_ids, dim, generator=g, dtype=torch.float64)
    inst = 0.01 * torch.randn(n_ids * k, dim, generator=g, dtype=torch.float64)
    feats = base + ids.repeat_interleave(k, dim=0) + inst
    return feats.to(dtype), torch.arange(n_ids).repeat_interleave(k)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "sizes", [[4, 4, 4, 4], [1, 3, 5, 2, 7], [1, 1, 1], [2, 6], [8, 1, 1, 3, 4, 2]]
)
@pytest.mark.parametrize("temperature", [0.04, 0.5])
def test_matches_naive_definition(mode, sizes, temperature):
    feats, labels = _batch(sizes, spread=0.7)
    f1 = feats.clone().requires_grad_()
    f2 = feats.clone().requires_grad_()
    ours = sparse_pairwise_loss(f1, labels, temperature, mode)
    ref = naive_sparse_pairwise(f2, labels, temperature, mode)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(f1.grad, f2.grad, rtol=1e-8, atol=1e-10)


def test_adasp_matches_naive_with_positive_hard_similarity():
    # Tight clusters make H > 0, so the adaptive weight is not zero and AdaSP differs from SP-LH.
    feats, labels = _batch([4, 3, 5, 4], spread=0.15, dim=8)
    stats = sparse_pairwise_stats(feats, labels, 0.04)
    assert bool((stats["adaptive_weight"] > 0).all())
    torch.testing.assert_close(
        stats["adaptive_weight"], adaptive_weight(stats["hard"], stats["least_hard"], 25.0)
    )
    ours = sparse_pairwise_loss(feats, labels, 0.04, "adasp")
    assert not torch.isclose(ours, sparse_pairwise_loss(feats, labels, 0.04, "sp-lh"))
    torch.testing.assert_close(ours, naive_sparse_pairwise(feats, labels, 0.04, "adasp"))


@pytest.mark.parametrize("mode", ["sp-h", "sp-lh"])
def test_gradcheck_float64(mode):
    feats, labels = _batch([3, 1, 4, 2], dim=6, spread=0.5)
    feats.requires_grad_()
    assert torch.autograd.gradcheck(lambda f: sparse_pairwise_loss(f, labels, 0.1, mode), (feats,))


@pytest.mark.parametrize("mode", MODES)
def test_invariant_to_batch_order_and_label_values(mode):
    feats, labels = _batch([5, 3, 4, 1, 6], dim=32, dtype=torch.float32)
    loss = sparse_pairwise_loss(feats, labels, 0.04, mode)
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        perm = torch.randperm(labels.numel(), generator=g)
        torch.testing.assert_close(
            sparse_pairwise_loss(feats[perm], labels[perm], 0.04, mode), loss
        )
    relabelled = -3 * labels + 99999  # negative, large, reversed order
    torch.testing.assert_close(sparse_pairwise_loss(feats, relabelled, 0.04, mode), loss)
    torch.testing.assert_close(
        sparse_pairwise_loss(feats, labels.to(torch.int32), 0.04, mode), loss
    )


@pytest.mark.parametrize("mode", MODES)
def test_sorted_equal_blocks_equal_shuffled(mode):
    # The reference code is right only for sorted equal blocks; ours gives that value for any order.
    feats, labels = _batch([8, 8, 8, 8], dim=32)
    order = torch.argsort(labels, stable=True)
    sorted_loss = sparse_pairwise_loss(feats[order], labels[order], 0.04, mode)
    torch.testing.assert_close(sparse_pairwise_loss(feats, labels, 0.04, mode), sorted_loss)


@pytest.mark.parametrize("mode", MODES)
def test_single_identity_gives_zero_with_working_backward(mode):
    feats = torch.randn(6, 8, requires_grad=True)
    loss = AdaSPLoss(mode=mode)(feats, torch.full((6,), 3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(feats.grad, torch.zeros_like(feats))


def test_single_instance_identities_are_finite():
    feats, labels = _batch([1] * 8, dim=16, dtype=torch.float32)
    feats.requires_grad_()
    for mode in MODES:
        loss = sparse_pairwise_loss(feats, labels, 0.04, mode)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


def test_perfect_separation_gives_small_loss_and_identical_modes():
    labels = torch.arange(4).repeat_interleave(3)
    feats = torch.eye(4)[labels] * 5.0
    for mode in MODES:
        # h = l = s (all positives at similarity 1), negatives at 0: loss = softplus(log(9) - s)
        expected = torch.nn.functional.softplus(torch.log(torch.tensor(9.0)) - 25.0)
        torch.testing.assert_close(sparse_pairwise_loss(feats, labels, 0.04, mode), expected)


def test_adaptive_weight_rules():
    s = 25.0
    h = torch.tensor([-0.2, 0.0, 0.5, 0.0]) * s
    lh = torch.tensor([0.9, 0.0, 0.7, 0.4]) * s
    w = adaptive_weight(h, lh, s)
    assert w[0] == 0  # H < 0
    assert w[1] == 0  # H + L = 0 guarded
    torch.testing.assert_close(w[2], torch.tensor(2 * 0.5 * 0.7 / 1.2))
    assert w[3] == 0  # harmonic mean with H = 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_half_precision_near_one_similarities(dtype, mode):
    feats, labels = _close_batch(dtype)
    sim = (
        torch.nn.functional.normalize(feats.double(), dim=1)
        @ torch.nn.functional.normalize(feats.double(), dim=1).T
    )
    assert float(sim.min()) > 0.99  # the hard regime: everything looks alike
    half = feats.clone().requires_grad_()
    ref = feats.double().requires_grad_()  # the same (rounded) inputs, in float64
    loss = sparse_pairwise_loss(half, labels, 0.04, mode)
    ref_loss = sparse_pairwise_loss(ref, labels, 0.04, mode)
    loss.backward()
    ref_loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(half.grad).all()
    assert half.grad.dtype == dtype
    torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=0.01, atol=0)
    rel = (half.grad.double() - ref.grad).norm() / ref.grad.norm()
    assert float(rel) < 0.03, f"relative gradient error {float(rel):.4f}"


@pytest.mark.parametrize("mode", MODES)
def test_float32_accurate_at_smallest_temperature(mode):
    for feats64, labels in (_batch([4, 4, 4, 4], dim=64), _close_batch(torch.float64)):
        f32 = feats64.float().requires_grad_()
        ref = feats64.clone().requires_grad_()
        loss = sparse_pairwise_loss(f32, labels, 0.01, mode)
        ref_loss = sparse_pairwise_loss(ref, labels, 0.01, mode)
        loss.backward()
        ref_loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(f32.grad).all()
        torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=1e-4, atol=1e-5)
        rel = (f32.grad.double() - ref.grad).norm() / ref.grad.norm().clamp_min(1e-30)
        assert float(rel) < 1e-3


def test_large_logits_do_not_overflow_in_half():
    # Orthogonal identities at tau=0.01: exp(100) overflows float16 if not done in log space.
    labels = torch.arange(8).repeat_interleave(4)
    feats = (torch.eye(8)[labels] + 0.05 * torch.randn(32, 8)).half().requires_grad_()
    loss = sparse_pairwise_loss(feats, labels, 0.01, "adasp")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


class _DtypeRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.dtypes = set()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.dtypes.add(t.dtype)
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_no_promotion_to_float64(dtype):
    feats, labels = _batch([4, 3, 5], dim=16, dtype=torch.float32)
    feats = feats.to(dtype).requires_grad_()
    with _DtypeRecorder() as rec:
        sparse_pairwise_loss(feats, labels, 0.04, "adasp").backward()
    assert torch.float64 not in rec.dtypes


def _op_count(sizes, dim=16):
    feats, labels = _batch(sizes, dim=dim, dtype=torch.float32)
    feats.requires_grad_()
    with _DtypeRecorder() as rec:
        sparse_pairwise_loss(feats, labels, 0.04, "adasp").backward()
    return rec.ops


def test_operation_count_independent_of_batch_and_classes():
    # A Python loop over samples or classes would make the op count grow with them.
    small = _op_count([2, 2])
    assert _op_count([8] * 32) == small
    assert _op_count([1, 5, 2, 9, 3, 3, 7, 1, 1, 4, 6]) == small


@pytest.mark.parametrize("mode", MODES)
def test_runs_on_every_device(device, mode):
    feats, labels = _batch([4, 2, 5], dim=16, dtype=torch.float32)
    cpu = sparse_pairwise_loss(feats, labels, 0.04, mode)
    f = feats.to(device).requires_grad_()
    loss = AdaSPLoss(0.04, mode)(f, labels.to(device))
    loss.backward()
    assert loss.device.type == device.type and f.grad.device.type == device.type
    torch.testing.assert_close(loss.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_labels_on_another_device_are_moved():
    feats, labels = _batch([3, 3], dim=8, dtype=torch.float32)
    assert torch.isfinite(AdaSPLoss()(feats, labels.cpu()))


def test_autocast_does_not_lower_precision():
    feats, labels = _close_batch(torch.float32)
    plain = sparse_pairwise_loss(feats, labels, 0.04, "adasp")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = sparse_pairwise_loss(feats, labels, 0.04, "adasp")
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain)


@pytest.mark.parametrize(
    ("feats", "labels", "message"),
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 0]), "batch size"),
        (torch.randn(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0]), "integer"),
        (torch.randn(0, 3), torch.zeros(0, dtype=torch.long), "empty batch"),
        (torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]), torch.tensor([0, 1]), "NaN"),
        (torch.randn(4), torch.tensor([0, 1, 0, 1]), "2-D"),
        (torch.randint(0, 3, (4, 3)), torch.tensor([0, 1, 0, 1]), "floating point"),
        (torch.randn(4, 3), torch.tensor([[0, 1, 0, 1]]), "1-D"),
        (torch.randn(2, 3), torch.tensor([True, False]), "integer"),
    ],
)
def test_bad_input_raises_clear_value_error(feats, labels, message):
    with pytest.raises(ValueError, match=message):
        AdaSPLoss()(feats, labels)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="allowed: adasp, sp-h, sp-lh"):
        AdaSPLoss(mode="sp-x")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        AdaSPLoss(temperature=0)
