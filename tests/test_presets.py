"""The presets shipped in the package: every one loads, and a wrong name lists them."""

from __future__ import annotations

from pathlib import Path

import pytest

from adasp.engine.config import PRESET_DIR, load_config, preset_names, resolve_config_path
from adasp.errors import MissingPathError

ROOT = Path(__file__).resolve().parents[1]


def test_presets_live_in_the_package_and_configs_is_the_same_folder():
    import adasp

    assert PRESET_DIR == Path(adasp.__file__).parent / "configs"
    top = ROOT / "configs"
    if top.exists():  # the checkout's browsing link, absent from an sdist
        assert top.is_symlink() and top.resolve() == PRESET_DIR.resolve()


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads(name):
    config = load_config(name)
    assert resolve_config_path(f"{name}.yaml") == resolve_config_path(name)
    assert config.data.batch_size % config.data.num_instances == 0


def test_preset_names_cover_quickstart_and_every_dataset_loss_pair():
    names = preset_names()
    assert "quickstart" in names and "market1501/ce-adasp" in names
    assert not [name for name in names if name.startswith("_base_")]
    datasets = {name.split("/")[0] for name in names if "/" in name}
    assert {"market1501", "msmt17", "veri776", "vehicleid", "veriwild"} <= datasets


def test_an_unknown_name_is_refused_with_the_presets():
    with pytest.raises(MissingPathError) as error:
        load_config("market1501/adsp")
    message = str(error.value)
    assert (
        "config 'market1501/adsp' not found (did you mean 'market1501/adasp'?): no file" in message
    )
    assert "\n" not in message
    assert "quickstart" in message and "market1501" in message and "ce-adasp" in message
