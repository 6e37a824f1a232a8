"""A :class:`~adasp.engine.trainer.Trainer` assembled from an experiment config: every part
built by :mod:`adasp.engine.builders` unless passed in, and the callbacks of
``train.callbacks`` from :data:`~adasp.engine.callbacks.CALLBACKS`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adasp.engine.callbacks import Callback, CallbackContext, build_callbacks
from adasp.engine.config import ExperimentConfig
from adasp.engine.cpu_speed import apply_cpu_settings
from adasp.engine.distributed import DistributedContext
from adasp.engine.parts import Evaluating, Objective, TrainBatches
from adasp.engine.preflight import check_test_sets
from adasp.engine.run_folder import RunFolder, RunFolderLock
from adasp.engine.schedule import LRSchedule
from adasp.engine.training_state import TrainingSettings

if TYPE_CHECKING:
    from adasp.engine.trainer import Trainer


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Bit-exact repeatable kernels, or (on CUDA, when off) cuDNN's autotuned fastest ones."""
    import os

    if enabled:
        if device.type == "cuda":
            # cuBLAS is deterministic only with a fixed workspace, chosen before its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def trainer_from_config(
    cls: type[Trainer],
    config: ExperimentConfig,
    output_dir: str | Path,
    ctx: DistributedContext,
    lock: RunFolderLock,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    model: nn.Module | None = None,
    objective: Objective | None = None,
    train_loader: TrainBatches | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    schedule: LRSchedule | None = None,
    evaluator: Evaluating | None = None,
    callbacks: Sequence[Callback] = (),
) -> Trainer:
    """See :meth:`Trainer.from_config` (the folder is already claimed: ``lock``)."""
    from adasp.engine import builders
    from adasp.models import prepare_model

    torch.manual_seed(config.train.seed)
    set_deterministic(config.train.deterministic, ctx.device)
    apply_cpu_settings(config.train.intra_op_threads, config.train.reuse_host_memory)
    dataset = builders.build_datasets(config.data)
    if train_loader is None:
        train_loader = builders.build_train_loader(config, dataset, ctx.rank, ctx.world_size)
    if evaluator is None:
        # Built now so that a bad extra test set fails before any training.
        evaluator = builders.build_evaluator(config, builders.build_test_sets(config.data, dataset))
    check_test_sets(getattr(evaluator, "test_sets", []))  # before any training or removal
    if model is None:
        model = builders.build_reid_model(config.model, dataset.num_train_pids)
        if config.model.sync_bn and ctx.distributed:
            if ctx.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                warnings.warn("model.sync_bn needs CUDA; keeping plain BatchNorm", stacklevel=3)
        # prepare_model compiles in place (CUDA only; elsewhere it warns and skips).
        model = prepare_model(
            model,
            ctx.device,
            channels_last=config.model.channels_last,
            compile=config.model.compile,
        )
    model.to(ctx.device)
    if objective is None:
        # No host-side NaN check in the losses: the loop checks the loss on the device.
        objective = builders.build_objective(
            config.loss, gather_distributed=ctx.distributed, check_finite=False
        )
    if optimizer is None:
        optimizer = builders.build_optimizer(config.optim, model)
    if schedule is None:
        schedule = builders.build_schedule(config.schedule, len(train_loader))
    context = CallbackContext(config, dataset, RunFolder(output_dir))
    configured: list[Any] = build_callbacks(config.train.callbacks, context)
    return cls(
        model,
        objective,
        train_loader,
        optimizer,
        schedule,
        settings=TrainingSettings.from_config(config),
        output_dir=output_dir,
        evaluator=evaluator,
        config=config,
        context=ctx,
        callbacks=[*configured, *callbacks],
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        summary=dataset.summary(),
        run_folder_lock=lock,
    )
