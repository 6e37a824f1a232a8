"""Shared building blocks of the pairwise metric losses: input checks, similarity and masks."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def check_metric_inputs(features: Tensor, labels: Tensor, check_finite: bool = True) -> Tensor:
    """Validate a metric loss's inputs and return ``labels`` on the features' device.

    Args:
        features: ``(B, D)`` floating-point embeddings.
        labels: ``(B,)`` integer identity labels (any values, any order); when they are on
            the CPU (pinned, as a loader gives them) the copy does not wait for the device.
        check_finite: also refuse NaN/Inf features. This reads a value on the host, so it
            waits for the device; a training loop that checks its loss on the device instead
            (:class:`adasp.engine.Trainer`) turns it off.

    Raises:
        ValueError: naming the problem (shape, dtype, empty batch, non-finite values).
    """
    if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
        raise ValueError(
            "features and labels must be torch tensors, got "
            f"{type(features).__name__} and {type(labels).__name__}"
        )
    if features.dim() != 2:
        raise ValueError(
            f"features must be a 2-D tensor (batch, dim), got shape {tuple(features.shape)}"
        )
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got dtype {features.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"labels must be a 1-D tensor (batch,), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor (e.g. torch.long), got dtype {labels.dtype}; "
            "convert class ids with labels.long() only if they are whole numbers"
        )
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"features and labels disagree on the batch size: {features.shape[0]} features "
            f"vs {labels.shape[0]} labels"
        )
    if features.shape[0] == 0:
        raise ValueError("empty batch: features and labels have no rows")
    if features.shape[1] == 0:
        raise ValueError("features have zero dimensions (shape (B, 0))")
    if check_finite and not _all_finite(features.detach()):
        raise ValueError(
            "features contain NaN or Inf values; check the model output (learning rate, AMP "
            "loss scaling) before the loss"
        )
    return labels.to(features.device, non_blocking=True)


def _all_finite(tensor: Tensor) -> bool:
    # A finite float32 sum proves every entry finite in one cheap reduction; only when it is
    # not (a NaN, an Inf, or an overflowing sum) is the element-wise check needed.
    total = tensor.sum(dtype=torch.float64 if tensor.dtype == torch.float64 else torch.float32)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(tensor).all())


def compute_dtype(features: Tensor) -> torch.dtype:
    """The dtype a loss computes in: float32 for half inputs, otherwise the input's dtype.

    Half-precision similarities near 1 lose the differences the loss depends on, so half inputs
    are lifted to float32 (never to float64).
    """
    return torch.float32 if features.dtype in _HALF_DTYPES else features.dtype


def cosine_similarity_matrix(features: Tensor) -> Tensor:
    """``(B, B)`` cosine similarities of the rows of ``features`` (``(B, D)``), in compute dtype."""
    x = F.normalize(features.to(compute_dtype(features)), dim=1)
    return x @ x.T


def euclidean_distance_matrix(features: Tensor) -> Tensor:
    """``(B, B)`` Euclidean distances between rows, in compute dtype.

    The squared distance is clamped at 1e-12 before the square root so that the zero distance
    of a row to itself has a finite (zero) gradient.
    """
    x = features.to(compute_dtype(features))
    sq = (x * x).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return d2.clamp_min(1e-12).sqrt()


def same_identity_mask(labels: Tensor) -> Tensor:
    """``(B, B)`` boolean mask, True where two samples share a label (diagonal included)."""
    return labels[:, None] == labels[None, :]


def pair_masks(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(positive, negative, not_self)`` ``(B, B)`` boolean masks: same label without the
    diagonal, different label, and everything but the diagonal."""
    not_self = ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    same = same_identity_mask(labels)
    return same & not_self, ~same, not_self


def masked_logsumexp(values: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Log-sum-exp of ``values`` over the entries where ``mask`` is True (``-inf`` if none)."""
    return torch.where(mask, values, float("-inf")).logsumexp(dim=dim)


def autocast_off(features: Tensor) -> contextlib.AbstractContextManager:
    """A context that disables autocast on the features' device.

    The losses pick their own precision; autocast would otherwise run the similarity matmul in
    half precision. A device without autocast (e.g. ``meta``) gets a no-op context.
    """
    if not torch.amp.is_autocast_available(features.device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=features.device.type, enabled=False)


def zero_loss(features: Tensor) -> Tensor:
    """A zero scalar in compute dtype, connected to the graph so ``backward()`` works on it."""
    return features.sum().to(compute_dtype(features)) * 0.0
