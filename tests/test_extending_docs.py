"""docs/extending.md: every Python example runs as written (in a fresh folder, its
registrations removed afterwards)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adasp.data import DATASETS
from adasp.engine import CALLBACKS
from adasp.losses import LOSSES
from adasp.models import BACKBONES, HEADS, POOLINGS

DOC = Path(__file__).parent.parent / "docs" / "extending.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
REGISTRIES = (DATASETS, BACKBONES, HEADS, POOLINGS, LOSSES, CALLBACKS)


def test_the_page_has_an_example_per_extension_point():
    text = DOC.read_text(encoding="utf-8")
    for heading in ("Datasets", "Backbones", "Heads", "Poolings", "Losses", "Callbacks", "Loggers"):
        assert f"## {heading}" in text
    assert len(BLOCKS) == 7


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = [set(r) for r in REGISTRIES]
    try:
        exec(compile(BLOCKS[index], f"{DOC}:block{index}", "exec"), {"__name__": "docs_example"})
    finally:
        for registry, names in zip(REGISTRIES, before, strict=True):
            for name in set(registry) - names:
                registry.unregister(name)
