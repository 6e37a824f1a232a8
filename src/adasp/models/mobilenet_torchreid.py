"""MobileNetV2 as torchreid builds it (``mobilenetv2_x1_0``, ``mobilenetv2_x1_4``).

Not torchvision's MobileNetV2 (``mobilenet_v2``, :mod:`adasp.models.mobilenet`): here the
first inverted-residual block expands too (a 1x1 conv with expansion 1), widths are
``int(c·w)`` rather than rounded to multiples of 8, and the last 1x1 conv has 1280 channels
(``int(1280·w)`` for w > 1). Each block: 1x1 expand (BN, ReLU6), depthwise 3x3 (BN, ReLU6),
1x1 project (BN), with a residual connection where the stride is 1 and the width unchanged.
The strides are fixed (a /32 map; ``last_stride`` is accepted and ignored), as torchreid's.

Parameter names are torchreid's (``conv2.0.conv1.conv.weight``), so its ImageNet and
re-identification files load as they are; a trunk returns the ``conv9`` map.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

#: ``(expansion t, width c, blocks n, first stride s)`` of stages conv2..conv8.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
STAGES += ((6, 160, 3, 2), (6, 320, 1, 1))


class ConvBNReLU6(nn.Module):
    """Convolution (no bias), BatchNorm, ReLU6."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x)).clamp(0.0, 6.0)


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); residual where shapes allow."""

    def __init__(self, c_in: int, c_out: int, expansion: int, stride: int = 1) -> None:
        super().__init__()
        mid = c_in * expansion
        self.residual = stride == 1 and c_in == c_out
        self.conv1 = ConvBNReLU6(c_in, mid, 1)
        self.dwconv2 = ConvBNReLU6(mid, mid, 3, stride, groups=mid)
        self.conv3 = nn.Sequential(nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.dwconv2(self.conv1(x)))
        return x + out if self.residual else out


class TorchreidMobileNetV2(nn.Module):
    """torchreid's MobileNetV2 trunk at width ``width``: ``(B, 3, H, W) -> (B, C, H/32, W/32)``."""

    head_type = "global"

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        channels = int(32 * width)
        self.conv1 = ConvBNReLU6(3, channels, 3, 2)
        for index, (t, c, n, s) in enumerate(STAGES, start=2):
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(channels, int(c * width), t, s if i == 0 else 1))
                channels = int(c * width)
            self.add_module(f"conv{index}", nn.Sequential(*blocks))
        self.out_channels = int(1280 * width) if width > 1 else 1280
        self.conv9 = ConvBNReLU6(channels, self.out_channels, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        x = images
        for index in range(1, 10):
            x = getattr(self, f"conv{index}")(x)
        return x


def _build(width: float) -> Callable[..., TorchreidMobileNetV2]:
    def build(*, last_stride: int = 1) -> TorchreidMobileNetV2:
        del last_stride  # fixed strides, as torchreid's
        return TorchreidMobileNetV2(width)

    build.__doc__ = f"torchreid's MobileNetV2 at width {width} (a /32 map)."
    return build


#: Backbone builders by name (torchreid's names).
TORCHREID_MOBILENETS = {"mobilenetv2_x1_0": _build(1.0), "mobilenetv2_x1_4": _build(1.4)}
