"""MGN, the Multiple Granularity Network (Wang et al., ACM MM 2018), on ResNet50-IBN-a.

Layout (input 256x128; map sizes in brackets):

- a shared stem: ResNet50-IBN-a up to and including ``layer3[0]`` [16x8 after layer3];
- three branches, each with its own copy of the rest of ``layer3`` and of ``layer4``:
  branch 1 (global) keeps the stride-2 ``layer4`` [8x4]; branches 2 and 3 use stride 1
  [16x8] and are also cut into 2 and 3 horizontal stripes;
- 8 pooled 2048-d vectors (3 global + 2 + 3 stripes), each reduced to 256-d by
  linear (a 1x1 conv on the pooled map) + BN + ReLU, then a BNNeck and a classifier each.

Training returns the three branches' global 256-d features (the metric loss goes on each,
before the BNNeck) and the 8 classifiers' logits; inference returns the concatenation of all
8 embeddings, 8·256 = 2048-d.

Parameter names: the stem's are ResNet50-IBN-a's under ``stem.`` (``stem.conv1.weight``,
``stem.layer3.0.conv1.weight``); branch ``b`` has ``branches.b.layer3.{1..5}.*`` and
``branches.b.layer4.{0..2}.*`` with the original block indices, so ImageNet weights map
by a prefix (see :meth:`MGNBackbone.remap_state_dict`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adasp.errors import UserInputError
from adasp.models.head import BNNeck
from adasp.models.ibn import resnet50_ibn_a
from adasp.models.pooling import build_pooling, pool_stripes
from adasp.models.resnet import resnet50, set_layer_stride

#: Stripes per branch in the published design: global, 2 parts, 3 parts.
MGN_PARTS = (1, 2, 3)


class MGNBackbone(nn.Module):
    """MGN's shared stem and per-branch copies of ``layer3[1:]`` and ``layer4``.

    Args:
        parts: stripes per branch; a branch with 1 stripe is a global branch.
        global_stride: ``layer4`` stride of the global branches (2 in the published design);
            striped branches always use stride 1, for enough rows per stripe.

    ``forward(images (B, 3, H, W))`` -> a list with one feature map per branch,
    ``(B, 2048, H/32, W/32)`` for global branches and ``(B, 2048, H/16, W/16)`` otherwise.
    """

    head_type = "mgn"

    def __init__(
        self,
        parts: Sequence[int] = MGN_PARTS,
        global_stride: int = 2,
        ibn: bool = True,
        stem_pool: str = "pad",
    ) -> None:
        super().__init__()
        parts = tuple(parts)
        if not parts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in parts):
            raise UserInputError(f"MGN parts must be integers >= 1 per branch, got {parts!r}")
        if global_stride not in (1, 2):
            raise UserInputError(f"MGN global_stride must be 1 or 2, got {global_stride!r}")
        # ibn=False and stem_pool="ceil" give fast-reid's MGN trunks (adasp convert).
        trunk = (resnet50_ibn_a if ibn else resnet50)(last_stride=2, stem_pool=stem_pool)
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=trunk.conv1,
                bn1=trunk.bn1,
                relu=trunk.relu,
                maxpool=trunk.maxpool,
                layer1=trunk.layer1,
                layer2=trunk.layer2,
                layer3=nn.Sequential(OrderedDict([("0", trunk.layer3[0])])),
            )
        )
        rest_of_layer3 = nn.Sequential(
            OrderedDict((str(i), trunk.layer3[i]) for i in range(1, len(trunk.layer3)))
        )
        self.branches = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    layer3=copy.deepcopy(rest_of_layer3),
                    layer4=set_layer_stride(
                        copy.deepcopy(trunk.layer4), global_stride if n == 1 else 1
                    ),
                )
            )
            for n in parts
        )
        self.parts = parts
        self.out_channels = trunk.out_channels
        self.imagenet_url = trunk.imagenet_url

    def forward(self, images: Tensor) -> list[Tensor]:
        shared = self.stem(images)
        return [branch(shared) for branch in self.branches]

    def remap_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map a ResNet-50(-IBN-a) state dict (torchvision/IBN-Net names) onto MGN's names.

        ``layer3.0`` and everything before it go to ``stem.``; ``layer3.{1..}`` and
        ``layer4`` are copied into every branch; every other key (``fc.*``, keys already in
        MGN's layout, a whole model's ``head.*``) keeps its name, so a report of unexpected keys
        names them as they are in the file.
        """
        mapped: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            head, _, rest = key.partition(".")
            if head == "layer4" or (head == "layer3" and not rest.startswith("0.")):
                for b in range(len(self.branches)):
                    mapped[f"branches.{b}.{key}"] = value
            elif head in ("conv1", "bn1", "layer1", "layer2", "layer3") and rest:
                mapped[f"stem.{key}"] = value
            else:
                mapped[key] = value
        return mapped


