"""Building a model for inference from a config and (optionally) a checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adasp.engine.builders import build_reid_model
from adasp.engine.checkpoint import (
    check_weights_fit,
    model_state_from_checkpoint,
    read_model_state,
)
from adasp.engine.config import ExperimentConfig, config_from_dict, load_config
from adasp.errors import UserInputError
from adasp.models.preprocessing import Preprocessing, preprocessing_from_model_file


def resolve_run_config(
    config_path: str | None, checkpoint_path: str | None, overrides: list[str]
) -> tuple[ExperimentConfig, dict[str, Any] | None]:
    """The config to use: ``--config`` if given, else the one stored in the checkpoint.

    Returns the config and the loaded checkpoint (None without one).
    """
    from adasp.engine.plugin_use import config_of_checkpoint

    # Version-checked: a newer adasp's file or a foreign one is refused in one line.
    checkpoint = read_model_state(checkpoint_path) if checkpoint_path else None
    if config_path is not None:
        if checkpoint is None:
            return load_config(config_path, overrides), checkpoint
        return config_of_checkpoint(
            checkpoint, checkpoint_path, lambda: load_config(config_path, overrides)
        ), checkpoint
    if checkpoint is not None and isinstance(checkpoint.get("config"), dict):
        from adasp.engine.config import apply_overrides

        stored = checkpoint["config"]
        return config_of_checkpoint(
            checkpoint,
            checkpoint_path,
            lambda: config_from_dict(apply_overrides(stored, overrides)),
        ), checkpoint
    raise UserInputError(
        "no configuration: pass --config C (a preset name or YAML file), or a --checkpoint written "
        "by adasp train (it stores its config)"
    )


def build_inference_model(
    config: ExperimentConfig,
    checkpoint: dict[str, Any] | None,
    device: torch.device,
    checkpoint_path: str | Path | None = None,
) -> nn.Module:
    """The configured model in eval mode on ``device``, with the checkpoint's weights if any.

    Without a checkpoint the model is as configured (randomly initialised with the run's seed,
    or ``model.pretrained``): the "untrained" baseline, identical to the model a training run
    with this config starts from.
    """
    from adasp.models import prepare_model

    num_classes = int(checkpoint.get("num_classes", 0)) if checkpoint is not None else 0
    model_cfg = config.model
    if checkpoint is not None:
        # The checkpoint replaces every weight: do not fetch ImageNet weights first.
        model_cfg = dataclasses.replace(model_cfg, pretrained=None)
    # Seeded as the trainer seeds it, so the untrained baseline is the very model a run starts
    # from (and the same on every call); the caller's random stream is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = build_reid_model(model_cfg, num_classes)
    if checkpoint is not None:
        where = checkpoint_path or "the checkpoint"
        check_weights_fit(model, checkpoint, where, config.to_dict())
        state = model_state_from_checkpoint(checkpoint, where)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise UserInputError(
                f"checkpoint {checkpoint_path} does not match model.backbone="
                f"{config.model.backbone!r}: missing {list(result.missing_keys)[:5]}, unexpected "
                f"{list(result.unexpected_keys)[:5]}; use the config the checkpoint was trained with"
            )
    model = prepare_model(model, device, channels_last=config.model.channels_last, compile=False)
    return model.eval()


def data_preprocessing(config: ExperimentConfig) -> Preprocessing:
    """The test-time :class:`Preprocessing` of ``data.*`` (bilinear, pixels in 0..1): what a
    model trained with this config is recorded with."""
    data = config.data
    return preprocessing_from_model_file(
        {"config": {"data": {"image_size": data.image_size, "mean": data.mean, "std": data.std}}}
    )


def inference_preprocessing(
    config: ExperimentConfig, checkpoint: dict[str, Any] | None
) -> Preprocessing:
    """What a model's inputs are made with: the checkpoint's own record (converted models,
    every model file since it was recorded), else the config's :func:`data_preprocessing`."""
    if checkpoint is not None and "preprocessing" in checkpoint:
        return preprocessing_from_model_file(checkpoint)
    return data_preprocessing(config)


def model_file_preprocessing(config: ExperimentConfig | None) -> dict[str, Any] | None:
    """The ``"preprocessing"`` record of a model file trained with ``config`` (None without a
    config: readers then fall back to the defaults)."""
    return None if config is None else data_preprocessing(config).to_dict()
