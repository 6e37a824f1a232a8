"""The Sparse Pairwise loss family: SP-H, SP-LH and AdaSP (Zhou et al., CVPR 2023).

All quantities are log-sum-exps of scaled cosine similarities, computed in log space over
boolean identity masks, so the loss accepts any batch order, any label values and any number
of instances per identity (one included), on any device and in any floating dtype.

With ``x_i = f_i/|f_i|``, ``S = x x^T``, ``s = 1/temperature`` and ``I_a`` the rows of class
``a``:

* per anchor, its soft hardest positive (self-pair included):
  ``q_i = -LSE_{j in I_a}(-s S_ij)``
* SP-H positive logit: ``h_a = -LSE_{i in I_a}(-q_i)  (= -LSE_{i,j in I_a}(-s S_ij))``
* SP-LH positive logit: ``l_a = LSE_{i in I_a}(q_i)``
* AdaSP: ``p_a = w_a h_a + (1 - w_a) l_a`` with ``w_a`` the harmonic mean of
  ``H = h_a/s`` and ``L = l_a/s`` (no gradient), 0 when ``H < 0``.
* all negatives of class a: ``N_a = LSE_{b != a} n_ab = LSE_{i in I_a} LSE_{j not in I_a} s S_ij``
* loss: ``mean_a softplus(N_a - p_a)``, i.e. ``-p_a + LSE(p_a, {n_ab})``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from adasp.losses.base import MetricLoss
from adasp.losses.class_layout import ClassLayout
from adasp.losses.pairwise import autocast_off, check_metric_inputs, compute_dtype, zero_loss
from adasp.utils.checks import check_float


def adaptive_weight(hard: Tensor, least_hard: Tensor, scale: float) -> Tensor:
    """AdaSP's per-class weight on the hard positive logit (no gradient).

    Args:
        hard: ``(C,)`` SP-H positive logits ``h_a``.
        least_hard: ``(C,)`` SP-LH positive logits ``l_a``.
        scale: ``1/temperature``.

    Returns:
        ``(C,)`` weights ``w_a = 2HL/(H+L)`` with ``H = h_a/s``, ``L = l_a/s``; 0 where ``H < 0``
        or ``H + L = 0``.
    """
    h = hard.detach() / scale
    lh = least_hard.detach() / scale
    # l_a >= h_a always, so H > 0 implies H + L > 0; H <= 0 (H + L = 0 included) gives 0.
    return torch.where(h > 0, 2.0 * h * lh / (h + lh), torch.zeros_like(h))


def _hard_weight(hard: Tensor, least_hard: Tensor, scale: float) -> Tensor:
    return torch.ones_like(hard)


def _least_hard_weight(hard: Tensor, least_hard: Tensor, scale: float) -> Tensor:
    return torch.zeros_like(hard)


#: Each mode's weight ``w_a`` of the positive logit ``p_a = w_a h_a + (1 - w_a) l_a``.
POSITIVE_WEIGHTS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "sp-h": _hard_weight,
    "sp-lh": _least_hard_weight,
    "adasp": adaptive_weight,
}


@dataclass
class _Terms:
    """Forward results of the Sparse Pairwise loss and the softmax weights backward needs."""

    per_class: Tensor  # (3, C): h, l, N
    class_w: Tensor  # (3, C, K): d(-h), dl, dN / d(per-anchor value), 0 at padding
    pos_w: Tensor  # (B, K): dq_i / d logit of each positive
    neg_w: Tensor  # (B, B): dg_i / d logit, 0 at positives
    anchor_slots: Tensor  # (B, K): batch index of each anchor's positives


def _sparse_pairwise_terms(x: Tensor, scale: float, layout: ClassLayout) -> _Terms:
    """Per-class logits from normalised ``x`` ``(B, D)``, all in log space."""
    logits = torch.mm(x, x.T).mul_(scale)
    anchor_slots = layout.slots[layout.inverse]
    # q_i = -LSE_j(-s S_ij) over the anchor's positives (self included).
    pos = logits.gather(1, anchor_slots).masked_fill_(~layout.valid[layout.inverse], float("inf"))
    pos_min = pos.amin(dim=1, keepdim=True)
    pos_w = pos.neg_().add_(pos_min).exp_()
    pos_sum = pos_w.sum(dim=1, keepdim=True)
    q = (pos_min - pos_sum.log()).squeeze(1)
    # g_i = LSE_j(s S_ij) over the anchor's negatives.
    neg = logits.scatter_(1, anchor_slots, float("-inf"))
    neg_max = neg.amax(dim=1, keepdim=True)
    neg_w = neg.sub_(neg_max).exp_()
    neg_sum = neg_w.sum(dim=1, keepdim=True)
    g = (neg_max + neg_sum.log()).squeeze(1)
    # Per class, LSE over its anchors of -q (= -h), q (= l) and g (= N).
    values = torch.stack((-q, q, g))[:, layout.slots].masked_fill_(~layout.valid, float("-inf"))
    per_class = values.logsumexp(dim=2)
    class_w = values.sub_(per_class[..., None]).exp_()
    per_class[0].neg_()
    return _Terms(per_class, class_w, pos_w.div_(pos_sum), neg_w.div_(neg_sum), anchor_slots)


class _SparsePairwiseLoss(torch.autograd.Function):
    """The loss from normalised features ``x``, with a hand-written backward.

    Backward reuses the softmax weights of the forward's log-sum-exps, and because
    ``S = x x^T`` is symmetric it needs one matmul, ``s (G + G^T) x``, where autograd would run
    two; this keeps the loss close to the cost of one similarity matmul and log-sum-exp.
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: float, layout: ClassLayout, mode: str) -> Tensor:
        terms = _sparse_pairwise_terms(x, scale, layout)
        hard, least_hard, negative = terms.per_class
        weight = POSITIVE_WEIGHTS[mode](hard, least_hard, scale)
        margin = negative - torch.lerp(least_hard, hard, weight)
        ctx.save_for_backward(
            x, terms.pos_w, terms.neg_w, terms.class_w, terms.anchor_slots, layout.slots, weight
        )
        ctx.scale = scale
        ctx.margin_grad = torch.sigmoid(margin) / margin.numel()
        return F.softplus(margin).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        x, pos_w, neg_w, class_w, anchor_slots, slots, weight = ctx.saved_tensors
        grad_neg = grad * ctx.margin_grad  # dL/dN_a; dL/dp_a is its negative
        # dL/d(-h), dL/dl, dL/dN per class, spread over the class's anchors by softmax weight.
        grad_class = torch.stack((weight * grad_neg, (weight - 1.0) * grad_neg, grad_neg))
        spread = (class_w * grad_class[:, :, None]).flatten(1)
        per_anchor = grad_class.new_zeros(3, x.shape[0])
        per_anchor.scatter_add_(1, slots.flatten().expand(3, -1), spread)
        grad_q = per_anchor[1] - per_anchor[0]  # q enters as -q (for h) and q (for l)
        grad_logits = neg_w * per_anchor[2][:, None]
        grad_logits.scatter_add_(1, anchor_slots, pos_w * grad_q[:, None])
        grad_x = torch.mm(grad_logits + grad_logits.T, x).mul_(ctx.scale)
        return grad_x, None, None, None


