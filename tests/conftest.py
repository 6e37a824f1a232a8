"""Shared test fixtures: devices, the real data subset, small helpers."""

from __future__ import annotations

from pathlib import Path

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
