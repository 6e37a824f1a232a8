"""The head options are the models package's dataclass: the config's model section embeds
them, and the builder passes them as one object."""

from __future__ import annotations

from adasp.engine.builders import build_reid_model
from adasp.engine.config import load_config
from adasp.models import HeadOptions, build_model


def test_build_model_takes_the_head_options_object():
    model = build_model(
        "resnet18", 3, last_stride=2, head=HeadOptions(pooling="gem", embedding_dim=16)
    )
    assert model.embedding_dim == 16 and model.spec["pooling"] == "gem"


def test_the_config_model_section_is_head_options_and_is_passed_whole():
    config = load_config(
        None, ["model.backbone=resnet18", "model.pooling=max", "model.dropout=0.1"]
    )
    assert isinstance(config.model, HeadOptions)
    assert config.model.head() == HeadOptions(pooling="max", dropout=0.1)
    assert build_reid_model(config.model, 4).spec["pooling"] == "max"
