"""A Sparse Pairwise loss replayed from a CUDA graph: one launch for its forward and backward.

At the batch sizes of ReID training the Sparse Pairwise losses are bound by kernel launches,
not arithmetic (about 120 small operators forward and backward; ``docs/performance.md``). A
CUDA graph captures them once and replays them with one launch. A graph is fixed: the same
input shape, dtype and device, and the same index tables (:class:`ClassLayout`). The loss
depends on the labels only through which samples share an identity, so the labels are first
renamed by order of first appearance (``canonical_labels``: a P×K batch from
:class:`~adasp.data.PKSampler` always renames to the same ids) and one graph serves every
batch of that pattern. A batch of another pattern gets its own graph (at most
``max_graphs``), then the eager loss.

The captured function is :func:`layout_loss`: the loss of features with a fixed layout, the
same operations the eager loss runs after building its layout. On the CPU (and wherever CUDA
graphs are not available) :class:`GraphedSparsePairwise` calls the eager loss; the tests check
there that :func:`layout_loss` with the renamed labels equals the eager loss, value and
gradient, and on CUDA that the replayed graph does.

Prepared, not yet measured on a GPU (``benchmarks/gpu.py`` section (a), column "graphed").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adasp.losses.class_layout import ClassLayout
from adasp.losses.pairwise import compute_dtype
from adasp.losses.registry import Objective
from adasp.losses.sparse_pairwise import AdaSPLoss, _SparsePairwiseLoss


def canonical_labels(labels: Tensor) -> Tensor:
    """``labels`` ``(B,)`` renamed 0, 1, 2, ... in order of first appearance: two batches
    with the same partition into identities get the same result."""
    _, inverse = torch.unique(labels, return_inverse=True)
    positions = torch.arange(labels.numel(), device=labels.device)
    first = torch.full((int(inverse.max()) + 1,), labels.numel(), device=labels.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    rank = torch.empty_like(first)
    rank[torch.argsort(first)] = torch.arange(first.numel(), device=labels.device)
    return rank[inverse]


def layout_loss(features: Tensor, layout: ClassLayout, temperature: float, mode: str) -> Tensor:
    """The Sparse Pairwise loss of ``features`` ``(B, D)`` over a prebuilt ``layout`` (at least
    two classes): what :class:`AdaSPLoss` computes after building its layout."""
    x = F.normalize(features.to(compute_dtype(features)), dim=1)
    return _SparsePairwiseLoss.apply(x, 1.0 / temperature, layout, mode)


class GraphedSparsePairwise(nn.Module):
    """``loss(features, labels)`` of an :class:`AdaSPLoss` (any mode), replayed from a CUDA
    graph of its forward and backward on CUDA; the eager loss elsewhere.

    Used by the trainer with ``loss.cuda_graph: true``. The features must require a gradient
    (training); the labels should be the loader's host labels (device labels are read on the
    host once per call to rename them). The wrapped loss's NaN check is not run in the graph
    (the trainer checks the total on the device).

    Args:
        loss: the eager loss (its ``temperature`` and ``mode`` are used).
        max_graphs: graphs kept (one per input shape, dtype and label pattern).
    """

    accepts_host_labels = True
    input_key = "features"

    def __init__(self, loss: AdaSPLoss, max_graphs: int = 4) -> None:
        super().__init__()
        self.loss = loss
        self.max_graphs = max_graphs
        self._graphs: dict[tuple, Callable[[Tensor], Tensor]] = {}

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        if not (features.is_cuda and features.requires_grad and torch.is_grad_enabled()):
            return self.loss(features, labels)
        renamed = canonical_labels(labels.cpu())
        if int(renamed.max()) < 1:  # one identity: no pairs, the eager loss's zero
            return self.loss(features, labels)
        key = (tuple(features.shape), features.dtype, features.device, renamed.numpy().tobytes())
        graphed = self._graphs.get(key)
        if graphed is None:
            if len(self._graphs) >= self.max_graphs:
                return self.loss(features, labels)
            graphed = self._graphs[key] = self._capture(features, renamed)
        return graphed(features)

    def _capture(self, features: Tensor, renamed: Tensor) -> Callable[[Tensor], Tensor]:
        layout = ClassLayout.from_labels(renamed, device=features.device)
        temperature, mode = self.loss.temperature, self.loss.mode

        def loss_of(x: Tensor) -> Tensor:
            return layout_loss(x, layout, temperature, mode)

        sample = torch.empty_like(features).normal_().requires_grad_(True)
        graphed = torch.cuda.make_graphed_callables(loss_of, (sample,))
        return graphed  # type: ignore[return-value]  # the graphed function of loss_of


def graph_sparse_pairwise(objective: Objective, distributed: bool = False) -> None:
    """Wrap the Sparse Pairwise losses of an :class:`~adasp.losses.Objective` in place in
    :class:`GraphedSparsePairwise` (not under DDP gathering, whose batch is not fixed)."""
    if distributed:
        return
    losses = objective.losses
    for name, loss in list(losses.items()):
        if isinstance(loss, AdaSPLoss) and not loss.gather_distributed:
            losses[name] = GraphedSparsePairwise(loss)
