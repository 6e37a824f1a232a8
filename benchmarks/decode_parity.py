"""How far ``data.decode=gpu`` images are from the CPU loader's, on a folder of JPEG files.

Three rows, in grey levels (0..255) per pixel and channel:

- decoders alone: ``torchvision.io.decode_jpeg`` on ``--device`` (nvJPEG on CUDA, libjpeg-turbo
  on the CPU) against Pillow's decode of the same file, at the file's own size;
- the whole path without augmentation: :class:`adasp.data.gpu_decode.GPUDecodeTrainLoader`'s
  ``to_device`` against :func:`adasp.data.build_train_transform`, resized to ``--size``;
- the whole path with the recipe's augmentation (flip, pad-and-crop, random erasing), same
  seeds on both paths, so the same parameters.

    python benchmarks/decode_parity.py --root FOLDER [--device cuda] [--size 256 128]

The CPU path is the reference; max, mean and the 99.9th percentile are printed. A wrong flip,
crop or erasing box shows as tens of levels on average; decoder rounding as about one.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from adasp.data import ImageDataset, Sample, build_train_transform
from adasp.data.gpu_decode import (
    JPEG_SUFFIXES,
    BatchAugmentation,
    GPUDecodeTrainLoader,
    collate_encoded,
    read_file_bytes,
)
from adasp.data.seeding import SeededDataset
from adasp.utils.imagenet import IMAGENET_STD

RECIPE = {"flip_p": 0.5, "padding": 10, "random_erasing_p": 0.5}
PLAIN = {"flip_p": 0.0, "padding": 0, "random_erasing_p": 0.0}


def summary(levels: torch.Tensor) -> str:
    levels = levels.flatten().double()
    top = torch.quantile(levels[torch.randperm(levels.numel())[: 2**24]], 0.999).item()
    return f"{levels.max().item():8.2f} | {levels.mean().item():6.3f} | {top:8.2f}"


def decoder_levels(paths: list[str], device: torch.device) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    out = []
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision marks its decoders deprecated
            ours = decode_jpeg(read_file_bytes(path), mode=ImageReadMode.RGB, device=device)
        pillow = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        out.append((ours.cpu().float() - pillow.float()).abs().flatten())
    return torch.cat(out)


def pipeline_levels(
    samples: list[Sample], size: tuple[int, int], augment: dict, device: torch.device, chunk: int
) -> torch.Tensor:
    """|device path − CPU path| of every sample, normalised images scaled back to levels."""
    # The training path itself: the loader's dataset and its to_device (the sampler is unused).
    loader = GPUDecodeTrainLoader(samples, [], BatchAugmentation(size, **augment), num_workers=0)
    encoded = SeededDataset(loader.make_dataset(samples, loader.augmentation))
    reference = SeededDataset(ImageDataset(samples, build_train_transform(size, **augment)))
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(samples), chunk):
        keys = [(i, 1000 + i) for i in range(start, min(start + chunk, len(samples)))]
        batch = collate_encoded([encoded[key] for key in keys])
        ours = loader.to_device(batch, device)["image"].cpu()
        cpu = torch.stack([reference[key]["image"] for key in keys])
        out.append(((ours - cpu).abs() * std * 255).flatten())
    return torch.cat(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder searched for JPEGs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"))
    parser.add_argument("--limit", type=int, default=512, help="at most this many files")
    parser.add_argument("--chunk", type=int, default=64, help="images decoded per call")
    args = parser.parse_args(argv)
    paths = sorted(str(p) for p in args.root.rglob("*") if p.suffix.lower() in JPEG_SUFFIXES)[
        : args.limit
    ]
    if not paths:
        print(f"decode_parity: no .jpg/.jpeg files under {args.root}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    size = (args.size[0], args.size[1])
    samples = [Sample(path, i, 0) for i, path in enumerate(paths)]
    start = time.perf_counter()
    rows = [
        ("decoders alone (file size)", decoder_levels(paths, device)),
        (f"path, no augmentation ({size[0]}×{size[1]})", None),
        (f"path, recipe augmentation ({size[0]}×{size[1]})", None),
    ]
    rows[1] = (rows[1][0], pipeline_levels(samples, size, PLAIN, device, args.chunk))
    rows[2] = (rows[2][0], pipeline_levels(samples, size, RECIPE, device, args.chunk))
    print(f"{len(paths)} JPEG files under {args.root}; device {device}; torch {torch.__version__}")
    print("| compared with Pillow / the CPU path | max | mean | 99.9 % |")
    print("|---|---|---|---|")
    for name, levels in rows:
        print(f"| {name} | {summary(levels)} |")
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
