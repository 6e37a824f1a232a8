"""Pictures of an evaluation: ranked lists of some queries and the CMC curve, drawn from the
per-query results the metrics were computed with (re-ranked lists when re-ranking was on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adasp.errors import UserInputError
from adasp.evaluation.query_results import QueryResults
from adasp.evaluation.visualize import RankedItem, draw_ranked_list, plot_cmc, query_file_names


def chosen_queries(queries: QueryResults, spread: int, worst: int) -> list[tuple[int, str]]:
    """``(query index, PNG name)`` of ``spread`` queries spread over the query list and the
    ``worst`` queries of lowest AP (named ``worst-001_<file>``, worst first)."""
    names = query_file_names(queries.query_paths.tolist())
    count = min(spread, queries.num_queries)
    picked: list[tuple[int, str]] = []
    if count > 0:
        spread_idx = np.unique(np.linspace(0, queries.num_queries - 1, count).round().astype(int))
        picked += [(int(i), names[i]) for i in spread_idx]
    for place, index in enumerate(queries.worst(worst), start=1):
        picked.append((int(index), f"worst-{place:03d}_{names[index]}"))
    return picked


def write_visual_results(
    queries: QueryResults,
    out_dir: str | Path,
    num_queries: int,
    topk: int = 10,
    *,
    worst: int = 0,
) -> list[Path]:
    """Ranked-list PNGs in ``OUT/ranked_lists`` and ``OUT/cmc.png``; returns their paths (the
    CMC last).

    Args:
        queries: a test set's per-query results (``adasp evaluate`` keeps them).
        num_queries: queries drawn, spread evenly over the query list.
        topk: gallery images per list (at most the number kept).
        worst: also draw the ``worst`` queries of lowest AP (``worst-001_...`` first).
    """
    from adasp.evaluation.results_page import cmc_curve

    if topk < 1:
        raise UserInputError(f"topk must be >= 1; got {topk}")
    out = Path(out_dir)
    matches = queries.matches
    written = []
    for index, name in chosen_queries(queries, num_queries, worst):
        row = queries.ranked[index, :topk]
        hits = [
            RankedItem(
                str(queries.gallery_paths[item]),
                int(queries.gallery_pids[item]),
                int(queries.gallery_camids[item]),
                float(queries.distances[index, rank]),
                bool(matches[index, rank]),
            )
            for rank, item in enumerate(row)
            if item >= 0
        ]
        ap = queries.ap[index]
        note = "no valid match" if np.isnan(ap) else f"AP {ap:.3f} #{queries.first_match[index]}"
        head = RankedItem(
            str(queries.query_paths[index]),
            int(queries.query_pids[index]),
            int(queries.query_camids[index]),
        )
        written.append(
            draw_ranked_list(
                head, hits, out / "ranked_lists" / f"{name}.png", query_note=note, slots=topk
            )
        )
    cmc = cmc_curve(queries, max_rank=50)
    cmc_path = plot_cmc(
        cmc, out / "cmc.png", label=queries.test_set, title=f"CMC: {queries.test_set}"
    )
    return [*written, cmc_path]