class MGNHead(nn.Module):
    """MGN's pooling (global and stripes), 256-d reductions, BNNecks and classifiers.

    Args:
        parts: stripes per branch, as the backbone's.
        in_channels: channels of each branch's map (2048).
        num_classes: training identities; 0 builds no classifiers.
        pooling, gem_p: pooling per branch (one module per branch, so GeM learns one ``p``
            per granularity), shared by a branch's global vector and its stripes.
        reduction_dim: size of every reduced feature (256 in the published design).
        neck, neck_feat, dropout: as for :class:`BNNeck`, applied to every feature.

    ``forward(maps)``: training -> ``{"features": [5 tensors], "logits": [8 x (B,
    num_classes)]}``: the features are the three branch globals ``(B, reduction_dim)`` and the
    concatenated stripes of the 2- and 3-stripe branches (``(B, 2·reduction_dim)``,
    ``(B, 3·reduction_dim)``), all before their BNNeck BN, as the AdaSP code feeds its metric
    loss; the logits come global branches first, then the stripes top to bottom, branch by
    branch. Eval -> ``(B, 8·reduction_dim)``, not L2-normalised.
    """

    def __init__(
        self,
        parts: Sequence[int],
        in_channels: int,
        num_classes: int,
        *,
        pooling: str = "avg",
        gem_p: float = 3.0,
        reduction_dim: int = 256,
        neck: str = "bnneck",
        neck_feat: str = "after",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.parts = tuple(parts)
        count = len(self.parts) + sum(n for n in self.parts if n > 1)
        self.pools = nn.ModuleList(build_pooling(pooling, gem_p) for _ in self.parts)
        # As in the AdaSP code (fast-reid's MGN): a bias-free linear reduction feeding the
        # BNNeck, no ReLU, so the metric loss sees signed features (after a ReLU every cosine
        # similarity would be >= 0 and AdaSP's H < 0 rule could never apply).
        self.reductions = nn.ModuleList(
            nn.Linear(in_channels, reduction_dim, bias=False) for _ in range(count)
        )
        self.necks = nn.ModuleList(
            BNNeck(reduction_dim, num_classes, neck=neck, neck_feat=neck_feat, dropout=dropout)
            for _ in range(count)
        )
        for reduction in self.reductions:
            nn.init.kaiming_normal_(reduction.weight, mode="fan_in")
        self.embedding_dim = count * reduction_dim
        self.num_classes = num_classes

    def forward(self, maps: Sequence[Tensor]) -> dict[str, list[Tensor]] | Tensor:
        global_vectors = [pool(m) for pool, m in zip(self.pools, maps, strict=True)]
        stripes = [
            vector
            for pool, m, n in zip(self.pools, maps, self.parts, strict=True)
            if n > 1
            for vector in pool_stripes(pool, m, n)
        ]
        outs = [
            neck(reduction(vector))
            for reduction, neck, vector in zip(
                self.reductions, self.necks, global_vectors + stripes, strict=True
            )
        ]
        if not self.training:
            return torch.cat([out.embedding for out in outs], dim=1)
        # The metric loss's inputs, as in the AdaSP code: each branch's global feature, and
        # each striped branch's stripes concatenated.
        features = [out.feature for out in outs[: len(self.parts)]]
        start = len(self.parts)
        for n in (n for n in self.parts if n > 1):
            features.append(torch.cat([out.feature for out in outs[start : start + n]], dim=1))
            start += n
        outputs: dict[str, list[Tensor]] = {"features": features}
        if self.num_classes:
            outputs["logits"] = [out.logits for out in outs]
        return outputs


def build_mgn(
    *, last_stride: int = 1, global_stride: int = 2, ibn: bool = True, stem_pool: str = "pad"
) -> MGNBackbone:
    """MGN's backbone on ResNet50-IBN-a with branches (global, 2 stripes, 3 stripes).

    ``last_stride`` is not used: MGN fixes its branch strides (``global_stride`` for the
    global branch, 1 for the striped ones), as published. ``ibn=False`` builds it on a plain
    ResNet-50; ``stem_pool`` as for ResNets (``"ceil"``: fast-reid's).
    """
    del last_stride
    return MGNBackbone(MGN_PARTS, global_stride, ibn, stem_pool)
