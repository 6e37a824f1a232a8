"""Device placement and the GPU speed options: channels-last memory format and torch.compile."""

from __future__ import annotations

import logging

import torch
from torch import nn

from adasp.errors import UserInputError

log = logging.getLogger(__name__)

#: ``torch.compile`` modes (None is torch's default).
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def prepare_model(
    model: nn.Module,
    device: str | torch.device,
    channels_last: bool = False,
    compile: bool = False,
    compile_mode: str | None = None,
) -> nn.Module:
    """Move ``model`` to ``device`` and apply the speed options; returns the same module.

    Args:
        model: usually a :class:`adasp.models.ReIDModel`.
        device: e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        channels_last: store convolution weights (and, for a ``ReIDModel``, convert input
            images) in channels-last (NHWC) memory format, which tensor-core convolutions
            prefer: usually faster with AMP on recent NVIDIA GPUs. Harmless on the CPU.
        compile: compile the forward with ``torch.compile`` in place (``module.compile()``,
            so the state dict keeps its names). Applied on CUDA only: elsewhere it is
            skipped with a log message, so one config runs on a laptop and on a GPU server.
            The first iterations are slow while it compiles.
        compile_mode: ``torch.compile`` mode, one of :data:`COMPILE_MODES`.

    Raises:
        UserInputError: an unknown ``compile_mode`` or device string.
    """
    if compile_mode not in COMPILE_MODES:
        raise UserInputError(
            f"unknown compile_mode {compile_mode!r}; allowed: "
            f"{', '.join(str(m) for m in COMPILE_MODES)}"
        )
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise UserInputError(f"invalid device {device!r}: {error}") from error
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        if hasattr(model, "channels_last"):
            model.channels_last = True
    if compile:
        if device.type == "cuda":
            model.compile(mode=compile_mode)
        else:
            log.warning("torch.compile is applied on CUDA only; running eagerly on %s", device)
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper or a ``torch.compile`` wrapper (or the model itself)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP
