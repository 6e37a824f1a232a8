"""The GPU-decode training loader (``data.decode: gpu``), run on the CPU: same parameters as
the CPU transform for the same seeds, batched shapes, errors, and a tiny training run."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from adasp.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDataset,
    PKSampler,
    Sample,
    build_dataset,
    build_train_transform,
)
from adasp.data.gpu_decode import (
    BatchAugmentation,
    EncodedImageDataset,
    GPUDecodeTrainLoader,
    collate_encoded,
)
from adasp.data.seeding import SeededDataset
from adasp.engine.config import load_config
from adasp.errors import MissingPathError, UserInputError
from tests.conftest import load_benchmark

SIZE = (64, 32)
# Source sizes: the training size itself (no resize), larger, and an odd aspect ratio.
SHAPES = [(64, 32), (128, 64), (100, 45), (64, 32)]
AUGMENTED = {"flip_p": 0.5, "padding": 4, "random_erasing_p": 0.5}
PLAIN = {"flip_p": 0.0, "padding": 0, "random_erasing_p": 0.0}
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _picture(height: int, width: int, seed: int) -> np.ndarray:
    """Gradients plus noise: every flip, crop offset and erased box changes the pixels."""
    y, x = np.mgrid[0:height, 0:width]
    picture = np.stack([x * 255 // width, y * 255 // height, ((x + y) * 7) % 256], -1)
    noise = np.random.default_rng(seed).integers(-20, 20, picture.shape)
    return np.clip(picture + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def samples(tmp_path) -> list[Sample]:
    """16 images of 4 identities; number 4 is a PNG at the training size, the rest JPEGs."""
    found = []
    for i in range(16):
        picture = Image.fromarray(_picture(*SHAPES[i % 4], seed=i))
        path = tmp_path / (f"{i:02d}.png" if i == 4 else f"{i:02d}.jpg")
        picture.save(path, quality=90)
        found.append(Sample(str(path), i // 4, i % 2))
    return found


def _loader(samples, augment=AUGMENTED, **kwargs) -> GPUDecodeTrainLoader:
    sampler = PKSampler([s.pid for s in samples], batch_size=16, num_instances=4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the PNG among the JPEGs
        return GPUDecodeTrainLoader(
            samples, sampler, BatchAugmentation(SIZE, **augment), num_workers=0, **kwargs
        )


def _gpu_path(samples, seeds, augment=AUGMENTED, device="cpu") -> torch.Tensor:
    loader = _loader(samples, augment)
    dataset = SeededDataset(EncodedImageDataset(samples, loader.augmentation))
    batch = collate_encoded([dataset[(i, seed)] for i, seed in enumerate(seeds)])
    return loader.to_device(batch, device)["image"].cpu()


def _cpu_path(samples, seeds, augment=AUGMENTED) -> torch.Tensor:
    dataset = SeededDataset(ImageDataset(samples, build_train_transform(SIZE, **augment)))
    return torch.stack([dataset[(i, seed)]["image"] for i, seed in enumerate(seeds)])


def _grey_levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel difference of two normalised batches, in 0..255 grey levels."""
    return (a - b).abs() * STD * 255


@pytest.mark.parametrize("augment", [AUGMENTED, PLAIN], ids=["augmented", "plain"])
def test_same_seeds_give_the_cpu_paths_images(samples, augment, device):
    seeds = [1000 + i for i in range(16)]
    gpu, cpu = _gpu_path(samples, seeds, augment, device), _cpu_path(samples, seeds, augment)
    assert gpu.shape == cpu.shape == (16, 3, *SIZE) and gpu.dtype == cpu.dtype == torch.float32
    assert gpu.is_contiguous()
    # The PNG at the training size: both paths decode it with Pillow and do not resize it, so
    # equal pixels prove equal flip, crop and erasing parameters.
    torch.testing.assert_close(gpu[4], cpu[4], atol=1e-5, rtol=0)
    # The rest: torchvision's decoder vs Pillow's, float vs uint8 resize. On the CPU both
    # decoders are libjpeg-turbo: measured at most 1 grey level, 0.16 on average, where a wrong
    # flip, crop or erasing box is tens of levels. nvJPEG (CUDA) upsamples chroma differently
    # from libjpeg (measured on an H200: up to 83 levels at the test pictures' sharp colour
    # edges, 2.2 on average), so there the pipeline may differ by what the decoders differ by.
    levels = _grey_levels(gpu, cpu)
    measured = f"{device}: max {levels.max():.3f}, mean {levels.mean():.3f} grey levels"
    limit, mean_limit = 1.0, 0.3
    if device.type != "cpu":
        jpegs = [s.path for s in samples if s.path.endswith(".jpg")]
        decoders = load_benchmark("decode_parity").decoder_levels(jpegs, device)
        limit, mean_limit = decoders.max().item() + 1.0, decoders.mean().item() + 0.3
        measured += f"; decoders alone: max {decoders.max():.3f}, mean {decoders.mean():.3f}"
    print(measured)
    assert levels.max() <= limit + 1e-3 and levels.mean() < mean_limit, measured


