"""The results browser: one self-contained HTML page of an evaluation (or of a comparison of two).

The page opens from disk with no server and no network: its script, style, data (JSON) and
image thumbnails (small JPEGs as data URIs, only of the images it shows) are all inside the
one file. It shows the metrics table of every test set, the CMC curves, and every query of the
test sets with per-query results (:class:`~adasp.evaluation.query_results.QueryResults`): its
image, AP, the rank of its first true match, and its top-k gallery images with distance,
identity, camera and a true/false mark; the list sorts by AP (worst first), identity, camera or
file name, filters by identity or camera, searches file names, and is drawn one page of rows
at a time (``page.js``), so a Market-size evaluation stays responsive
(``benchmarks/results_page.py`` measures it).

The same page, with two ranked lists per query and the AP difference, shows
``adasp compare --html`` (:func:`write_comparison_page`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adasp.evaluation.query_results import QueryResults, short_names
from adasp.evaluation.results import METRIC_LABELS, METRIC_NAMES, DrawsMetrics, TestSetMetrics
from adasp.utils.atomic import atomic_write_text

if TYPE_CHECKING:
    from adasp.evaluation.run_comparison import RunComparison

#: Thumbnail box, ``(width, height)`` pixels (the page shows them at 48 x 96).
THUMBNAIL_SIZE = (48, 96)

#: Query rows drawn at a time (the page's page-size menu changes it).
PAGE_SIZE = 100

#: Ranks drawn on the CMC plots.
CMC_RANKS = 20


@dataclass
class Thumbnails:
    """Small JPEG data URIs of images, each made once; :meth:`index` gives a path's number
    (-1 when the image cannot be read: the page draws a grey box and says so)."""

    size: tuple[int, int] = THUMBNAIL_SIZE
    uris: list[str] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def index(self, path: str) -> int:
        if path not in self.numbers:
            uri = thumbnail_uri(path, self.size)
            if uri is None:
                self.missing.append(path)
                self.numbers[path] = -1
            else:
                self.numbers[path] = len(self.uris)
                self.uris.append(uri)
        return self.numbers[path]


def thumbnail_uri(path: str, size: tuple[int, int] = THUMBNAIL_SIZE) -> str | None:
    """The image at ``path`` fitted into ``size`` as a JPEG data URI; None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size[0] * 2, size[1] * 2))  # JPEG: decode at a smaller scale
            small = image.convert("RGB")
            small.thumbnail(size)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _float_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _test_set_payload(
    runs: Sequence[QueryResults], topk: int, thumbnails: Thumbnails
) -> dict[str, Any]:
    """One test set's queries, the gallery items they show and each run's ranked lists."""
    first = runs[0]
    shown = [np.asarray(r.ranked[:, :topk]) for r in runs]
    used = np.unique(np.concatenate([s[s >= 0] for s in shown]) if shown else np.zeros(0, int))
    compact = np.full(len(first.gallery_paths), -1, dtype=np.int64)
    compact[used] = np.arange(len(used))
    gallery_paths = first.gallery_paths[used].tolist()
    query_paths = first.query_paths.tolist()
    return {
        "name": first.test_set,
        "queries": {
            "name": short_names(query_paths),
            "pid": first.query_pids.tolist(),
            "cam": first.query_camids.tolist(),
            "thumb": [thumbnails.index(p) for p in query_paths],
        },
        "gallery": {
            "name": short_names(gallery_paths) if gallery_paths else [],
            "pid": first.gallery_pids[used].tolist(),
            "cam": first.gallery_camids[used].tolist(),
            "thumb": [thumbnails.index(p) for p in gallery_paths],
        },
        "runs": [
            {
                "ap": [_float_or_none(v) for v in run.ap.tolist()],
                "first": run.first_match.tolist(),
                "ranked": [[int(compact[j]) for j in row if j >= 0] for row in s.tolist()],
                "dist": np.round(run.distances[:, :topk].astype(np.float64), 4).tolist(),
            }
            for run, s in zip(runs, shown, strict=True)
        ],
    }


def cmc_curve(results: QueryResults, max_rank: int = CMC_RANKS) -> np.ndarray:
    """The CMC curve (fractions) of the valid queries, from their first-match ranks."""
    first = results.first_match[results.valid]
    if first.size == 0:
        return np.zeros(max_rank)
    return (first[None, :] <= np.arange(1, max_rank + 1)[:, None]).mean(axis=1)


