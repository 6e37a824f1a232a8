"""Typed evaluation results, the one list of headline metrics, and the ``metrics.json`` writer.

A test set's result is one of two shapes:

- :class:`RankingMetrics` — one query/gallery split: mAP, Rank-1/5/10, mINP (fractions in
  [0, 1]) and the number of queries that count;
- :class:`DrawsMetrics` — a protocol of several random draws (VehicleID's 10 galleries): the
  mean and the sample standard deviation of each metric, and every draw's metrics.

:class:`TestSetResult` names one of them. ``metrics.json`` (written by ``adasp train`` and
``adasp evaluate`` through :func:`write_metrics`) keeps the keys scripts already read:

.. code-block:: text

    {"test_set": NAME, "mAP": ..., "rank1": ..., "rank5": ..., "rank10": ..., "mINP": ...,
     "num_valid_queries": ..., [run fields: "epoch" | "checkpoint", ...],
     "test_sets": {NAME: {metrics}, ...}}

where a draws result's metrics are its means plus ``"std": {metric: ...}`` and
``"num_draws"``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adasp.errors import UserInputError
from adasp.utils.atomic import atomic_write_json
from adasp.utils.plain import plain

#: The headline metrics, in the order tables and logs show them.
METRIC_NAMES = ("mAP", "rank1", "rank5", "rank10", "mINP")

#: Short column labels of :data:`METRIC_NAMES`.
METRIC_LABELS = {"mAP": "mAP", "rank1": "R1", "rank5": "R5", "rank10": "R10", "mINP": "mINP"}


@dataclass(frozen=True)
class RankingMetrics:
    """The headline numbers of one query/gallery split, as fractions in [0, 1].

    A rank-k beyond the length of the CMC curve (a gallery of fewer than k images) is NaN.
    ``num_valid_queries`` is a float only in a :class:`DrawsMetrics` mean.
    """

    mAP: float
    rank1: float
    rank5: float
    rank10: float
    mINP: float
    num_valid_queries: float

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> RankingMetrics:
        """From a full result of :func:`~adasp.evaluation.evaluate_ranking` /
        :func:`~adasp.evaluation.evaluate_features` (``mAP``, ``cmc``, ``mINP``,
        ``num_valid_queries``).

        Raises:
            UserInputError: ``result`` lacks one of those keys.
        """
        try:
            cmc = np.asarray(result["cmc"], dtype=np.float64)
            ranks = {
                f"rank{k}": float(cmc[k - 1]) if cmc.size >= k else math.nan for k in (1, 5, 10)
            }
            return cls(
                mAP=float(result["mAP"]),
                mINP=float(result["mINP"]),
                num_valid_queries=int(result["num_valid_queries"]),
                **ranks,
            )
        except (KeyError, TypeError) as error:
            raise UserInputError(
                "a ranking result needs the keys mAP, cmc, mINP and num_valid_queries (the "
                f"output of evaluate_ranking/evaluate_features); got {error}"
            ) from error

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RankingMetrics:
        """From :meth:`as_dict`'s output (other keys are ignored)."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})

    def as_dict(self) -> dict[str, float]:
        """``{"mAP", "rank1", "rank5", "rank10", "mINP", "num_valid_queries"}``."""
        return dataclasses.asdict(self)

    def __getitem__(self, name: str) -> float:
        """A metric by name, e.g. ``metrics["mAP"]``."""
        if name not in METRIC_NAMES and name != "num_valid_queries":
            raise KeyError(f"unknown metric {name!r}; allowed: {', '.join(METRIC_NAMES)}")
        return getattr(self, name)


