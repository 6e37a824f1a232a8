"""Global pooling of a feature map into one vector per image: average, max and GeM.

Every pooling module maps a feature map ``(B, C, H, W)`` to ``(B, C)``. Part-based models
(MGN) pool horizontal stripes by calling the same module on slices of the map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from adasp.errors import UserInputError
from adasp.registry import Registry


class AvgPool(nn.Module):
    """Global average pooling: ``(B, C, H, W) -> (B, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class MaxPool(nn.Module):
    """Global max pooling: ``(B, C, H, W) -> (B, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=(2, 3))


class AvgMaxPool(nn.Module):
    """Sum of global average and max pooling (fast-reid's ``AdaptiveAvgMaxPool``):
    ``(B, C, H, W) -> (B, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))


class GeMPool(nn.Module):
    """Generalised-mean pooling with a learnable exponent ``p`` (Radenović et al. 2018).

    ``y_c = (mean_{h,w} max(x_chw, eps)^p)^(1/p)``: ``p = 1`` is average pooling and large
    ``p`` approaches max pooling. The input is clamped at ``eps``, so GeM expects
    non-negative maps (a ReLU network's output), as ResNets give.

    Args:
        p: initial exponent (> 0); a learnable parameter unless ``learnable=False``.
        eps: lower clamp of the input, keeps ``x^p`` and its gradient finite.
        learnable: train ``p`` with the network.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # x^p overflows float16 (e.g. 50^3 > 65504), so the power mean is taken in float32
        # even under autocast; the result is cast back to the input dtype.
        p = self.p.float()
        pooled = x.float().clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
        return pooled.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


#: Pooling name -> constructor taking the GeM exponent (``model.gem_p``; others ignore it).
#: Register yours with ``@POOLINGS.register("name")`` on a ``(gem_p) -> nn.Module`` function.
POOLINGS: Registry[Callable[[float], nn.Module]] = Registry("pooling")
POOLINGS.register("avg", lambda gem_p: AvgPool())
POOLINGS.register("max", lambda gem_p: MaxPool())
POOLINGS.register("gem", lambda gem_p: GeMPool(gem_p))
POOLINGS.register("avgmax", lambda gem_p: AvgMaxPool())


def build_pooling(name: str, gem_p: float = 3.0) -> nn.Module:
    """The pooling module registered as ``name`` (``avg``, ``max`` or ``gem``).

    Raises:
        UserInputError: for an unknown name or a non-positive ``gem_p``.
    """
    builder = POOLINGS.get(name)  # an unknown name lists the allowed ones
    if name == "gem" and not gem_p > 0:
        raise UserInputError(f"gem_p must be > 0 (3.0 is the usual start), got {gem_p}")
    return builder(gem_p)


def stripe_bounds(height: int, parts: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, end)`` of ``parts`` horizontal stripes of a map ``height`` rows high.

    The same bins as adaptive pooling: ``start = floor(i·H/n)``, ``end = ceil((i+1)·H/n)``,
    so the stripes are equal when ``n`` divides ``H`` and overlap by one row otherwise
    (e.g. 16 rows in 3 stripes: 0-6, 5-11, 10-16); no stripe is ever empty.
    """
    return [((i * height) // parts, -((-(i + 1) * height) // parts)) for i in range(parts)]


def pool_stripes(pool: nn.Module, x: Tensor, parts: int) -> list[Tensor]:
    """Pool ``parts`` horizontal stripes of ``x (B, C, H, W)``: a list of ``parts`` ``(B, C)``.

    The bounds come from the static height, so the result traces and exports to ONNX with a
    dynamic batch.
    """
    return [pool(x[:, :, start:end]) for start, end in stripe_bounds(x.shape[2], parts)]
