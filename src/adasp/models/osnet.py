"""OSNet, the Omni-Scale Network (Zhou et al., ICCV 2019; TPAMI 2021), as a feature-map backbone.

An omni-scale block reduces its input to ``C/4`` channels (1x1), runs ``T = 4`` streams of
1..T lightweight 3x3 convolutions (1x1 linear + depthwise 3x3, BN, ReLU) so that stream t sees
a ``(2t+1)x(2t+1)`` receptive field, gates each stream per channel with one shared
mini-network (global average -> 1x1 (C/64) -> ReLU -> 1x1 -> sigmoid), sums the gated streams,
expands back with a 1x1 convolution + BN and adds the (projected) input before the final ReLU.

The network: a 7x7/2 stem and 3x3/2 max pooling, three stages of blocks with a transition
(1x1 conv + 2x2 average pooling) after the first two, and a final 1x1 conv + BN + ReLU: the
map is ``(B, C3, H/16, W/16)``, e.g. ``(B, 512, 16, 8)`` for 256x128 inputs at width 1.0.

Variants (``osnet_*`` in :data:`OSNET_VARIANTS`):

- widths x1.0, x0.75, x0.5, x0.25 scale the channels ``(64, 256, 384, 512)``;
- ``ibn``: instance normalisation in the stem and after the residual sum of the first
  stage's blocks (OSNet-IBN);
- ``ain``: the architecture found by the TPAMI paper's search (OSNet-AIN): instance
  normalisation in the stem and, in the blocks marked ``"in"``, in place of the expansion BN
  (inside the residual branch).

Parameter names are this module's own; :meth:`OSNet.remap_state_dict` maps torchreid's names
onto them, so torchreid's ImageNet or re-identification files load with ``pretrained=<file>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from adasp.errors import UserInputError

#: Stream depths of every block (``T = 4``): stream t stacks t lightweight convolutions.
STREAM_DEPTHS = (1, 2, 3, 4)
#: Channels of the stem and of the three stages at width 1.0.
BASE_CHANNELS = (64, 256, 384, 512)


@dataclass(frozen=True)
class OSNetVariant:
    """One published OSNet: widths, where instance normalisation goes, block kinds.

    Attributes:
        channels: ``(stem, stage1, stage2, stage3)`` output channels.
        ibn: OSNet-IBN (IN in the stem and after the first stage's residual sums).
        block_kinds: per stage, per block, ``"bn"`` or ``"in"`` (OSNet-AIN: IN replaces the
            expansion BN); ``None`` for two plain blocks per stage.
    """

    channels: tuple[int, int, int, int]
    ibn: bool = False
    block_kinds: tuple[tuple[str, ...], ...] | None = None

    @property
    def ain(self) -> bool:
        return self.block_kinds is not None

    @property
    def stem_instance_norm(self) -> bool:
        return self.ibn or self.ain


def _width(factor: float) -> tuple[int, int, int, int]:
    c = tuple(round(channels * factor) for channels in BASE_CHANNELS)
    return (c[0], c[1], c[2], c[3])


#: The AIN architecture (TPAMI 2021): which blocks put IN inside the residual branch.
AIN_BLOCKS = (("in", "in"), ("bn", "in"), ("in", "bn"))

#: Every published variant by its name (also its backbone name).
OSNET_VARIANTS = {
    "osnet_x1_0": OSNetVariant(_width(1.0)),
    "osnet_x0_75": OSNetVariant(_width(0.75)),
    "osnet_x0_5": OSNetVariant(_width(0.5)),
    "osnet_x0_25": OSNetVariant(_width(0.25)),
    "osnet_ibn_x1_0": OSNetVariant(_width(1.0), ibn=True),
    "osnet_ain_x1_0": OSNetVariant(_width(1.0), block_kinds=AIN_BLOCKS),
    "osnet_ain_x0_75": OSNetVariant(_width(0.75), block_kinds=AIN_BLOCKS),
    "osnet_ain_x0_5": OSNetVariant(_width(0.5), block_kinds=AIN_BLOCKS),
    "osnet_ain_x0_25": OSNetVariant(_width(0.25), block_kinds=AIN_BLOCKS),
}


class ConvNormAct(nn.Module):
    """Convolution (no bias), BatchNorm (or affine InstanceNorm) and an optional ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        *,
        instance_norm: bool = False,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False
        )
        self.norm: nn.Module = (
            nn.InstanceNorm2d(out_channels, affine=True)
            if instance_norm
            else nn.BatchNorm2d(out_channels)
        )
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.conv(x))
        return x.relu() if self.relu else x


