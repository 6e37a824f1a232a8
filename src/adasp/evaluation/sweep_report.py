"""Tables and plots of a sweep, in the shapes of the supplementary's tables and figure.

* one swept key (Tables S3, S4): rows are metrics, columns the key's values; a line plot of
  each metric against the value;
* two or more keys (Figure S1, Table S2): rows are the combinations of all keys but the last,
  columns the last key's values (times the metrics); a line plot per row, and Figure S1's bars
  of each value's metric with its percentage drop relative to the best value of its row.

A ``train.seed`` axis (``adasp sweep --seeds N``) is aggregated instead of shown: the tables
and plots above are drawn over the other axes with mean ± std over seeds (error bars), and
``summary.csv`` / ``summary.md`` hold each cell's mean, std and number of seeds, plus, with a
baseline cell, the paired per-seed differences and their 95 % t-intervals
(:mod:`adasp.evaluation.seed_statistics`). A sweep without a seed axis is reported per run.

Over 500 lines on purpose: the tables, plots and seed statistics are one report over the same
rows and axis layout; split, each part would re-derive the layout.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adasp.errors import UserInputError
from adasp.evaluation.results import METRIC_LABELS
from adasp.evaluation.seed_statistics import (
    SEED_KEY,
    PairedDifference,
    SeedSummary,
    paired_difference,
    t_quantile,
)
from adasp.utils.atomic import atomic_write_json, atomic_write_text
from adasp.utils.plotting import new_figure, save_figure
from adasp.utils.tables import format_table


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "–"


def _pct_cell(row: dict[str, Any], metric: str) -> str:
    return _pct(row.get(metric))


def sweep_tables(
    manifest: dict[str, Any],
    rows: list[dict[str, Any]],
    metrics: list[str],
    cell: Callable[[dict[str, Any], str], str] = _pct_cell,
) -> str:
    """The Markdown tables of a sweep (metrics in percent); ``cell(row, metric)`` formats one
    entry (``row`` is ``{}`` for a missing combination)."""
    axes = manifest["grid"]
    lookup = {tuple(r[a["key"]] for a in axes): r for r in rows}
    last = axes[-1]
    if len(axes) == 1:
        headers = [last["key"], *last["values"]]
        body = [
            [METRIC_LABELS.get(m, m)] + [cell(lookup.get((v,), {}), m) for v in last["values"]]
            for m in metrics
        ]
        return format_table(headers, body, markdown=True)
    row_axes = axes[:-1]
    headers = [a["key"] for a in row_axes] + [
        f"{last['key']}={v} {METRIC_LABELS.get(m, m)}" for v in last["values"] for m in metrics
    ]
    body = []
    for combo in itertools.product(*(a["values"] for a in row_axes)):
        cells = [cell(lookup.get((*combo, v), {}), m) for v in last["values"] for m in metrics]
        body.append([*combo, *cells])
    return format_table(headers, body, markdown=True)


def harmful_table(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    """Mean harmful-pair fractions per run (percent), when the runs measured them."""
    keys = [
        k
        for k in ("triplet", "sp-h", "sp-lh", "adasp", "all")
        if any(f"harmful_pairs/{k}" in r for r in rows)
    ]
    if not keys:
        return None
    grid_keys = [a["key"] for a in manifest["grid"]]
    body = [
        [*(r[k] for k in grid_keys), *(_pct(r.get(f"harmful_pairs/{k}")) for k in keys)]
        for r in rows
    ]
    return format_table(grid_keys + [f"harmful % {k}" for k in keys], body, markdown=True)


def _plot_lines(manifest, rows, metric: str, path: Path, errors: bool = False) -> None:
    """The metric against the last swept key: lines over a numeric key; over a categorical key
    (``loss.name``) bars from zero, since a line would read as a trend between unordered values.

    ``errors``: rows are seed aggregates; draw ``metric_std`` as error bars."""
    axes = manifest["grid"]
    last = axes[-1]
    xs_num = [_number(v) for v in last["values"]]
    numeric = all(x is not None for x in xs_num)
    xs = xs_num if numeric else list(range(len(last["values"])))
    lookup = {tuple(r[a["key"]] for a in axes): r for r in rows}
    combos = list(itertools.product(*(a["values"] for a in axes[:-1])))
    width = 0.8 / max(len(combos), 1)
    fig, ax = new_figure((6.5, 4))
    for number, combo in enumerate(combos):
        found = [lookup.get((*combo, v), {}) for v in last["values"]]
        points = [
            (x, 100 * r[metric], 100 * _finite(r.get(f"{metric}_std")))
            for x, r in zip(xs, found, strict=True)
            if isinstance(r.get(metric), (int, float))
        ]
        if not points:
            continue
        label = ", ".join(combo) if combo else METRIC_LABELS.get(metric, metric)
        px, py, pe = zip(*points, strict=True)
        if not numeric:
            shift = (number - (len(combos) - 1) / 2) * width
            ax.bar(
                [x + shift for x in px],
                py,
                width,
                yerr=pe if errors else None,
                capsize=3,
                color=f"C{number}",
                label=label,
            )
        elif errors:
            ax.errorbar(px, py, yerr=pe, fmt="o-", capsize=3, label=label)
        else:
            ax.plot(px, py, "o-", label=label)
    if not numeric:
        ax.set_xticks(xs, last["values"])
        ax.set_ylim(bottom=0)
    ax.set_xlabel(last["key"])
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
    ax.set_title(
        f"{METRIC_LABELS.get(metric, metric)} against {last['key']}"
        + (" (mean ± std over seeds)" if errors else "")
    )
    ax.grid(alpha=0.3, axis="y" if not numeric else "both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_drop_bars(manifest, rows, metric: str, path: Path, errors: bool = False) -> None:
    """Figure S1: per row, a bar per last-key value, labelled with its drop from the row's best.

    ``errors``: rows are seed aggregates; bars are means with ``metric_std`` error bars."""
    axes = manifest["grid"]
    last = axes[-1]
    lookup = {tuple(r[a["key"]] for a in axes): r for r in rows}
    groups = list(itertools.product(*(a["values"] for a in axes[:-1])))
    width = 0.8 / len(last["values"])
    fig, ax = new_figure((max(6.5, 1.1 * len(groups) * len(last["values"]) / 2), 4.2))
    for j, value in enumerate(last["values"]):
        for i, combo in enumerate(groups):
            y = lookup.get((*combo, value), {}).get(metric)
            if not isinstance(y, (int, float)):
                continue
            row_values = [lookup.get((*combo, v), {}).get(metric) for v in last["values"]]
            best = max(v for v in row_values if isinstance(v, (int, float)))
            x = i + (j - (len(last["values"]) - 1) / 2) * width
            std = (
                100 * _finite(lookup.get((*combo, value), {}).get(f"{metric}_std"))
                if errors
                else 0.0
            )
            ax.bar(
                x,
                100 * y,
                width,
                yerr=std if errors else None,
                capsize=2,
                color=f"C{j}",
                label=f"{last['key']}={value}" if i == 0 else None,
            )
            drop = 100 * (best - y) / best if best > 0 else 0.0
            ax.text(
                x,
                100 * y + std,
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


def write_report(
    folder: str | Path,
    manifest: dict[str, Any],
    rows: list[dict[str, Any]],
    metrics: Sequence[str] | None = None,
    baseline: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and PNG plots into the sweep folder; returns their
    paths. A sweep with a ``train.seed`` axis also gets ``summary.csv`` and ``summary.md``
    (see the module docstring).

    Args:
        manifest: the sweep's ``sweep.json`` (:func:`adasp.engine.sweep.read_manifest`).
        rows: one row per finished run (:func:`adasp.engine.sweep.collect_results`).
        metrics: metric names of :data:`~adasp.evaluation.results.METRIC_NAMES` (default
            mAP and rank1).
        baseline: ``key=value`` items naming the baseline cell (e.g. ``["loss.name=triplet"]``);
            every other cell is compared with the cell that has these values and its own
            values of the unnamed axes. Needs a seed axis.

    Raises:
        UserInputError: no finished run, an unknown metric, or a bad ``baseline``.
    """
    folder = Path(folder)
    if not rows:
        raise UserInputError(f"no finished runs in {folder} yet (no run has metrics.json)")
    metrics = list(metrics or ["mAP", "rank1"])
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown:
        raise UserInputError(f"unknown metric {unknown[0]!r}; allowed: {', '.join(METRIC_LABELS)}")
    seeded = any(a["key"] == SEED_KEY for a in manifest["grid"])
    if baseline and not seeded:
        raise UserInputError(
            "--baseline compares cells seed by seed, but this sweep has no train.seed axis; "
            "run it with adasp sweep ... --seeds N"
        )
    base = parse_baseline(baseline, manifest) if baseline else {}
    if seeded:
        table_manifest, table_rows = aggregate_seeds(manifest, rows, metrics)
    else:
        table_manifest, table_rows = manifest, rows
    paths: dict[str, Path] = {}
    plots_dir = folder / "plots"
    grid = table_manifest["grid"]
    for metric in metrics:
        if not grid:  # seeds only: one cell
            path = plots_dir / f"{metric}_over_seeds.png"
            _plot_seeds(rows, table_rows[0], metric, path)
            paths[f"{metric} over seeds"] = path
            continue
        path = plots_dir / f"{metric}_vs_{_safe(grid[-1]['key'])}.png"
        _plot_lines(table_manifest, table_rows, metric, path, errors=seeded)
        paths[f"{metric} curve"] = path
        if len(grid) >= 2:
            path = plots_dir / f"{metric}_drop_by_{_safe(grid[-1]['key'])}.png"
            _plot_drop_bars(table_manifest, table_rows, metric, path, errors=seeded)
            paths[f"{metric} drop bars"] = path
    sections = [
        f"# Sweep report: {folder}",
        f"Config `{manifest['config']}`, overrides `{' '.join(manifest['overrides']) or '-'}`; "
        f"{len(rows)} of {len(manifest['runs'])} runs finished; metrics in percent"
        + ("; mean ± std over seeds (details in summary.md)." if seeded else "."),
    ]
    if grid:
        cell = _mean_std_cell if seeded else _pct_cell
        sections.append(sweep_tables(table_manifest, table_rows, metrics, cell=cell))
    if seeded:
        seed_sections = seed_summary_sections(table_manifest, table_rows, metrics, base)
        sections += seed_sections
        summary_md = folder / "summary.md"
        header = _seed_header(folder, manifest, rows, table_manifest)
        atomic_write_text(summary_md, "\n\n".join([header, *seed_sections]) + "\n")
        summary_csv = folder / "summary.csv"
        atomic_write_text(summary_csv, seed_summary_csv(table_manifest, table_rows, metrics, base))
    harmful = harmful_table(manifest, rows)
    if harmful:
        sections += ["## Harmful positive pairs selected during training", harmful]
    sections += ["## Plots", *(f"![{name}]({p.relative_to(folder)})" for name, p in paths.items())]
    if seeded:
        paths["summary"] = summary_md
        paths["summary csv"] = summary_csv
    report = folder / "report.md"
    atomic_write_text(report, "\n\n".join(sections) + "\n")
    paths["report"] = report
    atomic_write_json(folder / "report.json", {k: str(v) for k, v in paths.items()})
    return paths


