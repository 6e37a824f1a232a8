"""Shared test fixtures: devices, the real data subset, small helpers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_SUBSET = PROJECT_ROOT.parent / "shared" / "data" / "pku-reid-subset"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every available device: CPU always, CUDA where present."""
    return torch.device(request.param)


@pytest.fixture
def pku_subset() -> Path:
    """The real pedestrian subset at ../shared/data/pku-reid-subset (skipped where absent)."""
    if not SHARED_SUBSET.is_dir():
        pytest.skip(f"real data subset not found at {SHARED_SUBSET}; these tests need it")
    return SHARED_SUBSET


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module (``benchmarks/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"adasp_bench_{name}", PROJECT_ROOT / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
