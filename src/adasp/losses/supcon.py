"""Supervised contrastive loss (Khosla et al., 2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from adasp.losses.base import MetricLoss
from adasp.losses.pairwise import cosine_similarity_matrix, masked_logsumexp, pair_masks
from adasp.utils.checks import check_float


class SupConLoss(MetricLoss):
    """SupCon "L_out": for each anchor, the mean over its positives of
    ``-log softmax_{a != i}(S_ia / τ)[p]``; mean over the anchors that have a positive.

    Args:
        temperature: τ > 0 (0.07 in the paper's comparison).
        gather_distributed: gather the global batch from all DDP ranks.
    """

    def __init__(self, temperature: float = 0.07, gather_distributed: bool = False) -> None:
        super().__init__(gather_distributed)
        self.temperature = check_float("temperature", temperature, 0, low_open=True)

    def compute(
        self, features: Tensor, labels: Tensor, host_labels: Tensor | None = None
    ) -> Tensor:
        logits = cosine_similarity_matrix(features) / self.temperature
        positive, _, not_self = pair_masks(labels)
        log_prob = logits - masked_logsumexp(logits, not_self, dim=1)[:, None]
        num_pos = positive.sum(dim=1)
        pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
        per_anchor = -pos_log_prob / num_pos.clamp_min(1)
        has_pos = num_pos > 0
        return (per_anchor * has_pos).sum() / has_pos.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