def sparse_pairwise_loss(
    features: Tensor, labels: Tensor, temperature: float = 0.04, mode: str = "adasp"
) -> Tensor:
    """Functional SP-H / SP-LH / AdaSP loss.

    Args:
        features: ``(B, D)`` embeddings, any floating dtype (half precision is computed in
            float32), any device.
        labels: ``(B,)`` integer identity labels, any order and values.
        temperature: τ > 0 (paper: 0.04 for people, 0.05 for vehicles).
        mode: ``"adasp"``, ``"sp-h"`` or ``"sp-lh"``.

    Returns:
        0-dim tensor in compute dtype (float32 for half inputs): the mean over the classes in
        the batch; 0 for a single-class batch.
    """
    temperature = _check_options(temperature, mode)
    labels = check_metric_inputs(features, labels)
    with autocast_off(features):
        return _sparse_pairwise(features, labels, temperature, mode)


@torch.no_grad()
def sparse_pairwise_stats(
    features: Tensor, labels: Tensor, temperature: float = 0.04
) -> dict[str, Tensor]:
    """Per-class quantities of the Sparse Pairwise losses, for inspection and logging.

    Args:
        features: ``(B, D)`` embeddings.
        labels: ``(B,)`` integer labels with at least two distinct values.
        temperature: τ > 0.

    Returns:
        Detached ``(C,)`` tensors for the classes in ascending label order: ``labels``,
        ``hard`` (h_a), ``least_hard`` (l_a), ``negative`` (N_a = LSE_{b≠a} n_ab) and
        ``adaptive_weight`` (w_a).
    """
    scale = 1.0 / check_float("temperature", temperature, 0, low_open=True)
    labels = check_metric_inputs(features, labels)
    layout = ClassLayout.from_labels(labels)
    if layout.num_classes < 2:
        raise ValueError("the Sparse Pairwise terms need at least two identities in the batch")
    x = F.normalize(features.to(compute_dtype(features)), dim=1)
    with autocast_off(features):
        hard, least_hard, negative = _sparse_pairwise_terms(x, scale, layout).per_class
    return {
        "labels": labels[layout.slots[:, 0]],
        "hard": hard,
        "least_hard": least_hard,
        "negative": negative,
        "adaptive_weight": adaptive_weight(hard, least_hard, scale),
    }


