"""Backbones by name, and :func:`build_model`, which assembles a :class:`ReIDModel`."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torch import nn

from adasp.errors import UserInputError
from adasp.models.head import BNNeck, GlobalHead, check_neck_options
from adasp.models.ibn import resnet18_ibn_a, resnet34_ibn_a, resnet50_ibn_a, resnet101_ibn_a
from adasp.models.mgn import MGNHead, build_mgn
from adasp.models.mobilenet import mobilenet_v2
from adasp.models.mobilenet_torchreid import TORCHREID_MOBILENETS
from adasp.models.options import HeadOptions
from adasp.models.osnet import OSNET_BUILDERS
from adasp.models.pooling import build_pooling
from adasp.models.reid_model import ReIDModel
from adasp.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from adasp.models.timm_backbone import TimmBackbone
from adasp.models.weights import load_head_too, load_pretrained
from adasp.registry import Registry

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"


def _is_timm(name: object) -> bool:
    return isinstance(name, str) and name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)


class BackboneRegistry(Registry[Callable[..., nn.Module]]):
    """Backbone name -> builder ``builder(*, last_stride=1, **options) -> nn.Module``.

    A :class:`~adasp.registry.Registry` of the built-in names in which any ``"timm:<name>"``
    is also found (a builder of that timm model), although iteration lists only the
    registered names.
    """

    def get(self, name: str) -> Callable[..., nn.Module]:
        if _is_timm(name):
            return partial(TimmBackbone, name[len(TIMM_PREFIX) :])
        return super().get(name)

    def __contains__(self, name: object) -> bool:
        return _is_timm(name) or super().__contains__(name)

    def names(self) -> list[str]:
        """The registered names and the ``timm:<name>`` pattern, for messages and help."""
        return [*super().names(), f"{TIMM_PREFIX}<name>"]


#: Every backbone by name. ``mgn`` is MGN on ResNet50-IBN-a (it brings its own head). Register
#: your own with ``@BACKBONES.register("name")`` (see :mod:`adasp.plugins`).
BACKBONES = BackboneRegistry("backbone")
BACKBONES.register("resnet18", resnet18)
BACKBONES.register("resnet34", resnet34)
BACKBONES.register("resnet50", resnet50)
BACKBONES.register("resnet101", resnet101)
BACKBONES.register("resnet152", resnet152)
BACKBONES.register("resnet18_ibn_a", resnet18_ibn_a)
BACKBONES.register("resnet34_ibn_a", resnet34_ibn_a)
BACKBONES.register("resnet50_ibn_a", resnet50_ibn_a)
BACKBONES.register("resnet101_ibn_a", resnet101_ibn_a)
BACKBONES.register("mgn", build_mgn)
BACKBONES.register("mobilenet_v2", mobilenet_v2)
for _name, _builder in {**OSNET_BUILDERS, **TORCHREID_MOBILENETS}.items():
    BACKBONES.register(_name, _builder)


def build_backbone(name: str, *, last_stride: int = 1, **options: Any) -> nn.Module:
    """The backbone registered as ``name`` (see :data:`BACKBONES`), with builder ``options``.

    Raises:
        UserInputError: unknown name or option, listing the allowed ones.
    """
    builder = BACKBONES.get(name)
    if not _is_timm(name):
        allowed = [p for p in inspect.signature(builder).parameters if p != "last_stride"]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise UserInputError(
                f"backbone {name!r} has no option {', '.join(unknown)}; allowed: "
                f"{', '.join(allowed) or 'none'}"
            )
    return builder(last_stride=last_stride, **options)


def _global_head(backbone: nn.Module, num_classes: int, **kwargs: Any) -> nn.Module:
    pooling = build_pooling(kwargs.pop("pooling"), kwargs.pop("gem_p"))
    return GlobalHead(pooling, BNNeck(backbone.out_channels, num_classes, **kwargs))


def _mgn_head(backbone: nn.Module, num_classes: int, **kwargs: Any) -> nn.Module:
    reduction_dim = kwargs.pop("embedding_dim") or 256
    return MGNHead(
        backbone.parts, backbone.out_channels, num_classes, reduction_dim=reduction_dim, **kwargs
    )


#: Backbone ``head_type`` -> head builder ``(backbone, num_classes, **model options)``; a
#: backbone with a ``head_type`` attribute gets that head (default ``"global"``).
HEADS: Registry[Callable[..., nn.Module]] = Registry("head")
HEADS.register("global", _global_head)
HEADS.register("mgn", _mgn_head)


def _pretrained_choice(pretrained: Any) -> str | os.PathLike | None:
    if pretrained is None or (isinstance(pretrained, str) and pretrained.lower() in ("", "none")):
        return None
    if isinstance(pretrained, (str, os.PathLike)):
        return pretrained
    raise UserInputError(
        f"pretrained must be None, 'imagenet' or the path of a weights file, got {pretrained!r}"
    )


def build_model(
    backbone: str,
    num_classes: int,
    *,
    last_stride: int = 1,
    pretrained: str | os.PathLike | None = None,
    pooling: str = "avg",
    gem_p: float = 3.0,
    neck: str = "bnneck",
    neck_feat: str = "after",
    embedding_dim: int = 0,
    dropout: float = 0.0,
    backbone_options: Mapping[str, Any] | None = None,
    neck_activation: str = "none",
    head: HeadOptions | None = None,
) -> ReIDModel:
    """Build a re-identification model.

    Args:
        backbone: a name in :data:`BACKBONES` (``resnet18`` ... ``resnet152``,
            ``resnet50_ibn_a``, ``resnet101_ibn_a``, ``mgn``, ...) or ``"timm:<name>"``.
        num_classes: training identities (classifier outputs); 0 for an inference-only model.
        last_stride: stride of the last ResNet stage, 1 (re-identification default) or 2.
            Not used by MGN (fixed per branch) nor by timm backbones (their own strides).
        pretrained: ``None``, ``"imagenet"`` (download, or a clear error when offline) or the
            path of a ``.pth``/``.pt``/``.tar``/``.safetensors`` file in torchvision's or
            IBN-Net's layout. What did not match is in ``model.pretrained_report``.
        pooling: ``"avg"``, ``"max"`` or ``"gem"`` (GeM with learnable ``p``, from ``gem_p``).
        neck: ``"bnneck"`` or ``"none"``.
        neck_feat: eval embedding ``"after"`` or ``"before"`` the BNNeck BN.
        embedding_dim: reduce the pooled feature to this size (bias-free linear); 0 keeps the
            backbone's width. For MGN: the size of each of the 8 reduced features (0 -> 256).
        dropout: dropout on the classifier input during training.
        neck_activation: ``"none"`` or ``"relu"`` after the BNNeck BN (torchreid's heads).
        backbone_options: extra keyword options of the backbone builder, e.g.
            ``{"zero_init_residual": True}`` for ResNets trained from scratch,
            ``{"global_stride": 1}`` for MGN, or ``timm.create_model`` options for timm.
        head: the head options as one object (an experiment config's ``model`` section);
            when given, it replaces ``pooling`` ... ``dropout``.

    Returns:
        A :class:`ReIDModel` in training mode, on the CPU.

    Raises:
        UserInputError: an invalid name or value (the message lists the allowed ones), or
            pretrained weights that cannot be read or do not fit.
    """
    if head is not None:  # the options object (as a config passes it) replaces the keywords
        pooling, gem_p, neck, neck_feat = head.pooling, head.gem_p, head.neck, head.neck_feat
        embedding_dim, dropout = head.embedding_dim, head.dropout
        neck_activation = head.neck_activation
    check_neck_options(num_classes, embedding_dim, neck, neck_feat, dropout)
    if last_stride not in (1, 2):
        raise UserInputError(f"last_stride must be 1 or 2, got {last_stride!r}")
    build_pooling(pooling, gem_p)  # validates before the (slower) backbone is built
    source = _pretrained_choice(pretrained)
    options = dict(backbone_options or {})
    net = build_backbone(backbone, last_stride=last_stride, **options)
    head_type = getattr(net, "head_type", "global")
    head_module = HEADS.get(head_type)(
        net,
        num_classes,
        pooling=pooling,
        gem_p=gem_p,
        embedding_dim=embedding_dim,
        neck=neck,
        neck_feat=neck_feat,
        dropout=dropout,
        **({"activation": neck_activation} if neck_activation != "none" else {}),
    )
    spec = {
        "backbone": backbone,
        "num_classes": num_classes,
        "last_stride": last_stride,
        "pretrained": None if source is None else str(source),
        "pooling": pooling,
        "gem_p": gem_p,
        "neck": neck,
        "neck_feat": neck_feat,
        "embedding_dim": embedding_dim,
        "dropout": dropout,
        "backbone_options": options,
        "neck_activation": neck_activation,
    }
    model = ReIDModel(net, head_module, spec)
    if source is not None:
        report = load_pretrained(net, source)
        if any(key.startswith("head.") for key in report.unexpected):
            # A whole adasp model file (a converted model, or a run's model.pt): its head
            # (reduction, BNNeck, GeM p) fine-tunes too; a classifier that does not fit is
            # dropped and reported.
            report = load_head_too(head_module, source, report)
        model.pretrained_report = report
    return model
