"""The HTML page of a sweep (``adasp report FOLDER --html``): one self-contained file.

The sweep's table (one row per finished run: its grid values and every metric in percent,
sortable by clicking a column), the report's plots embedded as PNG data URIs, and a link to
each run's own results page where one exists (``adasp evaluate --html`` inside the run
folder).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adasp.evaluation.results import METRIC_LABELS, METRIC_NAMES
from adasp.utils.atomic import atomic_write_text

_SORTABLE = """
document.querySelectorAll("table.sweep th").forEach((th, col) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], rows = Array.from(body.rows);
  const up = th.dataset.order !== "asc"; th.dataset.order = up ? "asc" : "desc";
  const value = (r) => { const t = r.cells[col].dataset.value ?? r.cells[col].textContent;
    const n = parseFloat(t); return isNaN(n) ? t : n; };
  rows.sort((a, b) => { const x = value(a), y = value(b); return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); });
  rows.forEach((r) => body.appendChild(r));
}));
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
table.sweep { border-collapse: collapse; } table.sweep th { cursor: pointer; background: #f3f3f3; }
table.sweep th, table.sweep td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
img.plot { max-width: 48%; margin: 4px; border: 1px solid #ddd; }
"""


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_sweep_page(
    folder: str | Path,
    manifest: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    plots: Mapping[str, Path],
    metrics: Sequence[str] = METRIC_NAMES,
) -> Path:
    """Write ``FOLDER/report.html``; returns its path.

    Args:
        manifest: the sweep's ``sweep.json``; rows: one per finished run
            (:func:`adasp.engine.sweep.collect_results`); plots: PNG files by name.
    """
    folder = Path(folder)
    keys = [axis["key"] for axis in manifest["grid"]]
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in [
            "run",
            *keys,
            *(f"{METRIC_LABELS.get(m, m)} (%)" for m in metrics),
            "results page",
        ]
    )
    body = []
    for row in rows:
        cells = [f"<td>{html.escape(str(row['run']))}</td>"]
        cells += [f"<td>{html.escape(str(row.get(k, '')))}</td>" for k in keys]
        for metric in metrics:
            value = row.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                cells.append(f"<td>{100 * value:.2f}</td>")
            else:
                cells.append("<td>–</td>")
        pages = sorted((folder / str(row["run"])).glob("**/report.html"))
        links = " ".join(
            f'<a href="{html.escape(p.relative_to(folder).as_posix())}">'
            f"{html.escape(p.parent.relative_to(folder).as_posix())}</a>"
            for p in pages
        )
        cells.append(f"<td>{links or '–'}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    images = "".join(
        f'<img class="plot" alt="{html.escape(name)}" title="{html.escape(name)}" '
        f'src="{_png_uri(path)}">'
        for name, path in plots.items()
        if path.suffix == ".png" and path.is_file()
    )
    title = f"adasp sweep: {folder}"
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>Config <code>{html.escape(str(manifest['config']))}</code>; {len(rows)} of "
        f"{len(manifest['runs'])} runs finished; click a column to sort.</p>"
        f'<table class="sweep"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        f"</table><h2>Plots</h2>{images}<script>{_SORTABLE}</script></body></html>\n"
    )
    target = folder / "report.html"
    atomic_write_text(target, page)
    return target