# ------------------------------------------------------------------------ seed statistics
def _finite(value: Any) -> float:
    """``value`` as a float when it is a finite number, else 0 (an error bar of nothing)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _number_or_none(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _cell_name(axes: Sequence[dict[str, Any]], row: dict[str, Any]) -> str:
    return ", ".join(f"{a['key']}={row[a['key']]}" for a in axes) or "all runs"


def aggregate_seeds(
    manifest: dict[str, Any], rows: list[dict[str, Any]], metrics: Sequence[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The manifest without its ``train.seed`` axis, and one row per cell (a combination of
    the other axes) that has finished runs, in grid order.

    A cell row holds the cell's axis values, ``n_seeds`` (finished runs), ``seeds`` (their
    seeds, as written) and per metric: ``metric`` (mean over the seeds where the metric is a
    finite number; None if none), ``metric_std`` (sample std, ddof = 1; NaN with one seed),
    ``metric_n`` and ``metric_values`` (seed -> value).
    """
    axes = [a for a in manifest["grid"] if a["key"] != SEED_KEY]
    reduced = {**manifest, "grid": axes}
    by_cell: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault(tuple(row[a["key"]] for a in axes), []).append(row)
    cells = []
    for combo in itertools.product(*(a["values"] for a in axes)):
        runs = by_cell.get(combo)
        if not runs:
            continue
        cell: dict[str, Any] = {a["key"]: v for a, v in zip(axes, combo, strict=True)}
        cell["n_seeds"] = len(runs)
        cell["seeds"] = [r[SEED_KEY] for r in runs]
        for metric in metrics:
            values = {
                r[SEED_KEY]: v for r in runs if (v := _number_or_none(r.get(metric))) is not None
            }
            summary = SeedSummary.of(list(values.values())) if values else None
            cell[metric] = summary.mean if summary else None
            cell[f"{metric}_std"] = summary.std if summary else math.nan
            cell[f"{metric}_n"] = len(values)
            cell[f"{metric}_values"] = values
        cells.append(cell)
    return reduced, cells


