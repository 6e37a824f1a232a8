"""Query × gallery distances between embeddings, whole or in blocks of query rows.

Two metrics, chosen by name from :data:`METRICS`:

- ``"cosine"``: ``1 - cos(q, g)`` of the L2-normalised features, in [0, 2] (to rounding).
- ``"euclidean"``: the plain (not squared) L2 distance ``||q - g||``, from
  ``sqrt(max(|q|² + |g|² - 2 q·g, 0))`` so that a block costs one matrix product.

Both are computed in float32 (float64 features stay float64) on the features' device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from adasp.errors import UserInputError
from adasp.evaluation.ranking import as_tensor, check_choice, resolve_chunk_size


def _prepare_cosine(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.nn.functional.normalize(features, dim=1), None


def _prepare_euclidean(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    return features, (features * features).sum(1)


def _cosine_block(
    query: torch.Tensor, gallery: torch.Tensor, q_sq: torch.Tensor | None, g_sq: torch.Tensor | None
) -> torch.Tensor:
    # In place: no second block-sized allocation. (Folding the 1 into the matrix product,
    # addmm, would accumulate the dot products onto 1.0 and lose precision.)
    return (query @ gallery.T).neg_().add_(1.0)


def _euclidean_block(
    query: torch.Tensor, gallery: torch.Tensor, q_sq: torch.Tensor | None, g_sq: torch.Tensor | None
) -> torch.Tensor:
    squared = torch.addmm(q_sq[:, None] + g_sq[None, :], query, gallery.T, alpha=-2.0)
    return squared.clamp_(min=0.0).sqrt_()


#: Metric name -> (per-set preparation, block distance).
METRICS: dict[str, tuple[Callable, Callable]] = {
    "cosine": (_prepare_cosine, _cosine_block),
    "euclidean": (_prepare_euclidean, _euclidean_block),
}


def as_features(features: Any, name: str, device: torch.device | str | None = None) -> torch.Tensor:
    """``(N, D)`` real features as a float32 (or float64) tensor on ``device``, detached."""
    tensor = as_tensor(features, name, device).detach()
    if tensor.dim() != 2:
        raise UserInputError(
            f"{name} must be 2-D (an array or tensor of rows); got shape {tuple(tensor.shape)}"
        )
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise UserInputError(f"{name} must be real-valued; got dtype {tensor.dtype}")
    if tensor.dtype != torch.float64:
        tensor = tensor.float()
    if tensor.numel():
        low, high = torch.aminmax(tensor)  # one pass; NaN and ±inf show in min or max
        if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
            raise UserInputError(f"{name} contains NaN or infinite values; check the model output")
    return tensor


def check_same_dimension(query: torch.Tensor, gallery: torch.Tensor) -> None:
    """Raise a clear error when ``(Q, D)`` and ``(G, D')`` features differ in ``D``."""
    if query.shape[1] != gallery.shape[1]:
        raise UserInputError(
            f"query and gallery features must have the same dimension, got {query.shape[1]} "
            f"and {gallery.shape[1]}: extract both with the same model"
        )


def _check_pair(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    check_same_dimension(query, gallery)
    if query.dtype != gallery.dtype:
        wider = torch.promote_types(query.dtype, gallery.dtype)
        return gallery.to(wider)
    return gallery


def distance_chunks(
    query_features: Any,
    gallery_features: Any,
    metric: str = "cosine",
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(query_slice, distances (len(slice), G))`` over all queries, in order.

    Only one block of ``chunk_size`` query rows (default: about 16 M distances) exists at a
    time, so Q × G is never held. ``device`` defaults to the query features' device.
    """
    check_choice(metric, tuple(METRICS), "metric")
    if device is None and isinstance(query_features, torch.Tensor):
        device = query_features.device
    query = as_features(query_features, "query_features", device)
    gallery = as_features(gallery_features, "gallery_features", query.device)
    return checked_distance_chunks(query, gallery, metric, chunk_size)


def checked_distance_chunks(
    query: torch.Tensor, gallery: torch.Tensor, metric: str, chunk_size: int | None
) -> Iterator[tuple[slice, torch.Tensor]]:
    """:func:`distance_chunks` of features already checked by :func:`as_features` (on one
    device), skipping the checks' passes over the data."""
    check_choice(metric, tuple(METRICS), "metric")
    gallery = _check_pair(query, gallery)
    query = query.to(gallery.dtype)
    step = resolve_chunk_size(chunk_size, gallery.shape[0])
    return _blocks(query, gallery, METRICS[metric], step)


def _blocks(query, gallery, metric, step):
    prepare, block = metric
    gallery, g_sq = prepare(gallery)
    for begin in range(0, query.shape[0], step):
        rows = slice(begin, min(begin + step, query.shape[0]))
        q, q_sq = prepare(query[rows])
        yield rows, block(q, gallery, q_sq, g_sq)


def pairwise_distances(
    query_features: Any, gallery_features: Any, metric: str = "cosine"
) -> torch.Tensor:
    """The full ``(Q, G)`` distance matrix (for small sets; use :func:`distance_chunks` else)."""
    blocks = [d for _, d in distance_chunks(query_features, gallery_features, metric)]
    if not blocks:
        gallery = as_features(gallery_features, "gallery_features")
        return torch.zeros((0, gallery.shape[0]))
    return torch.cat(blocks)
