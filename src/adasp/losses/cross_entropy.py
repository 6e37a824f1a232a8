"""Cross-entropy with label smoothing on identity logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adasp.losses.pairwise import autocast_off
from adasp.utils.checks import check_float


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against targets smoothed as ``(1 - ε)·onehot + ε/C``.

    ``loss(logits, labels)``: ``logits`` ``(B, C)``, ``labels`` ``(B,)`` integers in
    ``[0, C)``; returns the batch mean as a 0-dim float32 (or float64) tensor.

    Args:
        epsilon: ε in [0, 1) (0.1 in the paper's recipe).
    """

    input_key = "logits"

    #: ``labels`` may be on the CPU while ``logits`` are on a GPU: checked there, then copied.
    accepts_host_labels = True

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        self.epsilon = check_float("epsilon", epsilon, 0, 1, high_open=True)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.dim() != 2 or not logits.is_floating_point():
            raise ValueError(
                f"logits must be a 2-D floating tensor (batch, classes), got shape "
                f"{tuple(logits.shape)} and dtype {logits.dtype}"
            )
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} "
                f"and dtype {labels.dtype}"
            )
        if logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
            raise ValueError(
                f"logits and labels must have the same non-zero batch size, got "
                f"{logits.shape[0]} and {labels.shape[0]}"
            )
        num_classes = logits.shape[1]
        # Checked where the labels are: on the CPU (as a loader gives them) this costs no wait
        # for the GPU, and the copy below is asynchronous.
        if bool(((labels < 0) | (labels >= num_classes)).any()):
            raise ValueError(
                f"labels must lie in [0, {num_classes}) for {num_classes} classes, got values "
                f"from {int(labels.min())} to {int(labels.max())}; relabel training identities "
                "to 0..n-1"
            )
        labels = labels.to(logits.device, non_blocking=True)
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        with autocast_off(logits):
            log_prob = F.log_softmax(logits.to(dtype), dim=1)
            nll = -log_prob.gather(1, labels[:, None]).squeeze(1)
            uniform = -log_prob.mean(dim=1)
            return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"
