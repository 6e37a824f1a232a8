"""Training: the loop, its configuration, checkpoints, DDP and sweeps.

- :class:`Trainer` — the training loop over explicit parts (model, objective, loader,
  optimiser, schedule, evaluator); :meth:`Trainer.from_config` builds them from a config.
- :class:`ExperimentConfig`, :func:`load_config` — typed configs, presets and overrides.
- :mod:`adasp.engine.builders` — one ``build_*`` per part, the override points.
- :class:`Sweep` — a grid of runs in one folder, resumable.
"""

from adasp.engine.config import ExperimentConfig, load_config
from adasp.engine.schedule import LRSchedule
from adasp.engine.sweep import Sweep
from adasp.engine.trainer import Trainer, TrainingDiverged, TrainingSettings

__all__ = [
    "ExperimentConfig",
    "LRSchedule",
    "Sweep",
    "Trainer",
    "TrainingDiverged",
    "TrainingSettings",
    "load_config",
]
