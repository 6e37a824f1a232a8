"""Transforms, the image dataset and the train / test loaders."""

from __future__ import annotations

import pytest
import torch

from adasp.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDataset,
    PKSampler,
    Sample,
    build_test_loader,
    build_test_transform,
    build_train_loader,
    build_train_transform,
)
from adasp.errors import MissingPathError, UserInputError
from tests.data.layouts import write_images


@pytest.fixture
def samples(tmp_path) -> list[Sample]:
    """12 tiny images of 6 identities (2 each), 2 cameras."""
    paths = write_images(tmp_path, [f"{i:02d}.jpg" for i in range(12)])
    return [Sample(str(p), i // 2, i % 2) for i, p in enumerate(paths)]


def _image(value: int = 128) -> torch.Tensor:
    image = torch.full((3, 40, 20), value, dtype=torch.uint8)
    image[:, :20] = 255 - value  # a top / bottom split, so flips and crops change pixels
    return image


def test_test_transform_resizes_and_normalises():
    out = build_test_transform((32, 16))(_image(128))
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    bottom = torch.tensor(
        [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    )
    torch.testing.assert_close(out[:, -1, 8], bottom, atol=1e-3, rtol=0)


def test_train_transform_without_randomness_equals_test_transform():
    image = _image(90)
    train = build_train_transform((32, 16), flip_p=0, padding=0, random_erasing_p=0)
    torch.testing.assert_close(train(image), build_test_transform((32, 16))(image))


def test_train_transform_is_random_and_shaped():
    torch.manual_seed(0)
    transform = build_train_transform((32, 16), autoaugment_p=1.0)
    image = torch.randint(0, 256, (3, 40, 20), dtype=torch.uint8)
    outputs = torch.stack([transform(image) for _ in range(8)])
    assert outputs.shape == (8, 3, 32, 16) and outputs.dtype == torch.float32
    assert len({o.sum().item() for o in outputs}) > 1


def test_train_transform_erases_to_the_mean():
    torch.manual_seed(0)
    transform = build_train_transform((32, 16), flip_p=0, padding=0, random_erasing_p=1.0)
    out = transform(torch.full((3, 32, 16), 255, dtype=torch.uint8))
    assert (out == 0).all(dim=0).any()  # erased pixels: 0 after normalisation = mean colour


def test_transforms_accept_pil_images():
    from PIL import Image

    out = build_train_transform((32, 16))(Image.new("RGB", (20, 40), (10, 200, 30)))
    assert out.shape == (3, 32, 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": (32,)}, "height, width"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"padding": -1}, "padding"),
        ({"autoaugment_p": -0.1}, "autoaugment_p"),
    ],
)
def test_invalid_transform_arguments(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        build_train_transform(**kwargs)


def test_image_dataset_items(samples):
    dataset = ImageDataset(samples, build_test_transform((16, 8)))
    item = dataset[5]
    assert set(item) == {"image", "pid", "camid", "index"}
    assert item["image"].shape == (3, 16, 8) and item["image"].dtype == torch.float32
    assert (item["pid"], item["camid"], item["index"]) == (2, 1, 5)
    raw = ImageDataset(samples, None)[0]["image"]
    assert raw.shape == (3, 8, 4) and 0 <= raw.min() and raw.max() <= 1


def test_image_dataset_restores_torch_threads(samples):
    threads = torch.get_num_threads()
    dataset = ImageDataset(samples, build_test_transform((16, 8)))
    dataset[0]
    assert torch.get_num_threads() == threads
    missing = [samples[0]._replace(path=samples[0].path + ".missing.jpg")]
    with pytest.raises(MissingPathError):
        ImageDataset(missing, build_test_transform((16, 8)))[0]
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("num_workers", [0, 1])
def test_train_loader(samples, num_workers):
    sampler = PKSampler([s.pid for s in samples], batch_size=8, num_instances=2, seed=0)
    loader = build_train_loader(
        samples, sampler, build_train_transform((16, 8)), num_workers=num_workers
    )
    assert loader.pin_memory == torch.cuda.is_available()
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(sampler) == 1
        batch = batches[0]
        assert batch["image"].shape == (8, 3, 16, 8)
        assert batch["pid"].tolist() == [samples[i].pid for i in batch["index"].tolist()]
        assert len(set(batch["pid"].tolist())) == 4
    if num_workers:
        assert loader.persistent_workers


def test_test_loader_keeps_order(samples):
    loader = build_test_loader(samples, build_test_transform((16, 8)), batch_size=5, num_workers=0)
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [5, 5, 2]
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(12))
    assert torch.cat([b["camid"] for b in batches]).tolist() == [s.camid for s in samples]


def test_loader_arguments(samples):
    with pytest.raises(UserInputError, match="num_workers"):
        build_test_loader(samples, build_test_transform(), num_workers=-1)
    with pytest.raises(UserInputError, match="batch_size"):
        build_test_loader(samples, build_test_transform(), batch_size=0)
    assert build_test_loader(samples, build_test_transform(), pin_memory=False).pin_memory is False


def _worker_error(loader) -> tuple[type, str]:
    """The type and message of the error a loader raises; keeps no traceback alive (it would
    hold the loader's worker process until collected)."""
    iterator = iter(loader)
    try:
        for _ in iterator:
            pass
    except Exception as error:
        return type(error), str(error)
    finally:
        iterator._shutdown_workers()  # now, rather than whenever the garbage collector runs
    raise AssertionError("the loader raised nothing")


def test_unreadable_file_in_a_worker_names_the_file(samples, tmp_path):
    bad = tmp_path / "03.jpg"
    bad.write_bytes(b"broken")
    loader = build_test_loader(samples, build_test_transform((16, 8)), num_workers=1)
    kind, message = _worker_error(loader)
    # One line naming the file, not the worker's traceback.
    assert issubclass(kind, UserInputError)
    assert message.startswith(f"cannot decode image {bad} (")
    assert "\n" not in message and "skip_unreadable=True" in message


def test_missing_file_in_a_worker_is_one_line(samples, tmp_path):
    (tmp_path / "04.jpg").unlink()
    loader = build_test_loader(samples, build_test_transform((16, 8)), num_workers=1)
    kind, message = _worker_error(loader)
    assert issubclass(kind, MissingPathError)
    assert message.startswith(f"image {tmp_path / '04.jpg'} does not exist")
    assert "\n" not in message


def test_transform_options_of_the_wrong_type_are_one_clear_error():
    import pytest

    from adasp.data import build_train_transform
    from adasp.errors import UserInputError

    with pytest.raises(UserInputError, match="probability"):
        build_train_transform(flip_p="0.5")
    with pytest.raises(UserInputError, match="height, width"):
        build_train_transform(size=256)


def test_synthetic_image_size_of_the_wrong_type_is_one_clear_error(tmp_path):
    import pytest

    from adasp.data import build_dataset
    from adasp.errors import UserInputError

    with pytest.raises(UserInputError, match="image_size must be"):
        build_dataset("synthetic", tmp_path, image_size=128)
