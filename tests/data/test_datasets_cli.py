"""``adasp datasets``: the listing, checking a dataset on disk, and input errors.

The command module is driven through its own parser here, so these tests do not depend on its
registration in ``adasp.cli.COMMANDS``.
"""

from __future__ import annotations

import argparse

import pytest

from adasp.cli import datasets as command
from adasp.errors import MissingPathError, UserInputError
from tests.data.layouts import DATASET_NAMES, make_cuhk03, make_market, make_vehicleid


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def test_listing(capsys):
    assert _run([]) == 0
    out = capsys.readouterr().out
    for name in DATASET_NAMES:
        assert f"\n{name}: " in out
    assert "bounding_box_train" in out and "vehicle_info.txt" in out
    assert "split='labeled' (one of labeled, detected)" in out


def test_check_prints_summary(tmp_path, capsys):
    make_market(tmp_path)
    assert _run(["--dataset", "market1501", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "market1501 at" in out and "identities" in out
    assert "relabelled 0..2" in out and "same-camera" in out


def test_options_are_parsed(tmp_path, capsys):
    make_cuhk03(tmp_path)
    make_vehicleid(tmp_path)
    assert _run(["--dataset", "cuhk03", "--root", str(tmp_path), "--option", "split=detected"]) == 0
    assert "split=detected" in capsys.readouterr().out
    argv = ["--dataset", "vehicleid", "--root", str(tmp_path), "--option", "test_size=1600"]
    assert _run([*argv, "--option", "trial=2"]) == 0
    out = capsys.readouterr().out
    assert "test_size=1600, trial=2" in out and "filters nothing by camera" in out


def test_synthetic_with_list_option(tmp_path, capsys):
    argv = ["--dataset", "synthetic", "--root", str(tmp_path)]
    argv += ["--option", "num_identities=4", "--option", "images_per_identity=4"]
    argv += ["--option", "image_size=[64,32]"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "synthetic at" in out and "relabelled 0..1" in out
    assert "image_size=[64, 32]" in out
    assert len(list(tmp_path.iterdir())) == 1


def test_parse_option():
    assert command.parse_option("use_val=false") == ("use_val", False)
    assert command.parse_option("version=v2") == ("version", "v2")
    assert command.parse_option("image_size=[128, 64]") == ("image_size", (128, 64))
    with pytest.raises(UserInputError, match="KEY=VALUE"):
        command.parse_option("split")


def test_errors(tmp_path):
    with pytest.raises(UserInputError, match="allowed: market1501"):
        _run(["--dataset", "market", "--root", str(tmp_path)])
    with pytest.raises(MissingPathError, match="bounding_box_train"):
        _run(["--dataset", "market1501", "--root", str(tmp_path)])
    with pytest.raises(
        UserInputError, match=r"no root folder given for dataset .market1501.: pass --root DIR"
    ):
        _run(["--dataset", "market1501"])
    with pytest.raises(UserInputError, match="need --dataset"):
        _run(["--root", str(tmp_path)])


def test_check_reports_byte_identical_files_across_splits(tmp_path, capsys):
    import shutil

    from PIL import Image

    market = make_market(tmp_path)
    for number, path in enumerate(sorted(market.rglob("*.jpg"))):  # every file different
        Image.new("RGB", (8, 16), (number, 0, 0)).save(path, format="JPEG")
    query = sorted((market / "query").glob("*.jpg"))
    gallery = sorted((market / "bounding_box_test").glob("*.jpg"))
    # A gallery image overwritten by a copy of a query image: the same bytes, another name.
    shutil.copyfile(query[0], gallery[-1])
    assert _run(["--dataset", "market1501", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "duplicates: 1 query file is byte-identical to gallery files" in out
    assert f"{query[0]} = {gallery[-1]}" in out


def test_duplicates_are_found_between_every_two_splits(tmp_path):
    from adasp.data.duplicates import find_cross_split_duplicates

    files = {}
    for name, content in {"a": b"x" * 10, "b": b"y" * 10, "c": b"x" * 10, "d": b"z" * 3}.items():
        files[name] = tmp_path / name
        files[name].write_bytes(content)
    found = find_cross_split_duplicates(
        {"train": [str(files["a"])], "query": [str(files["b"]), str(files["d"])],
         "gallery": [str(files["c"]), str(files["b"])]}
    )  # fmt: skip
    assert [(f.first, f.second, len(f.pairs)) for f in found] == [
        ("train", "gallery", 1),
        ("query", "gallery", 1),
    ]
    assert found[1].pairs == ((str(files["b"]), str(files["b"])),)


@pytest.mark.slow
def test_listing_imports_no_torch():
    """`adasp datasets` prints a fixed list: it must not pay for importing torch (seconds)."""
    import subprocess
    import sys

    code = (
        "import sys; from adasp.cli import main; main(['datasets']); "
        "sys.stderr.write('torch imported' if 'torch' in sys.modules else 'no torch')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().endswith("no torch") and "market1501" in done.stdout
