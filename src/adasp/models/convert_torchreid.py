"""torchreid (0.2.5) trained models -> adasp models.

Files: ``save_checkpoint`` dicts (the weights under ``state_dict``), plain state dicts, keys
with DataParallel's ``module.`` prefix. Architectures: :data:`TORCHREID_ARCHS`.

torchreid's test inputs: bilinear resize (PIL) to the training size, pixels in 0..1, ImageNet
mean/std. Its eval output is the pooled feature, after the ``fc`` block where the model has
one (Linear with bias -> BatchNorm1d -> ReLU: OSNet, ``resnet50_fc512``). In adasp that block
is the BNNeck: the linear layer is the (bias-free) reduction, its bias folded into the BN's
running mean (:func:`~adasp.models.conversion.fold_linear_bias`), and the ReLU the neck's
activation; the embedding is taken after it. The classifier has a bias, which adasp's
classifier does not have: it is dropped (and reported), and fine-tuning starts a new one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import Tensor

from adasp.errors import UserInputError
from adasp.models.conversion import Conversion, fold_linear_bias, read_peer_weights
from adasp.models.osnet import OSNET_VARIANTS, torchreid_osnet_renamer
from adasp.models.preprocessing import Preprocessing

#: The adasp options of each architecture (``head``: torchreid's fc block after pooling).
TORCHREID_ARCHS: dict[str, dict[str, object]] = {
    **{name: {"backbone": name, "last_stride": 1, "fc": True} for name in OSNET_VARIANTS},
    "resnet50": {"backbone": "resnet50", "last_stride": 2, "fc": False},
    "resnet50_fc512": {"backbone": "resnet50", "last_stride": 1, "fc": True},
    "mobilenetv2_x1_0": {"backbone": "mobilenetv2_x1_0", "last_stride": 2, "fc": False},
    "mobilenetv2_x1_4": {"backbone": "mobilenetv2_x1_4", "last_stride": 2, "fc": False},
}


def _identity(key: str) -> str:
    return key


def convert_torchreid(
    arch: str, weights: str | os.PathLike, image_size: tuple[int, int] = (256, 128)
) -> Conversion:
    """Convert torchreid's ``arch`` model in the file ``weights``.

    Args:
        arch: a name of :data:`TORCHREID_ARCHS` (torchreid's own model names).
        weights: the ``.pth``/``.pth.tar`` file torchreid wrote.
        image_size: ``(height, width)`` it was trained on (torchreid's ``height``/``width``;
            the files do not record it).

    Raises:
        UserInputError: an architecture not supported (listing those that are), or a file
            whose keys are not that architecture's (named).
    """
    if arch not in TORCHREID_ARCHS:
        raise UserInputError(
            f"unsupported torchreid architecture --arch {arch}; supported: "
            f"{', '.join(TORCHREID_ARCHS)}"
        )
    spec = TORCHREID_ARCHS[arch]
    state = read_peer_weights(weights, "torchreid")
    rename: Callable[[str], str] = (
        torchreid_osnet_renamer(OSNET_VARIANTS[arch]) if arch in OSNET_VARIANTS else _identity
    )
    converted: dict[str, Tensor] = {}
    dropped: list[str] = []
    head: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            dropped.append(f"{key}: torchreid's classifier has a bias (adasp's has none)")
        elif key.startswith("fc."):
            head[key] = value
        else:
            converted[f"backbone.{rename(key)}"] = value
    options: dict[str, object] = {
        "backbone": spec["backbone"],
        "last_stride": spec["last_stride"],
        "pooling": "avg",
        "neck_feat": "after",
    }
    if spec["fc"]:
        if "fc.0.weight" not in head:
            raise UserInputError(
                f"{weights} has no fc.0.weight: not a torchreid {arch} file (its keys start "
                f"{', '.join(list(state)[:4])})"
            )
        fc = {f"head.neck.bn.{k[5:]}": v for k, v in head.items() if k.startswith("fc.1.")}
        fc["head.neck.reduction.weight"] = head.pop("fc.0.weight")
        fc["fc.0.bias"] = head.pop("fc.0.bias")
        fold_linear_bias(fc, "fc.0.bias", "head.neck.bn")
        leftover = [k for k in head if not k.startswith("fc.1.")]
        converted.update(fc)
        converted.update({k: v for k, v in head.items() if k in leftover})
        options.update(
            neck="bnneck",
            embedding_dim=int(fc["head.neck.reduction.weight"].shape[0]),
            neck_activation="relu",
        )
    else:
        converted.update(head)  # a resnet50 has none: any fc.* is reported as left over
        options.update(neck="none", embedding_dim=0)
    return Conversion(
        source=f"torchreid:{arch}",
        model_options=options,
        num_classes=0,
        state_dict=converted,
        preprocessing=Preprocessing(image_size=image_size, interpolation="bilinear"),
        dropped=dropped,
    )