def cmc_svg(curves: Mapping[str, np.ndarray], title: str) -> str:
    """An inline SVG plot of CMC curves (match rate in % against rank)."""
    width, height, left, bottom, top, right = 340, 210, 40, 30, 22, 10
    plot_w, plot_h = width - left - right, height - top - bottom
    ranks = max((len(c) for c in curves.values()), default=1)

    def x(rank: int) -> float:
        return left + plot_w * (rank - 1) / max(ranks - 1, 1)

    def y(value: float) -> float:
        return top + plot_h * (1 - value)

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    parts = [
        f'<svg class="cmc" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        f'<text x="{left}" y="14" font-size="12">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#999"/>',
    ]
    for pct in (0, 25, 50, 75, 100):
        parts.append(
            f'<text x="{left - 4}" y="{y(pct / 100) + 4:.1f}" font-size="10" '
            f'text-anchor="end">{pct}</text>'
        )
    for rank in sorted({1, 5, 10, ranks}):
        if rank <= ranks:
            parts.append(
                f'<text x="{x(rank):.1f}" y="{height - bottom + 14}" font-size="10" '
                f'text-anchor="middle">{rank}</text>'
            )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 2}" font-size="10" '
        'text-anchor="middle">rank</text>'
    )
    for number, (label, curve) in enumerate(curves.items()):
        color = colors[number % len(colors)]
        points = " ".join(f"{x(r + 1):.1f},{y(float(v)):.1f}" for r, v in enumerate(curve))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        legend = f"{label} (R1 {100 * float(curve[0]):.1f}%)" if len(curve) else label
        parts.append(
            f'<text x="{left + plot_w - 4}" y="{top + plot_h - 8 - 14 * number}" font-size="11" '
            f'text-anchor="end" fill="{color}">{html.escape(legend)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def metrics_table_html(metrics: Mapping[str, TestSetMetrics]) -> str:
    """The metrics of every test set as an HTML table (percent; mean ± std for draws)."""
    head = "".join(f"<th>{METRIC_LABELS[m]} (%)</th>" for m in METRIC_NAMES)
    rows = []
    for name, values in metrics.items():
        cells = []
        for metric in METRIC_NAMES:
            value = 100 * values[metric]
            text = "–" if math.isnan(value) else f"{value:.2f}"
            if isinstance(values, DrawsMetrics) and not math.isnan(value):
                text += f" ± {100 * values.std[metric]:.2f}"
            cells.append(f"<td>{text}</td>")
        if isinstance(values, DrawsMetrics):
            count = f"{values.num_draws} draws"
        else:
            count = f"{values.num_valid_queries:g}"
        rows.append(f"<tr><td>{html.escape(name)}</td>{''.join(cells)}<td>{count}</td></tr>")
    return (
        f'<table class="metrics"><tr><th>test set</th>{head}<th>valid queries</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def _asset(name: str) -> str:
    return (
        resources.files("adasp.evaluation")
        .joinpath("page")
        .joinpath(name)
        .read_text(encoding="utf-8")
    )


def _json_in_script(payload: Any) -> str:
    # "</" would end the script element early; "<\/" reads the same to JSON.
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


CONTROLS = """
<div id="controls">
  <label>test set <select id="test-set"></select></label>
  <label>sort <select id="sort"></select></label>
  <label>identity <input id="filter-pid" type="text" placeholder="any"></label>
  <label>camera <select id="filter-cam"></select></label>
  <label>file <input id="search" type="search" placeholder="name contains"></label>
  <label>rows per page <select id="page-size"><option value="25">25</option>
    <option value="100">100</option><option value="500">500</option>
    <option value="0">all</option></select></label>
  <span id="count"></span>
</div>
<table id="queries"><thead id="head"></thead><tbody id="rows"></tbody></table>
<div id="pager"><button id="prev">previous</button><span id="page-info"></span>
  <button id="next">next</button></div>
"""


def render_page(
    title: str,
    summary_html: str,
    runs: Sequence[str],
    test_sets: list[dict[str, Any]],
    thumbs: Thumbnails,
) -> str:
    """The whole page: ``summary_html`` (tables, plots) above the query browser."""
    payload = {
        "title": title,
        "page_size": PAGE_SIZE,
        "runs": list(runs),
        "thumbs": thumbs.uris,
        "test_sets": test_sets,
    }
    missing = ""
    if thumbs.missing:
        missing = (
            f'<p class="note">{len(thumbs.missing)} images could not be read (grey boxes), '
            f"e.g. {html.escape(thumbs.missing[0])}</p>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_asset('page.css')}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{summary_html}{missing}{CONTROLS}"
        f'<script id="adasp-data" type="application/json">{_json_in_script(payload)}</script>'
        f"<script>{_asset('page.js')}</script></body></html>\n"
    )


def write_results_page(
    path: str | os.PathLike,
    query_results: Sequence[QueryResults],
    metrics: Mapping[str, TestSetMetrics] | None = None,
    *,
    title: str = "adasp evaluation",
    topk: int = 10,
    notes: str = "",
) -> Path:
    """Write the results page of an evaluation; returns its path.

    Args:
        query_results: per-query results of the single-split test sets (their queries are
            browsable).
        metrics: every test set's metrics (the table; draws protocols included).
        topk: gallery items shown per query (at most the number kept).
        notes: one line of plain text under the title (e.g. the checkpoint).
    """
    thumbs = Thumbnails()
    sets = [_test_set_payload([r], topk, thumbs) for r in query_results]
    parts = [f'<p class="note">{html.escape(notes)}</p>' if notes else ""]
    if metrics:
        parts.append("<h2>Metrics</h2>" + metrics_table_html(metrics))
    if query_results:
        parts.append("<h2>CMC</h2>")
        parts += [
            f'<div class="cmc">{cmc_svg({r.test_set: cmc_curve(r)}, f"CMC: {r.test_set}")}</div>'
            for r in query_results
        ]
    parts.append("<h2>Queries</h2>")
    page = render_page(title, "".join(parts), [""], sets, thumbs)
    target = Path(path)
    atomic_write_text(target, page)
    return target


def write_comparison_page(
    path: str | os.PathLike,
    comparisons: Sequence[RunComparison],
    *,
    title: str = "adasp compare",
    topk: int = 10,
) -> Path:
    """Write the comparison page of two runs (``adasp compare --html``); returns its path.

    Above the query list: per test set, both runs' mAP and R1, ΔmAP and ΔR1 with their
    bootstrap intervals, the improved/worsened/same counts and both CMC curves. Each query row
    shows both ranked lists (A above B) and ΔAP; the default order is the largest |ΔAP| first.
    """
    from adasp.evaluation.run_comparison import interval_text

    thumbs = Thumbnails()
    sets = [_test_set_payload([c.a, c.b], topk, thumbs) for c in comparisons]
    labels = [comparisons[0].label_a, comparisons[0].label_b] if comparisons else ["A", "B"]
    parts = []
    for c in comparisons:
        level = f"{100 * c.delta_map.level:g}%"
        rows = "".join(
            f"<tr><td>{name}</td><td>{100 * va:.2f}</td><td>{100 * vb:.2f}</td>"
            f"<td>{html.escape(interval_text(diff))}</td></tr>"
            for name, va, vb, diff in (
                ("mAP", c.a.mean_ap, c.b.mean_ap, c.delta_map),
                ("R1", c.a.rank1, c.b.rank1, c.delta_rank1),
            )
        )
        parts.append(
            f"<h2>{html.escape(c.test_set)}</h2>"
            f'<table class="metrics"><tr><th>metric (%)</th><th>{html.escape(c.label_a)}</th>'
            f"<th>{html.escape(c.label_b)}</th><th>Δ (B − A) [{level} interval]</th></tr>{rows}"
            "</table>"
            f'<p class="note">Paired percentile bootstrap over the queries valid in both runs, '
            f"{c.delta_map.resamples} resamples. AP per query: <b>{c.improved}</b> improved, "
            f"<b>{c.worsened}</b> worsened, <b>{c.same}</b> the same (|ΔAP| ≤ {c.tolerance:g}).</p>"
            + cmc_svg({c.label_a: cmc_curve(c.a), c.label_b: cmc_curve(c.b)}, f"CMC: {c.test_set}")
        )
    parts.append("<h2>Queries</h2>")
    page = render_page(title, "".join(parts), labels, sets, thumbs)
    target = Path(path)
    atomic_write_text(target, page)
    return target
