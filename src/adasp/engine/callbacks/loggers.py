"""Loggers: callbacks that write the run's log events somewhere.

- :class:`JsonlLogger` — ``log.jsonl``, one JSON object per event (always on, main rank).
- :class:`TensorBoardLogger` — scalars per event, the resolved config as text and the
  hyper-parameters with the final metrics (``add_hparams``); off with ``train.tensorboard=false``.
- :class:`MLflowLogger` (``train.callbacks=[mlflow]``, needs ``pip install adasp[mlflow]``) —
  the config as params, every event's numbers as metrics per step, and the model file as an
  artifact, in a tracking store (default: a file store in the run folder's ``mlruns/``).

A resumed run drops the events its killed predecessor wrote after the checkpoint it resumes
from, so every step is logged once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adasp.engine.callbacks.base import CALLBACKS, Callback, CallbackContext
from adasp.engine.run_log import RunLog
from adasp.errors import UserInputError

if TYPE_CHECKING:
    from adasp.engine.trainer import Trainer


def _resume_step(trainer: Trainer) -> int:
    """The step the run continues after: 0 for a start, or a resume after a kill before the
    first checkpoint, whose logged steps are logged again (each step appears once)."""
    return trainer.state.step


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss.name": "adasp", "optim.lr": 0.00035, ...}``: nested sections as dotted keys,
    lists as their text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_config(value, f"{name}."))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[name] = value
        else:
            out[name] = str(value)
    return out


class JsonlLogger(Callback):
    """Writes every log event to ``RUN/log.jsonl``."""

    name = "jsonl_logger"

    def __init__(self) -> None:
        self._log: RunLog | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self._log = RunLog(trainer.run_folder.log, resume_step=_resume_step(trainer))

    def on_log(self, trainer: Trainer, kind: str, step: int, values: Mapping[str, Any]) -> None:
        if self._log is not None:
            self._log.event(kind, step, **values)

    def teardown(self, trainer: Trainer) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class TensorBoardLogger(Callback):
    """Scalars ``<event>/<name>`` per step in ``RUN/tensorboard``, the resolved config as text
    (``config``), and at the end the hyper-parameters with the final metrics."""

    name = "tensorboard_logger"

    def __init__(self) -> None:
        self._writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        resume = _resume_step(trainer)
        # purge_step drops the events a killed run wrote after its last checkpoint.
        self._writer = SummaryWriter(
            log_dir=str(trainer.run_folder.tensorboard),
            purge_step=resume + 1,
        )
        if trainer.config is not None:
            import yaml

            text = yaml.safe_dump(trainer.config.to_dict(), sort_keys=False)
            self._writer.add_text("config", f"```\n{text}```", trainer.state.step)

    def on_log(self, trainer: Trainer, kind: str, step: int, values: Mapping[str, Any]) -> None:
        if self._writer is not None:
            for name, value in _numbers(values).items():
                self._writer.add_scalar(f"{kind}/{name}", value, step)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._writer is None or trainer.config is None or not trainer.history:
            return
        hparams = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flat_config(trainer.config.to_dict()).items()
        }
        metrics = {f"hparam/{k}": v for k, v in trainer.history[-1].main_metrics().items()}
        self._writer.add_hparams(hparams, metrics, run_name="hparams")

    def teardown(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@CALLBACKS.register("mlflow")
class MLflowLogger(Callback):
    """Logs the run to MLflow: params (the flattened config), metrics per step (every log
    event's numbers, named ``<event>/<name>``) and the final model file as an artifact.

    Args:
        tracking_uri: the MLflow tracking URI; default: a file store in ``RUN/mlruns``.
        experiment: the experiment name.
        run_name: the MLflow run's name (default: the run folder's name).
        context: given by the registry (the run folder).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "adasp",
        run_name: str | None = None,
        context: CallbackContext | None = None,
    ) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise UserInputError(
                "the mlflow callback needs MLflow: pip install 'adasp[mlflow]'"
            ) from None
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.run_id: str | None = None
        self._client: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.ctx.is_main:
            return
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri or trainer.run_folder.mlflow.resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 refuses a file store unless this opt-out is set; a file store is what
            # the user asked for (or the default, inside the run folder).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = MlflowClient(tracking_uri=uri)
        found = self._client.get_experiment_by_name(self.experiment)
        experiment_id = (
            found.experiment_id if found else self._client.create_experiment(self.experiment)
        )
        if self.run_id is None:  # a resumed run continues its MLflow run
            run = self._client.create_run(
                experiment_id, run_name=self.run_name or trainer.run_folder.path.name
            )
            self.run_id = run.info.run_id
            if trainer.config is not None:
                for key, value in flat_config(trainer.config.to_dict()).items():
                    self._client.log_param(self.run_id, key, str(value)[:500])

    def on_log(self, trainer: Trainer, kind: str, step: int, values: Mapping[str, Any]) -> None:
        if self._client is None or self.run_id is None:
            return
        for name, value in _numbers(values).items():
            key = f"{kind}/{name}".replace("@", "_")
            self._client.log_metric(self.run_id, key, value, step=step)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._client is None or self.run_id is None:
            return
        trainer.write_model(trainer.run_folder.model)
        self._client.log_artifact(self.run_id, str(trainer.run_folder.model))
        self._client.set_terminated(self.run_id)

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
