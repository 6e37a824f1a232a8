"""Decoding image files, and checking a whole dataset's images up front.

Decoding uses PIL (libjpeg-turbo in the Pillow wheels) straight into a numpy array, without
the extra ``convert`` copy for images that are already RGB. ``torchvision.io`` decodes JPEG
about 30 µs faster per image, but its decoders are deprecated since torchvision 0.29; the
difference is under a tenth of the decode + augment cost (see ``benchmarks/data_loading.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from adasp.errors import MissingPathError, UserInputError

SKIP_HINT = (
    "replace or delete the file, or build the dataset with skip_unreadable=True to drop "
    "unreadable images with a warning"
)


def _original_message(message: str) -> str:
    """The one-line message of an error that a ``DataLoader`` worker re-raised.

    The loader re-creates the exception in the main process with ``"Caught X in DataLoader
    worker process N. Original Traceback ..."`` and the whole traceback as its message; the
    traceback's last line is ``"module.X: <original message>"``.
    """
    if message.startswith("Caught ") and "\nOriginal Traceback" in message:
        _, sep, original = message.rstrip().splitlines()[-1].partition(": ")
        if sep:
            return original
    return message


class UnreadableImageError(UserInputError):
    """An image file that cannot be decoded; keeps its one-line message (naming the file)
    when a ``DataLoader`` worker re-raises it."""

    def __init__(self, message: str) -> None:
        super().__init__(_original_message(message))


class MissingImageError(MissingPathError):
    """An image file that does not exist; keeps its one-line message when re-raised by a
    ``DataLoader`` worker."""

    def __init__(self, message: str) -> None:
        super().__init__(_original_message(message))


def read_image(path: str | os.PathLike, hint: str = SKIP_HINT) -> Tensor:
    """Decode the image at ``path`` as an RGB ``uint8`` tensor of shape ``(3, H, W)``.

    Grey-scale and palette images are converted to RGB; an alpha channel is dropped; 16-bit
    grey-scale images (depth or thermal crops) are scaled to 8 bits (see :func:`to_rgb_array`).
    ``hint`` ends the error messages (what the user can do about a missing or broken file).

    Raises:
        MissingImageError: the file does not exist (a :class:`MissingPathError`).
        UnreadableImageError: the file cannot be decoded (a :class:`UserInputError` naming the
            file and the decoder's reason).
    """
    from PIL import Image

    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            array = to_rgb_array(image)
    except FileNotFoundError as error:
        raise MissingImageError(f"image {path} does not exist; {hint}") from error
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ...) for bad files
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        raise UnreadableImageError(f"cannot decode image {path} ({reason}); {hint}") from error
    return torch.from_numpy(array).permute(2, 0, 1)


def to_rgb_array(image) -> np.ndarray:
    """A decoded PIL image as a writable ``(H, W, 3)`` ``uint8`` array.

    16-bit grey-scale modes (``I;16``, ``I;16B``, ...) and ``I`` (32-bit integers, how Pillow
    holds 16-bit data it has widened) are scaled by ``value >> 8``, clipped to ``0..65535``
    first: PIL's own ``convert("RGB")`` clips them to 0..255, which turns a 16-bit image into
    pure black and white.
    """
    if image.mode == "RGB":
        return np.array(image)  # decodes; a writable copy that torch can own
    if image.mode == "I" or image.mode.startswith("I;16"):
        values = np.asarray(image).astype(np.int32)  # also native byte order for I;16B
        grey = (np.clip(values, 0, 0xFFFF) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.array(image.convert("RGB"))


def _check_one(path: str) -> str | None:
    """``None`` if ``path`` decodes, else the reason it does not."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            # JPEG: decode at 1/8 scale; every entropy-coded byte is still read, so truncated
            # or corrupt data is still detected, at a fraction of the cost.
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        return None
    except FileNotFoundError:
        return "file does not exist"
    except Exception as error:  # PIL raises many types for corrupt files
        text = str(error).strip()
        return text.splitlines()[0] if text else type(error).__name__


def find_unreadable(paths: Sequence[str], num_threads: int = 4) -> dict[str, str]:
    """The images among ``paths`` that cannot be decoded, mapped to the reason.

    Decodes every file (at reduced scale for JPEG) in ``num_threads`` threads; PIL releases
    the GIL while decoding, so threads overlap file reading and decoding.
    """
    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        reasons = list(pool.map(_check_one, paths, chunksize=64))
    return {p: r for p, r in zip(paths, reasons, strict=True) if r is not None}
