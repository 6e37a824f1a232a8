"""The generic folder format (fixture trees and the real subset), the registry, and image
verification."""

from __future__ import annotations

import os
import warnings

import pytest

from adasp.data import (
    DATASETS,
    ImageDataset,
    build_dataset,
    build_test_transform,
    dataset_names,
    dataset_options,
    describe_dataset,
    read_image,
)
from adasp.errors import MissingPathError, UserInputError
from tests.data.layouts import DATASET_NAMES, make_folder, make_market, write_images

ALL_NAMES = DATASET_NAMES

# ---------------------------------------------------------------- folder format


def test_folder_with_cameras(tmp_path):
    make_folder(tmp_path)
    data = build_dataset("folder", tmp_path)
    assert data.root == tmp_path.resolve()
    assert data.camera_filter is True
    # Identities 3 and 12 -> 0 and 1 (numeric order); cameras as named: 1, 5, 9.
    assert sorted((s.pid, s.camid) for s in data.train) == [(0, 1), (1, 1), (1, 5)]
    assert [(s.pid, s.camid) for s in data.query] == [(40, 1)]
    assert sorted((s.pid, s.camid) for s in data.gallery) == [(40, 5), (40, 9), (41, 1)]


def test_folder_without_cameras_disables_camera_filter(tmp_path):
    make_folder(tmp_path, with_cameras=False)
    data = build_dataset("folder", tmp_path)
    assert data.camera_filter is False
    assert {s.camid for s in data.train + data.query + data.gallery} == {0}
    assert data.num_train_cams == 1


def test_folder_partly_named_cameras_is_an_error(tmp_path):
    make_folder(tmp_path)
    write_images(tmp_path / "gallery" / "41", ["nocamera.jpg"])
    with pytest.raises(UserInputError) as error:
        build_dataset("folder", tmp_path)
    message = str(error.value)
    assert "nocamera.jpg" in message and "1_1.jpg" in message


def test_folder_named_identities(tmp_path):
    write_images(tmp_path / "train" / "bob", ["1_a.jpg"])
    write_images(tmp_path / "train" / "alice", ["2_a.jpg"])
    write_images(tmp_path / "query" / "carol", ["1_b.jpg"])
    write_images(tmp_path / "gallery" / "carol", ["2_b.jpg"])
    write_images(tmp_path / "gallery" / "dave", ["2_c.jpg"])
    data = build_dataset("folder", tmp_path)
    paths = {os.path.basename(os.path.dirname(s.path)): s.pid for s in data.train}
    assert paths == {"alice": 0, "bob": 1}
    # Query and gallery of the same name share an id.
    assert data.query[0].pid == next(s.pid for s in data.gallery if "carol" in s.path)
    assert len({s.pid for s in data.gallery}) == 2


def test_folder_missing_split(tmp_path):
    make_folder(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "query")
    with pytest.raises(MissingPathError, match=r"(?s)query is missing.*train/<identity>"):
        build_dataset("folder", tmp_path)


def test_folder_empty_split(tmp_path):
    make_folder(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "gallery")
    (tmp_path / "gallery" / "40").mkdir(parents=True)
    with pytest.raises(UserInputError, match="gallery is empty"):
        build_dataset("folder", tmp_path)


def test_folder_loose_image(tmp_path):
    make_folder(tmp_path)
    write_images(tmp_path / "train", ["1_loose.jpg"])
    with pytest.raises(UserInputError, match=r"1_loose\.jpg.*sub-folder"):
        build_dataset("folder", tmp_path)


def test_real_subset_through_folder(pku_subset):
    data = build_dataset("folder", pku_subset)
    assert (len(data.train), len(data.query), len(data.gallery)) == (992, 28, 181)
    assert data.num_train_pids == 62 and sorted({s.pid for s in data.train}) == list(range(62))
    assert len({s.pid for s in data.query}) == 12
    assert {s.pid for s in data.query} == {s.pid for s in data.gallery}
    assert data.camera_filter and data.num_train_cams == 2
    assert {s.camid for s in data.query + data.gallery} == {1, 2}
    # Query / gallery ids are the folder names; cameras from '01_' / '02_'.
    sample = next(s for s in data.query if s.path.endswith(os.path.join("052", "02_2.png")))
    assert (sample.pid, sample.camid) == (52, 2)
    image = read_image(sample.path)
    assert image.shape == (3, 128, 48)
    item = ImageDataset(data.query, build_test_transform((64, 32)))[0]
    assert item["image"].shape == (3, 64, 32)


