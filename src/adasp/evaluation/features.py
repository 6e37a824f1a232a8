"""Evaluate query and gallery embeddings block by block: the Q × G matrix is never held."""

from __future__ import annotations

from typing import Any

import torch

from adasp.evaluation.distances import METRICS, as_features, checked_distance_chunks
from adasp.evaluation.inputs import as_ids, check_choice
from adasp.evaluation.metrics import RankingEvaluator


def evaluate_features(
    query_features: Any,
    gallery_features: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    metric: str = "cosine",
    max_rank: int = 50,
    *,
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    camera_filter: bool = True,
    ap_mode: str = "standard",
    junk_pid: int | None = -1,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    ranked_topk: int = 0,
) -> dict[str, Any]:
    """mAP, CMC and mINP of query against gallery embeddings, evaluated in blocks of queries.

    Distances are computed for ``chunk_size`` queries at a time (default: about 16 M distances
    per block) and each block is ranked and scored at once, so peak memory is the features
    plus one block, whatever Q × G. The result equals :func:`evaluate_ranking` on the full
    distance matrix (see there for the protocol, the AP variants and the returned dict).

    Args:
        query_features, gallery_features: ``(Q, D)``, ``(G, D)`` numpy arrays or tensors.
        q_pids, g_pids, q_camids, g_camids: integer identities and cameras.
        metric: ``"cosine"`` (1 - cosine similarity of L2-normalised features) or
            ``"euclidean"`` (plain, not squared, L2 distance); see
            :mod:`adasp.evaluation.distances`.
        max_rank: length of the CMC curve.
        rerank: rank by k-reciprocal re-ranking distances
            (:func:`adasp.evaluation.reranking.reranked_distance_chunks`) with ``k1``, ``k2``,
            ``lambda_value``.
        camera_filter, ap_mode, junk_pid: as in :func:`evaluate_ranking`.
        chunk_size: query rows per block.
        device: where to compute (default: the query features' device; CPU for numpy).
        ranked_topk: also keep each query's top ``ranked_topk`` gallery items (junk removed)
            and its first true match's rank, from the same distance blocks: the result gains
            ``"ranked"``, ``"ranked_distances"`` ``(Q, k)`` and ``"first_match"`` ``(Q,)``
            (see :class:`~adasp.evaluation.query_results.RankedListCollector`).
    """
    if not rerank:  # the re-ranking module checks its own metrics
        check_choice(metric, tuple(METRICS), "metric")
    if device is None and isinstance(query_features, torch.Tensor):
        device = query_features.device
    device = torch.device(device) if device is not None else torch.device("cpu")
    query = as_features(query_features, "query_features", device)
    gallery = as_features(gallery_features, "gallery_features", device)
    num_q = query.shape[0]
    q_pids = as_ids(q_pids, "q_pids", num_q, device)
    q_camids = as_ids(q_camids, "q_camids", num_q, device)
    evaluator = RankingEvaluator(
        as_ids(g_pids, "g_pids", gallery.shape[0], device),
        g_camids,
        max_rank,
        camera_filter=camera_filter,
        ap_mode=ap_mode,
        junk_pid=junk_pid,
        device=device,
    )
    collector = None
    if ranked_topk > 0:
        from adasp.evaluation.query_results import RankedListCollector

        collector = RankedListCollector(
            evaluator.g_pids,
            evaluator.g_camids,
            ranked_topk,
            camera_filter=camera_filter,
            junk_pid=junk_pid,
        )
    if rerank:
        from adasp.evaluation.reranking import reranked_distance_chunks

        chunks = reranked_distance_chunks(
            query,
            gallery,
            k1=k1,
            k2=k2,
            lambda_value=lambda_value,
            metric=metric,
            chunk_size=chunk_size,
            device=device,
        )
    else:
        chunks = checked_distance_chunks(query, gallery, metric, chunk_size)
    covered = 0
    for rows, distances in chunks:
        if rows.start != covered or rows.stop <= rows.start or rows.stop > num_q:
            raise RuntimeError(
                f"distance blocks must cover the queries in order; expected a block starting "
                f"at {covered}, got {rows}"
            )
        evaluator.add(distances, q_pids[rows], q_camids[rows])
        if collector is not None:
            collector.add(distances.to(evaluator.device), q_pids[rows], q_camids[rows])
        covered = rows.stop
    if covered != num_q:
        raise RuntimeError(f"distance blocks covered {covered} of {num_q} queries")
    result = evaluator.result()
    if collector is not None:
        result.update(collector.result())
    return result
