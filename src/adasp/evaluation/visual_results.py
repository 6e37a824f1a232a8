"""Pictures of an evaluation: ranked lists of some queries and the CMC curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adasp.errors import UserInputError
from adasp.evaluation.results import TestSetResult

#: Extra neighbours fetched per query so that the top-k survive the removal of junk items.
JUNK_MARGIN = 100


def write_visual_results(
    result: TestSetResult,
    out_dir: str | Path,
    num_queries: int,
    topk: int = 10,
    *,
    metric: str = "cosine",
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    **_other_metric_options: object,
) -> list[Path]:
    """Ranked-list PNGs of ``num_queries`` queries (spread over the query list) and the CMC.

    Needs a single-split result evaluated with ``keep_details=True`` (its ``details`` hold
    the embeddings, the metric result and the dataset). The metric options are those the
    result was computed with (e.g. ``**evaluator.ranking.keywords()``), so the pictures show the
    ranking the metrics saw.

    Raises:
        UserInputError: a result of several draws, or one without details.
    """
    from adasp.evaluation import plot_cmc, save_ranked_lists, search

    if result.details is None:
        raise UserInputError(
            f"--visualize draws single query/gallery splits; {result.name} is evaluated over "
            "several draws (or was evaluated without keep_details=True)"
        )
    out = Path(out_dir)
    features, dataset = result.details.features, result.details.dataset
    query, gallery = list(dataset.query), list(dataset.gallery)
    nq = len(query)
    chosen = np.unique(np.linspace(0, nq - 1, min(num_queries, nq)).round().astype(int))
    if rerank:
        ranked = _reranked_rows(features[:nq], features[nq:], chosen, metric, k1, k2, lambda_value)
    else:
        _, ranked = search(
            features[:nq][chosen],
            features[nq:],
            topk=min(len(gallery), topk + JUNK_MARGIN),
            metric=metric,
        )
    picked = [query[i] for i in chosen]
    written = save_ranked_lists(
        [s.path for s in picked],
        [s.path for s in gallery],
        ranked,
        [s.pid for s in picked],
        [s.pid for s in gallery],
        [s.camid for s in picked],
        [s.camid for s in gallery],
        out / "ranked_lists",
        num_queries=len(picked),
        topk=topk,
        camera_filter=dataset.camera_filter,
    )
    cmc_path = plot_cmc(
        result.details.result["cmc"],
        out / "cmc.png",
        label=result.name,
        title=f"CMC: {result.name}",
    )
    return [*written, cmc_path]


def _reranked_rows(
    query, gallery, chosen: np.ndarray, metric: str, k1: int, k2: int, lambda_value: float
) -> np.ndarray:
    """Re-ranked distances ``(len(chosen), G)`` of the chosen queries, as the metrics saw them
    (k-reciprocal neighbours depend on all queries, so the whole query set is re-ranked)."""
    import torch

    from adasp.evaluation import reranked_distance_chunks

    rows = []
    chunks = reranked_distance_chunks(
        query, gallery, k1=k1, k2=k2, lambda_value=lambda_value, metric=metric
    )
    for block_rows, block in chunks:
        inside = chosen[(chosen >= block_rows.start) & (chosen < block_rows.stop)]
        if inside.size:
            rows.append(block[torch.as_tensor(inside - block_rows.start)].cpu())
    return torch.cat(rows).numpy()
