"""Batch-hard triplet loss (Hermans et al., 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adasp.losses.base import MetricLoss
from adasp.losses.pairwise import euclidean_distance_matrix, same_identity_mask
from adasp.utils.checks import check_float


class TripletLoss(MetricLoss):
    """Per anchor, its hardest positive and hardest negative by Euclidean distance.

    ``loss_i = max(0, d(a, p_hard) - d(a, n_hard) + margin)``, or the soft margin
    ``softplus(d(a, p_hard) - d(a, n_hard))`` when ``margin == 0``; mean over the anchors that
    have a negative in the batch (0 for a single-identity batch).

    Args:
        margin: ≥ 0; 0.3 in the paper's comparison, 0 for the soft margin.
        normalize: L2-normalise the features first (distances then lie in [0, 2]).
        gather_distributed: gather the global batch from all DDP ranks.
    """

    def __init__(
        self, margin: float = 0.3, normalize: bool = False, gather_distributed: bool = False
    ) -> None:
        super().__init__(gather_distributed)
        self.margin = check_float("margin", margin, 0, note="0 selects the soft margin")
        self.normalize = bool(normalize)

    def compute(
        self, features: Tensor, labels: Tensor, host_labels: Tensor | None = None
    ) -> Tensor:
        if self.normalize:
            features = F.normalize(features, dim=1)
        dist = euclidean_distance_matrix(features)
        same = same_identity_mask(labels)
        hardest_pos = torch.where(same, dist, float("-inf")).amax(dim=1)
        hardest_neg = torch.where(same, float("inf"), dist).amin(dim=1)
        gap = hardest_pos - hardest_neg
        per_anchor = F.softplus(gap) if self.margin == 0 else F.relu(gap + self.margin)
        has_neg = (~same).any(dim=1)
        per_anchor = torch.where(has_neg, per_anchor, torch.zeros_like(per_anchor))
        return per_anchor.sum() / has_neg.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, normalize={self.normalize}"
