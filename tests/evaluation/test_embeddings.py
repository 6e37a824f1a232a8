"""The embedding file: round trip, splits, and clear errors for bad files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from adasp.errors import MissingPathError, UserInputError
from adasp.evaluation import load_embeddings, save_embeddings


def write_example(path, splits=True):
    rng = np.random.default_rng(0)
    features = torch.as_tensor(rng.standard_normal((6, 4)), dtype=torch.float32)
    pids = [3, 3, 5, 5, 7, -1]
    camids = np.array([0, 1, 0, 1, 0, 1])
    paths = [Path("q/a.png"), "q/b.png", "g/c.png", "g/d.png", "g/e.png", "g/f.png"]
    split = ["query", "query", "gallery", "gallery", "gallery", "gallery"] if splits else None
    save_embeddings(path, features, pids, camids, paths, split)
    return features.numpy(), pids, camids, paths, split


def test_round_trip(tmp_path):
    target = tmp_path / "sub" / "emb.npz"
    features, pids, camids, paths, splits = write_example(target)
    loaded = load_embeddings(target)
    np.testing.assert_array_equal(loaded.features, features)
    assert loaded.features.dtype == np.float32
    assert loaded.pids.dtype == np.int64 and loaded.pids.tolist() == pids
    assert loaded.camids.tolist() == camids.tolist()
    assert loaded.paths.tolist() == [str(p) for p in paths]
    assert loaded.splits.tolist() == splits
    assert len(loaded) == 6 and loaded.dim == 4
    query = loaded.split("query")
    assert len(query) == 2 and query.pids.tolist() == [3, 3]
    assert len(loaded.split("gallery")) == 4
    # Atomic: no temporary file is left beside the target.
    assert [p.name for p in target.parent.iterdir()] == ["emb.npz"]


def test_without_splits(tmp_path):
    write_example(tmp_path / "e.npz", splits=False)
    loaded = load_embeddings(tmp_path / "e.npz")
    assert loaded.splits is None
    with pytest.raises(UserInputError, match="no 'splits' array"):
        loaded.split("query")


def test_unknown_split_names_the_available_ones(tmp_path):
    write_example(tmp_path / "e.npz")
    with pytest.raises(UserInputError, match=r"no embeddings in split 'train'.*gallery, query"):
        load_embeddings(tmp_path / "e.npz").split("train")


def test_missing_file(tmp_path):
    with pytest.raises(MissingPathError, match=r"embedding file not found.*adasp extract"):
        load_embeddings(tmp_path / "nothing.npz")


def test_not_an_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    with pytest.raises(UserInputError, match="not a readable embedding file"):
        load_embeddings(bad)


def test_missing_arrays_are_named(tmp_path):
    partial = tmp_path / "partial.npz"
    np.savez(partial, features=np.zeros((2, 3), np.float32), pids=np.array([1, 2]))
    with pytest.raises(UserInputError, match="lacks the array\\(s\\) camids, paths"):
        load_embeddings(partial)


def test_inconsistent_lengths(tmp_path):
    broken = tmp_path / "broken.npz"
    np.savez(
        broken,
        features=np.zeros((3, 2), np.float32),
        pids=np.array([1, 2]),
        camids=np.array([0, 0, 0]),
        paths=np.array(["a", "b", "c"]),
    )
    with pytest.raises(UserInputError, match="not a valid embedding file: pids must have shape"):
        load_embeddings(broken)


def test_pickled_content_is_refused(tmp_path):
    sneaky = tmp_path / "sneaky.npz"
    with zipfile.ZipFile(sneaky, "w") as archive:
        with archive.open("features.npy", "w") as handle:
            np.save(handle, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserInputError, match="not a readable embedding file"):
        load_embeddings(sneaky)


def test_save_validates(tmp_path):
    with pytest.raises(UserInputError, match="features must be \\(N, D\\)"):
        save_embeddings(tmp_path / "x.npz", np.zeros(3), [1, 2, 3], [0, 0, 0], ["a", "b", "c"])
    with pytest.raises(UserInputError, match="camids must have shape"):
        save_embeddings(tmp_path / "x.npz", np.zeros((3, 2)), [1, 2, 3], [0], ["a", "b", "c"])
    with pytest.raises(UserInputError, match="pids must hold integers"):
        save_embeddings(tmp_path / "x.npz", np.zeros((2, 2)), [0.5, 1], [0, 0], ["a", "b"])
    assert not (tmp_path / "x.npz").exists()
