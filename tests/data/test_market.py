"""Market-format datasets (Market-1501, DukeMTMC-reID, CUHK03-np) and root resolution."""

from __future__ import annotations

import os

import pytest

from adasp.data import Sample, build_dataset
from adasp.data.market import parse_market_name
from adasp.errors import MissingPathError, UserInputError
from tests.data.layouts import make_cuhk03, make_duke, make_market, write_images


def _names(samples: list[Sample]) -> list[str]:
    return [os.path.basename(s.path) for s in samples]


def test_market_counts_relabelling_and_cameras(tmp_path):
    base = make_market(tmp_path)
    data = build_dataset("market1501", tmp_path)
    assert data.name == "market1501"
    assert data.root == base.resolve()
    # Junk (-1) dropped everywhere; the Thumbs.db is ignored.
    assert len(data.train) == 6 and len(data.query) == 2 and len(data.gallery) == 5
    # Training ids 2, 7, 100 -> 0, 1, 2 in sorted order of the original ids.
    by_name = {os.path.basename(s.path): s for s in data.train}
    assert by_name["0002_c6s1_000452_01.jpg"] == Sample(
        by_name["0002_c6s1_000452_01.jpg"].path, 0, 5
    )
    assert by_name["0007_c1s1_000151_01.jpg"].pid == 1
    assert by_name["0100_c5s3_011111_00.jpg"].pid == 2
    assert data.num_train_pids == 3
    assert data.num_train_cams == 5  # cameras 1, 2, 3, 5, 6
    # Query and gallery keep their original ids; cameras are 0-based.
    assert sorted((s.pid, s.camid) for s in data.query) == [(3, 0), (5, 3)]
    gallery = sorted((s.pid, s.camid) for s in data.gallery)
    assert gallery == [(0, 0), (0, 2), (3, 0), (3, 1), (5, 5)]  # distractors kept
    assert data.camera_filter is True
    assert data.marks.get("harmful", frozenset()) == frozenset()
    assert all(os.path.isabs(s.path) for s in data.train + data.query + data.gallery)


def test_market_summary_table(tmp_path):
    make_market(tmp_path)
    summary = build_dataset("market1501", tmp_path).summary()
    lines = summary.splitlines()
    assert lines[0].split() == ["split", "identities", "images", "cameras"]
    assert lines[2].split() == ["train", "3", "6", "5"]
    assert lines[3].split() == ["query", "2", "2", "2"]
    assert lines[4].split() == ["gallery", "3", "5", "4"]


@pytest.mark.parametrize("spelling", ["Market-1501-v15.09.15", "market1501", "Market-1501"])
def test_market_root_spellings_and_dataset_folder_itself(tmp_path, spelling):
    base = make_market(tmp_path, spelling)
    assert build_dataset("market1501", tmp_path).root == base.resolve()
    assert build_dataset("market1501", base).root == base.resolve()


def test_market_accepts_other_case_and_punctuation(tmp_path):
    base = make_market(tmp_path, "MARKET_1501")
    assert build_dataset("market1501", tmp_path).root == base.resolve()


def test_missing_dataset_names_paths_checked_and_layout(tmp_path):
    (tmp_path / "Market-1501").mkdir()
    with pytest.raises(MissingPathError) as error:
        build_dataset("market1501", tmp_path)
    message = str(error.value)
    assert str(tmp_path.resolve()) in message
    assert str(tmp_path.resolve() / "Market-1501") in message
    assert "bounding_box_train" in message and "Market-1501-v15.09.15/" in message
    assert isinstance(error.value, FileNotFoundError)


def test_missing_root(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist"):
        build_dataset("market1501", tmp_path / "nowhere")


def test_root_that_is_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserInputError, match="is a file"):
        build_dataset("market1501", tmp_path / "file.txt")


def test_unparsable_name_is_named(tmp_path):
    base = make_market(tmp_path)
    write_images(base / "query", ["holiday.jpg"])
    with pytest.raises(UserInputError, match=r"holiday\.jpg.*PPPP_cC"):
        build_dataset("market1501", tmp_path)


def test_camera_zero_rejected(tmp_path):
    base = make_market(tmp_path)
    write_images(base / "query", ["0003_c0s1_000001_00.jpg"])
    with pytest.raises(UserInputError, match="c0"):
        build_dataset("market1501", tmp_path)


def test_empty_split_names_the_folder(tmp_path):
    base = make_market(tmp_path)
    for path in (base / "query").iterdir():
        path.unlink()
    with pytest.raises(UserInputError, match=r"query split is empty.*query"):
        build_dataset("market1501", tmp_path)


def test_user_names_with_free_suffix(tmp_path):
    # Many users lay out their own data in Market naming; only PPPP_cC is parsed.
    assert parse_market_name("0042_c3_anything-goes.here.jpg") == (42, 3)
    assert parse_market_name("-1_c2s1_000001_00.jpg") == (-1, 2)
    assert parse_market_name("0042_camera3.jpg") is None
    assert parse_market_name("c3_0042.jpg") is None


def test_dukemtmc(tmp_path):
    base = make_duke(tmp_path, "dukemtmc-reid")
    data = build_dataset("dukemtmc", tmp_path)
    assert data.root == base.resolve()
    assert sorted((s.pid, s.camid) for s in data.train) == [(0, 1), (0, 7), (1, 0)]
    assert [(s.pid, s.camid) for s in data.query] == [(5, 1)]
    assert sorted((s.pid, s.camid) for s in data.gallery) == [(0, 0), (5, 6)]


@pytest.mark.parametrize(
    ("split", "train_ids", "query_id"), [("labeled", 2, 20), ("detected", 2, 30)]
)
def test_cuhk03_splits(tmp_path, split, train_ids, query_id):
    base = make_cuhk03(tmp_path)
    data = build_dataset("cuhk03", tmp_path, split=split)
    assert data.root == base.resolve()
    assert data.options == {"split": split}
    assert data.num_train_pids == train_ids and len(data.train) == 3
    assert [s.pid for s in data.query] == [query_id]
    assert all(f"/{split}/" in s.path for s in data.train + data.query + data.gallery)
    assert _names(data.query)[0].endswith(".png")


def test_cuhk03_dataset_folder_itself_and_bad_split(tmp_path):
    base = make_cuhk03(tmp_path)
    assert build_dataset("cuhk03", base).root == base.resolve()
    with pytest.raises(UserInputError, match="labeled, detected"):
        build_dataset("cuhk03", base, split="both")


def test_cuhk03_missing_split_folder(tmp_path):
    base = make_cuhk03(tmp_path)
    import shutil

    shutil.rmtree(base / "detected")
    with pytest.raises(MissingPathError, match="detected/bounding_box_train"):
        build_dataset("cuhk03", tmp_path, split="detected")
