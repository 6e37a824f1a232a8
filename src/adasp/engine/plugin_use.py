"""Which ``--plugin`` a run's backbone, losses and datasets came from: recorded in its model
file and checkpoints (``"plugins"``), and named when a later command lacks it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adasp.engine.config import ExperimentConfig, config_from_dict
from adasp.errors import UserInputError
from adasp.plugins import loaded_plugins


def plugins_used(config: ExperimentConfig | None) -> list[str]:
    """The plugins (module names or file paths, as ``--plugin`` takes them) that registered
    the config's backbone, losses or datasets, in that order, without repeats."""
    if config is None:
        return []
    from adasp.data import DATASETS
    from adasp.losses import LOSSES
    from adasp.models import BACKBONES

    wanted: list[tuple[Any, str]] = [(BACKBONES, config.model.backbone)]
    wanted += [(LOSSES, name) for name in (config.loss.name, *config.loss.options)]
    wanted += [(DATASETS, config.data.dataset)]
    wanted += [(DATASETS, test_set.dataset) for test_set in config.data.test_sets]
    found: list[str] = []
    for registry, name in wanted:
        origin = registry.origin(name) if name in registry else None
        if origin is not None and origin not in found:
            found.append(origin)
    return found


def config_of_checkpoint(
    checkpoint: dict[str, Any],
    path: str | None,
    build: Callable[[], ExperimentConfig] | None = None,
) -> ExperimentConfig:
    """The checkpoint's config (or ``build()``'s), with a hint naming the ``--plugin`` it was
    trained with when a name it uses is unknown and that plugin is not loaded.

    Raises:
        UserInputError: the config is invalid; when plugins are missing, the message starts
            with them (``add --plugin X``).
    """
    try:
        return build() if build is not None else config_from_dict(checkpoint["config"])
    except UserInputError as error:
        missing = [p for p in checkpoint.get("plugins") or [] if p not in loaded_plugins()]
        if not missing:
            raise
        flags = " ".join(f"--plugin {p}" for p in missing)
        raise UserInputError(
            f"{path or 'the checkpoint'} was trained with {flags}; add {flags} to this command "
            f"({error})"
        ) from error
