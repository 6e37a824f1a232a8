"""Multi-Similarity loss (Wang et al., CVPR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from adasp.losses.base import MetricLoss
from adasp.losses.pairwise import cosine_similarity_matrix, pair_masks
from adasp.utils.checks import check_float


def _log1p_sum_exp(values: Tensor, mask: Tensor) -> Tensor:
    """``log(1 + sum_j exp(values_ij))`` over the masked entries of each row, stably."""
    masked = torch.where(mask, values, float("-inf"))
    zeros = torch.zeros_like(values[:, :1])
    return torch.cat((zeros, masked), dim=1).logsumexp(dim=1)


class MultiSimilarityLoss(MetricLoss):
    """Multi-Similarity loss with its pair mining, on cosine similarities.

    Per anchor ``i``: negatives with ``S_in + margin > min_p S_ip`` and positives (self
    excluded) with ``S_ip - margin < max_n S_in`` are mined, then
    ``1/α log(1 + Σ_p exp(-α(S_ip - λ))) + 1/β log(1 + Σ_n exp(β(S_in - λ)))``.
    Anchors with an empty mined set contribute 0; the sum is divided by the batch size, as in
    the authors' implementation.

    Args:
        threshold: λ (0.5).
        margin: mining margin (0.1).
        scale_pos: α (2).
        scale_neg: β (40).
        gather_distributed: gather the global batch from all DDP ranks.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        margin: float = 0.1,
        scale_pos: float = 2.0,
        scale_neg: float = 40.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(gather_distributed)
        self.threshold = check_float("threshold", threshold)
        self.margin = check_float("margin", margin)
        self.scale_pos = check_float("scale_pos", scale_pos, 0, low_open=True)
        self.scale_neg = check_float("scale_neg", scale_neg, 0, low_open=True)

    def compute(
        self, features: Tensor, labels: Tensor, host_labels: Tensor | None = None
    ) -> Tensor:
        sim = cosine_similarity_matrix(features)
        positive, negative, _ = pair_masks(labels)
        with torch.no_grad():
            min_pos = torch.where(positive, sim, float("inf")).amin(dim=1, keepdim=True)
            max_neg = torch.where(negative, sim, float("-inf")).amax(dim=1, keepdim=True)
            mined_neg = negative & (sim + self.margin > min_pos)
            mined_pos = positive & (sim - self.margin < max_neg)
            valid = mined_neg.any(dim=1) & mined_pos.any(dim=1)
        pos_term = _log1p_sum_exp(-self.scale_pos * (sim - self.threshold), mined_pos)
        neg_term = _log1p_sum_exp(self.scale_neg * (sim - self.threshold), mined_neg)
        per_anchor = pos_term / self.scale_pos + neg_term / self.scale_neg
        return torch.where(valid, per_anchor, torch.zeros_like(per_anchor)).sum() / labels.shape[0]

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold}, margin={self.margin}, "
            f"scale_pos={self.scale_pos}, scale_neg={self.scale_neg}"
        )
