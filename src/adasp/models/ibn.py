"""IBN-a ResNets (Pan et al., "Two at Once", ECCV 2018) in the published IBN-Net key layout.

IBN-a replaces the first normalisation of every block in stages 1-3 with IBN: instance
normalisation on the first half of the channels and batch normalisation on the rest; stage 4
is a plain ResNet stage. Instance normalisation removes per-image appearance (colour,
illumination) while batch normalisation keeps content, which is why IBN-a transfers better
across cameras and datasets.

Parameter names follow the IBN-Net release exactly (``resnet50_ibn_a-d9d0bb7b.pth``):
torchvision's names, with ``layerX.Y.bn1.IN.{weight,bias}`` and
``layerX.Y.bn1.BN.{weight,bias,running_mean,running_var,num_batches_tracked}`` in stages 1-3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from adasp.models.resnet import BasicBlock, Bottleneck, ResNet, named_resnet

_RELEASE = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/"
#: The IBN-Net authors' ImageNet weights.
IMAGENET_URLS = {
    "resnet18_ibn_a": _RELEASE + "resnet18_ibn_a-2f571257.pth",
    "resnet34_ibn_a": _RELEASE + "resnet34_ibn_a-94bc1577.pth",
    "resnet50_ibn_a": _RELEASE + "resnet50_ibn_a-d9d0bb7b.pth",
    "resnet101_ibn_a": _RELEASE + "resnet101_ibn_a-59ea0ac6.pth",
}


class IBN(nn.Module):
    """Instance-batch normalisation: ``IN`` on the first ``int(C·ratio)`` channels, ``BN`` on
    the rest, concatenated back in that order. ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: number of input channels C.
        ratio: fraction of channels that get instance normalisation (0.5 in IBN-a).
    """

    def __init__(self, channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(channels * ratio)
        # Attribute names are the published ones, so IBN-Net files load unchanged.
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: Tensor) -> Tensor:
        first, rest = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.IN(first.contiguous()), self.BN(rest.contiguous())), dim=1)


#: IBN as the first normalisation of each block in stages 1-3, BatchNorm in stage 4.
IBN_A_STAGE_NORMS = (IBN, IBN, IBN, nn.BatchNorm2d)


def ibn_a_resnet(
    block: type[BasicBlock] | type[Bottleneck],
    layers: Sequence[int],
    last_stride: int = 1,
    zero_init_residual: bool = False,
    non_local: bool = False,
    stem_pool: str = "pad",
) -> ResNet:
    """A ResNet with IBN-a: IBN as the first normalisation of each block in stages 1-3
    (``non_local``, ``stem_pool``: see :class:`~adasp.models.resnet.ResNet`)."""
    return ResNet(
        block,
        layers,
        last_stride,
        stage_norm1=IBN_A_STAGE_NORMS,
        zero_init_residual=zero_init_residual,
        non_local=non_local,
        stem_pool=stem_pool,
    )


def _named(
    name: str, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int]
) -> Callable[..., ResNet]:
    return named_resnet(
        name, block, layers, IMAGENET_URLS, IBN_A_STAGE_NORMS, layout="the IBN-Net layout"
    )


resnet18_ibn_a = _named("resnet18_ibn_a", BasicBlock, (2, 2, 2, 2))
resnet34_ibn_a = _named("resnet34_ibn_a", BasicBlock, (3, 4, 6, 3))
resnet50_ibn_a = _named("resnet50_ibn_a", Bottleneck, (3, 4, 6, 3))
resnet101_ibn_a = _named("resnet101_ibn_a", Bottleneck, (3, 4, 23, 3))