# ---------------------------------------------------------------- registry


def test_registry_names():
    assert dataset_names() == ALL_NAMES
    assert list(DATASETS) == ALL_NAMES


def test_unknown_dataset_lists_allowed(tmp_path):
    with pytest.raises(UserInputError) as error:
        build_dataset("market", tmp_path)
    assert all(name in str(error.value) for name in ALL_NAMES)


def test_unknown_option_lists_allowed(tmp_path):
    make_market(tmp_path)
    with pytest.raises(UserInputError, match=r"no option split.*verify_images, skip_unreadable"):
        build_dataset("market1501", tmp_path, split="labeled")


def test_invalid_option_value(tmp_path):
    with pytest.raises(UserInputError, match="3000, 5000, 10000"):
        build_dataset("veriwild", tmp_path, test_size="small")


def test_options_and_descriptions():
    assert dataset_options("vehicleid") == {
        "test_size": 800,
        "trial": 0,
        "seed": 0,
        "verify_images": False,
        "skip_unreadable": False,
    }
    for name in ALL_NAMES:
        text = describe_dataset(name)
        assert text.startswith(f"{name}: ") and "layout:" in text
    assert "test_size=800 (one of 800, 1600, 2400)" in describe_dataset("vehicleid")
    assert "MSMT17_V2" in describe_dataset("msmt17")


# ---------------------------------------------------------------- unreadable images


def _corrupt_market(tmp_path):
    base = make_market(tmp_path)
    bad = base / "bounding_box_train" / "0007_c3s2_000201_02.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return bad


def test_unreadable_image_fails_at_load_naming_the_file(tmp_path):
    bad = _corrupt_market(tmp_path)
    data = build_dataset("market1501", tmp_path)  # no decoding by default
    index = next(i for i, s in enumerate(data.train) if s.path == str(bad))
    dataset = ImageDataset(data.train, build_test_transform((16, 8)))
    with pytest.raises(UserInputError, match=r"0007_c3s2_000201_02\.jpg.*skip_unreadable=True"):
        dataset[index]


def test_verify_images_raises_with_count(tmp_path):
    bad = _corrupt_market(tmp_path)
    with pytest.raises(UserInputError, match=rf"1 of 13 images cannot be decoded.*{bad.name}"):
        build_dataset("market1501", tmp_path, verify_images=True)


def test_skip_unreadable_warns_and_drops(tmp_path):
    bad = _corrupt_market(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable of 13 images.*0007_c3s2"):
        data = build_dataset("market1501", tmp_path, skip_unreadable=True)
    assert len(data.train) == 5 and str(bad) not in {s.path for s in data.train}
    assert sorted({s.pid for s in data.train}) == [0, 1, 2]


def test_skip_unreadable_relabels_after_dropping(tmp_path):
    base = make_market(tmp_path)
    (base / "bounding_box_train" / "0100_c5s3_011111_00.jpg").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = build_dataset("market1501", tmp_path, skip_unreadable=True)
    assert sorted({s.pid for s in data.train}) == [0, 1]  # identity 100 lost its only image


def test_read_image_missing_file(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist"):
        read_image(tmp_path / "none.jpg")


def test_read_image_grey_and_bmp(tmp_path):
    from PIL import Image

    Image.new("L", (5, 7), 100).save(tmp_path / "grey.png")
    Image.new("RGBA", (5, 7), (1, 2, 3, 4)).save(tmp_path / "alpha.png")
    Image.new("RGB", (5, 7), (10, 20, 30)).save(tmp_path / "x.bmp")
    assert read_image(tmp_path / "grey.png").shape == (3, 7, 5)
    assert read_image(tmp_path / "alpha.png")[:, 0, 0].tolist() == [1, 2, 3]
    bmp = read_image(tmp_path / "x.bmp")
    assert bmp.shape == (3, 7, 5) and bmp[:, 3, 3].tolist() == [10, 20, 30]


def test_folder_refuses_market_style_names_whose_prefix_is_the_identity(tmp_path):
    for split, pid in (("train", 1), ("train", 2), ("query", 7), ("gallery", 7), ("gallery", 8)):
        write_images(tmp_path / split / f"{pid:04d}", [f"{pid:04d}_c1s1_000151_01.jpg"])
    with pytest.raises(UserInputError, match="begins with its own identity"):
        build_dataset("folder", tmp_path)
