"""The embedding head: pooling, optional reduction, BNNeck and a bias-free classifier.

BNNeck (Luo et al., "Bag of Tricks", 2019): the metric loss reads the feature *before* a
BatchNorm, the cross-entropy classifier reads it *after*. The BN's shift is frozen at zero so
that the normalised feature stays centred, which the classifier (without bias) relies on.
Inference uses the feature after the BN (``neck_feat="after"``, the usual choice with
cosine distance) or before it (``"before"``).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from adasp.errors import UserInputError

NECKS = ("bnneck", "none")
NECK_FEATS = ("after", "before")
#: Activations after the neck's BN: torchreid's heads (OSNet, ``resnet50_fc512``) end in a
#: ReLU, which its converted models keep.
NECK_ACTIVATIONS = ("none", "relu")


class NeckOutput(NamedTuple):
    """What a neck produces for a batch of B pooled vectors.

    feature: ``(B, D)`` the (reduced) feature before the BN: the metric loss's input.
    embedding: ``(B, D)`` the inference embedding (after or before the BN per ``neck_feat``).
    logits: ``(B, num_classes)`` in training mode with a classifier, else ``None``.
    """

    feature: Tensor
    embedding: Tensor
    logits: Tensor | None


def check_neck_options(
    num_classes: int, embedding_dim: int, neck: str, neck_feat: str, dropout: float
) -> None:
    """Raise ``UserInputError`` naming the allowed values for an invalid head option."""
    if neck not in NECKS:
        raise UserInputError(f"unknown neck {neck!r}; allowed: {', '.join(NECKS)}")
    if neck_feat not in NECK_FEATS:
        raise UserInputError(f"unknown neck_feat {neck_feat!r}; allowed: {', '.join(NECK_FEATS)}")
    for name, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserInputError(f"{name} must be an integer >= 0 (0 = none), got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise UserInputError(f"dropout must be in [0, 1), got {dropout!r}")


class BNNeck(nn.Module):
    """Optional linear reduction, BatchNorm neck and bias-free classifier on pooled vectors.

    Args:
        in_dim: size of the pooled vector.
        num_classes: training identities; 0 builds no classifier (inference only).
        embedding_dim: reduce to this size with a bias-free linear layer; 0 keeps ``in_dim``.
        neck: ``"bnneck"`` (BatchNorm with frozen shift) or ``"none"`` (no BN: the classifier
            and the embedding use the feature itself).
        neck_feat: inference embedding ``"after"`` or ``"before"`` the BN.
        dropout: dropout probability on the classifier's input (training only).
        activation: ``"none"`` or ``"relu"`` after the BN (the classifier's input and the
            ``"after"`` embedding).
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        *,
        embedding_dim: int = 0,
        neck: str = "bnneck",
        neck_feat: str = "after",
        dropout: float = 0.0,
        activation: str = "none",
    ) -> None:
        super().__init__()
        check_neck_options(num_classes, embedding_dim, neck, neck_feat, dropout)
        if activation not in NECK_ACTIVATIONS:
            raise UserInputError(
                f"unknown neck_activation {activation!r}; allowed: {', '.join(NECK_ACTIVATIONS)}"
            )
        self.activation = activation
        dim = embedding_dim or in_dim
        self.reduction = nn.Linear(in_dim, dim, bias=False) if embedding_dim else None
        self.bn = nn.BatchNorm1d(dim) if neck == "bnneck" else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.classifier = nn.Linear(dim, num_classes, bias=False) if num_classes else None
        self.embedding_dim = dim
        self.num_classes = num_classes
        self.neck_feat = neck_feat
        self._init_weights()

    def _init_weights(self) -> None:
        if self.reduction is not None:
            nn.init.kaiming_normal_(self.reduction.weight, mode="fan_out")
        if self.bn is not None:
            nn.init.ones_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)
            self.bn.bias.requires_grad_(False)  # BNNeck: no learned shift
        if self.classifier is not None:
            # Small logits at the start keep the early cross-entropy gradient gentle.
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, pooled: Tensor) -> NeckOutput:
        """``pooled (B, in_dim)`` -> :class:`NeckOutput` (logits only in training mode)."""
        feature = pooled if self.reduction is None else self.reduction(pooled)
        normed = feature if self.bn is None else self.bn(feature)
        if self.activation == "relu":
            normed = normed.relu()
        embedding = normed if self.neck_feat == "after" else feature
        logits = None
        if self.training and self.classifier is not None:
            logits = self.classifier(normed if self.dropout is None else self.dropout(normed))
        return NeckOutput(feature, embedding, logits)


class GlobalHead(nn.Module):
    """Global pooling followed by a :class:`BNNeck`: the head of single-branch models.

    ``forward(feature_map (B, C, H, W))``: in training mode a dict with ``"features"``
    ``(B, D)`` (before the BN) and, with a classifier, ``"logits"`` ``(B, num_classes)``; in
    eval mode the embedding ``(B, D)``, not L2-normalised.
    """

    def __init__(self, pooling: nn.Module, neck: BNNeck) -> None:
        super().__init__()
        self.pool = pooling
        self.neck = neck
        self.embedding_dim = neck.embedding_dim
        self.num_classes = neck.num_classes

    def forward(self, feature_map: Tensor) -> dict[str, Tensor] | Tensor:
        out = self.neck(self.pool(feature_map))
        if not self.training:
            return out.embedding
        outputs = {"features": out.feature}
        if out.logits is not None:
            outputs["logits"] = out.logits
        return outputs
