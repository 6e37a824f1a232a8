"""Any timm model as a backbone (``"timm:<name>"``); timm is an optional dependency.

The timm model is built without its classifier and pooling (``num_classes=0,
global_pool=""``) and always returns a feature map ``(B, C, H', W')``:

- convolutional networks: ``forward_features`` (channels-last outputs such as Swin's are
  permuted to channels-first);
- token networks (ViT and kin), whose ``forward_features`` gives ``(B, N, C)`` tokens: the
  last block's patch tokens, after the final norm, as a map (``forward_intermediates``);
  the class token is dropped. Such models need their input size at build time, e.g.
  ``backbone_options={"img_size": (256, 128)}``.

Parameter names are timm's under ``model.``; a downloaded timm checkpoint (``model.safetensors``
or ``pytorch_model.bin``) loads through :mod:`adasp.models.weights`, passed through the
model's own ``checkpoint_filter_fn`` (which, e.g., resizes a ViT's position embeddings).
"""

from __future__ import annotations

import difflib
import importlib
import logging
from typing import Any

from torch import Tensor, nn

from adasp.errors import UserInputError

log = logging.getLogger(__name__)


def import_timm() -> Any:
    """The ``timm`` module, or a ``UserInputError`` saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError as error:
        raise UserInputError(
            "timm backbones need the optional dependency timm: pip install 'adasp[timm]' "
            f"(or pip install timm) ({error})"
        ) from error


def _create(name: str, pretrained: bool, options: dict[str, Any]) -> nn.Module:
    timm = import_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserInputError(
            f"timm has no model {name!r}{hint} (timm.list_models() lists all; "
            f"write the backbone as 'timm:<name>', e.g. 'timm:resnet50')"
        )
    try:
        return timm.create_model(
            name, pretrained=pretrained, num_classes=0, global_pool="", **options
        )
    except TypeError as error:
        raise UserInputError(
            f"timm model {name!r} does not accept the backbone options {sorted(options)}: {error}"
        ) from error


class TimmBackbone(nn.Module):
    """A timm model as a feature-map backbone.

    Args:
        name: timm model name (``timm.list_models()``).
        last_stride: accepted for a uniform builder signature but not applied: timm models
            keep their own strides. Many convolutional ones take ``output_stride=16`` in
            ``options`` (a dilated last stage) instead.
        **options: passed to ``timm.create_model`` (e.g. ``img_size``, ``drop_path_rate``).

    ``forward(images (B, 3, H, W)) -> (B, out_channels, H', W')``.
    """

    head_type = "global"

    def __init__(self, name: str, *, last_stride: int = 1, **options: Any) -> None:
        super().__init__()
        if last_stride != 2:
            log.info(
                "timm backbone %s keeps its own strides; last_stride=%s is not applied",
                name,
                last_stride,
            )
        self.name = name
        self.options = dict(options)
        self.model = _create(name, False, self.options)
        self.out_channels: int = self.model.num_features
        self.imagenet_url = None
        self._channels_last_output = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        # Whether forward_features gives tokens; found on the first forward.
        self._tokens: bool | None = None

    def forward(self, images: Tensor) -> Tensor:
        if self._tokens is None:
            features = self.model.forward_features(images)
            self._tokens = features.ndim == 3
            if not self._tokens:
                return self._as_map(features)
        if self._tokens:
            return self.model.forward_intermediates(
                images, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True
            )[-1]
        return self._as_map(self.model.forward_features(images))

    def _as_map(self, features: Tensor) -> Tensor:
        if features.ndim != 4:
            raise UserInputError(
                f"timm model {self.name!r} returns features of shape {tuple(features.shape)}, "
                "not a feature map; use a convolutional or ViT-style model"
            )
        return features.permute(0, 3, 1, 2) if self._channels_last_output else features

    def imagenet_state_dict(self) -> dict[str, Tensor]:
        """timm's pretrained weights for this model (downloaded by timm), in timm's names."""
        try:
            pretrained = _create(self.name, True, self.options)
        except (OSError, RuntimeError) as error:
            raise UserInputError(
                f"could not get timm's pretrained weights for {self.name!r} ({error}). "
                "Offline? Download the model's weights file (e.g. model.safetensors from its "
                "Hugging Face page) on a machine with internet access and pass its path as "
                "model.pretrained=<path> (pretrained=<path> in Python)."
            ) from error
        return pretrained.state_dict()

    def remap_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map a checkpoint in timm's names onto this module's (``model.`` prefix), through
        the model's ``checkpoint_filter_fn`` where timm defines one."""
        if state_dict and all(key.startswith("model.") for key in state_dict):
            return state_dict
        module = importlib.import_module(type(self.model).__module__)
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        if filter_fn is not None:
            try:
                state_dict = filter_fn(state_dict, self.model)
            except Exception as error:  # timm's converters raise anything on a foreign file
                raise UserInputError(
                    f"timm could not convert this checkpoint for {self.name!r}: "
                    f"{type(error).__name__}: {error}"
                ) from error
        # Keys the model lacks (the classifier) keep the file's names in the load report.
        own = self.state_dict()
        return {
            (f"model.{key}" if f"model.{key}" in own else key): value
            for key, value in state_dict.items()
        }
