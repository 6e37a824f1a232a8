"""The report of a tuning (``adasp sweep --group ...``): each group's selection and the seeded
comparison of the selected recipes.

The selection tables show every cell a group tried on the selection seed, with the winner
marked, so a reader sees how much tuning each method got and how flat its optimum was. The
confirmation runs (seeds ``1..N``, see :mod:`adasp.engine.tuning`) are summarised as mean ±
std per group and, against a baseline group, as paired per-seed differences with a 95 %
Student t-interval (:func:`adasp.evaluation.seed_statistics.paired_difference`); a difference
whose interval contains 0 is called noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adasp.errors import UserInputError
from adasp.evaluation.results import METRIC_LABELS
from adasp.evaluation.seed_statistics import PairedDifference, SeedSummary, paired_difference
from adasp.evaluation.sweep_report import _interval, _signed, _statement
from adasp.utils.atomic import atomic_write_json, atomic_write_text
from adasp.utils.tables import format_table


@dataclass(frozen=True)
class SelectionCell:
    """One cell of a group's grid: its run name, axis values, overrides and the selection
    metric on the selection seed (None until the run finished)."""

    name: str
    values: dict[str, str]
    overrides: tuple[str, ...]
    value: float | None


@dataclass(frozen=True)
class GroupSelection:
    """A group's selection phase: budget (cells tried), inert axes dropped, every cell, and the
    index of the winner (None until every cell finished)."""

    group: str
    folder: str
    budget: int
    dropped: tuple[str, ...]
    cells: tuple[SelectionCell, ...]
    winner_index: int | None
    select_by: str

    @property
    def winner(self) -> str | None:
        return None if self.winner_index is None else self.cells[self.winner_index].name

    @property
    def winner_overrides(self) -> tuple[str, ...]:
        return () if self.winner_index is None else self.cells[self.winner_index].overrides


@dataclass(frozen=True)
class TuningSummary:
    """Selections per group and the confirmation runs' metrics (group -> seed -> metric ->
    value, as fractions)."""

    group_key: str
    select_by: str
    seeds: int
    rule: str
    selections: tuple[GroupSelection, ...]
    seeded: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def equal_budget(self) -> bool:
        return len({s.budget for s in self.selections}) <= 1

    def values(self, group: str, metric: str) -> dict[str, float]:
        """Seed -> ``metric`` of ``group``'s confirmation runs."""
        return {s: m[metric] for s, m in self.seeded.get(group, {}).items() if metric in m}

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["equal_budget"] = self.equal_budget
        out["winners"] = {s.group: s.winner for s in self.selections}
        return out


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    summary = SeedSummary.of(list(values))
    if not math.isfinite(summary.std):
        return f"{100 * summary.mean:.2f} (1 seed)"
    return f"{100 * summary.mean:.2f} ± {100 * summary.std:.2f}"


def selection_sections(summary: TuningSummary) -> list[str]:
    """Markdown: the rule, the budgets, and one table per group with the winner marked."""
    label = METRIC_LABELS[summary.select_by]
    budgets = ", ".join(f"{s.group}: {s.budget}" for s in summary.selections)
    sections = [
        "## Selection (validation split, one seed)",
        f"Rule: {summary.rule}. Budget (selection runs per group): {budgets}"
        + (
            "."
            if summary.equal_budget
            else " — **unequal budgets**: the comparison favours the groups tuned more."
        ),
    ]
    for selection in summary.selections:
        keys = sorted({k for c in selection.cells for k in c.values})
        rows = [
            [*(c.values.get(k, "") for k in keys), _pct(c.value),
             "**selected**" if i == selection.winner_index else ""]
            for i, c in enumerate(selection.cells)
        ]  # fmt: skip
        note = (
            f" ({', '.join(selection.dropped)} changes nothing here: not tuned)"
            if selection.dropped
            else ""
        )
        sections.append(f"### {summary.group_key}={selection.group}{note}")
        sections.append(
            format_table([*keys, f"{label} (seed 0)", ""], rows, markdown=True)
            if keys
            else "One configuration: nothing to select."
        )
    return sections


def differences(
    summary: TuningSummary, baseline: str, metric: str
) -> dict[str, PairedDifference | None]:
    """Every other group's paired difference against ``baseline`` on ``metric`` (None where
    they share no finished seed)."""
    base = summary.values(baseline, metric)
    out: dict[str, PairedDifference | None] = {}
    for selection in summary.selections:
        if selection.group == baseline:
            continue
        values = summary.values(selection.group, metric)
        shared = set(values) & set(base)
        out[selection.group] = paired_difference(values, base) if shared else None
    return out