def parse_baseline(specs: Sequence[str], manifest: dict[str, Any]) -> dict[str, str]:
    """``["key=value", ...]`` as ``{key: value}``, checked against the sweep's non-seed axes.

    Raises:
        UserInputError: an item is not ``key=value``, names no swept key (or the seed), a
            value the axis does not have, or a key twice.
    """
    axes = {a["key"]: a["values"] for a in manifest["grid"] if a["key"] != SEED_KEY}
    out: dict[str, str] = {}
    for spec in specs:
        key, sep, value = (part.strip() for part in spec.partition("="))
        if not sep or not key or not value:
            raise UserInputError(
                f"--baseline {spec!r} is not of the form key=value (e.g. loss.name=triplet)"
            )
        if key == SEED_KEY:
            raise UserInputError(
                f"--baseline {spec!r}: the baseline is a cell of the other axes, compared seed "
                "by seed; name one of them instead"
            )
        if key not in axes:
            raise UserInputError(
                f"--baseline {spec!r}: {key} is not a swept key; swept: "
                f"{', '.join(axes) or 'none besides train.seed'}"
            )
        if value not in axes[key]:
            raise UserInputError(
                f"--baseline {spec!r}: {key} has no value {value!r}; its values: "
                f"{', '.join(axes[key])}"
            )
        if key in out:
            raise UserInputError(f"--baseline names {key} twice; give each key once")
        out[key] = value
    return out


