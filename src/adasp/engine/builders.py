"""From a validated :class:`~adasp.engine.config.ExperimentConfig` to the parts of a run.

Each ``build_*`` function turns one config section into one part; :meth:`Trainer.from_config
<adasp.engine.trainer.Trainer.from_config>` calls them and takes any part passed in instead,
so a user swaps one part (their own model, loss or loader) and keeps the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adasp.engine.config import (
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    loss_term_options,
)
from adasp.engine.schedule import LRSchedule
from adasp.losses import LossTerm, Objective, loss_options

if TYPE_CHECKING:
    from adasp.data import TrainLoader
    from adasp.evaluation.evaluator import Evaluator


def build_datasets(cfg: DataConfig) -> Any:
    """The configured dataset (an :class:`adasp.data.ReIDDataset`)."""
    from adasp.data import build_dataset, dataset_root

    return build_dataset(cfg.dataset, dataset_root(cfg.dataset, cfg.root), **cfg.options)


def build_test_sets(cfg: DataConfig, main_dataset: Any | None = None) -> list[tuple[str, Any]]:
    """``(name, dataset)`` of the main test set and of each of ``data.test_sets``.

    An extra test set without its own root shares the main dataset's.
    """
    from adasp.data import build_dataset, dataset_root
    from adasp.evaluation.protocols import test_set_name

    main = main_dataset if main_dataset is not None else build_datasets(cfg)
    sets = [(test_set_name(main.name, main.options), main)]
    for extra in cfg.test_sets:
        root = dataset_root(extra.dataset, extra.root or cfg.root)
        dataset = build_dataset(extra.dataset, root, **extra.options)
        sets.append((extra.name or test_set_name(dataset.name, dataset.options), dataset))
    return sets


def build_evaluator(
    config: ExperimentConfig,
    test_sets: list[tuple[str, Any]] | None = None,
    transform: Any | None = None,
) -> Evaluator:
    """The :class:`~adasp.evaluation.Evaluator` of ``eval.*`` on the configured test sets,
    with ``transform`` (a model file's preprocessing) or the configured test transform."""
    from adasp.evaluation.evaluator import Evaluator

    return Evaluator(
        test_sets if test_sets is not None else build_test_sets(config.data),
        transform if transform is not None else build_transforms(config.data)[1],
        ranking=config.eval.ranking(),
        flip=config.eval.flip,
        batch_size=config.data.test_batch_size,
        num_workers=config.data.num_workers,
        channels_last=config.model.channels_last,
    )


def build_train_loader(
    config: ExperimentConfig, dataset: Any, rank: int = 0, world_size: int = 1
) -> TrainLoader:
    """The P×K training loader of this rank: a :class:`~adasp.data.PKSampler` over the
    training identities and the seeded training transform (see :class:`adasp.data.TrainLoader`);
    with ``data.decode: gpu``, a :class:`~adasp.data.gpu_decode.GPUDecodeTrainLoader`."""
    from adasp.data import PKSampler, TrainLoader
    from adasp.data.gpu_decode import BatchAugmentation, GPUDecodeTrainLoader
    from adasp.data.seeding import mix_seed

    cfg = config.data
    pids = [s.pid for s in dataset.train]
    sampler = PKSampler(
        pids,
        batch_size=cfg.batch_size,
        num_instances=cfg.num_instances,
        seed=config.train.seed,
        rank=rank,
        world_size=world_size,
        batches_per_epoch=(
            max(1, len(pids) // cfg.batch_size) if cfg.epoch_length == "images" else None
        ),
    )
    loader: type[TrainLoader] = TrainLoader
    augmentation: Any = build_transforms(cfg)[0]
    if cfg.decode == "gpu":
        loader = GPUDecodeTrainLoader
        augmentation = BatchAugmentation(
            size=tuple(cfg.image_size),
            flip_p=cfg.flip_p,
            padding=cfg.padding,
            random_erasing_p=cfg.random_erasing_p,
            mean=tuple(cfg.mean),
            std=tuple(cfg.std),
        )
    return loader(
        dataset.train,
        sampler,
        augmentation,
        seed=mix_seed(config.train.seed, rank),
        num_workers=cfg.num_workers,
        cache_decoded=cfg.cache_decoded and cfg.decode == "cpu",
        pin_memory=cfg.pin_memory,
        persistent_workers=cfg.persistent_workers,
        prefetch_factor=cfg.prefetch_factor,
    )


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
        head=cfg.head(),
        backbone_options=dict(cfg.backbone_options),
    )


def build_objective(
    cfg: LossConfig, gather_distributed: bool = False, check_finite: bool = True
) -> Objective:
    """``ce_weight·CE + weight·metric`` as an :class:`~adasp.losses.Objective`.

    With ``gather_distributed`` the metric loss sees the batches of every process, if it has
    that option (every built-in metric loss does; a plugin's loss without it sees its own).
    ``check_finite=False`` drops the losses' host-side NaN/Inf check of their input (the
    trainer checks the loss on the device instead).
    """
    terms = []
    if cfg.ce_weight > 0:
        terms.append(LossTerm("ce", cfg.ce_weight, {"epsilon": cfg.label_smoothing}))
    if cfg.name != "none":
        options = loss_term_options(cfg, cfg.name)
        if "gather_distributed" in loss_options(cfg.name):
            options["gather_distributed"] = gather_distributed
        terms.append(LossTerm(cfg.name, cfg.weight, options))
    objective = Objective(terms, check_finite=check_finite)
    if cfg.cuda_graph:
        from adasp.losses.graphed import graph_sparse_pairwise

        graph_sparse_pairwise(objective, distributed=gather_distributed)
    return objective


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    # Biases and normalisation scales/shifts (1-D parameters) follow the bias settings.
    return param.ndim <= 1 or name.endswith(".bias")


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD with a separate group for biases and normalisation parameters.

    Call it after the model is on its device: Adam and AdamW use the fused CUDA kernel when
    ``optim.fused`` is on and every parameter is on a GPU.
    """
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (biases if _is_no_decay(name, param) else weights).append(param)
    bias_decay = cfg.weight_decay if cfg.bias_weight_decay is None else cfg.bias_weight_decay
    groups: list[dict[str, Any]] = [
        {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": biases, "lr": cfg.lr * cfg.bias_lr_factor, "weight_decay": bias_decay},
    ]
    groups = [g for g in groups if g["params"]]
    for group in groups:
        group["initial_lr"] = group["lr"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    # One fused kernel per step instead of one launch per tensor: CUDA parameters, and CPU
    # ones with optim.fused_cpu (not bit-identical to the per-tensor step, so opt-in).
    params: list[nn.Parameter] = weights + biases
    fused = (cfg.fused and all(p.is_cuda for p in params)) or (
        cfg.fused_cpu and all(p.device.type == "cpu" for p in params)
    )
    adam = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return adam(groups, lr=cfg.lr, fused=True) if fused else adam(groups, lr=cfg.lr)


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
