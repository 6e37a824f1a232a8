"""List-based and vehicle datasets: MSMT17, VeRi-776, VehicleID, VERI-WILD."""

from __future__ import annotations

import os

import numpy as np
import pytest

from adasp.data import Sample, build_dataset, vehicleid_trial_split
from adasp.errors import MissingPathError, UserInputError
from tests.data.layouts import (
    make_msmt17,
    make_vehicleid,
    make_veri776,
    make_veriwild,
    write_images,
    write_lines,
)

# ---------------------------------------------------------------- MSMT17


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_msmt17_versions_and_cameras(tmp_path, version):
    base = make_msmt17(tmp_path, version)
    data = build_dataset("msmt17", tmp_path)
    assert data.root == base.resolve()
    assert data.options == {"version": version, "use_val": True}
    # train + val: original ids 0, 4, 9 -> 0, 1, 2; cameras from the third name field.
    assert sorted((s.pid, s.camid) for s in data.train) == [(0, 0), (0, 2), (0, 4), (1, 14), (2, 1)]
    assert [(s.pid, s.camid) for s in data.query] == [(0, 6)]
    assert sorted((s.pid, s.camid) for s in data.gallery) == [(0, 7), (1, 6)]
    folder = "train" if version == "v1" else "mask_train_v2"
    assert all(f"/{folder}/" in s.path for s in data.train)


def test_msmt17_without_val(tmp_path):
    make_msmt17(tmp_path)
    data = build_dataset("msmt17", tmp_path, use_val=False)
    assert len(data.train) == 3 and data.num_train_pids == 2
    assert data.options["use_val"] is False


def test_msmt17_both_versions_is_ambiguous(tmp_path):
    make_msmt17(tmp_path, "v1")
    make_msmt17(tmp_path, "v2")
    with pytest.raises(UserInputError, match=r"version='v1' or version='v2'"):
        build_dataset("msmt17", tmp_path)
    assert build_dataset("msmt17", tmp_path, version="v2").options["version"] == "v2"


def test_msmt17_missing_list_file(tmp_path):
    base = make_msmt17(tmp_path)
    (base / "list_query.txt").unlink()
    with pytest.raises(MissingPathError) as error:
        build_dataset("msmt17", tmp_path)
    assert "list_query.txt" in str(error.value) and "MSMT17_V1/" in str(error.value)


def test_msmt17_bad_line_names_file_and_line(tmp_path):
    base = make_msmt17(tmp_path)
    write_lines(
        base / "list_gallery.txt",
        ["0000/0000_001_08_0303morning_0016_0.jpg 0", "", "0001/0001_000_07_x.jpg one"],
    )
    with pytest.raises(UserInputError) as error:
        build_dataset("msmt17", tmp_path)
    message = str(error.value)
    assert "list_gallery.txt, line 3" in message and "relative/path.jpg pid" in message


def test_msmt17_name_without_camera(tmp_path):
    base = make_msmt17(tmp_path)
    write_images(base / "test", ["0001/nocamera.jpg"])
    write_lines(base / "list_query.txt", ["0001/nocamera.jpg 1"])
    with pytest.raises(UserInputError, match=r"list_query\.txt, line 1.*third"):
        build_dataset("msmt17", tmp_path)


def test_msmt17_listed_image_missing(tmp_path):
    base = make_msmt17(tmp_path)
    write_lines(
        base / "list_query.txt",
        ["0000/0000_000_07_0303morning_0015_0.jpg 0", "0000/0000_009_02_gone.jpg 0"],
    )
    with pytest.raises(MissingPathError, match=r"list_query\.txt, line 2.*0000_009_02_gone\.jpg"):
        build_dataset("msmt17", tmp_path)


def test_msmt17_bad_version(tmp_path):
    make_msmt17(tmp_path)
    with pytest.raises(UserInputError, match="auto, v1, v2"):
        build_dataset("msmt17", tmp_path, version="v3")


# ---------------------------------------------------------------- VeRi-776


@pytest.mark.parametrize("spelling", ["VeRi", "veri", "VeRi_with_plate"])
def test_veri776(tmp_path, spelling):
    base = make_veri776(tmp_path, spelling)
    data = build_dataset("veri776", tmp_path)
    assert data.root == base.resolve()
    assert sorted((s.pid, s.camid) for s in data.train) == [(0, 0), (0, 1), (1, 19)]
    assert [(s.pid, s.camid) for s in data.query] == [(2, 1)]
    assert sorted((s.pid, s.camid) for s in data.gallery) == [(2, 1), (2, 2)]
    assert data.camera_filter


def test_veri776_missing_folder(tmp_path):
    base = make_veri776(tmp_path)
    os.rename(base / "image_test", base / "image_gallery")
    with pytest.raises(MissingPathError, match="image_test"):
        build_dataset("veri776", tmp_path)


# ---------------------------------------------------------------- VehicleID


def test_vehicleid_protocol(tmp_path):
    base = make_vehicleid(tmp_path, "vehicleid")
    data = build_dataset("vehicleid", tmp_path, test_size=1600, trial=4, seed=1)
    assert data.root == base.resolve()
    assert data.camera_filter is False
    assert {s.camid for s in data.train + data.query + data.gallery} == {0}
    assert sorted(s.pid for s in data.train) == [0, 0, 1]
    # One gallery image per test vehicle, the rest queries; original vehicle ids kept.
    assert sorted(s.pid for s in data.gallery) == [11, 12, 13]
    assert sorted(s.pid for s in data.query) == [11, 11, 12]
    assert data.options == {"test_size": 1600, "trial": 4, "seed": 1}
    assert all(s.path.endswith(".jpg") and "/image/" in s.path for s in data.query)


