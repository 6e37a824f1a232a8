"""Tables and plots of the harmful-pair simulation."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from adasp.analysis.harmful_pairs import HarmfulPairResult, num_pairs
from adasp.utils.atomic import atomic_write_text
from adasp.utils.plotting import new_figure, save_figure
from adasp.utils.tables import format_table

SWEEP_HEADERS = [
    "K",
    "P_SP",
    "P_SP 95% CI",
    "P_SP exact",
    "P_D",
    "P_D 95% CI",
    "P_D exact",
    "SP guaranteed harmless",
]


def _ci(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def guarantee_sentence(instances: int, harmful: int) -> str:
    """One line that states the exact condition and whether it holds for these M, K."""
    need = math.ceil(instances / 2)
    if 2 * harmful < instances:
        return (
            f"SP is guaranteed to pick no harmful pair here: 2K < M (K = {harmful} < "
            f"ceil(M/2) = {need})."
        )
    return (
        f"SP can pick a harmful pair here: K = {harmful} >= ceil(M/2) = {need} harmful pairs can "
        "touch every instance. The guarantee holds exactly when 2K < M "
        "(the supplementary's 'K < M' is not sufficient)."
    )


def result_table(result: HarmfulPairResult) -> str:
    """Console table of one simulation: simulated value, 95% CI and closed form per sampler."""
    rows = [
        ["SP (sparse)", result.p_sp, _ci(result.p_sp_ci), result.p_sp_exact],
        ["dense", result.p_dense, _ci(result.p_dense_ci), result.p_dense_exact],
    ]
    header = (
        f"Harmful positive pairs: N = {result.ids} identities, M = {result.instances} instances, "
        f"K = {result.harmful} of {num_pairs(result.instances)} pairs harmful, "
        f"T = {result.trials} trials, seed {result.seed}"
    )
    table = format_table(["sampler", "simulated", "95% CI", "closed form"], rows)
    return f"{header}\n{table}\n{guarantee_sentence(result.instances, result.harmful)}"


def _sweep_rows(results: Sequence[HarmfulPairResult]) -> list[list]:
    return [
        [
            r.harmful,
            r.p_sp,
            _ci(r.p_sp_ci),
            r.p_sp_exact,
            r.p_dense,
            _ci(r.p_dense_ci),
            r.p_dense_exact,
            "yes" if r.sp_guaranteed_harmless else "no",
        ]
        for r in results
    ]


def sweep_table(results: Sequence[HarmfulPairResult], markdown: bool = False) -> str:
    """Table of a sweep over K (plain text or Markdown)."""
    return format_table(SWEEP_HEADERS, _sweep_rows(results), markdown=markdown)


def sweep_findings(results: Sequence[HarmfulPairResult]) -> list[str]:
    """Sentences checking the supplementary's claims against the sweep."""
    first = results[0]
    m = first.instances
    lines = []
    # The supplementary claims SP never samples a harmful pair for K < M.
    violating = [r for r in results if r.harmful < m and r.p_sp > 0]
    if violating:
        k = min(r.harmful for r in violating)
        worst = max(violating, key=lambda r: r.p_sp)
        lines.append(
            f"Claim 'for K < M, SP never samples a harmful pair': contradicted. SP sampled "
            f"harmful pairs from K = {k} on (e.g. K = {worst.harmful}: P_SP = {worst.p_sp:.4f}, "
            f"closed form {worst.p_sp_exact:.4f})."
        )
    else:
        lines.append("Claim 'for K < M, SP never samples a harmful pair': not contradicted here.")
    safe = [r for r in results if r.sp_guaranteed_harmless]
    lines.append(
        f"Exact condition: SP is guaranteed harmless iff 2K < M, i.e. K <= {max(r.harmful for r in safe)} "
        f"for M = {m}; in this sweep P_SP = 0 for every such K: "
        f"{'yes' if all(r.p_sp == 0 for r in safe) else 'no'}."
    )
    lines.append(
        "P_SP <= P_D for every K: "
        f"{'yes' if all(r.p_sp_exact <= r.p_dense_exact + 1e-12 for r in results) else 'no'} "
        "(closed forms)."
    )
    return lines


def write_sweep(results: Sequence[HarmfulPairResult], out_dir: str | Path) -> dict[str, Path]:
    """Write ``harmful_pairs.csv``, ``harmful_pairs.md`` and ``harmful_pairs.png`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "harmful_pairs.csv",
        "markdown": out / "harmful_pairs.md",
        "plot": out / "harmful_pairs.png",
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "K",
            "p_sp",
            "p_sp_lo",
            "p_sp_hi",
            "p_sp_exact",
            "p_dense",
            "p_dense_lo",
            "p_dense_hi",
            "p_dense_exact",
            "sp_guaranteed_harmless",
        ]
    )
    for r in results:
        writer.writerow(
            [
                r.harmful,
                r.p_sp,
                *r.p_sp_ci,
                r.p_sp_exact,
                r.p_dense,
                *r.p_dense_ci,
                r.p_dense_exact,
                int(r.sp_guaranteed_harmless),
            ]
        )
    atomic_write_text(paths["csv"], buffer.getvalue())
    first = results[0]
    title = (
        f"# Harmful positive pairs: N = {first.ids}, M = {first.instances}, T = {first.trials}\n\n"
    )
    findings = "\n".join(f"- {line}" for line in sweep_findings(results))
    atomic_write_text(
        paths["markdown"], f"{title}{sweep_table(results, markdown=True)}\n\n{findings}\n"
    )
    _plot_sweep(results, paths["plot"])
    return paths


def _plot_sweep(results: Sequence[HarmfulPairResult], path: Path) -> None:
    k = [r.harmful for r in results]
    fig, ax = new_figure((7, 4.2))
    for label, key, exact, color in (
        ("SP (sparse)", "p_sp", "p_sp_exact", "tab:blue"),
        ("dense", "p_dense", "p_dense_exact", "tab:red"),
    ):
        value = [getattr(r, key) for r in results]
        lo = [getattr(r, f"{key}_ci")[0] for r in results]
        hi = [getattr(r, f"{key}_ci")[1] for r in results]
        ax.plot(k, value, "o", color=color, markersize=3, label=f"{label}, simulated")
        ax.fill_between(k, lo, hi, color=color, alpha=0.2)
        ax.plot(k, [getattr(r, exact) for r in results], "-", color=color, label=f"{label}, exact")
    m = results[0].instances
    ax.axvline(math.ceil(m / 2) - 0.5, color="gray", linestyle="--", linewidth=1)
    ax.text(math.ceil(m / 2) - 0.4, 0.95, "2K = M", color="gray", fontsize=8, va="top")
    ax.axvline(m - 0.5, color="gray", linestyle=":", linewidth=1)
    ax.text(m - 0.4, 0.85, "K = M", color="gray", fontsize=8, va="top")
    ax.set_xlabel("K, harmful positive pairs per identity")
    ax.set_ylabel("fraction of sampled positive pairs that are harmful")
    ax.set_title(f"Harmful pairs sampled, M = {m} instances, N = {results[0].ids} identities")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
