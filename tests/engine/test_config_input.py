"""Config input rules of issue 11: finite floats, duplicate YAML keys, schedules fitted to a
shortened run."""

from __future__ import annotations

import dataclasses
import textwrap
import typing
import warnings

import pytest

from adasp.engine.config import (
    PRESET_DIR,
    DuplicateKeyError,
    ExperimentConfig,
    load_config,
    preset_names,
)
from adasp.engine.schedule import LRSchedule
from adasp.engine.typed_config import ConfigError, first_non_finite


def _float_fields() -> list[tuple[str, bool]]:
    """``(dotted key, is_tuple)`` of every float field of the config (floats in tuples too)."""
    found = []
    for section in dataclasses.fields(ExperimentConfig):
        hints = typing.get_type_hints(section.default_factory)
        for name, hint in hints.items():
            args = typing.get_args(hint)
            if hint is float or (float in args and typing.get_origin(hint) is not tuple):
                found.append((f"{section.name}.{name}", False))
            elif typing.get_origin(hint) is tuple and float in args:
                found.append((f"{section.name}.{name}", True))
    return found


FLOAT_FIELDS = _float_fields()


def test_float_fields_are_found():
    keys = {key for key, _ in FLOAT_FIELDS}
    assert {"loss.temperature", "optim.lr", "data.mean", "schedule.gamma"} <= keys
    assert len(keys) >= 20


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize(("key", "is_tuple"), FLOAT_FIELDS, ids=[k for k, _ in FLOAT_FIELDS])
def test_every_float_field_refuses_non_finite_values(key, is_tuple, value):
    override = f"{key}=[{value}, 0.5, 0.5]" if is_tuple else f"{key}={value}"
    with pytest.raises(ConfigError, match=rf"^config key '{key}(\[0\])?'.*must be .*, got "):
        load_config(None, [override])


def test_non_finite_message_names_the_allowed_range():
    with pytest.raises(ConfigError) as error:
        load_config("quickstart", ["loss.temperature=.inf"])
    assert str(error.value) == (
        "config key 'loss.temperature' must be > 0 (a finite number), got inf"
    )
    with pytest.raises(ConfigError, match=r"'optim.grad_clip' must be >= 0 .*0 disables.*inf"):
        load_config(None, ["optim.grad_clip=.inf"])
    # Loss options go through the loss's own check, which names the range too.
    with pytest.raises(ConfigError, match=r"'loss.options.triplet': margin must be >= 0 .*inf"):
        load_config(None, ["loss.options={triplet: {margin: .inf}}"])
    with pytest.raises(ConfigError, match=r"'loss.options.supcon': temperature must be > 0"):
        load_config(None, ["loss.options={supcon: {temperature: abc}}"])


def test_first_non_finite_walks_nested_values():
    config = load_config(None)
    assert first_non_finite(config) is None
    config.loss.options = {"ms": {"margin": float("nan")}}
    key, value = first_non_finite(config)
    assert key == "loss.options.ms.margin" and value != value


# ---------------------------------------------------------------- duplicate YAML keys


def _write(path, text):
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_duplicate_key_is_refused_with_both_lines(tmp_path):
    path = _write(
        tmp_path / "dup.yaml",
        """\
        optim:
          lr: 1.0e-3
          weight_decay: 5.0e-4
          lr: 1.0e-2
        """,
    )
    with pytest.raises(DuplicateKeyError) as error:
        load_config(path)
    message = str(error.value)
    assert message == (
        f"{path}: key 'lr' appears twice in the same mapping (lines 2 and 4); keep one of them"
    )
    assert "\n" not in message


def test_duplicate_section_and_flow_mapping(tmp_path):
    path = _write(tmp_path / "a.yaml", "loss:\n  weight: 1\nmodel: {}\nloss:\n  weight: 2\n")
    with pytest.raises(ConfigError, match=r"key 'loss' appears twice .*lines 1 and 4"):
        load_config(path)
    path = _write(tmp_path / "b.yaml", "loss: {options: {triplet: {margin: 1, margin: 2}}}\n")
    with pytest.raises(ConfigError, match=r"key 'margin' appears twice .*lines 1 and 1"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"value '\{margin: 1, margin: 2\}': key 'margin'"):
        load_config(None, ["loss.options.triplet={margin: 1, margin: 2}"])


def test_the_same_key_in_different_mappings_and_merge_keys_are_fine(tmp_path):
    path = _write(
        tmp_path / "ok.yaml",
        """\
        loss:
          options:
            triplet: &shared {margin: 0.3}
            ms:
              <<: *shared
              margin: 0.2
        optim: {lr: 1.0e-3}
        """,
    )
    config = load_config(path)
    # A merge key's value may be overridden by the mapping's own key: that is not a duplicate.
    assert config.loss.options == {"triplet": {"margin": 0.3}, "ms": {"margin": 0.2}}


def test_every_preset_and_its_bases_still_load():
    names = preset_names()
    assert "quickstart" in names and len(names) > 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no preset's schedule needs fitting
        for name in names:
            load_config(name)
    assert (PRESET_DIR / "_base_").is_dir()


# ---------------------------------------------------------------- schedule fitted to epochs


def test_shortened_preset_gives_a_valid_run_with_a_warning():
    with pytest.warns(UserWarning, match=r"cosine_delay_epochs=6 .* schedule.epochs=1; clamped"):
        config = load_config("quickstart", ["schedule.epochs=1"])
    assert config.schedule.epochs == 1 and config.schedule.cosine_delay_epochs == 1
    # The preset itself is unchanged.
    assert load_config("quickstart").schedule.cosine_delay_epochs == 6
    s = config.schedule
    schedule = LRSchedule(
        iters_per_epoch=10,
        epochs=1,
        warmup_iters=0,
        scheduler=s.scheduler,
        cosine_delay_epochs=s.cosine_delay_epochs,
        min_lr_factor=s.min_lr_factor,
    )
    assert [schedule.factor(i) for i in range(10)] == [1.0] * 10


def test_delay_within_the_run_is_kept_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_config("quickstart", ["schedule.epochs=8"])
    assert config.schedule.cosine_delay_epochs == 6


def test_multistep_milestones_after_the_run_are_dropped_with_a_warning():
    with pytest.warns(UserWarning, match=r"milestones \[50\] are not before schedule.epochs=40"):
        config = load_config(None, ["schedule.scheduler=multistep", "schedule.epochs=40"])
    assert config.schedule.milestones == [30]
    with pytest.raises(ConfigError, match=r"'schedule\.cosine_delay_epochs' must be >= 0"):
        load_config(None, ["schedule.cosine_delay_epochs=-1"])
