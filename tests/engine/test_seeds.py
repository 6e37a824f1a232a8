"""``train.seed`` makes runs independent and repeatable: seed 0 and seed 1 differ in the
initial weights, the sampler's batches, the augmentation and the dropout masks, and one seed
repeats bit-identically on the CPU (what ``adasp sweep --seeds N`` relies on).

Seed 1 differs from seed 0 from the start (weights, batches, images, dropout); the training
run that follows is the same code, so the slow test checks only that one seed repeats."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adasp.engine.checkpoint import load_checkpoint
from adasp.engine.config import load_config
from adasp.engine.trainer import Trainer
from tests.engine.conftest import tiny_overrides


def _trainer(folder, root, seed: int, *extra: str) -> Trainer:
    overrides = [*tiny_overrides(root), f"train.seed={seed}", "model.dropout=0.5", *extra]
    return Trainer.from_config(
        load_config("quickstart", overrides), folder, device="cpu", progress=False
    )


def _record_dropout(trainer: Trainer) -> list[torch.Tensor]:
    """The masks of the model's dropout layer, one per training forward pass from now on."""
    (dropout,) = [m for m in trainer.model.modules() if isinstance(m, nn.Dropout)]
    masks: list[torch.Tensor] = []
    dropout.register_forward_hook(lambda module, inputs, output: masks.append(output == 0))
    return masks


def _start(folder, root, seed: int) -> dict:
    """What a run starts from: its initial weights, the keys ``(index, augmentation seed)`` of
    its first batch, that batch's images, and the dropout mask of its first training step."""
    trainer = _trainer(folder, root, seed)
    try:
        weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        loader = trainer.train_loader
        loader.set_epoch(0)
        keys = next(iter(loader.batches))
        batch = next(iter(loader))
        masks = _record_dropout(trainer)
        trainer.net.train()
        trainer.train_step(batch)
        return {
            "weights": weights,
            "keys": keys,
            "batch": batch,
            "dataset": loader.loader.dataset,
            "dropout": masks[0],
        }
    finally:
        trainer.close()


@pytest.mark.slow
def test_the_seed_changes_initial_weights_batches_augmentation_and_dropout(
    tmp_path, synthetic_root
):
    a, again, b = (
        _start(tmp_path / name, synthetic_root, seed)
        for name, seed in (("a", 0), ("again", 0), ("b", 1))
    )
    # Initial weights: randomly initialised tensors differ between seeds.
    for key in (
        "backbone.conv1.weight",
        "backbone.layer4.1.conv2.weight",
        "head.neck.classifier.weight",
    ):
        assert not torch.equal(a["weights"][key], b["weights"][key]), key
    assert all(torch.equal(a["weights"][k], again["weights"][k]) for k in a["weights"])

    # The sampler's first batch: other identities / images.
    indices = [[i for i, _ in run["keys"]] for run in (a, again, b)]
    assert indices[0] == indices[1] and indices[0] != indices[2]
    assert torch.equal(a["batch"]["index"], again["batch"]["index"])

    # Augmentation: the same image under each run's per-sample seeds gives other crops, flips
    # and erasings (a few positions may draw the same flip and crop by chance).
    dataset = a["dataset"]
    same_image = [
        (dataset[(index, seed_a)]["image"], dataset[(index, seed_b)]["image"])
        for (index, seed_a), (_, seed_b) in zip(a["keys"], b["keys"], strict=True)
    ]
    differ = sum(not torch.equal(x, y) for x, y in same_image)
    assert differ >= 0.75 * len(same_image)
    assert torch.equal(a["batch"]["image"], again["batch"]["image"])
    assert not torch.equal(a["batch"]["image"], b["batch"]["image"])

    # Dropout (model.dropout=0.5) in the first training step: about half the units, others.
    assert a["dropout"].float().mean().item() == pytest.approx(0.5, abs=0.1)
    assert torch.equal(a["dropout"], again["dropout"])
    assert not torch.equal(a["dropout"], b["dropout"])


@pytest.mark.slow
def test_one_seed_repeats_bit_identically_on_the_cpu(tmp_path, synthetic_root):
    # One epoch (4 steps) at 32x16: the smallest run that trains every part of the model.
    short = ["schedule.epochs=1", "train.eval_every=0", "data.image_size=[32,16]", "data.padding=2"]
    runs = []
    for name in ("a", "again"):
        trainer = _trainer(tmp_path / name, synthetic_root, 0, *short)
        masks = _record_dropout(trainer)
        trainer.fit()
        model = load_checkpoint(tmp_path / name / "model.pt")["model"]
        runs.append({"model": model, "masks": masks})
    a, again = runs
    assert len(a["masks"]) == 4  # one dropout mask per training step, all repeated
    assert all(torch.equal(x, y) for x, y in zip(a["masks"], again["masks"], strict=True))
    assert a["model"].keys() == again["model"].keys()
    assert all(torch.equal(a["model"][k], again["model"][k]) for k in a["model"])
    # The comparison has teeth: training moved the weights away from their initial values.
    initial = _trainer(tmp_path / "init", synthetic_root, 0, *short)
    initial.close()
    key = "backbone.conv1.weight"
    assert not torch.equal(a["model"][key], initial.model.state_dict()[key])
