"""Which positive pairs each loss actually selects in a batch, and how many are harmful.

The harmful-pair argument of the supplementary is about *selection*: batch-hard triplet takes
every anchor's hardest positive, SP-H the hardest pair of each identity, SP-LH each identity's
least-hard of its anchors' hardest positives, and AdaSP mixes the last two with its adaptive
weight. Given a marking of the images that share no visual cue with the rest of their identity,
these functions measure the fraction of selected pairs that are harmful on a real batch.

A positive pair (i, j), i ≠ j, is harmful when i or j is marked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adasp.losses.class_layout import ClassLayout
from adasp.losses.sparse_pairwise import adaptive_weight

SELECTORS = ("triplet", "sp-h", "sp-lh", "adasp")


def harmful_fractions(
    features: Tensor, labels: Tensor, harmful: Tensor, temperature: float = 0.04
) -> dict[str, float]:
    """Fraction of the positive pairs each loss selects that are harmful, as floats (see
    :func:`harmful_fraction_tensors`, which keeps them on the device)."""
    values = harmful_fraction_tensors(features, labels, harmful, temperature)
    return dict(zip(values, torch.stack(list(values.values())).tolist(), strict=True))


@torch.no_grad()
def harmful_fraction_tensors(
    features: Tensor, labels: Tensor, harmful: Tensor, temperature: float = 0.04
) -> dict[str, Tensor]:
    """Fraction of the positive pairs each loss selects that are harmful, as 0-dim tensors on
    the features' device, computed without waiting for the device when ``labels`` are on the
    CPU (the class layout is built there).

    Args:
        features: ``(B, D)`` embeddings the metric loss sees.
        labels: ``(B,)`` integer identities.
        harmful: ``(B,)`` bool, True for images marked as sharing no cue with their identity.
        temperature: τ of AdaSP's adaptive weight.

    Returns:
        ``{"all", "triplet", "sp-h", "sp-lh", "adasp"}`` -> fraction in [0, 1]; ``"all"`` is the
        fraction over every positive pair of the batch (what a random choice would give).
        Identities with a single image select no pair and are left out.
    """
    x = F.normalize(features.detach().float(), dim=1)
    sim = x @ x.T
    host_labels = labels  # the layout is built where the labels are (see ClassLayout)
    labels = labels.to(features.device, non_blocking=True)
    harmful = harmful.to(features.device, non_blocking=True).bool()
    n = labels.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    pair_harmful = (harmful[:, None] | harmful[None, :]) & positive
    has_pos = positive.any(dim=1)
    out = {"all": _ratio(pair_harmful.sum(), positive.sum())}
    # Batch-hard triplet: per anchor, the farthest positive by Euclidean distance.
    feats = features.detach().float()
    dist = torch.cdist(feats, feats)
    far = torch.where(positive, dist, float("-inf")).argmax(dim=1)
    out["triplet"] = _ratio((pair_harmful[torch.arange(n), far] & has_pos).sum(), has_pos.sum())
    # Per anchor, its hardest (least similar) positive.
    hardest = torch.where(positive, sim, float("inf"))
    anchor_sim, anchor_partner = hardest.min(dim=1)
    anchor_harmful = pair_harmful[torch.arange(n), anchor_partner] & has_pos
    layout = ClassLayout.from_labels(host_labels, device=features.device)
    valid = layout.valid & has_pos[layout.slots]
    classes = valid.any(dim=1)
    # SP-H: the class's hardest pair = the lowest of its anchors' hardest positives.
    sims = torch.where(valid, anchor_sim[layout.slots], float("inf"))
    sph = anchor_harmful[layout.slots].gather(1, sims.argmin(dim=1, keepdim=True)).squeeze(1)
    # SP-LH: the highest of its anchors' hardest positives.
    sims_lh = torch.where(valid, anchor_sim[layout.slots], float("-inf"))
    splh = anchor_harmful[layout.slots].gather(1, sims_lh.argmax(dim=1, keepdim=True)).squeeze(1)
    count = classes.sum()
    out["sp-h"] = _ratio((sph & classes).sum(), count)
    out["sp-lh"] = _ratio((splh & classes).sum(), count)
    # AdaSP: the two selections weighted by its adaptive weight on the soft logits.
    scale = 1.0 / temperature
    logits = sim * scale
    same = labels[:, None] == labels[None, :]
    q = -torch.where(same, -logits, float("-inf")).logsumexp(dim=1)
    per_class = torch.where(layout.valid, q[layout.slots], float("-inf"))
    soft_l = per_class.logsumexp(dim=1)
    soft_h = -torch.where(layout.valid, -q[layout.slots], float("-inf")).logsumexp(dim=1)
    weight = adaptive_weight(soft_h, soft_l, scale)
    mixed = weight * sph.float() + (1 - weight) * splh.float()
    out["adasp"] = _ratio((mixed * classes).sum(), count)
    return out


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator``, 0 where the denominator is 0 (on the device, no read)."""
    d = denominator.double()
    return torch.where(d > 0, numerator.double() / d.clamp_min(1), torch.zeros_like(d))