def baseline_differences(
    manifest: dict[str, Any],
    cells: list[dict[str, Any]],
    metrics: Sequence[str],
    baseline: dict[str, str],
) -> list[tuple[dict[str, Any], dict[str, Any] | None, dict[str, PairedDifference | None]]]:
    """For every cell but the baselines: ``(cell, its baseline cell or None when that has no
    finished run, {metric: paired difference, or None without a common seed})``.

    ``manifest`` and ``cells`` are :func:`aggregate_seeds`'s; a cell's baseline has the values
    of ``baseline`` and the cell's own values of the other axes.
    """
    keys = [a["key"] for a in manifest["grid"]]
    lookup = {tuple(c[k] for k in keys): c for c in cells}
    out = []
    for cell in cells:
        target = tuple(baseline.get(k, cell[k]) for k in keys)
        if target == tuple(cell[k] for k in keys):
            continue
        base = lookup.get(target)
        diffs: dict[str, PairedDifference | None] = {}
        for metric in metrics:
            mine = cell[f"{metric}_values"]
            theirs = base[f"{metric}_values"] if base else {}
            common = any(s in theirs for s in mine)
            diffs[metric] = paired_difference(mine, theirs) if common else None
        out.append((cell, base, diffs))
    return out


def _mean_std_cell(row: dict[str, Any], metric: str) -> str:
    mean, std = row.get(metric), row.get(f"{metric}_std")
    if not isinstance(mean, (int, float)):
        return "–"
    if not isinstance(std, (int, float)) or not math.isfinite(std):
        return f"{100 * mean:.2f} (1 seed)"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _signed(value: float) -> str:
    return f"{100 * value:+.2f}".replace("-", "−")


def _interval(diff: PairedDifference) -> str:
    if diff.n < 2:
        return "–"
    return f"[{_signed(diff.low)}, {_signed(diff.high)}]"


def _seed_header(
    folder: Path, manifest: dict[str, Any], rows: list[dict[str, Any]], reduced: dict[str, Any]
) -> str:
    seeds = next(a["values"] for a in manifest["grid"] if a["key"] == SEED_KEY)
    cells_of = ", ".join(a["key"] for a in reduced["grid"]) or "no other axis (one cell)"
    return (
        f"# Seed statistics: {folder}\n\n"
        f"Config `{manifest['config']}`, overrides `{' '.join(manifest['overrides']) or '-'}`; "
        f"{len(rows)} of {len(manifest['runs'])} runs finished. A cell is one combination of "
        f"{cells_of}; each was trained with {SEED_KEY} = {', '.join(seeds)}. "
        "summary.csv holds these numbers as fractions; results.csv has one row per run."
    )


