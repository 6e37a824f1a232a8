"""Tables and plots of a sweep, in the shapes of the supplementary's tables and figure.

* one swept key (Tables S3, S4): rows are metrics, columns the key's values; a line plot of
  each metric against the value;
* two or more keys (Figure S1, Table S2): rows are the combinations of all keys but the last,
  columns the last key's values (times the metrics); a line plot per row, and Figure S1's bars
  of each value's metric with its percentage drop relative to the best value of its row.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from adasp.analysis.plotting import pyplot, save_figure
from adasp.engine.sweep import collect_results, read_manifest
from adasp.errors import UserInputError
from adasp.utils.atomic import atomic_write_text
from adasp.utils.tables import format_table

METRIC_LABELS = {"mAP": "mAP", "rank1": "R1", "rank5": "R5", "rank10": "R10", "mINP": "mINP"}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "–"


def sweep_tables(manifest: dict[str, Any], rows: list[dict[str, Any]], metrics: list[str]) -> str:
    """The Markdown tables of a sweep (metrics in percent)."""
    axes = manifest["grid"]
    lookup = {tuple(r[a["key"]] for a in axes): r for r in rows}
    last = axes[-1]
    if len(axes) == 1:
        headers = [last["key"], *last["values"]]
        body = [
            [METRIC_LABELS.get(m, m)] + [_pct(lookup.get((v,), {}).get(m)) for v in last["values"]]
            for m in metrics
        ]
        return format_table(headers, body, markdown=True)
    row_axes = axes[:-1]
    headers = [a["key"] for a in row_axes] + [
        f"{last['key']}={v} {METRIC_LABELS.get(m, m)}" for v in last["values"] for m in metrics
    ]
    body = []
    for combo in itertools.product(*(a["values"] for a in row_axes)):
        cells = [_pct(lookup.get((*combo, v), {}).get(m)) for v in last["values"] for m in metrics]
        body.append([*combo, *cells])
    return format_table(headers, body, markdown=True)


def harmful_table(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    """Mean harmful-pair fractions per run (percent), when the runs measured them."""
    keys = [
        k
        for k in ("triplet", "sp-h", "sp-lh", "adasp", "all")
        if any(f"harmful/{k}" in r for r in rows)
    ]
    if not keys:
        return None
    grid_keys = [a["key"] for a in manifest["grid"]]
    body = [
        [*(r[k] for k in grid_keys), *(_pct(r.get(f"harmful/{k}")) for k in keys)] for r in rows
    ]
    return format_table(grid_keys + [f"harmful % {k}" for k in keys], body, markdown=True)


def _plot_lines(manifest, rows, metric: str, path: Path) -> None:
    plt = pyplot()
    axes = manifest["grid"]
    last = axes[-1]
    xs_num = [_number(v) for v in last["values"]]
    numeric = all(x is not None for x in xs_num)
    xs = xs_num if numeric else list(range(len(last["values"])))
    lookup = {tuple(r[a["key"]] for a in axes): r for r in rows}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for combo in itertools.product(*(a["values"] for a in axes[:-1])):
        ys = [lookup.get((*combo, v), {}).get(metric) for v in last["values"]]
        points = [(x, 100 * y) for x, y in zip(xs, ys, strict=True) if isinstance(y, (int, float))]
        if points:
            label = ", ".join(combo) if combo else METRIC_LABELS.get(metric, metric)
            ax.plot(*zip(*points, strict=True), "o-", label=label)
    if not numeric:
        ax.set_xticks(xs, last["values"])
    ax.set_xlabel(last["key"])
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
    ax.set_title(f"{METRIC_LABELS.get(metric, metric)} against {last['key']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_drop_bars(manifest, rows, metric: str, path: Path) -> None:
    """Figure S1: per row, a bar per last-key value, labelled with its drop from the row's best."""
    plt = pyplot()
    axes = manifest["grid"]
    last = axes[-1]
    lookup = {tuple(r[a["key"]] for a in axes): r for r in rows}
    groups = list(itertools.product(*(a["values"] for a in axes[:-1])))
    width = 0.8 / len(last["values"])
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(groups) * len(last["values"]) / 2), 4.2))
    for j, value in enumerate(last["values"]):
        for i, combo in enumerate(groups):
            y = lookup.get((*combo, value), {}).get(metric)
            if not isinstance(y, (int, float)):
                continue
            row_values = [lookup.get((*combo, v), {}).get(metric) for v in last["values"]]
            best = max(v for v in row_values if isinstance(v, (int, float)))
            x = i + (j - (len(last["values"]) - 1) / 2) * width
            ax.bar(
                x, 100 * y, width, color=f"C{j}", label=f"{last['key']}={value}" if i == 0 else None
            )
            drop = 100 * (best - y) / best if best > 0 else 0.0
            ax.text(
                x,
                100 * y,
                f"-{drop:.1f}%" if drop > 0.05 else "best",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(range(len(groups)), [", ".join(g) for g in groups], rotation=20)
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
    ax.set_title(
        f"{METRIC_LABELS.get(metric, metric)} by {last['key']}; labels: drop from the best"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(folder: str | Path, metrics: list[str] | None = None) -> dict[str, Path]:
    """Write ``report.md`` and PNG plots into the sweep folder; returns their paths."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    rows = collect_results(folder)
    if not rows:
        raise UserInputError(f"no finished runs in {folder} yet (no run has metrics.json)")
    metrics = metrics or ["mAP", "rank1"]
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown:
        raise UserInputError(f"unknown metric {unknown[0]!r}; allowed: {', '.join(METRIC_LABELS)}")
    paths: dict[str, Path] = {}
    plots_dir = folder / "plots"
    for metric in metrics:
        path = plots_dir / f"{metric}_vs_{_safe(manifest['grid'][-1]['key'])}.png"
        _plot_lines(manifest, rows, metric, path)
        paths[f"{metric} curve"] = path
        if len(manifest["grid"]) >= 2:
            path = plots_dir / f"{metric}_drop_by_{_safe(manifest['grid'][-1]['key'])}.png"
            _plot_drop_bars(manifest, rows, metric, path)
            paths[f"{metric} drop bars"] = path
    sections = [
        f"# Sweep report: {folder}",
        f"Config `{manifest['config']}`, overrides `{' '.join(manifest['overrides']) or '-'}`; "
        f"{len(rows)} of {len(manifest['runs'])} runs finished; metrics in percent.",
        sweep_tables(manifest, rows, metrics),
    ]
    harmful = harmful_table(manifest, rows)
    if harmful:
        sections += ["## Harmful positive pairs selected during training", harmful]
    sections += ["## Plots", *(f"![{name}]({p.relative_to(folder)})" for name, p in paths.items())]
    report = folder / "report.md"
    atomic_write_text(report, "\n\n".join(sections) + "\n")
    paths["report"] = report
    (folder / "report.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return paths


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)
