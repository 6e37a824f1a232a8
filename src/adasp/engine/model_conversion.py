"""A converted peer model (:class:`~adasp.models.conversion.Conversion`) as an adasp model file.

The file is the one ``adasp train`` writes (``model.pt``: format, config, classes, weights,
preprocessing), plus ``"converted_from"`` (the source and what was dropped): every command
that takes ``--checkpoint`` reads it, and ``model.pretrained=<file>`` fine-tunes from it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from adasp.engine.checkpoint import save_checkpoint
from adasp.engine.config import ExperimentConfig, ModelConfig, config_from_dict
from adasp.models.conversion import Conversion, build_converted_model


def converted_config(conversion: Conversion) -> ExperimentConfig:
    """The default config with the converted model's ``model.*`` and its input size and
    statistics (in 0..1 units) as ``data.*``."""
    config = ExperimentConfig()
    config.model = ModelConfig(**conversion.model_options)
    pre = conversion.preprocessing
    config.data = dataclasses.replace(
        config.data, image_size=pre.image_size, mean=pre.unit_mean, std=pre.unit_std
    )
    return config_from_dict(config.to_dict())


def write_converted_model(conversion: Conversion, output: str | Path) -> dict[str, Any]:
    """Check ``conversion`` (a complete model, or a one-line error naming the keys) and write
    it to ``output`` atomically. Returns what was written."""
    model = build_converted_model(conversion)
    config = converted_config(conversion)
    content = {
        "format": "adasp-model-1",
        "config": config.to_dict(),
        "num_classes": conversion.num_classes,
        "model": model.state_dict(),
        "preprocessing": conversion.preprocessing.to_dict(),
        "converted_from": {"source": conversion.source, "dropped": list(conversion.dropped)},
    }
    save_checkpoint(output, content)
    return content


def fine_tune_overrides(conversion: Conversion, path: str | Path) -> list[str]:
    """The ``key=value`` overrides that fine-tune from the converted file ``path``."""
    defaults = ModelConfig()
    out = [
        f"model.{key}={value}"
        for key, value in conversion.model_options.items()
        if key != "backbone_options" and getattr(defaults, key) != value
    ]
    options = conversion.model_options.get("backbone_options")
    if options:
        inner = ", ".join(
            f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()
        )
        out.append(f'"model.backbone_options={{{inner}}}"')
    return [*out, f"model.pretrained={path}"]
