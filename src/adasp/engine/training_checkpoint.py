"""A trainer's checkpoint (``checkpoints/last.pt``): what it holds, and restoring a trainer
from it. Format ``adasp-checkpoint-2`` (see :mod:`adasp.engine.checkpoint` for versions):
model, optimiser, AMP scaler, run state, sampler position, every rank's RNG state, the
evaluation history and every callback's state."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from torch import nn

from adasp.engine.checkpoint import (
    CHECKPOINT_KIND,
    ModelFile,
    capture_rng_state,
    check_same_training_set,
    format_tag,
    read_versioned,
    remove_stale_temporaries,
    restore_rng_state,
)
from adasp.engine.distributed import barrier, gather_objects
from adasp.engine.parts import ResumableBatches
from adasp.engine.plugin_use import plugins_used
from adasp.engine.resume import check_resume_config, resume_message
from adasp.engine.training_state import EvaluationRecord, RunState
from adasp.models import unwrap_model

if TYPE_CHECKING:
    from adasp.engine.trainer import Trainer


def training_checkpoint(trainer: Trainer) -> dict[str, Any]:
    """The checkpoint of ``trainer`` now (call on every rank: RNG states are gathered)."""
    loader = trainer.train_loader
    model = unwrap_model(trainer.model)
    return {
        "format": format_tag(CHECKPOINT_KIND),
        "config": trainer.config.to_dict() if trainer.config is not None else None,
        "plugins": plugins_used(trainer.config),  # named when a later command lacks them
        "num_classes": int(getattr(model, "num_classes", 0)),
        "model": model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        **vars(trainer.state),
        "sampler": (
            loader.state_dict(trainer.state.batches_done)
            if isinstance(loader, ResumableBatches)
            else {}
        ),
        "rng": gather_objects(capture_rng_state(), trainer.ctx),
        "history": [record.as_dict() for record in trainer.history],
        "callbacks": trainer.callbacks.state_dict(),
    }


def read_resume_checkpoint(trainer: Trainer) -> dict[str, Any]:
    """The checkpoint to resume from, version-checked and checked against the trainer's config
    (sets ``trainer.evaluation_changed``); rank 0 removes a killed write's temporaries."""
    path = trainer.run_folder.checkpoint
    if trainer.ctx.is_main:
        remove_stale_temporaries(path)
    barrier(trainer.ctx)
    checkpoint = read_versioned(path, (CHECKPOINT_KIND,))
    if checkpoint.get("config") is not None and trainer.config is not None:
        trainer.evaluation_changed = check_resume_config(
            checkpoint["config"], trainer.config, trainer.output_dir
        )
    return checkpoint


def restore_training_checkpoint(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """Put ``trainer`` where the checkpoint's run was."""
    check_same_training_set(unwrap_model(trainer.model), ckpt, trainer.output_dir)
    unwrap_model(trainer.model).load_state_dict(ckpt["model"])
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["scaler"]:  # empty when the run started without fp16 loss scaling
        trainer.scaler.load_state_dict(ckpt["scaler"])
    state = RunState(ckpt["epoch"], ckpt["batches_done"], ckpt["step"], bool(ckpt["finished"]))
    if not isinstance(trainer.train_loader, ResumableBatches):
        # A plain loader restarts the interrupted epoch, so its steps are taken again.
        state.step -= state.batches_done
        state.batches_done = 0
    trainer.state = state
    trainer.resumed_sampler = ckpt["sampler"]
    trainer.history = [EvaluationRecord.from_dict(r) for r in ckpt["history"]]
    trainer.callbacks.load_state_dict(ckpt["callbacks"])
    rng = ckpt["rng"]
    rank = trainer.ctx.rank
    restore_rng_state(rng[rank] if rank < len(rng) else rng[0])
    if trainer.ctx.is_main:
        message = resume_message(trainer.output_dir, state, trainer.evaluation_changed)
        print(message, file=sys.stderr)


def run_model_file(trainer: Trainer, model: nn.Module) -> ModelFile:
    """The model file of ``model`` trained by ``trainer``: its weights, the run's config, the
    classifier's width, the plugins it needs and how its inputs are made."""
    from adasp.engine.inference import model_file_preprocessing

    config = trainer.config
    extra = {
        "plugins": plugins_used(config),  # named when a later command lacks them
        "preprocessing": model_file_preprocessing(config),
    }
    return ModelFile(
        unwrap_model(model).state_dict(),
        config.to_dict() if config is not None else None,
        int(getattr(unwrap_model(trainer.model), "num_classes", 0)),
        extra,
    )
