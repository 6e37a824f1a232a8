"""Pictures of evaluation results: ranked lists of gallery images per query, and CMC curves.

A ranked list is one PNG strip: the query image (grey frame), then its top-k gallery images
with a green frame for the query's identity and a red one otherwise. Junk items (same
identity and same camera, and the junk identity -1) are left out, as in the metrics.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adasp.errors import UserInputError
from adasp.utils.atomic import atomic_write_with

MATCH_COLOR = (0, 170, 0)
MISMATCH_COLOR = (215, 0, 0)
QUERY_COLOR = (120, 120, 120)
BACKGROUND = (255, 255, 255)
BORDER = 4  # frame width, pixels
GAP = 6  # space between cells, pixels
CAPTION = 30  # caption height under each image (two lines), pixels


def _load_cell(path: str, size: tuple[int, int]):
    from PIL import Image, ImageOps

    from adasp.data.images import read_image

    hint = (
        "the ranked lists need the query and gallery images at the paths they were evaluated with"
    )
    rgb = read_image(path, hint).permute(1, 2, 0).numpy()
    return ImageOps.pad(Image.fromarray(rgb), size, color=(200, 200, 200))


def _ranked_gallery(
    ranking: np.ndarray, query: int, keep: np.ndarray, topk: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices (and distances, if ``ranking`` holds distances) of a query's top-k kept items."""
    row = ranking[query]
    if np.issubdtype(ranking.dtype, np.floating):
        order = np.argsort(row, kind="stable")  # ties by gallery index, as in the metrics
        order = order[keep[order]][:topk]
        return order, row[order]
    order = row[(row >= 0) & (row < keep.size)]
    order = order[keep[order]][:topk]
    return order, None


