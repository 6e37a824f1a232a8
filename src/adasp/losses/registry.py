"""The loss registry, and the weighted training objective built from it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import Tensor, nn

from adasp.errors import UserInputError
from adasp.losses.circle import CircleLoss
from adasp.losses.cross_entropy import CrossEntropyLabelSmooth
from adasp.losses.easy_positive import EPLoss
from adasp.losses.multi_similarity import MultiSimilarityLoss
from adasp.losses.sparse_pairwise import AdaSPLoss
from adasp.losses.supcon import SupConLoss
from adasp.losses.triplet import TripletLoss
from adasp.registry import Registry


@dataclass(frozen=True)
class LossInfo:
    """What a loss declares about its options, registered with it (``LOSSES.info(name)``).

    Attributes:
        from_config: options an experiment config sets from the key of the same name in its
            ``loss`` section rather than from ``loss.options.<loss>``: the Sparse Pairwise
            losses take ``temperature`` from ``loss.temperature``, so one key sweeps τ
            whichever of them is trained.
    """

    from_config: tuple[str, ...] = ()


#: Loss name -> constructor. Every constructor returns an ``nn.Module`` with ``input_key``;
#: its keyword arguments are the loss's options. Register your own with
#: ``@LOSSES.register("name")`` (see :mod:`adasp.plugins`).
LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss")
LOSSES.register("ce", CrossEntropyLabelSmooth)
for _mode in ("adasp", "sp-h", "sp-lh"):
    LOSSES.register(
        _mode, partial(AdaSPLoss, mode=_mode), info=LossInfo(from_config=("temperature",))
    )
LOSSES.register("triplet", TripletLoss)
LOSSES.register("supcon", SupConLoss)
LOSSES.register("ms", MultiSimilarityLoss)
LOSSES.register("circle", CircleLoss)
LOSSES.register("ep", EPLoss)


def loss_options(name: str) -> list[str]:
    """The keyword options the loss ``name`` accepts, in its constructor's order.

    Raises:
        UserInputError: an unknown name, listing the allowed ones.
    """
    ctor = LOSSES.get(name)
    # A partial's bound keywords (the Sparse Pairwise ``mode``) are fixed by the name.
    fixed = ctor.keywords if isinstance(ctor, partial) else {}
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        p.name
        for p in inspect.signature(ctor).parameters.values()
        if p.name not in fixed and p.kind not in variadic
    ]


def options_from_config(name: str) -> tuple[str, ...]:
    """The options of loss ``name`` that a config sets from its ``loss`` section (see
    :class:`LossInfo`); ``()`` for a loss registered without a :class:`LossInfo`."""
    info = LOSSES.info(name)
    return info.from_config if isinstance(info, LossInfo) else ()


def build_loss(name: str, **options: Any) -> nn.Module:
    """Construct the loss registered as ``name`` with keyword ``options``.

    Raises:
        UserInputError: (a ``ValueError``) for an unknown name or option, listing the allowed
            ones.
    """
    allowed = loss_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserInputError(
            f"loss {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return LOSSES.get(name)(**options)


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

    ``labels`` may stay on the CPU while the outputs are on a GPU (``accepts_host_labels``):
    a loss that declares ``accepts_host_labels = True`` (every built-in one does) builds its
    index tables and checks its labels on the host and copies them asynchronously, so the
    objective is queued without waiting for the device; any other loss (e.g. a plugin's) gets
    the labels copied to its input's device.

    Args:
        terms: the weighted losses.
        check_finite: the metric losses refuse NaN/Inf features with a clear error. That
            check reads a value on the host (a wait for the GPU per call); a training loop
            that checks its loss on the device instead turns it off.

    Example:
        >>> objective = Objective([LossTerm("ce"), LossTerm("adasp", 0.1, {"temperature": 0.04})])
        >>> total, parts = objective({"features": f, "logits": z}, labels)
    """

    #: The trainer may pass the loader's (CPU) labels: see the class docstring.
    accepts_host_labels = True

    def __init__(self, terms: Sequence[LossTerm], check_finite: bool = True) -> None:
        super().__init__()
        if not terms:
            raise ValueError("an objective needs at least one loss term")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"each loss may appear once in an objective, got {names}")
        self.terms = list(terms)
        self.losses = nn.ModuleDict({t.name: build_loss(t.name, **dict(t.options)) for t in terms})
        for loss in self.losses.values():
            if hasattr(loss, "check_finite"):
                loss.check_finite = bool(check_finite)

    def forward(
        self, outputs: Mapping[str, Tensor | Sequence[Tensor]], labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns ``(total, parts)``; ``parts`` maps each loss name to its unweighted value."""
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        device_labels: Tensor | None = None
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
            term_labels = labels
            if not getattr(loss, "accepts_host_labels", False):
                # A loss that expects its labels beside its input (e.g. a plugin's) gets them
                # there; the copy is made once per objective call.
                if device_labels is None:
                    device_labels = labels.to(tensors[0].device, non_blocking=True)
                term_labels = device_labels
            part = sum(loss(t, term_labels) for t in tensors) / len(tensors)
            parts[term.name] = part
            total = term.weight * part if total is None else total + term.weight * part
        assert total is not None
        return total, parts