@dataclass(frozen=True)
class DrawsMetrics:
    """Mean and sample standard deviation (n - 1) of each metric over repeated draws."""

    mean: RankingMetrics
    std: RankingMetrics
    draws: tuple[RankingMetrics, ...] = field(default=())
    num_draws: int = 0

    @classmethod
    def aggregate(cls, draws: Sequence[RankingMetrics]) -> DrawsMetrics:
        """The mean and std of ``draws`` (std 0 for a single draw).

        Raises:
            UserInputError: no draws.
        """
        if not draws:
            raise UserInputError("aggregating draws needs at least one draw's result")
        keys = [f.name for f in dataclasses.fields(RankingMetrics)]
        values = np.array([[float(getattr(d, k)) for k in keys] for d in draws])
        mean = values.mean(axis=0)
        std = values.std(axis=0, ddof=1) if len(draws) > 1 else np.zeros(len(keys))
        return cls(
            mean=RankingMetrics(*map(float, mean)),
            std=RankingMetrics(*map(float, std)),
            draws=tuple(draws),
            num_draws=len(draws),
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DrawsMetrics:
        """From :meth:`as_dict`'s output (the per-draw metrics are not stored there)."""
        return cls(
            mean=RankingMetrics.from_dict(values),
            std=RankingMetrics.from_dict({"num_valid_queries": 0.0, **values["std"]}),
            num_draws=int(values["num_draws"]),
        )

    def as_dict(self) -> dict[str, Any]:
        """The means under the metric names, ``"std": {metric: std}`` and ``"num_draws"``."""
        std = {k: v for k, v in self.std.as_dict().items() if k != "num_valid_queries"}
        return {**self.mean.as_dict(), "std": std, "num_draws": self.num_draws}

    def __getitem__(self, name: str) -> float:
        """A metric's mean by name."""
        return self.mean[name]


TestSetMetrics = RankingMetrics | DrawsMetrics


def metrics_from_dict(values: Mapping[str, Any]) -> TestSetMetrics:
    """A :class:`RankingMetrics` or :class:`DrawsMetrics` from its ``as_dict`` form (as stored
    in ``metrics.json`` and in checkpoints' evaluation history)."""
    return (
        DrawsMetrics.from_dict(values)
        if "num_draws" in values
        else RankingMetrics.from_dict(values)
    )


@dataclass
class SplitDetails:
    """What is behind a single-split result, kept for pictures of ranked lists.

    Attributes:
        result: the full result of :func:`~adasp.evaluation.evaluate_features`.
        features: query then gallery embeddings ``(Q + G, D)``.
        dataset: the evaluated :class:`~adasp.data.ReIDDataset`.
    """

    result: dict[str, Any]
    features: Any
    dataset: Any


@dataclass
class TestSetResult:
    """The metrics of one named test set (and, on request, what is behind them)."""

    name: str
    metrics: TestSetMetrics
    details: SplitDetails | None = None


def metrics_by_test_set(results: Sequence[TestSetResult]) -> dict[str, TestSetMetrics]:
    return {r.name: r.metrics for r in results}


def metrics_document(test_sets: Mapping[str, TestSetMetrics], **run_fields: Any) -> dict[str, Any]:
    """The content of ``metrics.json``: the first test set's metrics at the top level, the
    ``run_fields`` (e.g. ``epoch=60`` or ``checkpoint=path``), then every test set."""
    if not test_sets:
        raise UserInputError("metrics.json needs at least one test set's results")
    names = list(test_sets)
    document: dict[str, Any] = {"test_set": names[0], **test_sets[names[0]].as_dict()}
    document.update(run_fields)
    document["test_sets"] = {name: m.as_dict() for name, m in test_sets.items()}
    return plain(document)


def write_metrics(
    path: str | os.PathLike, test_sets: Mapping[str, TestSetMetrics], **run_fields: Any
) -> dict[str, Any]:
    """Write :func:`metrics_document` to ``path`` atomically; returns the document."""
    document = metrics_document(test_sets, **run_fields)
    atomic_write_json(path, document)
    return document


def read_metrics(document: Mapping[str, Any]) -> dict[str, TestSetMetrics]:
    """The typed metrics of every test set of a ``metrics.json`` document."""
    return {name: metrics_from_dict(values) for name, values in document["test_sets"].items()}
