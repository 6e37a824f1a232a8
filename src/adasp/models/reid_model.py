"""The re-identification model: a backbone and a head, with the outputs the losses need."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class ReIDModel(nn.Module):
    """Backbone + head, returning loss inputs in training mode and embeddings in eval mode.

    Attributes:
        backbone: the feature extractor (ImageNet-pretrained part; what a trainer freezes for
            the first iterations). For MGN: the shared stem and the branch copies of
            ``layer3[1:]``/``layer4``.
        head: pooling, reductions, BNNecks and classifiers.
        embedding_dim: size D of the eval embedding.
        num_classes: classifier outputs (0: no classifier, inference only).
        spec: the :func:`adasp.models.build_model` arguments that rebuild this model.
        channels_last: convert input images to channels-last memory format (set by
            :func:`adasp.models.prepare_model`).
        pretrained_report: the :class:`adasp.models.weights.LoadReport` of the pretrained
            weights, or ``None``.

    ``forward(images)`` with ``images (B, 3, H, W)`` normalised with the ImageNet mean/std:

    - training mode: ``{"features": (B, D') | list, "logits": (B, num_classes) | list}``:
      ``"features"`` is the feature before the BNNeck BN (the metric loss's input),
      ``"logits"`` the classifier output (cross-entropy's input), absent when
      ``num_classes == 0``. MGN gives lists (5 features, 8 logits); a loss is averaged
      over a list.
    - eval mode: the embedding ``(B, embedding_dim)``, after or before the BN per
      ``neck_feat``. It is **not** L2-normalised: normalise it for cosine distance.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, spec: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.embedding_dim: int = head.embedding_dim
        self.num_classes: int = head.num_classes
        self.spec: dict[str, Any] = dict(spec or {})
        self.channels_last = False
        self.pretrained_report = None

    def forward(self, images: Tensor) -> dict[str, Any] | Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(images))
