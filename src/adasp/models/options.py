"""The head options, owned here and embedded by the experiment config (``model.*``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class HeadOptions:
    """What the head makes of the backbone's feature map (see :func:`~adasp.models.build_model`).

    Attributes:
        pooling: a name in :data:`~adasp.models.POOLINGS` (``avg``, ``max``, ``gem``...).
        gem_p: GeM's initial exponent.
        neck: ``bnneck`` or ``none``.
        neck_feat: the eval embedding ``after`` or ``before`` the BNNeck BN.
        embedding_dim: reduce the pooled feature to this size; 0 keeps the backbone's width.
        dropout: dropout on the classifier input during training.
        neck_activation: ``none`` or ``relu`` after the BNNeck BN (torchreid's heads).
    """

    pooling: str = "avg"
    gem_p: float = 3.0
    neck: Literal["bnneck", "none"] = "bnneck"
    neck_feat: Literal["before", "after"] = "after"
    embedding_dim: int = 0
    dropout: float = 0.0
    neck_activation: Literal["none", "relu"] = "none"

    def keywords(self) -> dict[str, Any]:
        """The head fields as keywords of the head builders."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(HeadOptions)}

    def head(self) -> HeadOptions:
        """Only the head options (of a config section that embeds them too)."""
        return HeadOptions(**self.keywords())
