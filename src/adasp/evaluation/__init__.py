"""Evaluation: exact, fast, memory-bounded ranking metrics, benchmark protocols, k-reciprocal
re-ranking, top-k search, embedding files and pictures of ranked lists.

- :func:`evaluate_ranking` — mAP, CMC, mINP of a distance matrix (Market protocol).
- :func:`evaluate_features` — the same from embeddings, in blocks (Q × G never held).
- :func:`summarize` — mAP, Rank-1/5/10, mINP of a result.
- :func:`evaluate_draws`, :func:`aggregate_draws`, :func:`evaluate_test_sets`,
  :func:`format_results_table` — VehicleID's draws, several test sets in one table.
- :func:`rerank`, :func:`reranked_distance_chunks` — k-reciprocal re-ranking.
- :func:`search` — exact top-k search (torch or faiss).
- :func:`save_embeddings`, :func:`load_embeddings` — the embedding file.
- :func:`save_ranked_lists`, :func:`plot_cmc` — ranked-list PNGs and the CMC curve.
"""

from adasp.evaluation.distances import METRICS, distance_chunks, pairwise_distances
from adasp.evaluation.embeddings import Embeddings, load_embeddings, save_embeddings
from adasp.evaluation.features import evaluate_features
from adasp.evaluation.protocols import (
    EvaluationSet,
    aggregate_draws,
    aggregate_trials,
    evaluate_draws,
    evaluate_test_sets,
    format_results_table,
)
from adasp.evaluation.ranking import AP_MODES, RankingEvaluator, evaluate_ranking, summarize
from adasp.evaluation.reranking import (
    feature_distances,
    rerank,
    rerank_features,
    reranked_distance_chunks,
)
from adasp.evaluation.search import SearchResult, search, search_embeddings
from adasp.evaluation.visualize import plot_cmc, save_ranked_lists

__all__ = [
    "AP_MODES",
    "METRICS",
    "Embeddings",
    "EvaluationSet",
    "RankingEvaluator",
    "SearchResult",
    "aggregate_draws",
    "aggregate_trials",
    "distance_chunks",
    "evaluate_draws",
    "evaluate_features",
    "evaluate_ranking",
    "evaluate_test_sets",
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
]