def _check_options(temperature: float, mode: str) -> float:
    """The temperature as a float, after checking it and the mode."""
    if mode not in POSITIVE_WEIGHTS:
        raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(sorted(POSITIVE_WEIGHTS))}")
    return check_float("temperature", temperature, 0, low_open=True)


def _sparse_pairwise(
    features: Tensor,
    labels: Tensor,
    temperature: float,
    mode: str,
    host_labels: Tensor | None = None,
) -> Tensor:
    # The layout's shape depends on the label values: built from host labels when there are
    # some, it is known without waiting for the device.
    layout = ClassLayout.from_labels(
        host_labels if host_labels is not None else labels, device=features.device
    )
    if layout.num_classes < 2:
        return zero_loss(features)
    x = F.normalize(features.to(compute_dtype(features)), dim=1)
    return _SparsePairwiseLoss.apply(x, 1.0 / temperature, layout, mode)


class AdaSPLoss(MetricLoss):
    """Sparse Pairwise loss module: ``AdaSPLoss(temperature, mode)(features, labels)``.

    Args:
        temperature: τ > 0 (paper: 0.04 for people, 0.05 for vehicles).
        mode: ``"adasp"`` (adaptive positive), ``"sp-h"`` (hard-hard) or ``"sp-lh"``
            (least-hard).
        gather_distributed: gather features and labels from all DDP ranks first.

    Raises:
        ValueError: an unknown mode, or a temperature that is not a finite number > 0 (every
            loss checks its float options this way, with :func:`adasp.utils.checks.check_float`).
    """

    def __init__(
        self, temperature: float = 0.04, mode: str = "adasp", gather_distributed: bool = False
    ) -> None:
        super().__init__(gather_distributed)
        self.temperature = _check_options(temperature, mode)
        self.mode = mode

    def compute(
        self, features: Tensor, labels: Tensor, host_labels: Tensor | None = None
    ) -> Tensor:
        return _sparse_pairwise(features, labels, self.temperature, self.mode, host_labels)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, mode={self.mode!r}"
