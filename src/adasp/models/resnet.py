"""ResNets in torchvision's architecture and parameter names, as feature-map backbones.

The modules and their names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
...) are exactly torchvision's, so a state dict users download (``resnet50-0676ba61.pth``)
loads without conversion; only the ImageNet classifier ``fc.*`` is left over. The stride of
a bottleneck sits on its 3x3 convolution (torchvision's "ResNet v1.5").

A backbone returns the last feature map ``(B, C, H/s, W/s)`` with ``s = 32`` (or 16 with
``last_stride=1``, the re-identification default: twice the spatial resolution at the same
cost in parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from adasp.errors import UserInputError
from adasp.models.non_local import NonLocal, non_local_positions

#: Builds the normalisation layer for a number of channels.
NormFactory = Callable[[int], nn.Module]

_TORCHVISION = "https://download.pytorch.org/models/"
#: torchvision's IMAGENET1K_V1 weights, the ones re-identification work starts from.
IMAGENET_URLS = {
    "resnet18": _TORCHVISION + "resnet18-f37072fd.pth",
    "resnet34": _TORCHVISION + "resnet34-b627a593.pth",
    "resnet50": _TORCHVISION + "resnet50-0676ba61.pth",
    "resnet101": _TORCHVISION + "resnet101-63fe2227.pth",
    "resnet152": _TORCHVISION + "resnet152-394f9c45.pth",
}


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    ``norm1`` builds the first normalisation (BatchNorm, or IBN for IBN-a networks).
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm1: NormFactory = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = norm1(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    @property
    def strided_conv(self) -> nn.Conv2d:
        """The convolution that carries the block's stride."""
        return self.conv1

    @property
    def last_norm(self) -> nn.Module:
        """The normalisation before the residual sum (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand, with a residual connection (ResNet-50 and up).

    ``norm1`` builds the first normalisation (BatchNorm, or IBN for IBN-a networks).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm1: NormFactory = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = norm1(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def strided_conv(self) -> nn.Conv2d:
        """The convolution that carries the block's stride."""
        return self.conv2

    @property
    def last_norm(self) -> nn.Module:
        """The normalisation before the residual sum (zeroed by ``zero_init_residual``)."""
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def set_layer_stride(layer: nn.Sequential, stride: int) -> nn.Sequential:
    """Set the stride of a ResNet stage (its first block's strided conv and shortcut) in place.

    Used for ``last_stride=1`` on copies of ``layer4`` (MGN's part branches). Returns ``layer``.
    """
    first = layer[0]
    first.strided_conv.stride = (stride, stride)
    if first.downsample is not None:
        first.downsample[0].stride = (stride, stride)
    return layer


