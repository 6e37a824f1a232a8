"""Losses: the Sparse Pairwise family (SP-H, SP-LH, AdaSP) and the paper's comparison losses.

Every metric loss is an ``nn.Module`` called as ``loss(features, labels)`` with ``features``
``(B, D)`` and integer ``labels`` ``(B,)`` in any order; it returns a 0-dim tensor.
"""

from adasp.losses.base import MetricLoss
from adasp.losses.circle import CircleLoss
from adasp.losses.cross_entropy import CrossEntropyLabelSmooth
from adasp.losses.distributed import gather_batch
from adasp.losses.easy_positive import EPLoss
from adasp.losses.multi_similarity import MultiSimilarityLoss
from adasp.losses.registry import (
    LOSSES,
    LossInfo,
    LossTerm,
    Objective,
    build_loss,
    loss_options,
    options_from_config,
)
from adasp.losses.sparse_pairwise import (
    AdaSPLoss,
    adaptive_weight,
    sparse_pairwise_loss,
    sparse_pairwise_stats,
)
from adasp.losses.supcon import SupConLoss
from adasp.losses.triplet import TripletLoss

__all__ = [
    "LOSSES",
    "AdaSPLoss",
    "CircleLoss",
    "CrossEntropyLabelSmooth",
    "EPLoss",
    "LossInfo",
    "LossTerm",
    "MetricLoss",
    "MultiSimilarityLoss",
    "Objective",
    "SupConLoss",
    "TripletLoss",
    "adaptive_weight",
    "build_loss",
    "gather_batch",
    "loss_options",
    "options_from_config",
    "sparse_pairwise_loss",
    "sparse_pairwise_stats",
]
