"""Circle loss, pairwise form (Sun et al., CVPR 2020)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from adasp.losses.base import MetricLoss
from adasp.losses.pairwise import cosine_similarity_matrix, masked_logsumexp, pair_masks
from adasp.utils.checks import check_float


class CircleLoss(MetricLoss):
    """Pairwise circle loss on cosine similarities.

    Per anchor: ``softplus(LSE_p(-γ α_p (S_p - Δ_p)) + LSE_n(γ α_n (S_n - Δ_n)))`` with
    ``α_p = [1 + m - S_p]_+``, ``α_n = [S_n + m]_+`` (no gradient), ``Δ_p = 1 - m``,
    ``Δ_n = m``; positives exclude the anchor itself. Mean over the anchors that have both a
    positive and a negative.

    Args:
        margin: m (0.25).
        gamma: γ scale (128).
        gather_distributed: gather the global batch from all DDP ranks.
    """

    def __init__(
        self, margin: float = 0.25, gamma: float = 128.0, gather_distributed: bool = False
    ) -> None:
        super().__init__(gather_distributed)
        self.margin = check_float("margin", margin)
        self.gamma = check_float("gamma", gamma, 0, low_open=True)

    def compute(
        self, features: Tensor, labels: Tensor, host_labels: Tensor | None = None
    ) -> Tensor:
        sim = cosine_similarity_matrix(features)
        positive, negative, _ = pair_masks(labels)
        alpha_p = (1.0 + self.margin - sim.detach()).clamp_min(0)
        alpha_n = (sim.detach() + self.margin).clamp_min(0)
        logit_p = -self.gamma * alpha_p * (sim - (1.0 - self.margin))
        logit_n = self.gamma * alpha_n * (sim - self.margin)
        valid = positive.any(dim=1) & negative.any(dim=1)
        # Rows without positives or negatives would give -inf and NaN gradients: let them see
        # every entry and drop them afterwards.
        pos_mask = positive | ~valid[:, None]
        neg_mask = negative | ~valid[:, None]
        per_anchor = F.softplus(
            masked_logsumexp(logit_p, pos_mask, dim=1) + masked_logsumexp(logit_n, neg_mask, dim=1)
        )
        return (per_anchor * valid).sum() / valid.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, gamma={self.gamma}"
