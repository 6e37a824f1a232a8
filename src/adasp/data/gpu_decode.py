"""Training images decoded and augmented on the training device (``data.decode: gpu``).

The CPU loader's workers decode, resize and augment every image one at a time; with a fast
model step on a GPU they can become the bottleneck. Here the workers only read each file's
bytes and draw its augmentation *parameters* (flip, crop offsets, erasing box) from the
sample's seed, with the same random calls in the same order as
:func:`adasp.data.build_train_transform`, so a seed gives the same parameters on both paths
(and a resumed run replays exactly on either). The training process then decodes the batch in
one call (``torchvision.io.decode_jpeg(list, device=...)``: nvJPEG on CUDA), resizes it and
applies the augmentation as batched tensor ops on the device.

The pixels differ from the CPU path's: the resize interpolates float32 and rounds where the
CPU path resizes ``uint8`` with fixed-point weights (at most one grey level on the CPU, where
both decoders are libjpeg-turbo; ``tests/data/test_gpu_decode.py``), and nvJPEG rounds the
inverse DCT and upsamples chroma differently from libjpeg-turbo (on real pedestrian JPEGs on
an H200: 0.6 grey levels on average after the resize, up to a few tens at sharp colour edges;
``benchmarks/decode_parity.py``). Files that are not JPEG (by content: PNG, BMP, ...) are
decoded by the workers as on the CPU path and only resized and augmented on the device.
AutoAugment has no batched form here, so it is not offered.

It runs on any device; on the CPU torchvision decodes with libjpeg, which is how the tests
cover it without a GPU.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from adasp.data.images import SKIP_HINT, MissingImageError, read_image
from adasp.data.loading import TrainLoader
from adasp.data.sample import Sample
from adasp.data.transforms import _probability, _size
from adasp.errors import UserInputError
from adasp.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD

JPEG_SUFFIXES = (".jpg", ".jpeg")
_JPEG_MAGIC = b"\xff\xd8\xff"  # start-of-image marker, then the first segment's marker
# Columns of the (B, 7) parameter tensor.
FLIP, TOP, LEFT, ERASE_TOP, ERASE_LEFT, ERASE_HEIGHT, ERASE_WIDTH = range(7)


class BatchAugmentation:
    """:func:`adasp.data.build_train_transform` without AutoAugment, split in two: per-sample
    parameters drawn on the host (:meth:`draw`), applied to a whole batch on its device
    (:meth:`apply`).

    Resize to ``size`` → horizontal flip with probability ``flip_p`` → zero-pad by ``padding``
    and crop back to ``size`` at a random offset → normalise → random erasing with probability
    ``random_erasing_p`` (area 2-33 %, aspect ratio 0.3-3.3, erased pixels set to 0 after
    normalisation, i.e. the mean colour), as on the CPU path.
    """

    scale = (0.02, 0.33)  # RandomErasing's defaults, which the CPU transform uses
    ratio = (0.3, 3.3)

    def __init__(
        self,
        size: Sequence[int] = (256, 128),
        flip_p: float = 0.5,
        padding: int = 10,
        random_erasing_p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size = _size(size)
        self.flip_p = _probability(flip_p, "flip_p")
        self.random_erasing_p = _probability(random_erasing_p, "random_erasing_p")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise UserInputError(f"padding must be an integer >= 0 pixels, got {padding!r}")
        self.padding = padding
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # float32, as RandomErasing keeps it: its draws then match bit for bit.
        self._log_ratio = torch.log(torch.tensor(self.ratio)).tolist()
        self._constants: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def draw(self) -> Tensor:
        """One sample's parameters, ``(7,)`` int64: flip, crop top, crop left, erasing top,
        left, height, width (height 0: not erased).

        Draws from torch's global CPU generator with the calls of ``torchvision.transforms.v2``
        ``RandomHorizontalFlip``, ``RandomCrop`` and ``RandomErasing``, in the CPU transform's
        order, so under the same seed both paths pick the same parameters.
        """
        # Comparisons stay in float32 tensors, as torchvision's: a Python-float comparison
        # could differ at the one float32 value nearest the probability.
        params = [0] * 7
        height, width = self.size
        if self.flip_p > 0:
            params[FLIP] = int(bool(torch.rand(1) < self.flip_p))
        if self.padding > 0:
            span = 2 * self.padding + 1
            params[TOP] = int(torch.randint(0, span, size=()))
            params[LEFT] = int(torch.randint(0, span, size=()))
        if self.random_erasing_p > 0 and bool(torch.rand(1) < self.random_erasing_p):
            area = height * width
            for _ in range(10):
                erase_area = area * torch.empty(1).uniform_(*self.scale).item()
                aspect = torch.exp(torch.empty(1).uniform_(*self._log_ratio)).item()
                h = round(math.sqrt(erase_area * aspect))
                w = round(math.sqrt(erase_area / aspect))
                if h < height and w < width:
                    params[ERASE_TOP] = int(torch.randint(0, height - h + 1, size=(1,)).item())
                    params[ERASE_LEFT] = int(torch.randint(0, width - w + 1, size=(1,)).item())
                    params[ERASE_HEIGHT], params[ERASE_WIDTH] = h, w
                    break
        return torch.tensor(params, dtype=torch.int64)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """Flip, pad and crop, normalise and erase a batch, each image by its parameters.

        Args:
            images: ``(B, 3, H, W)`` float, values 0..255, already at ``size``.
            params: ``(B, 7)`` int64 from :meth:`draw`, on ``images``' device.

        Returns:
            ``(B, 3, H, W)`` float32, normalised.
        """
        batch, _, height, width = images.shape
        device = images.device
        flip = params[:, FLIP].bool()[:, None, None, None]
        images = torch.where(flip, images.flip(-1), images)
        rows = torch.arange(height, device=device)
        cols = torch.arange(width, device=device)
        if self.padding > 0:
            # Crop of the zero-padded image: one gather with per-image row and column offsets.
            padded = F.pad(images, [self.padding] * 4)
            top = params[:, TOP, None] + rows  # (B, H)
            left = params[:, LEFT, None] + cols  # (B, W)
            which = torch.arange(batch, device=device)[:, None, None]
            # Advanced indices around a slice put their dimensions first: (B, H, W, 3).
            images = padded[which, :, top[:, :, None], left[:, None, :]].permute(0, 3, 1, 2)
        mean, inv_std = self._normalisation(device)
        images = ((images / 255 - mean) * inv_std).contiguous()
        top, left = params[:, ERASE_TOP, None], params[:, ERASE_LEFT, None]
        in_rows = (rows >= top) & (rows < top + params[:, ERASE_HEIGHT, None])  # (B, H)
        in_cols = (cols >= left) & (cols < left + params[:, ERASE_WIDTH, None])  # (B, W)
        return images.masked_fill_((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)

    def _normalisation(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # Made once per device: building them from Python lists every batch would be a
        # blocking host-to-device copy each time.
        if device not in self._constants:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
            inv_std = 1 / torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
            self._constants[device] = (mean.to(device), inv_std.to(device))
        return self._constants[device]


def read_file_bytes(path: str) -> Tensor:
    """The bytes of the file at ``path``, a 1-D ``uint8`` tensor (possibly empty).

    Raises:
        MissingImageError: the file does not exist.
    """
    try:
        with open(path, "rb") as file:
            data = bytearray(os.fstat(file.fileno()).st_size)
            file.readinto(data)
    except FileNotFoundError as error:
        raise MissingImageError(f"image {path} does not exist; {SKIP_HINT}") from error
    return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def is_jpeg(data: Tensor) -> bool:
    """Whether ``data`` (a file's bytes) starts like a JPEG file."""
    return data.numel() >= 3 and bytes(data[:3].tolist()) == _JPEG_MAGIC


class EncodedImageDataset(Dataset):
    """The worker half: file bytes and augmentation parameters, no pixels.

    Item ``i`` is ``{"data": Tensor, "jpeg": bool, "augment": (7,) int64, "pid": int,
    "camid": int, "index": i}``: ``data`` is the file's bytes (1-D ``uint8``) for a JPEG, the
    decoded ``(3, H, W)`` ``uint8`` image otherwise; ``augment`` is drawn by
    ``augmentation.draw()`` from torch's global generator (seeded per sample by
    :class:`adasp.data.seeding.SeededDataset`).
    """

    def __init__(self, samples: Sequence[Sample], augmentation: BatchAugmentation) -> None:
        self.samples = list(samples)
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        data = read_file_bytes(sample.path)
        jpeg = is_jpeg(data)
        if not jpeg:
            data = read_image(sample.path)  # raises, naming the file, if it does not decode
        return {
            "data": data,
            "jpeg": jpeg,
            "augment": self.augmentation.draw(),
            "pid": sample.pid,
            "camid": sample.camid,
            "index": index,
        }


def collate_encoded(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``data`` and ``jpeg`` as lists (the files differ in length and size), ``augment`` as
    ``(B, 7)``, ids as ``(B,)`` int64 tensors."""
    return {
        "data": [item["data"] for item in items],
        "jpeg": [item["jpeg"] for item in items],
        "augment": torch.stack([item["augment"] for item in items]),
        **{
            key: torch.tensor([item[key] for item in items], dtype=torch.int64)
            for key in ("pid", "camid", "index")
        },
    }


def decode_images(
    data: list[Tensor],
    jpeg: list[bool],
    device: torch.device | str,
    path_of: Callable[[int], str] | None = None,
) -> list[Tensor]:
    """Decode the JPEGs of a batch in one call on ``device``; move the others there.

    Args:
        data: per image, the JPEG bytes (1-D ``uint8``) or an already decoded ``(3, H, W)``.
        jpeg: which entries of ``data`` are JPEG bytes.
        device: where to decode (``cuda``: nvJPEG).
        path_of: position -> file path, to retry a batch that fails to decode image by image
            and name the file that breaks it.

    Returns:
        ``(3, H_i, W_i)`` ``uint8`` images on ``device``, in order.

    Raises:
        UnreadableImageError: a JPEG that neither the device nor Pillow decodes (from
            :func:`adasp.data.read_image`, naming the file).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    images: list[Tensor | None] = [
        None if is_jpg else image.to(device, non_blocking=True)
        for image, is_jpg in zip(data, jpeg, strict=True)
    ]
    positions = [i for i, is_jpg in enumerate(jpeg) if is_jpg]
    if positions:
        # nvJPEG writes from a stream of its own into outputs allocated on the current stream,
        # which may still be reusing freshly freed memory for queued work: decode under a
        # side stream instead (its own memory pool), then hand the images to the current one.
        side = _side_stream(device) if device.type == "cuda" else None
        with warnings.catch_warnings(), torch.cuda.stream(side):
            # torchvision marks its decoders deprecated (0.29) in favour of TorchCodec, which
            # is not a dependency; decode_jpeg is still the batched nvJPEG path.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                decoded = decode_jpeg(
                    [data[i] for i in positions], mode=ImageReadMode.RGB, device=device
                )
            except RuntimeError:
                if path_of is None:
                    raise
                decoded = [_decode_one(data[i], device, path_of(i)) for i in positions]
        if side is not None:
            current = torch.cuda.current_stream(device)
            current.wait_stream(side)
            for image in decoded:
                image.record_stream(current)
        for i, image in zip(positions, decoded, strict=True):
            images[i] = image
    return images  # type: ignore[return-value]


_SIDE_STREAMS: dict[torch.device, Any] = {}


def _side_stream(device: torch.device) -> Any:
    """One decoding stream per CUDA device, made on first use."""
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


def _decode_one(data: Tensor, device: torch.device, path: str) -> Tensor:
    """One JPEG on ``device``, else with Pillow (e.g. CMYK, which nvJPEG may refuse), else an
    :class:`UnreadableImageError` naming ``path``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return read_image(path).to(device)


def resize_images(images: list[Tensor], size: tuple[int, int]) -> Tensor:
    """Images of any sizes -> ``(B, 3, *size)`` float32, bilinear with antialiasing, rounded
    to whole grey levels (as the CPU path's ``uint8`` resize), in order.

    Images of the same size are resized together: one call per distinct input size, so a
    dataset of one crop size (Market-1501, the synthetic set) costs one call per batch.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        height, width = image.shape[-2:]
        groups.setdefault((int(height), int(width)), []).append(i)
    parts = []
    for shape, positions in groups.items():
        part = torch.stack([images[i] for i in positions]).float()
        if shape != size:
            part = F.interpolate(part, size=size, mode="bilinear", antialias=True)
            part = part.round_().clamp_(0, 255)
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    order = [i for positions in groups.values() for i in positions]
    inverse = torch.empty(len(order), dtype=torch.int64)
    inverse[order] = torch.arange(len(order))
    device = parts[0].device
    if device.type == "cuda":
        # Pinned + non_blocking: a plain host-to-device copy would wait for the GPU.
        inverse = inverse.pin_memory().to(device, non_blocking=True)
    return torch.cat(parts)[inverse.to(device)]


class GPUDecodeTrainLoader(TrainLoader):
    """A :class:`~adasp.data.TrainLoader` whose workers read file bytes and draw augmentation
    parameters; :meth:`to_device` decodes and augments the batch on the training device.

    Host batches are ``{"data": list, "jpeg": list, "augment": (B, 7), "pid", "camid",
    "index"}``; after :meth:`to_device` they hold ``"image": (B, 3, H, W)`` on the device
    instead, as :class:`~adasp.data.TrainLoader`'s batches do.

    Args:
        samples: the training samples; ``sampler`` yields lists of indices into them.
        sampler: a batch sampler (see :class:`~adasp.data.TrainLoader`).
        augmentation: the size, augmentation and normalisation.
        **kwargs: ``seed``, ``num_workers``, ``pin_memory``, ``persistent_workers`` and
            ``prefetch_factor``, as for :class:`~adasp.data.TrainLoader`.
    """

    collate_fn = staticmethod(collate_encoded)

    def __init__(
        self,
        samples: Sequence[Sample],
        sampler: Sampler[list[int]],
        augmentation: BatchAugmentation,
        **kwargs: Any,
    ) -> None:
        self.samples = list(samples)
        self.augmentation = augmentation
        others = sum(not s.path.lower().endswith(JPEG_SUFFIXES) for s in self.samples)
        if others:
            warnings.warn(
                f"data.decode=gpu: {others} of {len(self.samples)} training images are not "
                "JPEG files; the loader workers decode those on the CPU",
                stacklevel=2,
            )
        # The batch augmentation runs on the device, not per image: the base class only keeps it.
        super().__init__(self.samples, sampler, augmentation, **kwargs)  # type: ignore[arg-type]

    def make_dataset(self, samples: Sequence[Sample], augmentation: Any) -> Dataset:
        return EncodedImageDataset(samples, augmentation)

    def to_device(
        self, batch: dict[str, Any], device: torch.device | str, non_blocking: bool = True
    ) -> dict[str, Any]:
        """Decode, resize and augment ``batch`` on ``device``: replaces ``data``, ``jpeg`` and
        ``augment`` with ``"image"`` (``(B, 3, H, W)`` float32), in place, and returns it."""
        index = batch["index"]
        images = decode_images(
            batch.pop("data"),
            batch.pop("jpeg"),
            device,
            path_of=lambda i: self.samples[int(index[i])].path,
        )
        params = batch.pop("augment").to(device, non_blocking=non_blocking)
        resized = resize_images(images, self.augmentation.size)
        batch["image"] = self.augmentation.apply(resized, params)
        return batch
