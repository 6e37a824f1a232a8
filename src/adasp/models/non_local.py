"""Non-local blocks (Wang et al., CVPR 2018) as AGW (Ye et al., TPAMI 2021) places them in a ResNet.

A non-local block lets every position of a ``(B, C, H, W)`` map attend to every other one,
with dot-product affinities normalised by the number of positions N = H·W::

    f = θ(x)ᵀ φ(x) / N        (B, N, N)
    y = f g(x)                (B, N, C')
    z = x + BN(W(y))          (B, C, H, W)

θ, φ, g are 1x1 convolutions (with bias) to C' channels, W a 1x1 convolution back to C
followed by a BatchNorm initialised to zero, so a new block starts as the identity. AGW's
published code (and fast-reid, whose trained models adasp converts) uses C' = 1 (its
``reduc_ratio // reduc_ratio``); that is kept here so their weights load.

:data:`AGW_NON_LOCAL` says after which blocks of each stage the blocks go: after the last 2
blocks of stage 2 and the last 3 of stage 3 (ResNet-50; the last 9 of stage 3 for
ResNet-101), none in ResNet-18/34.
"""

from __future__ import annotations

from torch import Tensor, nn

#: Embedding channels C' of θ, φ and g, as in AGW's and fast-reid's code.
INTER_CHANNELS = 1

#: Non-local blocks per stage by ResNet depth (AGW's placement), the last blocks of a stage.
AGW_NON_LOCAL: dict[tuple[int, ...], tuple[int, ...]] = {
    (2, 2, 2, 2): (0, 0, 0, 0),
    (3, 4, 6, 3): (0, 2, 3, 0),
    (3, 4, 23, 3): (0, 2, 9, 0),
}


class NonLocal(nn.Module):
    """A non-local block: ``(B, C, H, W) -> (B, C, H, W)`` (see the module doc)."""

    def __init__(self, channels: int, inter_channels: int = INTER_CHANNELS) -> None:
        super().__init__()
        self.inter_channels = inter_channels
        self.g = nn.Conv2d(channels, inter_channels, 1)
        self.theta = nn.Conv2d(channels, inter_channels, 1)
        self.phi = nn.Conv2d(channels, inter_channels, 1)
        norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(norm.weight)
        nn.init.zeros_(norm.bias)
        self.W = nn.Sequential(nn.Conv2d(inter_channels, channels, 1), norm)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        g = self.g(x).flatten(2).transpose(1, 2)  # (B, N, C')
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
        phi = self.phi(x).flatten(2)  # (B, C', N)
        affinity = (theta @ phi) / (h * w)  # (B, N, N)
        y = (affinity @ g).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.W(y)


def non_local_positions(layers: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Per stage, the indices of the blocks followed by a non-local block (AGW's placement).

    ``layers`` is the number of blocks per stage, e.g. ``(3, 4, 6, 3)`` -> ``((), (2, 3),
    (3, 4, 5), ())``; depths without a published placement get none.
    """
    counts = AGW_NON_LOCAL.get(tuple(layers), (0, 0, 0, 0))
    return tuple(
        tuple(range(blocks - count, blocks)) for blocks, count in zip(layers, counts, strict=True)
    )
