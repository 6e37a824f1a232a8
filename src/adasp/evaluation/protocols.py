"""Benchmark protocols: how a test set's embeddings become its reported metrics.

- The usual protocol (:func:`single_split_protocol`): the dataset's query set against its
  gallery, one :class:`~adasp.evaluation.results.RankingMetrics`.
- VehicleID (:func:`vehicleid_protocol`): per test size, 10 random draws of one gallery image
  per vehicle, the rest as queries (the data layer's ``vehicleid_trial_split``), without
  camera filtering; a :class:`~adasp.evaluation.results.DrawsMetrics` with the mean and std
  over draws. :func:`evaluate_draws` evaluates any list of draws.

:data:`PROTOCOLS` maps a dataset name to its protocol (the default is the single split); a
plugin registers its own with ``@PROTOCOLS.register("name")``. A protocol is called as
``protocol(dataset, name, embed, options, compute)`` and returns a
:class:`~adasp.evaluation.results.TestSetResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from adasp.errors import UserInputError
from adasp.evaluation.features import evaluate_features
from adasp.evaluation.options import RankingOptions
from adasp.evaluation.results import (
    DrawsMetrics,
    RankingMetrics,
    SplitDetails,
    TestSetResult,
)
from adasp.registry import Registry


def aggregate_draws(results: Sequence[Mapping[str, Any] | RankingMetrics]) -> DrawsMetrics:
    """Mean and sample standard deviation of each metric over repeated draws.

    Args:
        results: one result per draw: a :class:`RankingMetrics`, a full result of
            :func:`evaluate_ranking`/:func:`evaluate_features`, or a dict of the metrics.

    Raises:
        UserInputError: no draws.
    """
    draws = [
        r
        if isinstance(r, RankingMetrics)
        else RankingMetrics.from_result(r)
        if "cmc" in r
        else RankingMetrics.from_dict(r)
        for r in results
    ]
    return DrawsMetrics.aggregate(draws)


#: The same as :func:`aggregate_draws` (VehicleID calls its draws "trials").
aggregate_trials = aggregate_draws


def evaluate_draws(
    features: Any,
    pids: Any,
    camids: Any,
    draws: Sequence[tuple[Any, Any]],
    metric: str = "cosine",
    max_rank: int = 50,
    *,
    camera_filter: bool = False,
    **options: Any,
) -> DrawsMetrics:
    """Evaluate several query/gallery draws of one test set and aggregate them.

    Args:
        features: ``(N, D)`` embeddings of the whole test set.
        pids, camids: ``(N,)`` identities and cameras.
        draws: ``(query_indices, gallery_indices)`` per draw (e.g. VehicleID's 10 from
            ``adasp.data.vehicleid_trial_split``).
        metric, max_rank: as in :func:`evaluate_features`.
        camera_filter: False by default (VehicleID has no cameras).
        options: further keywords for :func:`evaluate_features` (``ap_mode``, ``rerank``,
            ``chunk_size``, ``device``, ...).

    Returns:
        The :class:`~adasp.evaluation.results.DrawsMetrics` of the draws.
    """
    if not draws:
        raise UserInputError("evaluate_draws needs at least one (query, gallery) draw")
    if not hasattr(features, "index_select"):  # keep torch tensors (and their device)
        features = np.asarray(features)
    pids, camids = np.asarray(pids), np.asarray(camids)
    results = []
    for number, (query_idx, gallery_idx) in enumerate(draws):
        q = np.asarray(query_idx, dtype=np.int64)
        g = np.asarray(gallery_idx, dtype=np.int64)
        for name, idx in (("query", q), ("gallery", g)):
            if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(pids))):
                raise UserInputError(
                    f"draw {number}: {name} indices must be 1-D in [0, {len(pids)})"
                )
        if hasattr(features, "index_select"):
            q_feat = features.index_select(0, _torch_index(q, features))
            g_feat = features.index_select(0, _torch_index(g, features))
        else:
            q_feat, g_feat = features[q], features[g]
        try:
            result = evaluate_features(
                q_feat,
                g_feat,
                pids[q],
                pids[g],
                camids[q],
                camids[g],
                metric,
                max_rank,
                camera_filter=camera_filter,
                **options,
            )
        except UserInputError as error:
            raise UserInputError(f"draw {number}: {error}") from None
        results.append(result)
    return DrawsMetrics.aggregate([RankingMetrics.from_result(r) for r in results])


def _torch_index(indices: np.ndarray, like: Any) -> Any:
    import torch

    return torch.as_tensor(indices, device=like.device)


Embedder = Callable[[Sequence[Any]], torch.Tensor]
"""Embeds samples in order: ``embed(samples) -> (N, D)`` (collective under DDP)."""

#: Dataset name -> protocol; datasets not registered use :func:`single_split_protocol`.
PROTOCOLS: Registry[Callable[..., TestSetResult | None]] = Registry("protocol")


def _arrays(samples: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    pids = np.fromiter((s.pid for s in samples), dtype=np.int64, count=len(samples))
    camids = np.fromiter((s.camid for s in samples), dtype=np.int64, count=len(samples))
    return pids, camids


def single_split_protocol(
    dataset: Any,
    name: str,
    embed: Embedder,
    options: RankingOptions,
    compute: bool = True,
    keep_details: bool = False,
) -> TestSetResult | None:
    """The usual protocol: the dataset's query set against its gallery.

    Args:
        dataset: a :class:`~adasp.data.ReIDDataset` (its ``camera_filter`` decides the
            same-camera rule).
        options: how the embeddings are ranked and scored.
        compute: False (DDP ranks other than 0) only takes part in the embedding; returns None.
        keep_details: keep the full result (with each query's top
            :data:`~adasp.evaluation.query_results.KEPT_RANKS` gallery items), the embeddings
            and the dataset in ``details``.
    """
    from adasp.evaluation.query_results import KEPT_RANKS

    features = embed(list(dataset.query) + list(dataset.gallery))
    if not compute:
        return None
    nq = len(dataset.query)
    q_pids, q_camids = _arrays(dataset.query)
    g_pids, g_camids = _arrays(dataset.gallery)
    result = evaluate_features(
        features[:nq],
        features[nq:],
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        camera_filter=dataset.camera_filter,
        **options.keywords(),
        ranked_topk=KEPT_RANKS if keep_details else 0,
    )
    details = SplitDetails(result, features, dataset) if keep_details else None
    return TestSetResult(name, RankingMetrics.from_result(result), details)


@PROTOCOLS.register("vehicleid")
def vehicleid_protocol(
    dataset: Any,
    name: str,
    embed: Embedder,
    options: RankingOptions,
    compute: bool = True,
    keep_details: bool = False,
) -> TestSetResult | None:
    """VehicleID: 10 random draws of one gallery image per vehicle; mean and std over draws.

    The test images are embedded once and re-split for every draw, whatever the dataset's
    own ``trial`` option (which only chooses its ``query``/``gallery`` lists).
    """
    from adasp.data.vehicleid import VEHICLEID_TRIALS, vehicleid_trial_split

    test = list(dataset.query) + list(dataset.gallery)
    features = embed(test)
    if not compute:
        return None
    seed = dataset.options.get("seed", 0)
    draws = [vehicleid_trial_split(test, trial, seed) for trial in range(VEHICLEID_TRIALS)]
    pids, camids = _arrays(test)
    metrics = evaluate_draws(
        features, pids, camids, draws, camera_filter=False, **options.keywords()
    )
    return TestSetResult(name, metrics)


def run_protocol(
    dataset: Any,
    name: str,
    embed: Embedder,
    options: RankingOptions,
    compute: bool = True,
    keep_details: bool = False,
) -> TestSetResult | None:
    """Evaluate ``dataset`` with its registered protocol (see :data:`PROTOCOLS`)."""
    protocol = PROTOCOLS.get(dataset.name) if dataset.name in PROTOCOLS else single_split_protocol
    return protocol(dataset, name, embed, options, compute, keep_details)


#: Dataset options that select a test variant, appended to the test set's name.
VARIANT_OPTIONS = ("split", "test_size")


def test_set_name(dataset: str, options: Mapping[str, Any]) -> str:
    """E.g. ``market1501``, ``cuhk03-labeled``, ``vehicleid-800``, ``veriwild-10000``."""
    parts = [dataset] + [str(options[k]) for k in VARIANT_OPTIONS if k in options]
    return "-".join(parts)
