"""Loss registry and the weighted objective."""

from __future__ import annotations

import pytest
import torch

from adasp.losses import LOSSES, AdaSPLoss, LossTerm, Objective, build_loss, loss_options


def test_every_registered_loss_builds_and_declares_its_input():
    for name in LOSSES:
        loss = build_loss(name)
        assert loss.input_key in ("features", "logits")


def test_sparse_pairwise_names_select_the_mode():
    assert build_loss("sp-h").mode == "sp-h"
    loss = build_loss("adasp", temperature=0.05)
    assert isinstance(loss, AdaSPLoss) and loss.temperature == 0.05
    assert "temperature" in loss_options("sp-lh") and "mode" not in loss_options("sp-lh")


def test_unknown_name_and_option_list_the_allowed_values():
    with pytest.raises(ValueError, match="unknown loss 'arcface'; allowed: ce, adasp, sp-h"):
        build_loss("arcface")
    with pytest.raises(
        ValueError, match="no option temp; allowed: temperature, gather_distributed"
    ):
        build_loss("adasp", temp=0.1)


def test_objective_combines_weighted_terms_over_branch_lists():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)
    f1, f2 = torch.randn(16, 8), torch.randn(16, 8)
    logits = torch.randn(16, 4)
    objective = Objective([LossTerm("ce"), LossTerm("adasp", 0.5, {"temperature": 0.05})])
    total, parts = objective({"features": [f1, f2], "logits": logits}, labels)
    adasp = AdaSPLoss(0.05)
    torch.testing.assert_close(parts["adasp"], (adasp(f1, labels) + adasp(f2, labels)) / 2)
    torch.testing.assert_close(total, parts["ce"] + 0.5 * parts["adasp"])


def test_objective_errors():
    with pytest.raises(ValueError, match="at least one"):
        Objective([])
    with pytest.raises(ValueError, match="once"):
        Objective([LossTerm("ce"), LossTerm("ce")])
    objective = Objective([LossTerm("ce")])
    with pytest.raises(ValueError, match="needs the model output 'logits'"):
        objective({"features": torch.randn(4, 3)}, torch.arange(4))