def test_vehicleid_trials_differ_and_are_reproducible(tmp_path):
    make_vehicleid(tmp_path)
    galleries = []
    for trial in range(10):
        a = build_dataset("vehicleid", tmp_path, trial=trial)
        b = build_dataset("vehicleid", tmp_path, trial=trial)
        assert a.gallery == b.gallery and a.query == b.query
        galleries.append(tuple(s.path for s in a.gallery))
    assert len(set(galleries)) > 1


def _test_list(n_vehicles: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 8, size=n_vehicles)
    return [
        Sample(f"/v/{vid:05d}_{k}.jpg", int(vid), 0)
        for vid, count in enumerate(counts)
        for k in range(count)
    ]


def test_vehicleid_trial_split_properties():
    samples = _test_list(200, 0)
    pids = np.array([s.pid for s in samples])
    query, gallery = vehicleid_trial_split(samples, trial=3, seed=7)
    assert query.dtype == np.int64 and gallery.dtype == np.int64
    assert np.array_equal(np.sort(np.concatenate([query, gallery])), np.arange(len(samples)))
    assert np.array_equal(np.sort(pids[gallery]), np.unique(pids))  # one per vehicle
    assert np.all(np.diff(query) > 0) and np.all(np.diff(gallery) > 0)
    again = vehicleid_trial_split(samples, trial=3, seed=7)
    assert np.array_equal(again[1], gallery)
    other_trial = vehicleid_trial_split(samples, trial=4, seed=7)[1]
    other_seed = vehicleid_trial_split(samples, trial=3, seed=8)[1]
    assert not np.array_equal(other_trial, gallery) and not np.array_equal(other_seed, gallery)


def test_vehicleid_trial_split_ignores_sample_order():
    samples = _test_list(50, 1)
    _, gallery = vehicleid_trial_split(samples, 2, 0)
    permutation = np.random.default_rng(5).permutation(len(samples))
    shuffled = [samples[i] for i in permutation]
    _, shuffled_gallery = vehicleid_trial_split(shuffled, 2, 0)
    assert {samples[i].path for i in gallery} == {shuffled[i].path for i in shuffled_gallery}


def test_vehicleid_gallery_draw_is_uniform():
    # A vehicle with 4 images: over many seeds each image is the gallery about 1/4 of the time.
    samples = [Sample(f"/v/{k}.jpg", 1, 0) for k in range(4)]
    picks = np.array([vehicleid_trial_split(samples, 0, seed)[1][0] for seed in range(2000)])
    frequencies = np.bincount(picks, minlength=4) / picks.size
    assert np.all(np.abs(frequencies - 0.25) < 0.04)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"test_size": 1000}, "800, 1600, 2400"),
        ({"trial": 10}, "0, 1, 2"),
        ({"seed": -1}, "non-negative"),
    ],
)
def test_vehicleid_bad_options(tmp_path, options, match):
    make_vehicleid(tmp_path)
    with pytest.raises(UserInputError, match=match):
        build_dataset("vehicleid", tmp_path, **options)


def test_vehicleid_bad_line(tmp_path):
    base = make_vehicleid(tmp_path)
    write_lines(base / "train_test_split" / "train_list.txt", ["0000001 5", "0000002"])
    with pytest.raises(UserInputError, match=r"train_list\.txt, line 2.*IMGID vid"):
        build_dataset("vehicleid", tmp_path)


def test_vehicleid_missing_test_list(tmp_path):
    base = make_vehicleid(tmp_path)
    (base / "train_test_split" / "test_list_2400.txt").unlink()
    with pytest.raises(MissingPathError, match=r"test_list_2400\.txt"):
        build_dataset("vehicleid", tmp_path, test_size=2400)


# ---------------------------------------------------------------- VERI-WILD


@pytest.mark.parametrize("spelling", ["VERI-Wild", "VERI-WILD"])
def test_veriwild(tmp_path, spelling):
    base = make_veriwild(tmp_path, spelling)
    data = build_dataset("veriwild", tmp_path, test_size=5000)
    assert data.root == base.resolve()
    # Cameras 7, 31, 150 -> 0, 1, 2.
    assert sorted((s.pid, s.camid) for s in data.train) == [(0, 0), (0, 1), (1, 2)]
    assert [(s.pid, s.camid) for s in data.query] == [(20, 0)]
    assert sorted((s.pid, s.camid) for s in data.gallery) == [(20, 1), (21, 2)]
    assert data.query[0].path.endswith(os.path.join("images", "00020", "000100.jpg"))
    assert data.camera_filter


def test_veriwild_image_without_info(tmp_path):
    base = make_veriwild(tmp_path)
    write_images(base / "images", ["00099/000999.jpg"])
    write_lines(base / "train_test_split" / "test_3000.txt", ["00020/000101", "00099/000999"])
    with pytest.raises(UserInputError, match=r"test_3000\.txt, line 2.*vehicle_info"):
        build_dataset("veriwild", tmp_path)


def test_veriwild_bad_info_line(tmp_path):
    base = make_veriwild(tmp_path)
    info = base / "train_test_split" / "vehicle_info.txt"
    info.write_text(info.read_text() + "00001/000003;cam;x\n")
    with pytest.raises(UserInputError, match=r"vehicle_info\.txt, line 8"):
        build_dataset("veriwild", tmp_path)


def test_veriwild_bad_size(tmp_path):
    make_veriwild(tmp_path)
    with pytest.raises(UserInputError, match="3000, 5000, 10000"):
        build_dataset("veriwild", tmp_path, test_size=4000)