def seed_summary_sections(
    manifest: dict[str, Any],
    cells: list[dict[str, Any]],
    metrics: Sequence[str],
    baseline: dict[str, str],
) -> list[str]:
    """The Markdown sections of ``summary.md``: per-cell mean ± std and, with a baseline, the
    paired differences, their 95 % t-intervals and a plain statement for each."""
    axes = manifest["grid"]
    keys = [a["key"] for a in axes]
    labels = [METRIC_LABELS.get(m, m) for m in metrics]
    body = [
        [*(c[k] for k in keys), c["n_seeds"], " ".join(c["seeds"])]
        + [_mean_std_cell(c, m) for m in metrics]
        for c in cells
    ]
    sections = [
        "## Mean ± standard deviation over seeds",
        "Metrics in percent: the mean over seeds ± the sample standard deviation (ddof = 1); "
        "n is the number of seeds that finished.",
        format_table(
            [*(keys or ["cell"]), "n", "seeds", *labels], _with_cell(body, keys), markdown=True
        ),
    ]
    if not baseline:
        sections.append(
            "For paired differences with 95 % intervals, name a baseline cell: "
            "`adasp report DIR --baseline key=value` (e.g. `--baseline loss.name=triplet`)."
        )
        return sections
    compared = baseline_differences(manifest, cells, metrics, baseline)
    named = ", ".join(f"{k}={v}" for k, v in baseline.items())
    sizes = sorted({d.n for _, _, diffs in compared for d in diffs.values() if d and d.n >= 2})
    quantiles = "; ".join(f"t(0.975, {n - 1}) = {t_quantile(0.975, n - 1):.3f}" for n in sizes)
    sections += [
        f"## Paired differences against the baseline {named}",
        "Per seed s, Δ_s = metric(cell, s) − metric(baseline, s) in percentage points, where "
        "the baseline has the cell's values of the other axes. The interval is the two-sided "
        "95 % Student t-interval over the n paired seeds, mean(Δ) ± t(0.975, n − 1) · "
        "std(Δ) / √n (t quantile computed exactly for integer degrees of freedom"
        + (f": {quantiles}" if quantiles else "")
        + "). It measures training noise (initial weights, batches, augmentation, dropout) "
        "only, not the sampling of the test queries. **distinguishable**: the interval "
        "excludes 0; **noise**: it contains 0, so these seeds cannot tell the cell from the "
        "baseline.",
    ]
    if not compared:
        sections.append("No cell besides the baseline.")
        return sections
    headers = [*keys, "baseline", "n"] + [
        f"{label} {part}" for label in labels for part in ("Δ", "95 % CI", "verdict")
    ]
    body, per_seed, sentences = [], [], []
    seeds = sorted({s for c in cells for s in c["seeds"]}, key=_seed_order)
    for cell, base, diffs in compared:
        base_name = ", ".join(f"{k}={cell[k] if k not in baseline else baseline[k]}" for k in keys)
        n = max((d.n for d in diffs.values() if d), default=0)
        row: list[Any] = [*(cell[k] for k in keys), base_name, n]
        for metric, label in zip(metrics, labels, strict=True):
            diff = diffs[metric]
            if diff is None:
                why = "baseline not finished" if base is None else "no common seed"
                row += ["–", "–", why]
                sentences.append(f"- {_cell_name(axes, cell)} vs {base_name}: {label}: {why}.")
                continue
            row += [_signed(diff.mean), _interval(diff), diff.verdict]
            by_seed = dict(zip(diff.seeds, diff.differences, strict=True))
            per_seed.append(
                [_cell_name(axes, cell), label]
                + [_signed(by_seed[s]) if s in by_seed else "–" for s in seeds]
            )
            sentences.append(
                f"- {_cell_name(axes, cell)} vs {base_name}: {label} {_statement(diff)}"
            )
        body.append(row)
    sections.append(format_table(headers, body, markdown=True))
    if per_seed:
        sections += [
            "Per-seed differences Δ_s (percentage points):",
            format_table(
                ["cell", "metric", *(f"seed {s}" for s in seeds)], per_seed, markdown=True
            ),
        ]
    sections += ["In words:", "\n".join(sentences)]
    return sections


