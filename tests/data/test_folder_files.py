"""One set of folder rules: ``list_folder_images`` (extract --folder, search) and the ``folder``
dataset read the same files the same way; dead symbolic links are skipped with a warning."""

from __future__ import annotations

import os

import pytest

from adasp.data import build_dataset
from adasp.data.folder import UNKNOWN_IDENTITY, list_folder_images
from adasp.errors import MissingPathError, UserInputError
from tests.data.layouts import make_folder, make_market, write_images


def _by_path(samples):
    return {s.path: (s.pid, s.camid) for s in samples}


def test_folder_listing_and_dataset_agree_on_every_file(tmp_path):
    make_folder(tmp_path)
    data = build_dataset("folder", tmp_path)
    listed = _by_path(list_folder_images(tmp_path))
    assert set(listed) == {s.path for s in data.train + data.query + data.gallery}
    # Query and gallery keep their ids in the dataset: identical (pid, camid) per file.
    for sample in data.query + data.gallery:
        assert listed[sample.path] == (sample.pid, sample.camid)
    # Training ids are relabelled 0..n-1 by the dataset; cameras still agree.
    for sample in data.train:
        assert listed[sample.path][1] == sample.camid
    assert sorted(listed[s.path][0] for s in data.train) == [3, 12, 12]


def test_one_split_listed_alone_keeps_the_dataset_cameras(tmp_path):
    # Query holds only camera 1 and the gallery cameras 1, 5, 9: a camera is a property of the
    # file, not of which files are read together.
    make_folder(tmp_path)
    data = build_dataset("folder", tmp_path)
    for split, samples in (("query", data.query), ("gallery", data.gallery)):
        assert _by_path(list_folder_images(tmp_path / split)) == _by_path(samples)


def test_real_subset_agrees(pku_subset):
    data = build_dataset("folder", pku_subset)
    listed = _by_path(list_folder_images(pku_subset / "gallery"))
    assert listed == _by_path(data.gallery)


def test_tif_and_all_image_suffixes_are_read_by_both(tmp_path):
    make_folder(tmp_path)
    write_images(tmp_path / "gallery" / "41", ["2_a.tif", "2_b.TIFF", "2_c.webp", "2_d.bmp"])
    write_images(tmp_path / "gallery" / "41", ["2_e.txt"])
    data = build_dataset("folder", tmp_path)
    names = {os.path.basename(s.path) for s in data.gallery}
    assert {"2_a.tif", "2_b.TIFF", "2_c.webp", "2_d.bmp"} <= names and "2_e.txt" not in names
    listed = {os.path.basename(s.path) for s in list_folder_images(tmp_path / "gallery")}
    assert listed == names


def test_loose_images_have_unknown_identity_and_named_folders_are_numbered(tmp_path):
    write_images(tmp_path, ["3_loose.jpg"])
    write_images(tmp_path / "bob", ["1_a.jpg"])
    write_images(tmp_path / "alice", ["2_a.jpg"])
    listed = {os.path.basename(s.path): (s.pid, s.camid) for s in list_folder_images(tmp_path)}
    assert listed == {"3_loose.jpg": (UNKNOWN_IDENTITY, 3), "1_a.jpg": (1, 1), "2_a.jpg": (0, 2)}


def test_the_same_refusals_apply_to_both(tmp_path):
    # Cameras in only some names.
    make_folder(tmp_path / "a")
    write_images(tmp_path / "a" / "gallery" / "41", ["nocamera.jpg"])
    with pytest.raises(UserInputError, match=r"^folder: .*nocamera\.jpg"):
        build_dataset("folder", tmp_path / "a")
    with pytest.raises(UserInputError, match=r"carry a camera .*nocamera\.jpg"):
        list_folder_images(tmp_path / "a" / "gallery")
    # Market-style names, whose leading number is the identity.
    for split in ("train", "query", "gallery"):
        write_images(tmp_path / "b" / split / "7", ["7_c1s1_01.jpg"])
        write_images(tmp_path / "b" / split / "9", ["9_c2s1_01.jpg"])
    with pytest.raises(UserInputError, match="begins with its own identity"):
        build_dataset("folder", tmp_path / "b")
    with pytest.raises(UserInputError, match="begins with its own identity"):
        list_folder_images(tmp_path / "b" / "gallery")