def test_augmentation_parameters_follow_the_seeds(samples):
    seeds = [7 * i for i in range(16)]
    first, again = _gpu_path(samples, seeds), _gpu_path(samples, seeds)
    assert torch.equal(first, again)
    other = _gpu_path(samples, [s + 1 for s in seeds])
    assert all(not torch.equal(first[i], other[i]) for i in range(16))
    # The draws are those of the CPU transform, so with p = 0.5 some images are flipped or
    # erased and some not.
    dataset = SeededDataset(EncodedImageDataset(samples, BatchAugmentation(SIZE, **AUGMENTED)))
    params = torch.stack([dataset[(i, s)]["augment"] for i, s in enumerate(seeds)])
    assert 0 < params[:, 0].sum() < 16 and 0 < (params[:, 5] > 0).sum() < 16
    assert params[:, 1:3].min() >= 0 and params[:, 1:3].max() <= 2 * AUGMENTED["padding"]


def test_flip_pad_and_erase_act_on_the_batch(samples):
    seeds = list(range(16))
    plain = _gpu_path(samples, seeds, PLAIN)
    flipped = _gpu_path(samples, seeds, {**PLAIN, "flip_p": 1.0})
    torch.testing.assert_close(flipped, plain.flip(-1))
    erased = _gpu_path(samples, seeds, {**PLAIN, "random_erasing_p": 1.0})
    hidden = (erased == 0).all(dim=1)  # erased pixels are 0 in every channel: the mean colour
    assert hidden.flatten(1).any(dim=1).all()
    assert torch.equal(
        erased[~hidden[:, None].expand_as(erased)], plain[~hidden[:, None].expand_as(plain)]
    )
    shifted = _gpu_path(samples, seeds, {**PLAIN, "padding": 4})
    padded = shifted * STD + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    # A zero-padded border shows up (black, 0 before normalisation) on some images.
    assert (padded.abs() < 1e-5).all(dim=1).flatten(1).any(dim=1).any()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_batches(samples, num_workers):
    with pytest.warns(UserWarning, match="1 of 16 training images are not JPEG"):
        loader = GPUDecodeTrainLoader(
            samples,
            PKSampler([s.pid for s in samples], batch_size=16, num_instances=4, seed=0),
            BatchAugmentation(SIZE),
            num_workers=num_workers,
        )
    loader.set_epoch(0)
    batches = list(loader)
    assert len(batches) == len(loader) == 1
    host = batches[0]
    assert len(host["data"]) == 16 and host["augment"].shape == (16, 7)
    batch = loader.to_device(host, "cpu")
    assert batch is host and set(batch) == {"image", "pid", "camid", "index"}
    assert batch["image"].shape == (16, 3, *SIZE) and batch["image"].dtype == torch.float32
    assert batch["pid"].tolist() == [samples[i].pid for i in batch["index"].tolist()]
    # A resumed epoch replays it: the same batch again from the same seeds.
    loader.set_epoch(0)
    assert torch.equal(loader.to_device(next(iter(loader)), "cpu")["image"], batch["image"])


def test_to_device_reads_nothing_back_from_the_device(samples):
    from tests.engine.test_sync_free_step import counted_host_reads

    loader = _loader(samples)
    host = next(iter(loader))
    with counted_host_reads() as reads:
        batch = loader.to_device(host, "cpu")
    assert batch["image"].shape == (16, 3, *SIZE) and not reads, dict(reads)


def test_missing_and_broken_files_are_named(samples, tmp_path):
    missing = [s._replace(path=str(tmp_path / "gone.jpg")) for s in samples]
    with pytest.raises(MissingPathError, match=r"gone\.jpg"):
        next(iter(_loader(missing)))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # a JPEG header and nothing else
    bad = [*samples[:15], samples[15]._replace(path=str(broken))]
    loader = _loader(bad)
    with pytest.raises(UserInputError, match=r"cannot decode image .*broken\.jpg"):
        loader.to_device(next(iter(loader)), "cpu")


def test_invalid_arguments_and_config():
    with pytest.raises(UserInputError, match="flip_p"):
        BatchAugmentation(SIZE, flip_p=2)
    with pytest.raises(UserInputError, match="padding"):
        BatchAugmentation(SIZE, padding=-1)
    with pytest.raises(UserInputError, match=r"autoaugment_p.*data\.decode=gpu"):
        load_config(None, ["data.decode=gpu", "data.autoaugment_p=0.5"])
    with pytest.raises(UserInputError, match=r"data\.decode"):
        load_config(None, ["data.decode=tpu"])
    assert load_config(None, ["data.decode=gpu"]).data.decode == "gpu"


@pytest.mark.slow
def test_training_with_gpu_decode_on_the_cpu(tmp_path):
    from adasp.cli import main
    from tests.engine.conftest import SYNTHETIC_OPTIONS, tiny_overrides

    root = tmp_path / "synthetic"
    build_dataset("synthetic", root, **SYNTHETIC_OPTIONS)  # JPEG files
    out = tmp_path / "run"
    args = ["train", "--config", "quickstart", "--output", str(out), "--no-progress"]
    one_epoch = ["schedule.epochs=1", "schedule.cosine_delay_epochs=0", "train.eval_every=0"]
    assert main([*args, *tiny_overrides(root), *one_epoch, "data.decode=gpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0 and metrics["epoch"] == 1
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [e["loss/adasp"] for e in events if e["event"] == "train"]
    assert len(losses) == 4 and all(np.isfinite(losses))
