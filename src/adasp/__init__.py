"""adasp: re-identification built around the Sparse Pairwise losses (SP-H, SP-LH, AdaSP).

``from adasp import FeatureExtractor`` embeds image crops with a model file (see
``docs/inference.md``); it is imported on first use, so ``import adasp`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["FeatureExtractor", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "FeatureExtractor":
        from adasp.engine.feature_extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'adasp' has no attribute {name!r}")