class LightConv(nn.Module):
    """Lightweight 3x3 convolution: 1x1 (linear), depthwise 3x3, BN, ReLU. ``(B, C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.depthwise(self.pointwise(x))).relu()


class ChannelGate(nn.Module):
    """Per-channel sigmoid gates from the global average: ``x * gate(x)``, ``(B, C, H, W)``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(self.fc1(x.mean(dim=(2, 3), keepdim=True)).relu()).sigmoid()
        return x * gate


class OmniScaleBlock(nn.Module):
    """The omni-scale residual block (see the module doc).

    Args:
        in_channels, out_channels: channels in and out (a 1x1 conv + BN projects the input
            when they differ).
        instance_norm: ``"none"``, ``"after"`` (OSNet-IBN: IN on the sum, before the ReLU)
            or ``"inside"`` (OSNet-AIN: IN instead of the expansion BN).
    """

    def __init__(self, in_channels: int, out_channels: int, instance_norm: str = "none") -> None:
        super().__init__()
        mid = out_channels // 4
        self.reduce = ConvNormAct(in_channels, mid)
        self.streams = nn.ModuleList(
            nn.Sequential(*(LightConv(mid) for _ in range(depth))) for depth in STREAM_DEPTHS
        )
        self.gate = ChannelGate(mid)
        self.expand = ConvNormAct(
            mid, out_channels, instance_norm=instance_norm == "inside", relu=False
        )
        self.shortcut = (
            ConvNormAct(in_channels, out_channels, relu=False)
            if in_channels != out_channels
            else None
        )
        self.post_norm = (
            nn.InstanceNorm2d(out_channels, affine=True) if instance_norm == "after" else None
        )

    def forward(self, x: Tensor) -> Tensor:
        reduced = self.reduce(x)
        mixed = sum(self.gate(stream(reduced)) for stream in self.streams)
        out = self.expand(mixed)
        out = out + (x if self.shortcut is None else self.shortcut(x))
        if self.post_norm is not None:
            out = self.post_norm(out)
        return out.relu()


