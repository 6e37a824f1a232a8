"""Plain-text and Markdown tables for console output and reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _cell(value: Any, precision: int) -> str:
    if isinstance(value, float):
        return f"{value:.{precision}f}"
    return str(value)


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    precision: int = 4,
    markdown: bool = False,
) -> str:
    """Render ``rows`` under ``headers``; floats with ``precision`` decimals.

    Plain text aligns columns with spaces (numbers right-aligned); ``markdown=True`` gives a
    GitHub-flavoured Markdown table.
    """
    cells = [[_cell(v, precision) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], (int, float)) for row in rows) if rows else False
        for i in range(len(headers))
    ]
    if markdown:
        align = ["---:" if n else "---" for n in numeric]
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)
