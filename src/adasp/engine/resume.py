"""What a resumed run may change: the config of a run's checkpoint against the config now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adasp.engine.config import ExperimentConfig, config_from_dict
from adasp.errors import UserInputError

#: Config keys that do not change what a run computes, so a resume may change them.
RESUME_FREE_KEYS = (
    "data.test_sets",
    "data.num_workers",
    "data.test_batch_size",
    "data.pin_memory",
    "data.persistent_workers",
    "data.prefetch_factor",
    "eval",
    "train.eval_every",
    "train.log_every",
    "train.checkpoint_every_iters",
    "train.ddp_timeout_s",
    "train.tensorboard",
)


def check_resume_config(saved: dict[str, Any], now: ExperimentConfig, folder: Path) -> bool:
    """Refuse to resume with a config that changes the run's trajectory.

    Returns:
        Whether the evaluation settings changed (a finished run is then evaluated again).

    Raises:
        UserInputError: a key outside :data:`RESUME_FREE_KEYS` differs; the message names it.
    """
    # Filled with today's defaults (and upgraded), so a run saved before a key was added resumes.
    before = config_from_dict(saved).to_dict()
    after = now.to_dict()
    if _trajectory(before) != _trajectory(after):
        raise UserInputError(
            f"cannot resume {folder}: the config differs from the run's "
            f"({_first_difference(_trajectory(before), _trajectory(after))}); resume with "
            "the same config and overrides (only evaluation, logging and loader settings "
            f"may change: {', '.join(RESUME_FREE_KEYS)})"
        )
    return _evaluation_settings(before) != _evaluation_settings(after)


def _evaluation_settings(config: dict[str, Any]) -> tuple[Any, Any]:
    """What decides a finished run's reported metrics besides its weights."""
    return config.get("eval"), config.get("data", {}).get("test_sets")


def _trajectory(config: dict[str, Any]) -> dict[str, Any]:
    """The config without :data:`RESUME_FREE_KEYS`."""
    out = {section: dict(values) for section, values in config.items()}
    for key in RESUME_FREE_KEYS:
        section, _, name = key.partition(".")
        if name:
            out.get(section, {}).pop(name, None)
        else:
            out.pop(section, None)
    return out


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path}: saved {a!r}, now {b!r}"


def resume_message(folder: Path, state: Any, evaluation_changed: bool) -> str:
    """What a resumed run tells the user (``state``: the loaded
    :class:`~adasp.engine.training_state.RunState`)."""
    again = "writing its results again"
    if evaluation_changed:
        again = "evaluating it again with the changed evaluation settings"
    where = (
        f"the run had finished its {state.epoch} epochs; {again}"
        if state.finished
        else f"continuing at epoch {state.epoch + 1}, batch {state.batches_done} "
        f"(step {state.step})"
    )
    return f"resumed {folder}: {where}"
