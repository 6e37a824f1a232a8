"""The package layout is the architecture: packages depend one way, with no cycle.

Every ``import`` in ``src/adasp`` counts, including those inside functions (a deferred import
is still a dependency).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import adasp

PACKAGE = Path(adasp.__file__).parent

_BASE = {"errors", "registry", "utils"}
_LIBRARY = _BASE | {"losses", "data", "models", "evaluation", "analysis"}

#: What each package may import (besides itself). Lower layers never import higher ones.
ALLOWED = {
    "errors": set(),
    "registry": {"errors", "plugins"},
    "plugins": {"errors", "registry"},
    "utils": {"errors"},
    "losses": _BASE,
    "data": _BASE,
    "models": _BASE,
    "evaluation": _BASE | {"data", "models"},
    "analysis": _BASE | {"losses", "data", "models", "evaluation"},
    "engine": _LIBRARY | {"plugins"},
    "cli": _LIBRARY | {"plugins", "engine"},
}


def _unit(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if parts[0] not in ("__init__", "__main__") else "adasp"


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        unit = _unit(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "adasp" and len(parts) > 1 and parts[1] != unit:
                    graph[unit].add(parts[1])
    return graph


def test_every_package_is_in_the_layer_table():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")} - {"adasp", "configs"}
    assert units <= set(ALLOWED), f"add {sorted(units - set(ALLOWED))} to ALLOWED"


def test_packages_import_only_lower_layers():
    wrong = {
        f"{unit} -> {target}"
        for unit, targets in _imports().items()
        if unit in ALLOWED
        for target in targets
        if target not in ALLOWED[unit]
    }
    assert not wrong, f"imports against the layering: {sorted(wrong)}"


def test_no_import_cycle_between_packages():
    graph = _imports()
    graph.pop("adasp", None)  # the package root re-exports; it is nobody's dependency

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(unit for unit in graph if unit in reach(unit))
    assert not cycles, f"packages on an import cycle: {cycles}"
