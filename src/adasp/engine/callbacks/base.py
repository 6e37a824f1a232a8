"""The callback protocol, the ``CALLBACKS`` registry and the list the trainer calls.

A callback is any object with the events of :class:`Callback` (subclass it to inherit no-op
defaults and override the events you need). The trainer calls its callbacks in order at each
event; everything besides the bare fit/epoch/step loop is one: evaluation scheduling, logging,
progress bars, backbone freezing, the divergence check and checkpointing are built in, and
``ema``, ``precise_bn``, ``keep_best``, ``mlflow`` and ``harmful_pairs`` are registered in
:data:`CALLBACKS` for ``train.callbacks=[name, {name: {option: value}}]``.

A callback with state returns it from ``state_dict()`` (tensors and plain values): it is saved
in every checkpoint under the callback's :func:`state_key` and given back to
``load_state_dict()`` on ``--resume``, so a resumed run continues exactly.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from adasp.engine.run_folder import RunFolder
from adasp.engine.training_state import EvaluationRecord, StepOutputs
from adasp.engine.typed_config import ConfigError
from adasp.registry import Registry

if TYPE_CHECKING:
    from adasp.engine.config import ExperimentConfig
    from adasp.engine.trainer import Trainer


@runtime_checkable
class Callback(Protocol):
    """The events of a training run. Every method has a no-op default (subclass to use them).

    Order of a run: ``on_fit_start``; per epoch ``on_epoch_start``, per step
    ``on_after_backward`` then ``on_step_end``, and ``on_epoch_end`` (``trainer.state.epoch``
    is then the number of epochs done); around each evaluation ``on_evaluation_start`` and
    ``on_evaluation_end``; ``on_log`` for every log event; ``on_fit_end`` after the last
    epoch; ``teardown`` always, also after a failure.

    The step is not synchronised with the device: ``on_step_end`` and ``on_after_backward``
    must not read tensor values (``.item()``, ``float()``, ``print``) except at log steps.
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """The run folder is ready; a resumed run's states are loaded."""
        return None

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Before the first (or, when resumed mid-epoch, the next) batch of an epoch."""
        return None

    def on_after_backward(self, trainer: Trainer) -> None:
        """Gradients are computed, the optimiser has not stepped (e.g. to drop gradients)."""
        return None

    def on_step_end(self, trainer: Trainer, step: StepOutputs) -> None:
        """The optimiser stepped; ``trainer.state.step`` and ``batches_done`` count it."""
        return None

    def train_log_values(self, trainer: Trainer) -> dict[str, float]:
        """Extra values for the ``train`` log line of this log step (a host read is fine)."""
        return {}

    def on_log(self, trainer: Trainer, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """A log event (``train``, ``eval``, ``eval/<test set>``...) with its values."""
        return None

    def on_epoch_end(self, trainer: Trainer) -> None:
        """After the last batch of an epoch (``trainer.state.epoch`` epochs are done)."""
        return None

    def on_evaluation_start(self, trainer: Trainer) -> None:
        """Before the model is evaluated (e.g. to recompute BatchNorm statistics)."""
        return None

    def on_evaluation_end(self, trainer: Trainer, record: EvaluationRecord) -> None:
        """After an evaluation; add sections to ``record.extras`` to report them."""
        return None

    def on_fit_end(self, trainer: Trainer) -> None:
        """The last epoch is trained and evaluated; write final files here."""
        return None

    def teardown(self, trainer: Trainer) -> None:
        """Always called when ``fit`` returns or fails: close files, release resources."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs to continue exactly (tensors and plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        return None


def state_key(callback: Callback, taken: set[str]) -> str:
    """The key of ``callback``'s state in a checkpoint: its ``name`` attribute (registered
    callbacks have their registry name) or its class name, made unique with ``#2``, ``#3``."""
    base = str(getattr(callback, "name", "") or type(callback).__qualname__)
    key, n = base, 1
    while key in taken:
        n += 1
        key = f"{base}#{n}"
    return key


class CallbackList:
    """The trainer's callbacks, called in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)
        taken: set[str] = set()
        self.keys = []
        for callback in self.callbacks:
            key = state_key(callback, taken)
            taken.add(key)
            self.keys.append(key)

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.callbacks)

    def find(self, kind: type) -> list[Any]:
        return [c for c in self.callbacks if isinstance(c, kind)]

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {key: c.state_dict() for key, c in zip(self.keys, self.callbacks, strict=True)}

    def load_state_dict(self, states: Mapping[str, dict[str, Any]]) -> None:
        """Give each callback its saved state (a callback added since starts fresh)."""
        for key, callback in zip(self.keys, self.callbacks, strict=True):
            if key in states:
                callback.load_state_dict(states[key])


@dataclass(frozen=True)
class CallbackContext:
    """What a registered callback's builder may need besides its options.

    Attributes:
        config: the experiment config.
        dataset: the training dataset (a :class:`~adasp.data.ReIDDataset`).
        run_folder: the run's files.
    """

    config: ExperimentConfig
    dataset: Any
    run_folder: RunFolder


#: Callbacks by name, for ``train.callbacks``. An entry is a class or function called with the
#: callback's options as keywords, plus ``context=`` (a :class:`CallbackContext`) when it has a
#: parameter of that name.
CALLBACKS: Registry[Any] = Registry("callback")


def parse_callback_spec(spec: Any, index: int) -> tuple[str, dict[str, Any]]:
    """``"ema"`` or ``{"ema": {"decay": 0.999}}`` as ``("ema", {"decay": 0.999})``.

    Raises:
        ConfigError: any other shape, or an unknown name.
    """
    key = f"train.callbacks[{index}]"
    if isinstance(spec, str):
        name, given = spec, None
    elif isinstance(spec, Mapping) and len(spec) == 1:
        name, given = next(iter(spec.items()))
        if given is not None and not isinstance(given, Mapping):
            raise ConfigError(f"config key '{key}': the options of {name!r} must be a mapping")
    else:
        raise ConfigError(
            f"config key '{key}': expected a callback name or {{name: {{options}}}}, got {spec!r}"
        )
    if name not in CALLBACKS:
        raise ConfigError(
            f"config key '{key}': unknown callback {name!r}; allowed: {', '.join(CALLBACKS)} "
            "(or register yours with adasp.engine.CALLBACKS and --plugin)"
        )
    return str(name), dict(given or {})


def build_callback(name: str, options: Mapping[str, Any], context: CallbackContext) -> Callback:
    """The registered callback ``name`` built with ``options``.

    Raises:
        ConfigError: an option the callback does not take, or a value it refuses.
    """
    factory = CALLBACKS.get(name)
    kwargs = dict(options)
    if "context" in inspect.signature(factory).parameters:
        kwargs["context"] = context
    try:
        callback = factory(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config key 'train.callbacks': callback {name!r}: {error}") from None
    if getattr(callback, "name", None) is None:
        callback.name = name
    return callback


def build_callbacks(specs: Sequence[Any], context: CallbackContext) -> list[Callback]:
    """The callbacks of ``train.callbacks``, in order."""
    return [build_callback(*parse_callback_spec(s, i), context) for i, s in enumerate(specs)]
