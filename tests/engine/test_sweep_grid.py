"""Sweep grids: parsing and expansion."""

from __future__ import annotations

import pytest

from adasp.engine.sweep import GridAxis, expand_grid, parse_grid
from adasp.engine.typed_config import ConfigError


def test_parse_grid_respects_brackets():
    assert parse_grid("loss.weight=0.1,0.3") == GridAxis("loss.weight", ("0.1", "0.3"))
    axis = parse_grid("data.image_size=[128,64],[256,128]")
    assert axis.values == ("[128,64]", "[256,128]")


@pytest.mark.parametrize("spec", ["loss.weight", "=1,2", "loss.weight=1,,2", "a=1,1"])
def test_bad_grids(spec):
    with pytest.raises(ConfigError):
        parse_grid(spec)


def test_expand_is_the_cartesian_product_in_order():
    runs = expand_grid([parse_grid("loss.name=sp-h,adasp"), parse_grid("data.num_instances=8,16")])
    assert [r.name for r in runs] == [
        "loss.name=sp-h,data.num_instances=8",
        "loss.name=sp-h,data.num_instances=16",
        "loss.name=adasp,data.num_instances=8",
        "loss.name=adasp,data.num_instances=16",
    ]
    assert runs[1].overrides == ("loss.name=sp-h", "data.num_instances=16")
    with pytest.raises(ConfigError, match="two --grid"):
        expand_grid([parse_grid("a=1,2"), parse_grid("a=3")])


def test_linked_axis_sets_several_keys_together():
    axis = parse_grid("loss.name+loss.weight=triplet+1.0,adasp+0.1")
    runs = expand_grid([axis, parse_grid("model.backbone=resnet18,resnet50")])
    assert [r.name for r in runs][:2] == [
        "loss.name+loss.weight=triplet+1.0,model.backbone=resnet18",
        "loss.name+loss.weight=triplet+1.0,model.backbone=resnet50",
    ]
    assert runs[2].overrides == ("loss.name=adasp", "loss.weight=0.1", "model.backbone=resnet18")
    with pytest.raises(ConfigError, match="needs values of 2"):
        parse_grid("loss.name+loss.weight=triplet,adasp+0.1")
    with pytest.raises(ConfigError, match="two --grid"):
        expand_grid([axis, parse_grid("loss.weight=0.5")])
