"""Benchmark protocols on top of the metrics: repeated gallery draws and several test sets.

- VehicleID: per test size, each draw picks one image per vehicle as the gallery and uses the
  rest as queries (the data layer's ``vehicleid_trial_split``), without camera filtering;
  the protocol reports the mean over 10 draws. :func:`evaluate_draws` runs the draws and
  :func:`aggregate_draws` gives the mean and standard deviation of every metric.
- Several test sets in one run (VERI-WILD small/medium/large, CUHK03 labeled/detected, ...):
  :func:`evaluate_test_sets` and :func:`format_results_table` (one plain-text or Markdown
  table, in percent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adasp.errors import UserInputError
from adasp.evaluation.features import evaluate_features
from adasp.evaluation.ranking import summarize
from adasp.utils.tables import format_table

#: Metrics aggregated over draws and shown in tables, in this order.
SUMMARY_METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")
_HEADERS = {"mAP": "mAP", "rank1": "R1", "rank5": "R5", "rank10": "R10", "mINP": "mINP"}


def aggregate_draws(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of each metric over repeated draws.

    Args:
        results: one result per draw, from :func:`evaluate_ranking`/:func:`evaluate_features`
            or already :func:`summarize`-d.

    Returns:
        ``{"mean": {metric: float}, "std": {metric: float}, "num_draws": int,
        "draws": [summary per draw]}`` for the metrics of :data:`SUMMARY_METRICS` plus
        ``num_valid_queries`` (its mean); ``std`` is the sample standard deviation (n - 1
        in the denominator), 0 for a single draw.
    """
    if not results:
        raise UserInputError("aggregate_draws needs at least one draw's result")
    summaries = [r if "rank1" in r else summarize(r) for r in results]
    keys = (*SUMMARY_METRICS, "num_valid_queries")
    mean, std = {}, {}
    for key in keys:
        values = np.array([float(s[key]) for s in summaries])
        mean[key] = float(values.mean())
        std[key] = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {"mean": mean, "std": std, "num_draws": len(summaries), "draws": summaries}


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
) -> dict[str, Any]:
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
        :func:`aggregate_draws` of the per-draw results.
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
        results.append(
            evaluate_features(
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
        )
    return aggregate_draws(results)


def _torch_index(indices: np.ndarray, like: Any) -> Any:
    import torch

    return torch.as_tensor(indices, device=like.device)


@dataclass(frozen=True)
class EvaluationSet:
    """Query and gallery embeddings of one test set with their labels and protocol flag."""

    query_features: Any
    gallery_features: Any
    q_pids: Any
    g_pids: Any
    q_camids: Any
    g_camids: Any
    camera_filter: bool = True


def evaluate_test_sets(
    test_sets: Mapping[str, EvaluationSet],
    metric: str = "cosine",
    max_rank: int = 50,
    **options: Any,
) -> dict[str, dict[str, float]]:
    """:func:`summarize`-d results of several named test sets, in order, one
    :func:`evaluate_features` each (``options`` are passed on)."""
    if not test_sets:
        raise UserInputError("evaluate_test_sets needs at least one test set")
    summaries = {}
    for name, test in test_sets.items():
        result = evaluate_features(
            test.query_features,
            test.gallery_features,
            test.q_pids,
            test.g_pids,
            test.q_camids,
            test.g_camids,
            metric,
            max_rank,
            camera_filter=test.camera_filter,
            **options,
        )
        summaries[name] = summarize(result)
    return summaries


def _cell(summary: Mapping[str, Any], key: str, digits: int) -> str:
    if "mean" in summary:  # aggregated draws: mean ± std
        mean, std = summary["mean"][key], summary["std"][key]
        return "n/a" if math.isnan(mean) else f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"
    value = float(summary[key])
    return "n/a" if math.isnan(value) else f"{100 * value:.{digits}f}"


def format_results_table(
    results: Mapping[str, Mapping[str, Any]],
    markdown: bool = False,
    digits: int = 2,
) -> str:
    """One table of several test sets' metrics, in percent.

    Args:
        results: test-set name -> a :func:`summarize`-d result, a raw evaluation result, or
            an :func:`aggregate_draws` result (shown as mean ± std, with the number of draws
            appended to the name), e.g. ``{"veriwild-small": ..., "vehicleid-800": ...}``.
        markdown: a GitHub Markdown table instead of aligned plain text.
        digits: decimals of the percentages.
    """
    if not results:
        raise UserInputError("format_results_table needs at least one test set's results")
    headers = ["test set", "queries", *(f"{_HEADERS[k]} (%)" for k in SUMMARY_METRICS)]
    rows = []
    for name, result in results.items():
        if "mean" in result:
            label = f"{name} ({result['num_draws']} draws)"
            queries = f"{result['mean']['num_valid_queries']:.0f}"
            summary: Mapping[str, Any] = result
        else:
            summary = result if "rank1" in result else summarize(result)
            label, queries = name, str(int(summary["num_valid_queries"]))
        rows.append([label, queries, *(_cell(summary, k, digits) for k in SUMMARY_METRICS)])
    return format_table(headers, rows, markdown=markdown)
