"""A small registry of losses by name, and the weighted training objective built from it."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from adasp.losses.circle import CircleLoss
from adasp.losses.cross_entropy import CrossEntropyLabelSmooth
from adasp.losses.easy_positive import EPLoss
from adasp.losses.multi_similarity import MultiSimilarityLoss
from adasp.losses.sparse_pairwise import AdaSPLoss
from adasp.losses.supcon import SupConLoss
from adasp.losses.triplet import TripletLoss


def _sparse_pairwise(mode: str):
    def build(**kwargs: Any) -> AdaSPLoss:
        return AdaSPLoss(mode=mode, **kwargs)

    build.__wrapped__ = AdaSPLoss  # so option checks see AdaSPLoss's arguments
    return build


#: Loss name -> constructor. Every constructor returns an ``nn.Module`` with ``input_key``.
LOSSES: dict[str, Any] = {
    "ce": CrossEntropyLabelSmooth,
    "adasp": _sparse_pairwise("adasp"),
    "sp-h": _sparse_pairwise("sp-h"),
    "sp-lh": _sparse_pairwise("sp-lh"),
    "triplet": TripletLoss,
    "supcon": SupConLoss,
    "ms": MultiSimilarityLoss,
    "circle": CircleLoss,
    "ep": EPLoss,
}


def loss_options(name: str) -> list[str]:
    """The keyword options the loss ``name`` accepts."""
    ctor = LOSSES[name]
    target = getattr(ctor, "__wrapped__", ctor)
    params = inspect.signature(target).parameters
    return [p for p in params if p not in ("self", "mode")]


def build_loss(name: str, **options: Any) -> nn.Module:
    """Construct the loss registered as ``name`` with keyword ``options``.

    Raises:
        ValueError: for an unknown name or option, listing the allowed ones.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(sorted(LOSSES))}")
    allowed = loss_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"loss {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return LOSSES[name](**options)


@dataclass(frozen=True)
class LossTerm:
    """One weighted term of an objective: the loss ``name`` with ``options``, times ``weight``."""

    name: str
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)


class Objective(nn.Module):
    """Weighted sum of loss terms, e.g. ``CE + λ·AdaSP`` or a metric loss alone.

    Each term reads the model output named by its loss's ``input_key`` (``"features"`` or
    ``"logits"``). An output may be a tensor or a list of tensors (one per branch, as in MGN):
    the term is then the mean of the loss over the list, so that ``weight`` means the same for
    one branch or eight (the AdaSP code weights MGN's 8 cross-entropies by 1/8 and its 5
    metric-loss inputs by 1/5).

    Example:
        >>> objective = Objective([LossTerm("ce"), LossTerm("adasp", 0.1, {"temperature": 0.04})])
        >>> total, parts = objective({"features": f, "logits": z}, labels)
    """

    def __init__(self, terms: Sequence[LossTerm]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("an objective needs at least one loss term")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"each loss may appear once in an objective, got {names}")
        self.terms = list(terms)
        self.losses = nn.ModuleDict({t.name: build_loss(t.name, **dict(t.options)) for t in terms})

    def forward(
        self, outputs: Mapping[str, Tensor | Sequence[Tensor]], labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns ``(total, parts)``; ``parts`` maps each loss name to its unweighted value."""
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        for term in self.terms:
            loss = self.losses[term.name]
            key = loss.input_key
            if key not in outputs:
                raise ValueError(
                    f"loss {term.name!r} needs the model output {key!r}, but the model returned "
                    f"{sorted(outputs)}"
                )
            value = outputs[key]
            tensors = value if isinstance(value, (list, tuple)) else [value]
            part = sum(loss(t, labels) for t in tensors) / len(tensors)
            parts[term.name] = part
            total = term.weight * part if total is None else total + term.weight * part
        assert total is not None
        return total, parts
