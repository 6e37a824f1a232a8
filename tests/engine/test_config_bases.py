"""``_base_`` resolution (issue 20, newcomer item 1; issue 23, item 13) and bounded YAML
documents (issue 23, item 5)."""

from __future__ import annotations

import time

import pytest

from adasp.engine.config import PRESET_DIR, load_config, load_yaml
from adasp.engine.typed_config import ConfigError
from adasp.errors import UserInputError


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_base_names_a_shipped_preset(tmp_path):
    own = _write(tmp_path / "mine.yaml", "_base_: cpu/mobilenet\nschedule:\n  epochs: 3\n")
    config = load_config(own)
    assert config.model.backbone == "mobilenet_v2"
    assert config.schedule.epochs == 3


def test_a_copied_preset_finds_its_shipped_bases(tmp_path):
    text = (PRESET_DIR / "market1501" / "adasp.yaml").read_text(encoding="utf-8")
    assert "_base_: ../_base_/market1501.yaml" in text
    copy = _write(tmp_path / "deep" / "mine.yaml", text)
    assert load_config(copy).to_dict() == load_config("market1501/adasp").to_dict()


def test_relative_bases_resolve_from_the_file_that_names_them(tmp_path, monkeypatch):
    _write(tmp_path / "configs" / "sub" / "base.yaml", "loss:\n  temperature: 0.07\n")
    _write(tmp_path / "configs" / "sub" / "middle.yaml", "_base_: base.yaml\n")
    top = _write(tmp_path / "configs" / "top.yaml", "_base_: sub/middle.yaml\n")
    monkeypatch.chdir(tmp_path)  # not the folder of any of them
    assert load_config(top).loss.temperature == 0.07


def test_a_missing_base_names_the_file_that_names_it(tmp_path):
    _write(tmp_path / "sub" / "middle.yaml", "_base_: nowhere.yaml\n")
    top = _write(tmp_path / "top.yaml", "_base_: sub/middle.yaml\n")
    with pytest.raises(UserInputError) as error:
        load_config(top)
    message = str(error.value)
    assert str((tmp_path / "sub" / "middle.yaml").resolve()) in message
    assert "'nowhere.yaml'" in message and "preset" in message and "\n" not in message


SECRET = "root:x:0:0:secret-line-that-must-not-leak"


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink"])
def test_base_outside_the_config_folder_is_refused_without_its_content(tmp_path, kind):
    outside = _write(tmp_path / "elsewhere" / "passwd", SECRET + "\n")
    folder = tmp_path / "configs"
    if kind == "relative":
        base = "../elsewhere/passwd"
    elif kind == "absolute":
        base = str(outside)
    else:
        folder.mkdir()
        (folder / "link.yaml").symlink_to(outside)
        base = "link.yaml"
    own = _write(folder / "mine.yaml", f"_base_: {base}\n")
    with pytest.raises(ConfigError) as error:
        load_config(own)
    message = str(error.value)
    assert "secret-line" not in message
    assert str(own.resolve()) in message and "outside" in message


def test_a_base_that_is_not_a_mapping_is_refused_without_its_content(tmp_path):
    _write(tmp_path / "notes.txt", SECRET + "\n")
    own = _write(tmp_path / "mine.yaml", "_base_: notes.txt\n")
    with pytest.raises(ConfigError) as error:
        load_config(own)
    assert "secret-line" not in str(error.value)
    assert "notes.txt" in str(error.value) and "a mapping" in str(error.value)


def test_invalid_yaml_error_does_not_echo_the_file(tmp_path):
    own = _write(tmp_path / "mine.yaml", f"loss: [\n  {SECRET}: {{\n")
    with pytest.raises(ConfigError) as error:
        load_config(own)
    message = str(error.value)
    assert "secret-line" not in message and "line" in message and "\n" not in message


BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    options = "\n".join("    " + line for line in BOMB.splitlines())
    own = _write(tmp_path / "bomb.yaml", f"data:\n  options:\n{options}\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"expands to more than [\d,]+ values") as error:
        load_config(own)
    assert time.perf_counter() - started < 5  # refused, not walked (a hang before the fix)
    assert str(own.resolve()) in str(error.value)


def test_a_recursive_alias_is_refused():
    with pytest.raises(ConfigError, match="refers to itself"):
        load_yaml("a: &a [1, *a]\n")


def test_a_command_line_alias_bomb_is_refused():
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(None, ["data.options={" + ", ".join(BOMB.splitlines()) + "}"])


def test_ordinary_aliases_and_merge_keys_still_load():
    data = load_yaml("x: &x {a: 1}\ny:\n  <<: *x\n  b: 2\nz: [*x, *x]\n")
    assert data["y"] == {"a": 1, "b": 2} and data["z"] == [{"a": 1}, {"a": 1}]


def test_a_users_own_base_outside_the_folder_is_refused_not_replaced(tmp_path):
    # A copied preset tree with an edited _base_/market1501.yaml beside the preset's folder:
    # the shipped file of that name must not be read instead, silently.
    text = (PRESET_DIR / "market1501" / "adasp.yaml").read_text(encoding="utf-8")
    copy = _write(tmp_path / "market1501" / "adasp.yaml", text)
    _write(tmp_path / "_base_" / "market1501.yaml", "loss:\n  temperature: 0.5\n")
    with pytest.raises(ConfigError, match="lies outside"):
        load_config(copy)