def seeded_sections(
    summary: TuningSummary, metrics: Sequence[str], baselines: Sequence[str]
) -> list[str]:
    """Markdown: mean ± std of each selected recipe over the confirmation seeds, then the
    paired differences against each baseline group."""
    labels = [METRIC_LABELS[m] for m in metrics]
    rows = []
    for selection in summary.selections:
        seeds = sorted(summary.seeded.get(selection.group, {}), key=int)
        rows.append(
            [selection.group, selection.winner or "(not selected yet)", " ".join(seeds) or "–"]
            + [_mean_std(list(summary.values(selection.group, m).values())) for m in metrics]
        )
    sections = [
        f"## Selected recipes over seeds 1..{summary.seeds}",
        "Mean ± standard deviation over the confirmation seeds (the selection seed 0 is not "
        "reused: its value is biased upward by the choice).",
        format_table([summary.group_key, "selected cell", "seeds", *labels], rows, markdown=True),
    ]
    for baseline in baselines:
        body, statements = [], []
        for metric, label in zip(metrics, labels, strict=True):
            for group, diff in differences(summary, baseline, metric).items():
                if diff is None:
                    body.append([f"{group} − {baseline}", label, "–", "–", 0, "no shared seed"])
                    continue
                body.append(
                    [f"{group} − {baseline}", label, _signed(diff.mean), _interval(diff), diff.n,
                     diff.verdict]
                )  # fmt: skip
                statements.append(f"- {group} − {baseline}, {label}: {_statement(diff)}")
        sections += [
            f"## Paired differences against {summary.group_key}={baseline} (95 % t-interval)",
            format_table(["difference", "metric", "mean", "95 % CI", "seeds", "verdict"], body,
                         markdown=True),
            "\n".join(statements),
        ]  # fmt: skip
    return sections


def _plot_groups(summary: TuningSummary, metric: str, path: Path) -> None:
    """Bars of each selected recipe's mean with ± std error bars (groups are categories, not a
    trend: no connecting line)."""
    from adasp.utils.plotting import new_figure, save_figure

    groups = [s.group for s in summary.selections]
    means, stds = [], []
    for group in groups:
        values = list(summary.values(group, metric).values())
        stats = SeedSummary.of(values) if values else None
        means.append(100 * stats.mean if stats else 0.0)
        stds.append(100 * stats.std if stats and math.isfinite(stats.std) else 0.0)
    figure, axes = new_figure((max(4.0, 1.2 * len(groups) + 1.5), 3.6))
    axes.bar(range(len(groups)), means, yerr=stds, capsize=4, color="#4C72B0")
    axes.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    axes.set_ylabel(f"{METRIC_LABELS[metric]} (%), mean ± std over seeds")
    axes.set_title(f"Selected recipe per {summary.group_key}")
    figure.tight_layout()
    save_figure(figure, path)


def write_tuning_report(
    folder: str | Path,
    summary: TuningSummary,
    metrics: Sequence[str] = ("mAP", "rank1"),
    baselines: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and a bar plot per metric into the tuning folder.

    Args:
        baselines: group values to compare the others with (e.g. ``["triplet"]``).

    Raises:
        UserInputError: an unknown metric or baseline group.
    """
    folder = Path(folder)
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown:
        raise UserInputError(f"unknown metric {unknown[0]!r}; allowed: {', '.join(METRIC_LABELS)}")
    groups = [s.group for s in summary.selections]
    for baseline in baselines:
        if baseline not in groups:
            raise UserInputError(
                f"--baseline {baseline!r} is not a group of this tuning; groups: {', '.join(groups)}"
            )
    paths: dict[str, Path] = {}
    if any(summary.seeded.values()):
        for metric in metrics:
            path = folder / "plots" / f"{metric}_by_group.png"
            _plot_groups(summary, metric, path)
            paths[f"{metric} bars"] = path
    sections = [
        f"# Tuning report: {folder}",
        *selection_sections(summary),
        *seeded_sections(summary, metrics, baselines),
    ]
    if paths:
        sections += ["## Plots", *(f"![{n}]({p.relative_to(folder)})" for n, p in paths.items())]
    report = folder / "report.md"
    atomic_write_text(report, "\n\n".join(sections) + "\n")
    paths["report"] = report
    atomic_write_json(folder / "report.json", {k: str(v) for k, v in paths.items()})
    return paths


def baseline_groups(specs: Sequence[str], group_key: str) -> list[str]:
    """``--baseline`` items for a tuning: ``VALUE`` or ``GROUPKEY=VALUE``."""
    out = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        if sep and key != group_key:
            raise UserInputError(
                f"--baseline {spec!r}: a tuning compares values of {group_key}; write "
                f"--baseline {group_key}=VALUE"
            )
        out.append(value if sep else spec)
    return out
