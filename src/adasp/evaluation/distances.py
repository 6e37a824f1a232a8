"""Distances between embeddings, for evaluation, search and re-ranking: one implementation.

A :class:`Metric` says how two sets of features become distances; :data:`METRICS` holds the
two that evaluation and search offer, by name:

- ``"cosine"``: ``1 - cos(q, g)`` of the L2-normalised features, in [0, 2] (to rounding).
- ``"euclidean"``: the plain (not squared) L2 distance ``||q - g||``, from
  ``sqrt(max(|q|² + |g|² - 2 q·g, 0))`` so that a block costs one matrix product.

:data:`SQEUCLIDEAN` (the squared L2 distance) is offered by re-ranking only: its rankings are
the Euclidean ones, but re-ranking's output depends on the values.

:func:`distance_chunks` yields the query × gallery distances a block of query rows at a time;
:func:`pairwise_distances` returns the whole matrix. They compute in float32 (float64 features
stay float64) on the features' device. The losses keep their own differentiable distances
(:mod:`adasp.losses.pairwise`): they need gradients, a clamp that keeps the gradient of a zero
distance finite, and half inputs lifted to float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from adasp.errors import UserInputError
from adasp.evaluation.inputs import as_tensor, check_choice, resolve_chunk_size


@dataclass(frozen=True)
class Metric:
    """How two sets of features become distances, block by block.

    Attributes:
        prepare: ``(N, D) -> (N, D)`` applied once to each set (L2 normalisation for cosine).
        column_terms: ``b_t (D, M) -> (1, M)`` per-column terms of the second set that every
            block needs (squared norms for the Euclidean distances; None for cosine), computed
            once per set rather than once per block.
        block: ``(a (B, D), b_t (D, M), terms) -> (B, M)`` distances ``d`` of prepared
            features, with ``terms = column_terms(b_t)``; ``b_t`` is the second set transposed
            (a view or a contiguous copy).
        squared_block: the same, squared (``d * d``: re-ranking starts from squared distances).
        squared_pairs: ``(a (P, D), b (P, D)) -> (P,)`` squared distances of row pairs.
        degree: ``d(s·a, s·b) = s^degree · d(a, b)``; the features of a metric of degree 1
            or more are brought near unit scale (by one power of two for both sets, exact)
            before its squares are taken, so that no magnitude overflows or underflows.
    """

    prepare: Callable[[Tensor], Tensor]
    column_terms: Callable[[Tensor], Tensor | None]
    # (queries, gallery, column terms: None for cosine, squared norms otherwise)
    block: Callable[[Tensor, Tensor, Any], Tensor]
    squared_block: Callable[[Tensor, Tensor, Any], Tensor]
    squared_pairs: Callable[[Tensor, Tensor], Tensor]
    degree: int = 0

    def distances(self, a: Tensor, b_t: Tensor) -> Tensor:
        """``(B, M)`` distances of prepared ``a (B, D)`` to the prepared, transposed ``b_t``."""
        return self.block(a, b_t, self.column_terms(b_t))


def _power_of_two_below(magnitude: Tensor) -> Tensor:
    """``2^e`` with ``magnitude`` in ``[2^e, 2^(e+1))`` (1 for 0), elementwise."""
    _, exponent = torch.frexp(magnitude)
    return torch.ldexp(torch.ones_like(magnitude), exponent - 1)


def _normalise(x: Tensor) -> Tensor:
    # Each row is first divided by the power of two below its largest |value|: exact (so
    # ordinary features give the same bits), and the squared norm of a row of ~1e25 no longer
    # overflows to inf (nor one of ~1e-25 underflows to 0), which made every distance 1.
    if x.numel() == 0:
        return x
    return F.normalize(x / _power_of_two_below(x.abs().amax(1, keepdim=True)), dim=1)


def _identity(x: Tensor) -> Tensor:
    return x


def _no_terms(b_t: Tensor) -> None:
    return None


def _squared_norms(b_t: Tensor) -> Tensor:
    return (b_t * b_t).sum(0, keepdim=True)


def _cosine_block(a: Tensor, b_t: Tensor, terms: None) -> Tensor:
    # In place: no second block-sized allocation. (Folding the 1 into the matrix product,
    # addmm, would accumulate the dot products onto 1.0 and lose precision.)
    return torch.mm(a, b_t).neg_().add_(1.0)


def _cosine_squared_block(a: Tensor, b_t: Tensor, terms: None) -> Tensor:
    # (s - 1)^2 is bitwise (1 - s)^2 (rounding is symmetric), one pass fewer
    return torch.mm(a, b_t).sub_(1.0).square_()


def _cosine_squared_pairs(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(1).sub_(1.0).square_()


def _sqeuclidean_block(a: Tensor, b_t: Tensor, b_sq: Tensor) -> Tensor:
    # In place on the product: cheaper than addmm onto a materialised |a|² + |b|² matrix.
    out = torch.mm(a, b_t).mul_(-2.0)
    out.add_((a * a).sum(1, keepdim=True)).add_(b_sq)
    return out.clamp_min_(0.0)  # rounding can make |a|^2 + |b|^2 - 2ab slightly negative


def _sqeuclidean_pairs(a: Tensor, b: Tensor) -> Tensor:
    out = (a * b).sum(1).mul_(-2.0).add_((a * a).sum(1)).add_((b * b).sum(1))
    return out.clamp_min_(0.0)


def _sqeuclidean_squared_block(a: Tensor, b_t: Tensor, b_sq: Tensor) -> Tensor:
    return _sqeuclidean_block(a, b_t, b_sq).square_()


def _sqeuclidean_squared_pairs(a: Tensor, b: Tensor) -> Tensor:
    return _sqeuclidean_pairs(a, b).square_()


def _euclidean_block(a: Tensor, b_t: Tensor, b_sq: Tensor) -> Tensor:
    return _sqeuclidean_block(a, b_t, b_sq).sqrt_()


def _euclidean_squared_block(a: Tensor, b_t: Tensor, b_sq: Tensor) -> Tensor:
    return _euclidean_block(a, b_t, b_sq).square_()  # sqrt then square: re-ranking's d * d


def _euclidean_squared_pairs(a: Tensor, b: Tensor) -> Tensor:
    return _sqeuclidean_pairs(a, b).sqrt_().square_()


COSINE = Metric(_normalise, _no_terms, _cosine_block, _cosine_squared_block, _cosine_squared_pairs)
EUCLIDEAN = Metric(
    _identity,
    _squared_norms,
    _euclidean_block,
    _euclidean_squared_block,
    _euclidean_squared_pairs,
    degree=1,
)
SQEUCLIDEAN = Metric(
    _identity,
    _squared_norms,
    _sqeuclidean_block,
    _sqeuclidean_squared_block,
    _sqeuclidean_squared_pairs,
    degree=2,
)

#: The metrics of evaluation and search, by name.
METRICS: dict[str, Metric] = {"cosine": COSINE, "euclidean": EUCLIDEAN}


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


def common_scale(query: Tensor, gallery: Tensor) -> float:
    """The power of two below the largest ``|value|`` of both sets (1.0 when both are empty
    or zero): dividing by it is exact and brings them near unit scale."""
    if query.numel() + gallery.numel() == 0:
        return 1.0
    largest = torch.stack([query.abs().amax() if query.numel() else query.new_zeros(()),
                           gallery.abs().amax() if gallery.numel() else gallery.new_zeros(())])  # fmt: skip
    return float(_power_of_two_below(largest.amax()))


def _blocks(
    query: Tensor, gallery: Tensor, metric: Metric, step: int
) -> Iterator[tuple[slice, Tensor]]:
    scale = common_scale(query, gallery) if metric.degree else 1.0
    if scale != 1.0:
        # Distances of ~1e25 features would square to inf (of ~1e-25 ones, to 0).
        query, gallery = query / scale, gallery / scale
    factor = scale**metric.degree
    # A transposed view, not a copy: the products read it as fast, and memory stays one set.
    gallery_t = metric.prepare(gallery).T
    terms = metric.column_terms(gallery_t)
    for begin in range(0, query.shape[0], step):
        rows = slice(begin, min(begin + step, query.shape[0]))
        block = metric.block(metric.prepare(query[rows]), gallery_t, terms)
        yield rows, block.mul_(factor) if factor != 1.0 else block


def pairwise_distances(
    query_features: Any, gallery_features: Any, metric: str = "cosine"
) -> torch.Tensor:
    """The full ``(Q, G)`` distance matrix (for small sets; use :func:`distance_chunks` else)."""
    blocks = [d for _, d in distance_chunks(query_features, gallery_features, metric)]
    if not blocks:
        gallery = as_features(gallery_features, "gallery_features")
        return torch.zeros((0, gallery.shape[0]))
    return torch.cat(blocks)
