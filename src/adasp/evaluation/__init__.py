"""Evaluation: exact, fast, memory-bounded ranking metrics, benchmark protocols, k-reciprocal
re-ranking, top-k search, embedding files, tables and pictures.

- :func:`evaluate_ranking` — mAP, CMC, mINP of a distance matrix (Market protocol).
- :func:`evaluate_features` — the same from embeddings, in blocks (Q × G never held).
- :class:`RankingMetrics`, :class:`DrawsMetrics`, :class:`TestSetResult` — typed results;
  :func:`write_metrics` — the ``metrics.json`` writer.
- :class:`Evaluator` — embeds test sets with a model and runs each dataset's protocol
  (:data:`PROTOCOLS`); :func:`extract_embeddings` — embeddings of images in order.
- :func:`evaluate_draws`, :func:`aggregate_draws` — VehicleID's repeated gallery draws.
- :func:`format_results_table` — several test sets in one table.
- :func:`rerank`, :func:`reranked_distance_chunks` — k-reciprocal re-ranking.
- :func:`search` — exact top-k search (torch or faiss).
- :func:`save_embeddings`, :func:`load_embeddings` — the embedding file.
- :func:`save_ranked_lists`, :func:`plot_cmc` — ranked-list PNGs and the CMC curve.
"""

from adasp.evaluation.distances import METRICS, distance_chunks, pairwise_distances
from adasp.evaluation.embeddings import Embeddings, load_embeddings, save_embeddings
from adasp.evaluation.evaluator import Evaluator
from adasp.evaluation.extraction import extract_embeddings
from adasp.evaluation.features import evaluate_features
from adasp.evaluation.metrics import AP_MODES, RankingEvaluator, evaluate_ranking, summarize
from adasp.evaluation.protocols import (
    PROTOCOLS,
    aggregate_draws,
    aggregate_trials,
    evaluate_draws,
)
from adasp.evaluation.reranking import (
    feature_distances,
    rerank,
    rerank_features,
    reranked_distance_chunks,
)
from adasp.evaluation.results import (
    METRIC_NAMES,
    DrawsMetrics,
    RankingMetrics,
    TestSetResult,
    write_metrics,
)
from adasp.evaluation.search import SearchResult, search, search_embeddings
from adasp.evaluation.tables import format_results_table
from adasp.evaluation.visualize import plot_cmc, save_ranked_lists

__all__ = [
    "AP_MODES",
    "METRICS",
    "METRIC_NAMES",
    "PROTOCOLS",
    "DrawsMetrics",
    "Embeddings",
    "Evaluator",
    "RankingEvaluator",
    "RankingMetrics",
    "SearchResult",
    "TestSetResult",
    "aggregate_draws",
    "aggregate_trials",
    "distance_chunks",
    "evaluate_draws",
    "evaluate_features",
    "evaluate_ranking",
    "extract_embeddings",
    "feature_distances",
    "format_results_table",
    "load_embeddings",
    "pairwise_distances",
    "plot_cmc",
    "rerank",
    "rerank_features",
    "reranked_distance_chunks",
    "save_embeddings",
    "save_ranked_lists",
    "search",
    "search_embeddings",
    "summarize",
    "write_metrics",
]