def test_listing_errors(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist"):
        list_folder_images(tmp_path / "nope")
    (tmp_path / "file.jpg").write_bytes(b"")
    with pytest.raises(UserInputError, match="is a file"):
        list_folder_images(tmp_path / "file.jpg")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserInputError, match=r"no images \(.*\.tif.*\) found under"):
        list_folder_images(tmp_path / "empty")


# ---------------------------------------------------------------- dead symbolic links


def _loop(folder, name):
    """``name`` -> ``name.other`` -> ``name``: stat fails with ELOOP."""
    os.symlink(folder / f"{name}.other", folder / name)
    os.symlink(folder / name, folder / f"{name}.other")
    return folder / name


def test_symlink_loop_in_a_dataset_is_skipped_with_a_warning_naming_it(tmp_path):
    make_folder(tmp_path)
    loop = _loop(tmp_path / "gallery" / "40", "1_7.jpg")
    with pytest.warns(UserWarning) as caught:
        data = build_dataset("folder", tmp_path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith("folder: skipped 2 symbolic link(s) that lead to no file")
    assert str(loop) in messages[0] or f"{loop}.other" in messages[0]
    assert "Too many levels of symbolic links" in messages[0]
    assert len(data.gallery) == 3  # the real images are all there


def test_broken_link_and_looping_identity_folder_are_skipped_the_same_way(tmp_path):
    make_folder(tmp_path)
    os.symlink(tmp_path / "gone.jpg", tmp_path / "train" / "12" / "1_9.jpg")
    _loop(tmp_path / "train", "77")
    with pytest.warns(UserWarning, match=r"skipped 3 symbolic link\(s\)"):
        data = build_dataset("folder", tmp_path)
    assert len(data.train) == 3


def test_listing_skips_dead_links_and_follows_folder_links_once(tmp_path):
    write_images(tmp_path / "5", ["1_a.jpg"])
    _loop(tmp_path / "5", "1_b.jpg")
    os.symlink(tmp_path, tmp_path / "5" / "back-to-root")  # a cycle of folders
    os.symlink(tmp_path / "5", tmp_path / "6")  # a linked identity folder
    with pytest.warns(UserWarning, match=r"skipped 2 symbolic link\(s\) .*1_b\.jpg"):
        samples = list_folder_images(tmp_path)
    assert [(os.path.basename(s.path), s.pid, s.camid) for s in samples] == [("1_a.jpg", 5, 1)]


def test_symlink_loops_in_market_folders_and_dataset_roots(tmp_path):
    base = make_market(tmp_path)
    _loop(base / "bounding_box_train", "0007_c1s1_000999_01.jpg")
    _loop(tmp_path, "unrelated")  # beside the dataset folder, under the root given
    with pytest.warns(UserWarning, match=r"market1501: skipped 2 symbolic link\(s\)"):
        data = build_dataset("market1501", tmp_path)
    assert len(data.train) == 6


def test_identity_folders_with_the_same_number_are_not_merged(tmp_path):
    """Issue 23, item 12: ``gallery/052`` and ``gallery/52`` are different folders; read as one
    identity they would silently merge two people."""
    for split in ("train", "query"):
        write_images(tmp_path / split / "1", ["1_a.jpg", "2_b.jpg"])
    write_images(tmp_path / "gallery" / "052", ["1_c.jpg"])
    write_images(tmp_path / "gallery" / "52", ["2_d.jpg"])
    for read in (lambda: build_dataset("folder", tmp_path),
                 lambda: list_folder_images(tmp_path / "gallery")):  # fmt: skip
        with pytest.raises(UserInputError) as error:
            read()
        message = str(error.value)
        assert (
            os.path.join("gallery", "052") in message and os.path.join("gallery", "52") in message
        )
        assert "rename" in message and "\n" not in message