def _with_cell(body: list[list[Any]], keys: list[str]) -> list[list[Any]]:
    return body if keys else [["all runs", *row] for row in body]


def _seed_order(seed: str) -> tuple[float, str]:
    number = _number(seed)
    return (number if number is not None else math.inf, seed)


def _statement(diff: PairedDifference) -> str:
    if diff.n < 2:
        return (
            f"{_signed(diff.mean)} points from 1 paired seed: no interval (needs 2+ seeds), "
            "so it cannot be told from seed noise."
        )
    what = (
        f"distinguishable from seed noise ({'higher' if diff.mean > 0 else 'lower'} than the "
        "baseline; the interval excludes 0)"
        if diff.distinguishable
        else "noise: not distinguishable from seed noise (the interval contains 0)"
    )
    return f"{_signed(diff.mean)} points, 95 % CI {_interval(diff)} over {diff.n} seeds: {what}."


def seed_summary_csv(
    manifest: dict[str, Any],
    cells: list[dict[str, Any]],
    metrics: Sequence[str],
    baseline: dict[str, str],
) -> str:
    """``summary.csv``: one row per cell; metrics as fractions (as in ``results.csv``).

    Columns: the cell's axes, ``n_seeds``, ``seeds`` (space-separated), per metric
    ``M_mean``, ``M_std`` (ddof = 1), ``M_n``; with a baseline also ``baseline`` and per metric
    ``M_diff``, ``M_diff_std``, ``M_diff_n``, ``M_diff_ci95_low``, ``M_diff_ci95_high`` (the
    t-interval) and ``M_verdict`` (empty for the baseline cells).
    """
    keys = [a["key"] for a in manifest["grid"]]
    columns = [*keys, "n_seeds", "seeds"]
    columns += [f"{m}_{part}" for m in metrics for part in ("mean", "std", "n")]
    diff_parts = ("diff", "diff_std", "diff_n", "diff_ci95_low", "diff_ci95_high", "verdict")
    if baseline:
        columns += ["baseline"] + [f"{m}_{part}" for m in metrics for part in diff_parts]
    compared = {
        tuple(c[k] for k in keys): (base, diffs)
        for c, base, diffs in (
            baseline_differences(manifest, cells, metrics, baseline) if baseline else []
        )
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for cell in cells:
        row: dict[str, Any] = {k: cell[k] for k in keys}
        row.update(n_seeds=cell["n_seeds"], seeds=" ".join(cell["seeds"]))
        for m in metrics:
            row.update(
                {f"{m}_mean": cell[m], f"{m}_std": cell[f"{m}_std"], f"{m}_n": cell[f"{m}_n"]}
            )
        entry = compared.get(tuple(cell[k] for k in keys))
        if entry:
            row["baseline"] = ", ".join(f"{k}={baseline.get(k, cell[k])}" for k in keys)
            for m in metrics:
                d = entry[1][m]
                if d is not None:
                    row.update(
                        {
                            f"{m}_diff": d.mean,
                            f"{m}_diff_std": d.std,
                            f"{m}_diff_n": d.n,
                            f"{m}_diff_ci95_low": d.low,
                            f"{m}_diff_ci95_high": d.high,
                            f"{m}_verdict": d.verdict,
                        }
                    )
        writer.writerow(
            {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        )
    return buffer.getvalue()


def _plot_seeds(rows: list[dict[str, Any]], cell: dict[str, Any], metric: str, path: Path) -> None:
    """A seeds-only sweep: each seed's value and the mean ± std."""
    label = METRIC_LABELS.get(metric, metric)
    values = cell[f"{metric}_values"]
    fig, ax = new_figure((4.5, 4))
    ax.plot([0] * len(values), [100 * v for v in values.values()], "o", alpha=0.5, label="seeds")
    if isinstance(cell[metric], float):
        ax.errorbar(
            [0.2], [100 * cell[metric]], yerr=[100 * _finite(cell[f"{metric}_std"])], fmt="s",
            capsize=4, color="C1", label="mean ± std",
        )  # fmt: skip
    ax.set_xticks([0, 0.2], ["seeds", "mean"])
    ax.set_xlim(-0.3, 0.5)
    ax.set_ylabel(f"{label} (%)")
    ax.set_title(f"{label} over {len(values)} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)