class OSNet(nn.Module):
    """An OSNet trunk (no pooling or classifier) returning a ``(B, C3, H/16, W/16)`` map.

    Args:
        variant: an :class:`OSNetVariant` (see :data:`OSNET_VARIANTS`).
    """

    head_type = "global"

    def __init__(self, variant: OSNetVariant) -> None:
        super().__init__()
        c0, c1, c2, c3 = variant.channels
        self.stem = ConvNormAct(3, c0, 7, 2, instance_norm=variant.stem_instance_norm)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        kinds = variant.block_kinds or (("bn", "bn"),) * 3
        stage_in = (c0, c1, c2)
        stage_out = (c1, c2, c3)
        stages = []
        for index, (block_kinds, c_in, c_out) in enumerate(
            zip(kinds, stage_in, stage_out, strict=True)
        ):
            blocks = []
            for position, kind in enumerate(block_kinds):
                if kind == "in":
                    norm = "inside"
                elif variant.ibn and index == 0:
                    norm = "after"
                else:
                    norm = "none"
                blocks.append(OmniScaleBlock(c_in if position == 0 else c_out, c_out, norm))
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.transition1 = nn.Sequential(ConvNormAct(c1, c1), nn.AvgPool2d(2, stride=2))
        self.transition2 = nn.Sequential(ConvNormAct(c2, c2), nn.AvgPool2d(2, stride=2))
        self.final = ConvNormAct(c3, c3)
        #: Channels of the output feature map.
        self.out_channels = c3
        self.variant = variant
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        x = self.maxpool(self.stem(images))
        x = self.transition1(self.stage1(x))
        x = self.transition2(self.stage2(x))
        return self.final(self.stage3(x))

    def remap_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map torchreid's OSNet (or OSNet-AIN) names onto this module's; other keys (its
        ``fc.*``, ``classifier.*``, keys already in this layout) keep their names."""
        rename = torchreid_osnet_renamer(self.variant)
        return {rename(key): value for key, value in state_dict.items()}


_LIGHT = {"conv1": "pointwise", "conv2": "depthwise", "bn": "norm"}
_CONV = {"conv": "conv", "bn": "norm"}


def torchreid_osnet_renamer(variant: OSNetVariant) -> Callable[[str], str]:
    """A function from a torchreid OSNet key to this module's key (unknown keys unchanged).

    torchreid's plain OSNet keeps a stage's transition as the stage's last child
    (``conv2.2.0.conv``) and names its four streams ``conv2a`` .. ``conv2d``; OSNet-AIN has
    ``pool2``/``pool3`` and ``conv2.<t>.layers.<k>`` streams.
    """
    blocks = 2 if variant.block_kinds is None else len(variant.block_kinds[0])

    def block(rest: str) -> str | None:
        head, _, tail = rest.partition(".")
        if head == "conv1":
            return "reduce." + _conv(tail)
        if head in ("conv3", "downsample"):
            return ("expand." if head == "conv3" else "shortcut.") + _conv(tail)
        if head == "IN":
            return ("expand.norm." if variant.ain else "post_norm.") + tail
        if head == "gate":
            return rest
        found = re.fullmatch(r"conv2([abcd])(?:\.(\d+))?\.(\w+)\.(\w+)", rest)
        if found:  # plain OSNet: conv2a is one conv, conv2b..d are sequences
            stream = "abcd".index(found.group(1))
            step = found.group(2) or "0"
            return f"streams.{stream}.{step}.{_LIGHT[found.group(3)]}.{found.group(4)}"
        found = re.fullmatch(r"conv2\.(\d+)\.layers\.(\d+)\.(\w+)\.(\w+)", rest)
        if found:  # OSNet-AIN: conv2.<t>.layers.<k>
            return (
                f"streams.{found.group(1)}.{found.group(2)}."
                f"{_LIGHT[found.group(3)]}.{found.group(4)}"
            )
        return None

    def rename(key: str) -> str:
        head, _, rest = key.partition(".")
        if head == "conv1":
            return "stem." + _conv(rest)
        if head == "conv5":
            return "final." + _conv(rest)
        if head in ("pool2", "pool3") and rest.startswith("0."):
            return f"transition{int(head[-1]) - 1}.0.{_conv(rest[2:])}"
        if head in ("conv2", "conv3", "conv4"):
            stage = int(head[-1]) - 1
            index, _, inner = rest.partition(".")
            if not index.isdigit():
                return key
            if variant.block_kinds is None and int(index) == blocks and stage < 3:
                if inner.startswith("0."):
                    return f"transition{stage}.0.{_conv(inner[2:])}"
                return key
            mapped = block(inner)
            return key if mapped is None else f"stage{stage}.{index}.{mapped}"
        return key

    return rename


def _conv(rest: str) -> str:
    part, _, leaf = rest.partition(".")
    return f"{_CONV.get(part, part)}.{leaf}"


def _build(name: str) -> Callable[..., OSNet]:
    def build(*, last_stride: int = 1) -> OSNet:
        if last_stride not in (1, 2):
            raise UserInputError(f"last_stride must be 1 or 2, got {last_stride!r}")
        # OSNet's strides are fixed (a /16 map); last_stride is accepted for a uniform
        # interface, as MGN accepts it.
        return OSNet(OSNET_VARIANTS[name])

    build.__name__ = name
    build.__qualname__ = name
    build.__doc__ = f"{name}: OSNet (see :mod:`adasp.models.osnet`); a /16 feature map."
    return build


#: Backbone builders by name.
OSNET_BUILDERS: dict[str, Callable[..., OSNet]] = {name: _build(name) for name in OSNET_VARIANTS}


def variant_names() -> Sequence[str]:
    """The OSNet backbone names."""
    return tuple(OSNET_VARIANTS)
