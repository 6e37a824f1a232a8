"""Training: the loop, its callbacks, its configuration, checkpoints, DDP and sweeps.

- :class:`Trainer` — the fit/epoch/step loop over explicit parts (model, objective, loader,
  optimiser, schedule, evaluator, callbacks); :meth:`Trainer.from_config` builds them.
- :class:`Callback`, :data:`CALLBACKS` — the events a callback receives, and the registry of
  the callbacks ``train.callbacks`` names (``ema``, ``precise_bn``, ``keep_best``, ``mlflow``,
  ``harmful_pairs``, and yours).
- :class:`RunFolder` — every file name of a run folder.
- :class:`ExperimentConfig`, :func:`load_config` — typed configs, presets and overrides.
- :mod:`adasp.engine.builders` — one ``build_*`` per part, the override points.
- :class:`Sweep` — a grid of runs in one folder, resumable.
"""

from adasp.engine.callbacks import CALLBACKS, Callback, CallbackContext
from adasp.engine.config import ExperimentConfig, load_config
from adasp.engine.run_folder import RunFolder
from adasp.engine.schedule import LRSchedule
from adasp.engine.sweep import Sweep
from adasp.engine.trainer import Trainer
from adasp.engine.training_state import (
    EvaluationRecord,
    StepOutputs,
    TrainingDiverged,
    TrainingSettings,
)

__all__ = [
    "CALLBACKS",
    "Callback",
    "CallbackContext",
    "EvaluationRecord",
    "ExperimentConfig",
    "LRSchedule",
    "RunFolder",
    "StepOutputs",
    "Sweep",
    "Trainer",
    "TrainingDiverged",
    "TrainingSettings",
    "load_config",
]
