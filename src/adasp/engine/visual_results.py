"""Pictures of an evaluation: ranked lists of some queries and the CMC curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adasp.engine.config import ExperimentConfig
from adasp.engine.evaluator import TestSetResult
from adasp.errors import UserInputError

#: Extra neighbours fetched per query so that the top-k survive the removal of junk items.
JUNK_MARGIN = 100


def write_visual_results(
    result: TestSetResult,
    dataset: object,
    config: ExperimentConfig,
    out_dir: str | Path,
    num_queries: int,
    topk: int = 10,
) -> list[Path]:
    """Ranked-list PNGs of ``num_queries`` queries (spread over the query list) and the CMC.

    Needs a single-split result (its ``details`` hold the features and the metric result).
    """
    from adasp.evaluation import plot_cmc, save_ranked_lists, search

    if "features" not in result.details or "result" not in result.details:
        raise UserInputError(
            f"--visualize draws single query/gallery splits; {result.name} is evaluated over "
            "several draws"
        )
    out = Path(out_dir)
    features = result.details["features"]
    query, gallery = list(dataset.query), list(dataset.gallery)
    nq = len(query)
    chosen = np.unique(np.linspace(0, nq - 1, min(num_queries, nq)).round().astype(int))
    if config.eval.rerank:
        ranked = _reranked_rows(features[:nq], features[nq:], chosen, config)
    else:
        _, ranked = search(
            features[:nq][chosen],
            features[nq:],
            topk=min(len(gallery), topk + JUNK_MARGIN),
            metric=config.eval.metric,
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
        result.details["result"]["cmc"],
        out / "cmc.png",
        label=result.name,
        title=f"CMC: {result.name}",
    )
    return [*written, cmc_path]


def _reranked_rows(query, gallery, chosen: np.ndarray, config: ExperimentConfig) -> np.ndarray:
    """Re-ranked distances ``(len(chosen), G)`` of the chosen queries, as the metrics saw them
    (k-reciprocal neighbours depend on all queries, so the whole query set is re-ranked)."""
    import torch

    from adasp.evaluation import reranked_distance_chunks

    rows = []
    e = config.eval
    chunks = reranked_distance_chunks(
        query, gallery, k1=e.k1, k2=e.k2, lambda_value=e.lambda_value, metric=e.metric
    )
    for block_rows, block in chunks:
        inside = chosen[(chosen >= block_rows.start) & (chosen < block_rows.stop)]
        if inside.size:
            rows.append(block[torch.as_tensor(inside - block_rows.start)].cpu())
    return torch.cat(rows).numpy()