class ResNet(nn.Module):
    """A ResNet trunk (stem and four stages, no pooling or classifier) returning a feature map.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: number of blocks in each of the four stages, e.g. ``(3, 4, 6, 3)``.
        last_stride: stride of the fourth stage, 2 (ImageNet) or 1 (re-identification).
        stage_norm1: per stage, the factory of each block's first normalisation; IBN-a
            networks pass IBN for stages 1-3. Default: BatchNorm everywhere.
        zero_init_residual: start every block as the identity (last BN scale 0); helps
            training from scratch, irrelevant when pretrained weights are loaded.
        non_local: insert non-local blocks after the last blocks of stages 2 and 3, as AGW
            does (:mod:`adasp.models.non_local`; none for ResNet-18/34). Their parameters
            are ``non_local.<stage>.<i>.*``.
        stem_pool: the stem's 3x3/2 max pooling: ``"pad"`` (torchvision's, padding 1) or
            ``"ceil"`` (no padding, ceil mode: fast-reid's, for the models it trained).

    ``forward(images (B, 3, H, W)) -> (B, out_channels, H', W')`` with ``H' = ceil(H/32)``
    (``/16`` for ``last_stride=1``).
    """

    head_type = "global"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        last_stride: int = 2,
        stage_norm1: Sequence[NormFactory] | None = None,
        zero_init_residual: bool = False,
        non_local: bool = False,
        stem_pool: str = "pad",
    ) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise UserInputError(f"last_stride must be 1 or 2, got {last_stride!r}")
        if stem_pool not in STEM_POOLS:
            raise UserInputError(
                f"unknown stem_pool {stem_pool!r}; allowed: {', '.join(STEM_POOLS)}"
            )
        norms = list(stage_norm1 or [nn.BatchNorm2d] * 4)
        self.in_channels = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = STEM_POOLS[stem_pool]()
        self.layer1 = self._make_stage(block, 64, layers[0], 1, norms[0])
        self.layer2 = self._make_stage(block, 128, layers[1], 2, norms[1])
        self.layer3 = self._make_stage(block, 256, layers[2], 2, norms[2])
        self.layer4 = self._make_stage(block, 512, layers[3], last_stride, norms[3])
        #: Channels of the output feature map.
        self.out_channels = 512 * block.expansion
        #: Where ``pretrained="imagenet"`` downloads from (set by the named builders).
        self.imagenet_url: str | None = None
        self._init_weights(zero_init_residual)
        # Built after the initialisation: a non-local block starts as the identity.
        positions = non_local_positions(tuple(layers)) if non_local else ((),) * 4
        self.non_local_after = {f"layer{i + 1}": frozenset(p) for i, p in enumerate(positions) if p}
        self.non_local = nn.ModuleDict(
            {
                stage: nn.ModuleList(NonLocal(self._width(stage)) for _ in after)
                for stage, after in self.non_local_after.items()
            }
        )

    def _make_stage(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        norm1: NormFactory,
    ) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or self.in_channels != out_channels:
            downsample = nn.Sequential(
                _conv1x1(self.in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )
        stage = [block(self.in_channels, planes, stride, downsample, norm1)]
        self.in_channels = out_channels
        stage += [block(out_channels, planes, norm1=norm1) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's initialisation, so training from scratch matches it.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_norm.weight)

    def _width(self, stage: str) -> int:
        last = getattr(self, stage)[-1]
        return last.last_norm.num_features

    def _stage(self, name: str, x: Tensor) -> Tensor:
        after = self.non_local_after.get(name)
        if not after:
            return getattr(self, name)(x)
        blocks = self.non_local[name].children()
        for index, block in enumerate(getattr(self, name)):
            x = block(x)
            if index in after:
                x = next(blocks)(x)
        return x

    def forward(self, images: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = self._stage(name, x)
        return x


#: The stem's max pooling by ``stem_pool`` name.
STEM_POOLS: dict[str, Callable[[], nn.Module]] = {
    "pad": lambda: nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    "ceil": lambda: nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
}


def named_resnet(
    name: str,
    block: type[BasicBlock] | type[Bottleneck],
    layers: Sequence[int],
    urls: dict[str, str],
    stage_norm1: Sequence[NormFactory] | None = None,
    layout: str = "torchvision's layout",
) -> Callable[..., ResNet]:
    """The builder ``name(*, last_stride, zero_init_residual, non_local, stem_pool)`` of a
    registered ResNet variant, with its ImageNet weights' address from ``urls`` (shared by the
    plain and the IBN-a families, which differ in ``stage_norm1``)."""

    def build(
        *,
        last_stride: int = 1,
        zero_init_residual: bool = False,
        non_local: bool = False,
        stem_pool: str = "pad",
    ) -> ResNet:
        model = ResNet(
            block,
            layers,
            last_stride,
            stage_norm1=stage_norm1,
            zero_init_residual=zero_init_residual,
            non_local=non_local,
            stem_pool=stem_pool,
        )
        model.imagenet_url = urls[name]
        return model

    build.__name__ = name
    build.__qualname__ = name
    build.__doc__ = (
        f"{name} in {layout}; ``last_stride`` 1 (default) or 2; ``zero_init_residual`` for "
        "training from scratch; ``non_local`` (AGW's non-local blocks); ``stem_pool`` ``pad`` "
        "or ``ceil``."
    )
    return build


def _named(
    name: str, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int]
) -> Callable[..., ResNet]:
    return named_resnet(name, block, layers, IMAGENET_URLS)


resnet18 = _named("resnet18", BasicBlock, (2, 2, 2, 2))
resnet34 = _named("resnet34", BasicBlock, (3, 4, 6, 3))
resnet50 = _named("resnet50", Bottleneck, (3, 4, 6, 3))
resnet101 = _named("resnet101", Bottleneck, (3, 4, 23, 3))
resnet152 = _named("resnet152", Bottleneck, (3, 8, 36, 3))
