"""fast-reid (1.4.0) trained models -> adasp models.

Files: the config fast-reid dumps beside its checkpoints (``config.yaml``, read as plain
YAML, ``_BASE_`` files merged) and a ``Checkpointer`` file (the weights under ``model``).
Supported: meta-architecture ``Baseline`` (its BoT, AGW and SBS configs) on
``build_resnet_backbone`` — depth 18x/34x/50x/101x, ``WITH_IBN``, ``WITH_NL``,
``LAST_STRIDE`` — with the ``EmbeddingHead``: every global pooling but the clipped one,
``EMBEDDING_DIM``, ``WITH_BNNECK``, ``NECK_FEAT``, a ``Linear`` classifier (margin
classifiers are dropped: their logits are cosines, adasp's are not). Any other value of an
option that changes the network is refused with one line naming the option and its value.

fast-reid's test inputs: bicubic resize to ``INPUT.SIZE_TEST``, pixels in 0..255, its
``MODEL.PIXEL_MEAN``/``PIXEL_STD``. Its ResNet's stem pools without padding in ceil mode
(``stem_pool="ceil"``). At inference its head returns the feature after the bottleneck
(reduction and BN) whatever ``NECK_FEAT`` says (that option picks the training feature), so
the converted model embeds ``after`` the neck.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from adasp.errors import MissingPathError, UserInputError
from adasp.models.conversion import Conversion, read_peer_weights
from adasp.models.preprocessing import Preprocessing

#: fast-reid 1.4.0's defaults for the options read here (a config may omit them).
DEFAULTS: dict[str, Any] = {
    "MODEL.META_ARCHITECTURE": "Baseline",
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.DEPTH": "50x",
    "MODEL.BACKBONE.LAST_STRIDE": 1,
    "MODEL.BACKBONE.NORM": "BN",
    "MODEL.BACKBONE.WITH_IBN": False,
    "MODEL.BACKBONE.WITH_SE": False,
    "MODEL.BACKBONE.WITH_NL": False,
    "MODEL.HEADS.NAME": "EmbeddingHead",
    "MODEL.HEADS.NORM": "BN",
    "MODEL.HEADS.POOL_LAYER": "GlobalAvgPool",
    "MODEL.HEADS.NECK_FEAT": "before",
    "MODEL.HEADS.EMBEDDING_DIM": 0,
    "MODEL.HEADS.WITH_BNNECK": True,
    "MODEL.HEADS.CLS_LAYER": "Linear",
    "MODEL.HEADS.SCALE": 1,
    "MODEL.PIXEL_MEAN": [0.485 * 255, 0.456 * 255, 0.406 * 255],
    "MODEL.PIXEL_STD": [0.229 * 255, 0.224 * 255, 0.225 * 255],
    "INPUT.SIZE_TEST": [256, 128],
}

#: Allowed values of the options that change the network.
SUPPORTED: dict[str, tuple[Any, ...]] = {
    "MODEL.META_ARCHITECTURE": ("Baseline", "MGN"),
    "MODEL.BACKBONE.NAME": ("build_resnet_backbone",),
    "MODEL.BACKBONE.DEPTH": ("18x", "34x", "50x", "101x"),
    "MODEL.BACKBONE.LAST_STRIDE": (1, 2),
    "MODEL.BACKBONE.NORM": ("BN", "syncBN", "SyncBN"),
    "MODEL.BACKBONE.WITH_SE": (False,),
    "MODEL.HEADS.NAME": ("EmbeddingHead",),
    "MODEL.HEADS.NORM": ("BN", "syncBN", "SyncBN"),
    "MODEL.HEADS.NECK_FEAT": ("before", "after"),
}

#: fast-reid pooling -> adasp ``pooling``.
POOLINGS = {
    "GlobalAvgPool": "avg",
    "FastGlobalAvgPool": "avg",
    "GlobalMaxPool": "max",
    "GeneralizedMeanPooling": "gem",
    "GeneralizedMeanPoolingP": "gem",
    "AdaptiveAvgMaxPool": "avgmax",
}
CLASSIFIERS = ("Linear", "CosSoftmax", "ArcSoftmax", "CircleSoftmax")
#: GeneralizedMeanPooling's fixed exponent (its ``norm``), fast-reid's default.
GEM_FIXED_P = 3.0


def read_fastreid_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config at ``path`` with its ``_BASE_`` files merged under it, as a nested dict.

    Raises:
        MissingPathError: the file (or a base file) does not exist.
        UserInputError: it is not YAML of mappings.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingPathError(f"fast-reid config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise UserInputError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(data, dict):
        raise UserInputError(f"{path} is not a fast-reid config (a YAML mapping)")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    merged = read_fastreid_config(path.parent / str(base))
    _merge(merged, data)
    return merged


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _option(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return DEFAULTS[dotted]
        node = node[part]
    return node


def _refuse(option: str, value: Any, allowed: tuple[Any, ...] | list[str]) -> UserInputError:
    return UserInputError(
        f"unsupported fast-reid option {option}={value!r}; adasp converts "
        f"{', '.join(map(str, allowed))}"
    )


def convert_fastreid(config_path: str | os.PathLike, weights: str | os.PathLike) -> Conversion:
    """Convert the fast-reid model of ``config_path`` with the weights of ``weights``.

    Raises:
        UserInputError: an unsupported option (named with its value), or weights that are
            not this config's model (the keys named).
    """
    config = read_fastreid_config(config_path)
    opt = {key: _option(config, key) for key in DEFAULTS}
    for key, allowed in SUPPORTED.items():
        if opt[key] not in allowed:
            raise _refuse(key, opt[key], allowed)
    pool = opt["MODEL.HEADS.POOL_LAYER"]
    if pool not in POOLINGS:
        raise _refuse("MODEL.HEADS.POOL_LAYER", pool, list(POOLINGS))
    classifier = opt["MODEL.HEADS.CLS_LAYER"]
    if classifier not in CLASSIFIERS:
        raise _refuse("MODEL.HEADS.CLS_LAYER", classifier, list(CLASSIFIERS))
    if opt["MODEL.META_ARCHITECTURE"] == "MGN":
        return _convert_mgn(opt, weights)
    depth = opt["MODEL.BACKBONE.DEPTH"]
    backbone = f"resnet{depth[:-1]}" + ("_ibn_a" if opt["MODEL.BACKBONE.WITH_IBN"] else "")
    embedding_dim = int(opt["MODEL.HEADS.EMBEDDING_DIM"])
    bnneck = bool(opt["MODEL.HEADS.WITH_BNNECK"])
    options: dict[str, Any] = {
        "backbone": backbone,
        "last_stride": int(opt["MODEL.BACKBONE.LAST_STRIDE"]),
        "pooling": POOLINGS[pool],
        "gem_p": GEM_FIXED_P,
        "neck": "bnneck" if bnneck else "none",
        "neck_feat": "after",
        "embedding_dim": embedding_dim,
        "backbone_options": {"stem_pool": "ceil"}
        | ({"non_local": True} if opt["MODEL.BACKBONE.WITH_NL"] else {}),
    }
    state = read_peer_weights(weights, "fast-reid")
    converted, dropped, num_classes = _convert_state(
        state, embedding_dim, bnneck, classifier, float(opt["MODEL.HEADS.SCALE"]), pool
    )
    return Conversion(
        source="fastreid:Baseline",
        model_options=options,
        num_classes=num_classes,
        state_dict=converted,
        preprocessing=_preprocessing(opt),
        dropped=dropped,
    )


def _preprocessing(opt: Mapping[str, Any]) -> Preprocessing:
    size = opt["INPUT.SIZE_TEST"]
    height, width = (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    mean, std = opt["MODEL.PIXEL_MEAN"], opt["MODEL.PIXEL_STD"]
    return Preprocessing(
        image_size=(int(height), int(width)),
        interpolation="bicubic",
        pixel_range=255.0,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
    )


#: fast-reid MGN's head names in adasp's order (global branches, then the stripes).
MGN_HEADS = ("b1", "b2", "b3", "b21", "b22", "b31", "b32", "b33")
#: The branch (0, 1, 2) each head pools.
MGN_HEAD_BRANCH = (0, 1, 2, 1, 1, 2, 2, 2)
#: Rows of the striped branches' maps are cut into 2 and 3: with a map height divisible by
#: 6 fast-reid's chunks and adasp's stripe bins are the same rows.
MGN_ROWS_MULTIPLE = 6


def _convert_mgn(opt: Mapping[str, Any], weights: str | os.PathLike) -> Conversion:
    """fast-reid's MGN (ResNet-50, with or without IBN-a) -> adasp's ``mgn`` backbone."""
    for key, allowed in (
        ("MODEL.BACKBONE.DEPTH", ("50x",)),
        ("MODEL.BACKBONE.WITH_NL", (False,)),
    ):
        if opt[key] not in allowed:
            raise _refuse(key, opt[key], allowed)
    embedding_dim = int(opt["MODEL.HEADS.EMBEDDING_DIM"])
    if embedding_dim <= 0:
        raise _refuse("MODEL.HEADS.EMBEDDING_DIM", embedding_dim, ["> 0 for MGN (256)"])
    pre = _preprocessing(opt)
    if (pre.image_size[0] // 16) % MGN_ROWS_MULTIPLE:
        raise UserInputError(
            f"fast-reid MGN with INPUT.SIZE_TEST height {pre.image_size[0]}: its 2 and 3 "
            f"stripes match adasp's only when the height is a multiple of "
            f"{16 * MGN_ROWS_MULTIPLE} (e.g. 384)"
        )
    pool = opt["MODEL.HEADS.POOL_LAYER"]
    bnneck = bool(opt["MODEL.HEADS.WITH_BNNECK"])
    classifier = opt["MODEL.HEADS.CLS_LAYER"]
    scale = float(opt["MODEL.HEADS.SCALE"])
    state = read_peer_weights(weights, "fast-reid")
    stem = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3.0"}
    converted: dict[str, Tensor] = {}
    dropped: list[str] = []
    pool_p: dict[int, list[tuple[str, Tensor]]] = {}
    num_classes = 0
    heads = {name: index for index, name in enumerate(MGN_HEADS)}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "backbone":
            index, _, leaf = rest.partition(".")
            converted[f"backbone.stem.{stem.get(index, index)}.{leaf}"] = value
        elif head in ("b1", "b2", "b3") and rest[:2] in ("0.", "1."):
            branch = int(head[1]) - 1
            part, _, inner = rest.partition(".")
            block, _, leaf = inner.partition(".")
            layer = f"layer3.{int(block) + 1}" if part == "0" else f"layer4.{block}"
            converted[f"backbone.branches.{branch}.{layer}.{leaf}"] = value
        elif head.endswith("_head") and head[:-5] in heads:
            i = heads[head[:-5]]
            if rest == "pool_layer.p":
                pool_p.setdefault(MGN_HEAD_BRANCH[i], []).append((key, value.reshape(())))
            elif rest == "bottleneck.0.weight":
                converted[f"head.reductions.{i}.weight"] = value.flatten(1)
            elif bnneck and rest.startswith("bottleneck.1."):
                converted[f"head.necks.{i}.bn.{rest[len('bottleneck.1.') :]}"] = value
            elif rest == "weight" and classifier == "Linear":
                converted[f"head.necks.{i}.classifier.weight"] = value * scale
                num_classes = int(value.shape[0])
            elif rest == "weight":
                dropped.append(f"{key}: {classifier} compares cosines")
            else:
                converted[key] = value
        elif key not in ("pixel_mean", "pixel_std"):
            converted[key] = value
    for branch, values in pool_p.items():
        # adasp's MGN learns one GeM exponent per branch (its global vector and stripes).
        if any(not torch.equal(values[0][1], v) for _, v in values[1:]):
            raise UserInputError(
                "fast-reid MGN heads of one branch learned different GeM exponents "
                f"({', '.join(f'{k}={v.item():.4f}' for k, v in values)}); adasp's MGN shares "
                "one per branch"
            )
        converted[f"head.pools.{branch}.p"] = values[0][1]
    if POOLINGS[pool] == "gem":
        for branch in range(3):
            converted.setdefault(f"head.pools.{branch}.p", torch.tensor(GEM_FIXED_P))
    options: dict[str, Any] = {
        "backbone": "mgn",
        "pooling": POOLINGS[pool],
        "gem_p": GEM_FIXED_P,
        "neck": "bnneck" if bnneck else "none",
        "neck_feat": "after",
        "embedding_dim": embedding_dim,
        "backbone_options": {
            "ibn": bool(opt["MODEL.BACKBONE.WITH_IBN"]),
            "stem_pool": "ceil",
            "global_stride": int(opt["MODEL.BACKBONE.LAST_STRIDE"]),
        },
    }
    return Conversion("fastreid:MGN", options, num_classes, converted, pre, dropped)


def _convert_state(
    state: dict[str, Tensor],
    embedding_dim: int,
    bnneck: bool,
    classifier: str,
    scale: float,
    pool: str,
) -> tuple[dict[str, Tensor], list[str], int]:
    converted: dict[str, Tensor] = {}
    dropped: list[str] = []
    num_classes = 0
    bn_index = 1 if embedding_dim else 0
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "backbone":
            rest = re.sub(r"^NL_(\d)\.", lambda m: f"non_local.layer{m.group(1)}.", rest)
            converted[f"backbone.{rest}"] = value
        elif key in ("pixel_mean", "pixel_std"):
            continue  # the preprocessing records them (from the config)
        elif key == "heads.pool_layer.p":
            converted["head.pool.p"] = value.reshape(())
        elif embedding_dim and key == "heads.bottleneck.0.weight":
            converted["head.neck.reduction.weight"] = value.flatten(1)
        elif bnneck and key.startswith(f"heads.bottleneck.{bn_index}."):
            converted["head.neck.bn." + key.split(".", 3)[3]] = value
        elif key == "heads.weight":
            if classifier == "Linear":
                # fast-reid's Linear classifier multiplies its logits by SCALE.
                converted["head.neck.classifier.weight"] = value * scale
                num_classes = int(value.shape[0])
            else:
                dropped.append(
                    f"{key}: {classifier} compares cosines (adasp's classifier does not)"
                )
        else:
            converted[key] = value  # reported as left over
    if POOLINGS[pool] == "gem" and "head.pool.p" not in converted:
        converted["head.pool.p"] = torch.tensor(GEM_FIXED_P)
    return converted, dropped, num_classes
