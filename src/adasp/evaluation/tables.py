"""Metrics as text: one table of several test sets, in percent (plain or Markdown)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from adasp.errors import UserInputError
from adasp.evaluation.results import (
    METRIC_LABELS,
    METRIC_NAMES,
    DrawsMetrics,
    RankingMetrics,
    TestSetMetrics,
    metrics_from_dict,
)
from adasp.utils.tables import format_table


def _percent(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.{digits}f}"


def _typed(result: TestSetMetrics | Mapping[str, Any]) -> TestSetMetrics:
    if isinstance(result, (RankingMetrics, DrawsMetrics)):
        return result
    if "cmc" in result:  # a full result of evaluate_ranking / evaluate_features
        return RankingMetrics.from_result(result)
    return metrics_from_dict(result)


def format_results_table(
    results: Mapping[str, TestSetMetrics | Mapping[str, Any]],
    markdown: bool = False,
    digits: int = 2,
) -> str:
    """One table of several test sets' metrics, in percent.

    Args:
        results: test-set name -> :class:`RankingMetrics`, :class:`DrawsMetrics` (shown as
            mean ± std, with the number of draws after the name), a full result of
            :func:`~adasp.evaluation.evaluate_features`, or the ``as_dict`` form of either
            metrics class (as in ``metrics.json``).
        markdown: a GitHub Markdown table instead of aligned plain text.
        digits: decimals of the percentages.

    Raises:
        UserInputError: no test set.
    """
    if not results:
        raise UserInputError("a results table needs at least one test set's results")
    headers = ["test set", "queries", *(f"{METRIC_LABELS[k]} (%)" for k in METRIC_NAMES)]
    rows = []
    for name, raw in results.items():
        metrics = _typed(raw)
        if isinstance(metrics, DrawsMetrics):
            label = f"{name} ({metrics.num_draws} draws)"
            queries = f"{metrics.mean.num_valid_queries:.0f}"
            cells = [
                f"{_percent(metrics.mean[k], digits)} ± {_percent(metrics.std[k], digits)}"
                if not math.isnan(metrics.mean[k])
                else "n/a"
                for k in METRIC_NAMES
            ]
        else:
            label, queries = name, str(int(metrics.num_valid_queries))
            cells = [_percent(metrics[k], digits) for k in METRIC_NAMES]
        rows.append([label, queries, *cells])
    return format_table(headers, rows, markdown=markdown)


def titled_results_table(
    results: Mapping[str, TestSetMetrics | Mapping[str, Any]], title: str, markdown: bool = False
) -> str:
    """:func:`format_results_table` under a title line."""
    return f"{title}\n{format_results_table(results, markdown=markdown)}"
