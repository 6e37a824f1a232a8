"""Decoded + augmented training images per second through the P×K train loader.

Runs the synthetic set (generated once into --cache) through PKSampler + the training
transform (resize, flip, pad + crop, random erasing, normalisation; optionally AutoAugment)
+ the DataLoader, for each output size and worker count, and prints a Markdown table.

    python benchmarks/data_loading.py [--cache DIR] [--sizes 256x128 128x64] [--workers 0 1 2]
                                      [--batches 40] [--autoaugment 0.0] [--main-threads N]

With 0 workers the images are decoded and augmented in the main process with torch's
intra-op threads; on a busy machine these threads cost far more than they bring for such
small images (try --main-threads 1). Workers always run torch single-threaded. The header
prints the load average: numbers from a machine shared with other jobs are not comparable.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from adasp.data import (
    PKSampler,
    build_dataset,
    build_train_loader,
    build_train_transform,
    read_image,
)
from adasp.utils.tables import format_table


def size_arg(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width)


def images_per_second(
    samples, size, workers: int, batches: int, batch_size: int, autoaugment: float
) -> float:
    """Images per second over ``batches`` batches, after one warm-up batch (worker start-up)."""
    sampler = PKSampler([s.pid for s in samples], batch_size=batch_size, num_instances=4)
    transform = build_train_transform(size, autoaugment_p=autoaugment)
    loader = build_train_loader(samples, sampler, transform, num_workers=workers)
    seen, epoch, start = -1, 0, 0.0
    while seen < batches:
        sampler.set_epoch(epoch)
        epoch += 1
        for batch in loader:
            if seen == -1:
                start = time.perf_counter()  # the first batch pays for starting the workers
            seen += 1
            assert batch["image"].shape[0] == batch_size
            if seen == batches:
                break
    elapsed = time.perf_counter() - start
    del loader
    return batches * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None, help="synthetic cache folder (default: a temp)")
    parser.add_argument("--sizes", type=size_arg, nargs="+", default=[(256, 128), (128, 64)])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--autoaugment", type=float, default=0.0, help="AutoAugment probability")
    parser.add_argument(
        "--main-threads", type=int, default=None, help="torch threads of the main process"
    )
    args = parser.parse_args()
    if args.main_threads is not None:
        torch.set_num_threads(args.main_threads)

    with tempfile.TemporaryDirectory() as temporary:
        cache = Path(args.cache) if args.cache else Path(temporary)
        start = time.perf_counter()
        data = build_dataset("synthetic", cache)
        print(
            f"synthetic set ready in {time.perf_counter() - start:.1f} s: "
            f"{len(data.train)} training images of {read_image(data.train[0].path).shape[1:]} px"
        )
        print(
            f"torch {torch.__version__}, {os.cpu_count()} CPUs, main process "
            f"{torch.get_num_threads()} threads, load average "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; batch {args.batch_size} "
            f"(K = 4), AutoAugment p = {args.autoaugment}"
        )
        rows = []
        for size in args.sizes:
            for workers in args.workers:
                rate = images_per_second(
                    data.train, size, workers, args.batches, args.batch_size, args.autoaugment
                )
                rows.append([f"{size[0]}x{size[1]}", workers, round(rate)])
                print(f"  {size[0]}x{size[1]}, {workers} workers: {rate:.0f} images/s", flush=True)
        print()
        print(format_table(["output size", "workers", "images/s"], rows, markdown=True))


if __name__ == "__main__":
    main()
