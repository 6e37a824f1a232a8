"""From a validated :class:`~adasp.engine.config.ExperimentConfig` to the objects of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from adasp.engine.config import (
    SPARSE_PAIRWISE_LOSSES,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
)
from adasp.engine.schedule import LRSchedule
from adasp.errors import UserInputError
from adasp.losses import LossTerm, Objective

#: Where ``--dataset synthetic`` generates its images when no root is given.
DEFAULT_SYNTHETIC_ROOT = Path("~/.cache/adasp/synthetic")


def dataset_root(dataset: str, root: str | None) -> Path:
    """The root folder of ``dataset``: the configured one, or the synthetic set's cache."""
    if root:
        return Path(root).expanduser()
    if dataset == "synthetic":
        return DEFAULT_SYNTHETIC_ROOT.expanduser()
    raise UserInputError(
        f"no root folder given for dataset {dataset!r}: pass --root DIR (the folder that holds "
        "the dataset, or the dataset folder itself) or set data.root in the config"
    )


def build_datasets(cfg: DataConfig) -> Any:
    """The configured dataset (an :class:`adasp.data.ReIDDataset`)."""
    from adasp.data import build_dataset

    return build_dataset(cfg.dataset, dataset_root(cfg.dataset, cfg.root), **cfg.options)


def build_transforms(cfg: DataConfig) -> tuple[Any, Any]:
    """Train and test transforms of the configured size, augmentation and normalisation."""
    from adasp.data import build_test_transform, build_train_transform

    train = build_train_transform(
        size=tuple(cfg.image_size),
        flip_p=cfg.flip_p,
        padding=cfg.padding,
        random_erasing_p=cfg.random_erasing_p,
        autoaugment_p=cfg.autoaugment_p,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
    )
    test = build_test_transform(
        size=tuple(cfg.image_size), mean=tuple(cfg.mean), std=tuple(cfg.std)
    )
    return train, test


def build_reid_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The configured model with a classifier over ``num_classes`` (0: inference only)."""
    from adasp.models import build_model

    return build_model(
        cfg.backbone,
        num_classes,
        last_stride=cfg.last_stride,
        pretrained=cfg.pretrained,
        pooling=cfg.pooling,
        gem_p=cfg.gem_p,
        neck=cfg.neck,
        neck_feat=cfg.neck_feat,
        embedding_dim=cfg.embedding_dim,
        dropout=cfg.dropout,
        backbone_options=dict(cfg.backbone_options),
    )


def build_objective(cfg: LossConfig, gather_distributed: bool = False) -> Objective:
    """``ce_weight·CE + weight·metric`` as an :class:`~adasp.losses.Objective`."""
    terms = []
    if cfg.ce_weight > 0:
        terms.append(LossTerm("ce", cfg.ce_weight, {"epsilon": cfg.label_smoothing}))
    if cfg.name != "none":
        options = dict(cfg.options.get(cfg.name, {}))
        if cfg.name in SPARSE_PAIRWISE_LOSSES:
            options["temperature"] = cfg.temperature
        options["gather_distributed"] = gather_distributed
        terms.append(LossTerm(cfg.name, cfg.weight, options))
    return Objective(terms)


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    # Biases and normalisation scales/shifts (1-D parameters) follow the bias settings.
    return param.ndim <= 1 or name.endswith(".bias")


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD with a separate group for biases and normalisation parameters."""
    weights, biases = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (biases if _is_no_decay(name, param) else weights).append(param)
    bias_decay = cfg.weight_decay if cfg.bias_weight_decay is None else cfg.bias_weight_decay
    groups = [
        {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": biases, "lr": cfg.lr * cfg.bias_lr_factor, "weight_decay": bias_decay},
    ]
    groups = [g for g in groups if g["params"]]
    for group in groups:
        group["initial_lr"] = group["lr"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr)


def build_schedule(cfg: ScheduleConfig, iters_per_epoch: int) -> LRSchedule:
    return LRSchedule(
        iters_per_epoch=iters_per_epoch,
        epochs=cfg.epochs,
        warmup_iters=cfg.warmup_iters,
        warmup_factor=cfg.warmup_factor,
        scheduler=cfg.scheduler,
        milestones=tuple(cfg.milestones),
        gamma=cfg.gamma,
        cosine_delay_epochs=cfg.cosine_delay_epochs,
        min_lr_factor=cfg.min_lr_factor,
    )
