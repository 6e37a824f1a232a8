"""The training step never waits for the device; the host reads losses only at log steps.

Two proofs on a CPU-only machine:

- the step runs with the model on the ``meta`` device, whose tensors have no values: any host
  read of a device tensor (``float(loss)``, ``.item()``, ``bool(t.any())``, ``.tolist()``) would
  raise there. Only the loader's labels and the index tables built from them live on the host;
- on the CPU, reads are counted by wrapping ``Tensor.item``/``__float__``/``__int__``/
  ``__bool__``/``tolist``: a step that does not log reads only host label tensors, and a log
  step reads the accumulated losses in one transfer.
"""

from __future__ import annotations

import collections
import contextlib
import math
import traceback

import pytest
import torch

from adasp.engine.config import load_config
from adasp.engine.trainer import Trainer, TrainingDiverged
from tests.engine.conftest import poison_objective, tiny_overrides

# ~0.7 s each (a model step per loss): in make test, not in the make test-fast loop.
pytestmark = pytest.mark.slow

READS = ("item", "__float__", "__int__", "__bool__", "tolist")


@contextlib.contextmanager
def counted_host_reads():
    """Count host reads of tensors by the adasp frame that made them: ``{(file, function): n}``."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name):
        def read(self, *args, **kwargs):
            for frame in reversed(traceback.extract_stack()[:-1]):
                if "/torch/optim/" in frame.filename or "/torch/utils/data/" in frame.filename:
                    # Host-side by design: Adam's step counts, a DataLoader's worker seed.
                    counts[("torch (host-side)", frame.name)] += 1
                    break
                if "/adasp/" in frame.filename:
                    counts[(frame.filename.rsplit("/adasp/", 1)[1], frame.name)] += 1
                    break
            return originals[name](self, *args, **kwargs)

        return read

    for name in READS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def _trainer(tmp_path, root, device, *extra):
    overrides = [*tiny_overrides(root), "train.log_every=1000", *extra]
    config = load_config("quickstart", overrides)
    return Trainer.from_config(config, tmp_path / "run", device=device, progress=False)


LOSSES = [
    ["loss.name=adasp"],
    ["loss.name=sp-h", "loss.ce_weight=0"],
    ["loss.name=sp-lh"],
    ["loss.name=triplet"],
    ["loss.name=supcon"],
    ["loss.name=ms"],
    ["loss.name=circle"],
    ["loss.name=ep"],
    ["loss.name=none"],
    ["train.callbacks=[harmful_pairs]"],
    ["train.callbacks=[ema]"],
]


@pytest.mark.parametrize("overrides", LOSSES, ids=lambda o: " ".join(o))
def test_the_step_queues_without_reading_the_device(tmp_path, synthetic_root, overrides):
    trainer = _trainer(tmp_path, synthetic_root, "meta", *overrides)
    batches = iter(trainer.train_loader)
    for _ in range(2):  # meta tensors have no values: a host read would raise here
        trainer.train_step(next(batches))
    assert all(p.device.type == "meta" for p in trainer.model.parameters())
    trainer.close()


@pytest.mark.slow
def test_mgn_step_queues_without_reading_the_device(tmp_path, synthetic_root):
    trainer = _trainer(tmp_path, synthetic_root, "meta", "model.backbone=mgn")
    trainer.train_step(next(iter(trainer.train_loader)))
    trainer.close()


def test_only_log_steps_read_losses_and_they_read_once(tmp_path, synthetic_root):
    trainer = _trainer(tmp_path, synthetic_root, "cpu", "train.callbacks=[harmful_pairs]")
    batches = iter(trainer.train_loader)
    trainer.train_step(next(batches))  # the first step builds the meter
    batch = next(batches)
    with counted_host_reads() as step_reads:
        trainer.train_step(batch)
    # What a quiet step reads is on the host on a GPU too: the loader's labels (the CE label
    # range, the class layout's sizes) and Adam's step counts, which torch keeps on the CPU
    # (the fused CUDA Adam used on GPUs reads none).
    assert set(step_reads) <= {
        ("losses/cross_entropy.py", "forward"),
        ("losses/class_layout.py", "from_labels"),
        ("torch (host-side)", "_get_value"),
    }, step_reads
    with counted_host_reads() as log_reads:
        means = trainer.read_losses()
    assert log_reads == {("engine/loss_meter.py", "read"): 1}
    assert set(means) == {"ce", "adasp", "total"} and all(map(math.isfinite, means.values()))
    trainer.close()


def test_divergence_is_caught_at_the_next_read_naming_step_and_term(tmp_path, synthetic_root):
    trainer = _trainer(tmp_path, synthetic_root, "cpu")
    poison_objective(trainer, at_call=2, value=float("inf"))
    batches = iter(trainer.train_loader)
    for _ in range(2):
        trainer.train_step(next(batches))  # advances state.step
        trainer.state.batches_done += 1
    with pytest.raises(
        TrainingDiverged, match=r"iteration 2 of 4 \(global step 2\).*term 'adasp' = inf"
    ):
        trainer.read_losses()
    trainer.close()


def test_embedding_extraction_reads_the_device_once_at_the_end(synthetic_root):
    from adasp.data import build_dataset, build_test_transform
    from adasp.evaluation import extract_embeddings
    from adasp.models import build_model
    from tests.engine.conftest import SYNTHETIC_OPTIONS

    samples = build_dataset("synthetic", synthetic_root, **SYNTHETIC_OPTIONS).gallery
    model = build_model("resnet18", 0, last_stride=2)
    with counted_host_reads() as reads:
        features = extract_embeddings(
            model, samples, build_test_transform((64, 32)), device="cpu", batch_size=8,
            num_workers=0,
        )  # fmt: skip
    assert features.shape == (len(samples), model.embedding_dim)
    # Only the DataLoader's host-side worker seed is read; nothing per batch.
    assert set(reads) <= {("torch (host-side)", "__init__")}, reads
