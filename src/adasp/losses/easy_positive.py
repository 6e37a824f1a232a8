"""Easy-positive (EP) triplet loss (Xuan et al., WACV 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adasp.losses.base import MetricLoss
from adasp.losses.pairwise import cosine_similarity_matrix, pair_masks
from adasp.utils.checks import check_float


class EPLoss(MetricLoss):
    """Per anchor, its easiest positive against its hardest negative (cosine similarity):
    ``-log(exp(S_ap/σ) / (exp(S_ap/σ) + exp(S_an/σ))) = softplus((S_an - S_ap)/σ)``,
    positives excluding the anchor itself; mean over anchors with a positive and a negative.

    Args:
        sigma: σ > 0, the temperature (0.1).
        gather_distributed: gather the global batch from all DDP ranks.
    """

    def __init__(self, sigma: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__(gather_distributed)
        self.sigma = check_float("sigma", sigma, 0, low_open=True)

    def compute(
        self, features: Tensor, labels: Tensor, host_labels: Tensor | None = None
    ) -> Tensor:
        sim = cosine_similarity_matrix(features)
        positive, negative, _ = pair_masks(labels)
        easiest_pos = torch.where(positive, sim, float("-inf")).amax(dim=1)
        hardest_neg = torch.where(negative, sim, float("-inf")).amax(dim=1)
        valid = positive.any(dim=1) & negative.any(dim=1)
        gap = torch.where(valid, hardest_neg - easiest_pos, torch.zeros_like(easiest_pos))
        per_anchor = F.softplus(gap / self.sigma)
        return (per_anchor * valid).sum() / valid.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"
