"""The peers' own code (fast-reid 1.4.0, torchreid 0.2.5) for the conversion tests.

Their packages are fetched once from the package index with ``pip download --no-deps`` into
pytest's cache folder and unpacked there (never installed into the environment, never
imported by adasp); the two small pure-Python modules fast-reid imports at run time (yacs,
termcolor) come the same way. Where they cannot be fetched (offline), the tests that need
them skip, saying so.

Import shims, here and only here: torchreid's package ``__init__`` imports its whole training
stack (Cython ranking, tensorboard, gdown...), so its ``models`` subpackage is imported
through empty parent packages instead, as fast-reid's ``data.transforms`` (its ``data``
package imports every dataset); fast-reid's data package imports ``torch._six``
(gone in torch 2), given here as a module with the one name it uses, and
``collections.Mapping`` (gone in Python 3.10).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

PACKAGES = ("fastreid==1.4.0", "torchreid==0.2.5", "yacs==0.1.8", "termcolor")


def peer_root(cache_dir: Path) -> Path:
    """The folder holding the unpacked ``fastreid`` and ``torchreid`` packages (skips the
    calling test where they cannot be downloaded)."""
    root = cache_dir / "unpacked"
    if (root / "fastreid").is_dir() and (root / "torchreid").is_dir():
        return root
    downloads = cache_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(downloads),
            *list(PACKAGES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.skip(
            "could not download fast-reid/torchreid from the package index (offline?): "
            + (result.stderr.strip().splitlines() or ["no message"])[-1]
        )
    root.mkdir(exist_ok=True)
    for archive in downloads.iterdir():
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as wheel:
                wheel.extractall(root)
        elif archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as sdist:
                for member in sdist.getmembers():
                    parts = Path(member.name).parts
                    if len(parts) > 1 and parts[1] == "torchreid":
                        member.name = str(Path(*parts[1:]))
                        sdist.extract(member, root, filter="data")
    return root


def import_peers(root: Path) -> None:
    """Put the unpacked peers on ``sys.path``, torchreid behind its import shim."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if "torch._six" not in sys.modules:
        # fast-reid 1.4.0's data package imports torch._six (removed in torch 2).
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)  # type: ignore[attr-defined]
        sys.modules["torch._six"] = six
    import collections
    import collections.abc

    if not hasattr(collections, "Mapping"):
        # ... and `from collections import Mapping` (moved to collections.abc in Python 3.10).
        collections.Mapping = collections.abc.Mapping  # type: ignore[attr-defined]
    for name in ("torchreid", "torchreid.reid", "torchreid.reid.models", "fastreid.data"):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(root.joinpath(*name.split(".")))]
            sys.modules[name] = module


def torchreid_model(name: str, num_classes: int = 11) -> nn.Module:
    """torchreid's ``name`` model (no pretrained download), in eval mode."""
    import importlib

    module_name = {
        "osnet_ain": "osnet_ain",
        "osnet": "osnet",
        "resnet": "resnet",
        "mobilenetv2": "mobilenetv2",
    }[next(p for p in ("osnet_ain", "osnet", "resnet", "mobilenetv2") if name.startswith(p))]
    module: ModuleType = importlib.import_module(f"torchreid.reid.models.{module_name}")
    model = getattr(module, name)(num_classes=num_classes, pretrained=False, loss="softmax")
    return model.eval()


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every norm layer non-trivial statistics and affine parameters (a fresh init makes
    BatchNorm an identity in eval mode, which would hide a wrong mapping), and every learned
    pooling exponent a non-default value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)):
                if module.affine:
                    c = module.num_features
                    module.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                    module.bias.copy_(torch.randn(c, generator=generator) * 0.1)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


def crops(subset: Path, count: int = 6) -> list[Path]:
    """``count`` real pedestrian crops of the subset, from different identities."""
    paths = sorted((subset / "query").rglob("*.png"))
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(N, D)`` arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)
