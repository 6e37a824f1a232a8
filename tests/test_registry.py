"""The one Registry: decorator and call registration, refusals, errors, metadata; and the
declarations the built-in registries hold (dataset option values, loss options from config)."""

from __future__ import annotations

import pytest

from adasp.data import DATASETS, DatasetInfo, describe_dataset
from adasp.data.vehicleid import VEHICLEID_TEST_SIZES
from adasp.engine.config import LossConfig, loss_term_options
from adasp.errors import UserInputError
from adasp.losses import LOSSES, LossInfo, loss_options, options_from_config
from adasp.models import BACKBONES
from adasp.registry import Registry


def test_register_as_decorator_and_as_call_keeps_order_and_info():
    reg: Registry = Registry("widget")

    @reg.register("b", info={"note": "first"})
    def make_b():
        return "b"

    assert make_b() == "b"  # the decorator returns what it decorates
    obj = object()
    assert reg.register("a", obj) is obj
    assert reg.names() == ["b", "a"] == list(reg) and len(reg) == 2
    assert reg.get("b") is make_b and reg.get("a") is obj
    assert reg.info("b") == {"note": "first"} and reg.info("a") is None
    assert "a" in reg and "c" not in reg and 3 not in reg and ["a"] not in reg


def test_duplicates_are_refused_unless_overridden():
    reg: Registry = Registry("widget")
    reg.register("a", 1)
    reg.register("b", 2)
    with pytest.raises(UserInputError, match="widget 'a' is already registered"):
        reg.register("a", 3)
    with pytest.raises(UserInputError, match="already registered"):
        reg.register("a")(lambda: None)
    assert reg.get("a") == 1
    reg.register("a", 3, info="new", override=True)
    assert reg.get("a") == 3 and reg.info("a") == "new" and reg.names() == ["a", "b"]
    with pytest.raises(UserInputError, match="non-empty string"):
        reg.register("", 4)


def test_unknown_names_list_the_allowed_ones():
    reg: Registry = Registry("protocol")
    reg.register("single", 1)
    reg.register("draws", 2)
    for lookup in (reg.get, reg.info, reg.unregister):
        with pytest.raises(UserInputError) as error:
            lookup("triple")
        assert str(error.value) == "unknown protocol 'triple'; allowed: single, draws"
        assert isinstance(error.value, ValueError)
    reg.unregister("single")
    assert reg.names() == ["draws"]


def test_backbones_resolve_any_timm_name_but_list_only_registered_ones():
    assert "timm:resnet18" in BACKBONES and "timm:" not in BACKBONES
    assert BACKBONES.get("timm:resnet18").args == ("resnet18",)
    assert "timm:resnet18" not in list(BACKBONES)
    assert BACKBONES.names()[-1] == "timm:<name>"
    with pytest.raises(UserInputError, match=r"unknown backbone 'vgg'; allowed: resnet18, .*timm:"):
        BACKBONES.get("vgg")


def test_datasets_carry_description_layout_and_allowed_values():
    info = DATASETS.info("vehicleid")
    assert isinstance(info, DatasetInfo) and info.description.startswith("VehicleID")
    assert info.allowed_values["test_size"] == VEHICLEID_TEST_SIZES
    assert "(one of 800, 1600, 2400)" in describe_dataset("vehicleid")
    with pytest.raises(
        UserInputError,
        match=r"unknown dataset 'market' \(did you mean 'market1501'\?\); allowed: market1501, ",
    ):
        DATASETS.get("market")


def test_sparse_pairwise_losses_declare_that_temperature_comes_from_the_config():
    for name in ("adasp", "sp-h", "sp-lh"):
        assert LOSSES.info(name) == LossInfo(from_config=("temperature",))
        assert options_from_config(name) == ("temperature",)
        assert loss_options(name) == ["temperature", "gather_distributed"]
    assert options_from_config("triplet") == () and LOSSES.info("triplet") is None
    loss = LossConfig(temperature=0.07, options={"sp-h": {}, "supcon": {"temperature": 0.1}})
    assert loss_term_options(loss, "sp-h") == {"temperature": 0.07}
    # SupCon's own τ is a per-loss option: loss.temperature does not reach it.
    assert loss_term_options(loss, "supcon") == {"temperature": 0.1}