def save_ranked_lists(
    query_paths: Sequence[str | os.PathLike],
    gallery_paths: Sequence[str | os.PathLike],
    ranking: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    out_dir: str | os.PathLike,
    num_queries: int = 10,
    topk: int = 10,
    camera_filter: bool = True,
    *,
    junk_pid: int | None = -1,
    query_indices: Sequence[int] | None = None,
    cell_size: tuple[int, int] = (64, 128),
) -> list[Path]:
    """Write one PNG per query showing its ranked gallery; returns the files written.

    Args:
        query_paths, gallery_paths: image files of the Q queries and G gallery items.
        ranking: either distances ``(Q, G)`` (float; smaller = nearer, ties by index) or
            ranked gallery indices ``(Q, K)`` (int, nearest first, e.g. from
            :func:`adasp.evaluation.search.search`; K should exceed ``topk`` by the number of
            junk items a query can have).
        q_pids, g_pids, q_camids, g_camids: identities and cameras.
        out_dir: folder for ``query_<index>.png`` files (created).
        num_queries: how many queries to draw, spread evenly over the query list.
        topk: gallery images per query.
        camera_filter: leave out same-identity same-camera items (Market protocol).
        junk_pid: gallery identity always left out (None: none).
        query_indices: draw these queries instead of ``num_queries`` evenly spread ones.
        cell_size: ``(width, height)`` in pixels each image is fitted into.
    """
    from PIL import Image, ImageDraw, ImageFont

    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    ranking = np.asarray(ranking.detach().cpu() if hasattr(ranking, "detach") else ranking)
    num_q, num_g = len(query_paths), len(gallery_paths)
    if ranking.ndim != 2 or ranking.shape[0] != num_q:
        raise UserInputError(
            f"ranking must be (num_queries={num_q}, ...) distances or ranked indices; got "
            f"shape {ranking.shape}"
        )
    if np.issubdtype(ranking.dtype, np.floating) and ranking.shape[1] != num_g:
        raise UserInputError(
            f"a distance matrix must have one column per gallery image ({num_g}); got "
            f"{ranking.shape[1]}"
        )
    for name, values, size in (
        ("q_pids", q_pids, num_q),
        ("q_camids", q_camids, num_q),
        ("g_pids", g_pids, num_g),
        ("g_camids", g_camids, num_g),
    ):
        if values.shape != (size,):
            raise UserInputError(f"{name} must have shape ({size},); got {values.shape}")
    if topk < 1 or num_queries < 0:
        raise UserInputError(f"topk must be >= 1 and num_queries >= 0; got {topk}, {num_queries}")
    if query_indices is None:
        count = min(num_queries, num_q)
        chosen: Any = (
            np.unique(np.linspace(0, num_q - 1, count).round().astype(int)) if count else []
        )
    else:
        chosen = [int(i) for i in query_indices]
        if any(i < 0 or i >= num_q for i in chosen):
            raise UserInputError(f"query_indices must lie in [0, {num_q}); got {chosen}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default()
    width, height = cell_size
    cell_w, cell_h = width + 2 * BORDER, height + 2 * BORDER
    canvas_w = GAP + (topk + 1) * (cell_w + GAP) + 2 * GAP
    canvas_h = GAP + cell_h + CAPTION
    not_junk = np.ones(num_g, dtype=bool) if junk_pid is None else g_pids != junk_pid
    written = []
    for query in chosen:
        keep = not_junk.copy()
        if camera_filter:
            keep &= ~((g_pids == q_pids[query]) & (g_camids == q_camids[query]))
        ranked, dists = _ranked_gallery(ranking, query, keep, topk)
        canvas = Image.new("RGB", (canvas_w, canvas_h), BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        cells = [
            (query_paths[query], QUERY_COLOR, f"query\npid {q_pids[query]} cam {q_camids[query]}")
        ]
        for rank, item in enumerate(ranked, start=1):
            match = g_pids[item] == q_pids[query]
            text = f"#{rank} pid {g_pids[item]}"
            if dists is not None:
                text += f"\n{dists[rank - 1]:.3f}"
            cells.append((gallery_paths[item], MATCH_COLOR if match else MISMATCH_COLOR, text))
        x = GAP
        for index, (path, color, text) in enumerate(cells):
            draw.rectangle([x, GAP, x + cell_w - 1, GAP + cell_h - 1], fill=color)
            canvas.paste(_load_cell(os.fspath(path), cell_size), (x + BORDER, GAP + BORDER))
            draw.multiline_text((x, GAP + cell_h + 1), text, fill=(0, 0, 0), font=font)
            x += cell_w + GAP + (2 * GAP if index == 0 else 0)  # wider gap after the query
        target = out / f"query_{query:05d}.png"
        atomic_write_with(target, functools.partial(_save_png, canvas))
        written.append(target)
    return written


def plot_cmc(
    cmc: Any | Mapping[str, Any],
    path: str | os.PathLike,
    label: str | None = None,
    *,
    title: str = "CMC curve",
) -> Path:
    """Write the CMC curve (match rate in % against rank) as a PNG; returns the path.

    ``cmc`` is one curve (fractions, as in an evaluation result's ``"cmc"``) with an optional
    ``label``, or a mapping of labels to curves to compare several models.
    """
    from adasp.utils.plotting import new_figure, save_figure

    curves = dict(cmc) if isinstance(cmc, Mapping) else {label or "": cmc}
    if not curves:
        raise UserInputError("plot_cmc needs at least one CMC curve")
    figure, axes = new_figure((6, 4))
    for name, curve in curves.items():
        values = np.asarray(curve, dtype=np.float64).ravel() * 100
        if values.size == 0:
            raise UserInputError(f"CMC curve {name!r} is empty")
        ranks = np.arange(1, values.size + 1)
        legend = f"{name} (Rank-1 {values[0]:.1f}%)".strip()
        axes.plot(ranks, values, marker="o" if values.size <= 20 else None, label=legend)
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate (%)")
    axes.set_title(title)
    axes.set_ylim(0, 100.5)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    target = Path(path)
    save_figure(figure, target)
    return target


def _save_png(image: Any, handle: Any) -> None:
    image.save(handle, format="PNG")
