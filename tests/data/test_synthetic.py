"""The synthetic default dataset: determinism, layout, harmful marking, caching, atomicity."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from adasp.data import build_dataset, generate_synthetic_dataset, read_image
from adasp.data import synthetic as synthetic_module
from adasp.data.synthetic import SyntheticOptions, plan_synthetic_dataset
from adasp.errors import UserInputError

SMALL = {"num_identities": 8, "images_per_identity": 8, "image_size": (64, 32), "seed": 3}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "set", **SMALL)


def test_same_arguments_write_the_same_bytes(small_dataset, tmp_path):
    again = generate_synthetic_dataset(tmp_path / "again", **SMALL)
    assert _digest(again) == _digest(small_dataset)
    other_seed = generate_synthetic_dataset(tmp_path / "other", **{**SMALL, "seed": 4})
    assert _digest(other_seed) != _digest(small_dataset)


def test_layout_and_market_naming(small_dataset):
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        names = os.listdir(small_dataset / folder)
        assert names and all(n.endswith(".jpg") for n in names)
    manifest = json.loads((small_dataset / "synthetic.json").read_text())
    assert manifest["options"]["num_identities"] == 8
    assert manifest["options"]["image_size"] == [64, 32]
    image = read_image(next((small_dataset / "query").iterdir()))
    assert image.shape == (3, 64, 32)
    described = json.loads((small_dataset / "identities.json").read_text())
    assert len(described["identities"]) == 8 and len(described["cameras"]) == 6


def test_loaded_as_market_format_with_harmful(small_dataset):
    data = build_dataset("synthetic", small_dataset, **SMALL)
    assert data.root == small_dataset.resolve()
    assert data.num_train_pids == 4
    train_ids = {int(os.path.basename(s.path)[:4]) for s in data.train}
    test_ids = {s.pid for s in data.query} | {s.pid for s in data.gallery}
    assert len(test_ids) == 4 and not train_ids & test_ids
    with open(small_dataset / "images.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(data.train) + len(data.query) + len(data.gallery)
    marked = {str(small_dataset.resolve() / r["path"]) for r in rows if r["harmful"] == "1"}
    assert data.marks.get("harmful", frozenset()) == marked
    listed = (small_dataset / "harmful.txt").read_text().split()
    assert len(listed) == len(marked)
    all_paths = {s.path for s in data.train + data.query + data.gallery}
    assert data.marks.get("harmful", frozenset()) <= all_paths
    assert not data.marks.get("harmful", frozenset()) & {
        s.path for s in data.query
    }  # queries are never cue-free


def test_every_query_has_a_cross_camera_match(small_dataset):
    data = build_dataset("synthetic", small_dataset, **SMALL)
    gallery = {(s.pid, s.camid) for s in data.gallery}
    for query in data.query:
        assert any(pid == query.pid and cam != query.camid for pid, cam in gallery)


def test_harmful_marks_follow_the_fraction():
    options = SyntheticOptions(num_identities=60, images_per_identity=30, harmful_fraction=0.1)
    _, _, planned = plan_synthetic_dataset(options)
    fraction = np.mean([p.cue_free for p in planned])
    assert 0.07 < fraction < 0.11  # first image per camera is never cue-free
    none = plan_synthetic_dataset(SyntheticOptions(num_identities=10, harmful_fraction=0.0))[2]
    assert not any(p.cue_free for p in none)


def test_identity_is_carried_by_visual_cues(small_dataset):
    """Tiny colour thumbnails of the person region already match identities far above chance
    (and far below perfection): the cues are learnable and the nuisances are real."""
    data = build_dataset("synthetic", small_dataset, **SMALL)
    samples = [s for s in data.train if s.path not in data.marks.get("harmful", frozenset())]
    features = np.stack(
        [
            read_image(s.path)[:, 12:60, 8:24]
            .float()
            .reshape(3, 4, 12, 2, 8)
            .mean((2, 4))
            .flatten()
            .numpy()
            for s in samples
        ]
    )
    features -= features.mean(1, keepdims=True)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    pids = np.array([s.pid for s in samples])
    similarity = features @ features.T
    np.fill_diagonal(similarity, -np.inf)
    nearest_same = (pids[similarity.argmax(1)] == pids).mean()
    assert nearest_same > 0.5  # chance is about 1/4 with 4 identities
    cams = np.array([s.camid for s in samples])
    assert len(set(cams.tolist())) > 2


def test_cache_generates_once_under_a_key(tmp_path):
    cache = tmp_path / "cache"
    first = build_dataset("synthetic", cache, **SMALL)
    key = SyntheticOptions(**SMALL).key()
    assert first.root == (cache / key).resolve()
    assert os.listdir(cache) == [key]  # no temporary folder left
    stamp = (cache / key / "synthetic.json").stat().st_mtime_ns
    second = build_dataset("synthetic", cache, **SMALL)
    assert second.train == first.train and second.marks == first.marks
    assert (cache / key / "synthetic.json").stat().st_mtime_ns == stamp
    other = build_dataset("synthetic", cache, **{**SMALL, "num_identities": 6})
    assert other.root != first.root and len(os.listdir(cache)) == 2


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic_module.render_image

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic_module, "render_image", failing)
    with pytest.raises(KeyboardInterrupt):
        build_dataset("synthetic", tmp_path / "cache", **SMALL)
    assert os.listdir(tmp_path / "cache") == []
    monkeypatch.setattr(synthetic_module, "render_image", real)
    data = build_dataset("synthetic", tmp_path / "cache", **SMALL)
    assert len(data.train) > 0


def test_stale_temporary_of_a_dead_process_is_removed(tmp_path):
    cache = tmp_path / "cache"
    key = SyntheticOptions(**SMALL).key()
    stale = cache / f".{key}.tmp-999999999-deadbeef"
    (stale / "query").mkdir(parents=True)
    build_dataset("synthetic", cache, **SMALL)
    assert not stale.exists()


def test_dataset_folder_with_other_options_is_refused(small_dataset):
    with pytest.raises(UserInputError, match="pass matching options or its parent cache folder"):
        build_dataset("synthetic", small_dataset, **{**SMALL, "seed": 0})


def test_generate_into_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    with pytest.raises(UserInputError, match="new or empty folder"):
        generate_synthetic_dataset(tmp_path / "busy", **SMALL)


def test_generate_into_empty_folder_and_reuse(tmp_path):
    (tmp_path / "empty").mkdir()
    folder = generate_synthetic_dataset(tmp_path / "empty", **SMALL)
    stamp = (folder / "synthetic.json").stat().st_mtime_ns
    assert generate_synthetic_dataset(folder, **SMALL) == folder
    assert (folder / "synthetic.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_identities": 2}, r"num_identities must be in 4\.\.2400"),
        ({"num_cameras": 1}, "num_cameras"),
        ({"image_size": (64,)}, "image_size"),
        ({"image_size": (16, 8)}, "image_size"),
        ({"harmful_fraction": 0.9}, "harmful_fraction"),
        ({"seed": "x"}, "seed must be an integer"),
    ],
)
def test_invalid_options(tmp_path, options, match):
    with pytest.raises(UserInputError, match=match):
        build_dataset("synthetic", tmp_path, **options)
