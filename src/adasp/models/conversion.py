"""What converting a peer's trained model yields, and the check that it is complete.

A converter (:mod:`adasp.models.convert_torchreid`, :mod:`adasp.models.convert_fastreid`)
reads the peer's files, never importing the peer, and returns a :class:`Conversion`: the
:func:`~adasp.models.build_model` options of the equivalent adasp model, its state dict in
adasp's names, the :class:`~adasp.models.preprocessing.Preprocessing` the peer feeds it, and
the peer keys deliberately left out (with why). :func:`build_converted_model` builds that
model and loads the state strictly: a key left over or missing, or a shape that differs, is
refused with the key names, so a converted model is complete or it is not written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from adasp.errors import MissingPathError, UserInputError
from adasp.models.preprocessing import Preprocessing
from adasp.models.registry import build_model
from adasp.models.reid_model import ReIDModel
from adasp.models.weights import read_state_dict


@dataclass
class Conversion:
    """A peer's model in adasp's terms.

    Attributes:
        source: ``"torchreid:osnet_x1_0"``, ``"fastreid:Baseline"``...
        model_options: keyword arguments of :func:`~adasp.models.build_model` (without
            ``num_classes``).
        num_classes: classifier outputs kept (0: the classifier was dropped).
        state_dict: the weights in adasp's names.
        preprocessing: how the peer makes its test inputs.
        dropped: ``"key: reason"`` for each peer tensor deliberately not converted.
    """

    source: str
    model_options: dict[str, Any]
    num_classes: int
    state_dict: dict[str, Tensor]
    preprocessing: Preprocessing
    dropped: list[str] = field(default_factory=list)


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")


def build_converted_model(conversion: Conversion) -> ReIDModel:
    """The adasp model of ``conversion`` with its weights, in eval mode.

    Raises:
        UserInputError: a converted key has no place in the model, a model key got no
            weights, or a shape differs (the keys are named).
    """
    model = build_model(num_classes=conversion.num_classes, **conversion.model_options)
    expected = model.state_dict()
    state = conversion.state_dict
    where = f"converting {conversion.source}"
    leftover = [k for k in state if k not in expected]
    if leftover:
        raise UserInputError(f"{where}: keys with no place in the adasp model: {_names(leftover)}")
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserInputError(
            f"{where}: adasp model keys the file does not provide: {_names(missing)}"
        )
    wrong = [
        f"{k} (file {tuple(v.shape)}, model {tuple(expected[k].shape)})"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise UserInputError(f"{where}: shapes differ: {'; '.join(wrong[:8])}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def strip_module_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove DataParallel's ``module.`` from every key that has it."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def fold_linear_bias(state: dict[str, Tensor], bias_key: str, bn_prefix: str) -> None:
    """Fold a linear layer's bias into the BatchNorm after it, in place.

    ``BN(Wx + b)`` equals ``BN'(Wx)`` with ``running_mean' = running_mean - b`` in eval mode,
    and in training mode the batch mean absorbs ``b`` anyway; adasp's reduction is bias-free.
    """
    bias = state.pop(bias_key)
    state[f"{bn_prefix}.running_mean"] = state[f"{bn_prefix}.running_mean"] - bias


def read_peer_weights(path: str | os.PathLike, peer: str) -> dict[str, Tensor]:
    """The tensors of a peer's checkpoint (wrappers and ``module.`` removed).

    Raises:
        MissingPathError: no such file (said as the ``--weights`` of ``peer``).
        UserInputError: not a readable weights file.
    """
    if not Path(path).expanduser().is_file():
        raise MissingPathError(f"{peer} weights file not found: {path} (--weights)")
    return strip_module_prefix(read_state_dict(path))
