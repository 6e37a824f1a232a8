"""Training callbacks: the :class:`Callback` protocol, the :data:`CALLBACKS` registry and the
built-in callbacks (see :mod:`adasp.engine.callbacks.base` and ``docs/extending.md``)."""

from adasp.engine.callbacks import ema, harmful_pairs, keep_best, precise_bn  # noqa: F401
from adasp.engine.callbacks.base import (
    CALLBACKS,
    Callback,
    CallbackContext,
    CallbackList,
    build_callback,
    build_callbacks,
    parse_callback_spec,
)
from adasp.engine.callbacks.ema import EMA
from adasp.engine.callbacks.keep_best import KeepBest
from adasp.engine.callbacks.loggers import JsonlLogger, MLflowLogger, TensorBoardLogger
from adasp.engine.callbacks.precise_bn import PreciseBN

__all__ = [
    "CALLBACKS",
    "EMA",
    "Callback",
    "CallbackContext",
    "CallbackList",
    "JsonlLogger",
    "KeepBest",
    "MLflowLogger",
    "PreciseBN",
    "TensorBoardLogger",
    "build_callback",
    "build_callbacks",
    "parse_callback_spec",
]
