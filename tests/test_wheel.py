"""The built wheel works on its own: presets ship inside it and ``adasp train --config
quickstart`` runs from a fresh virtual environment, outside the checkout.

Nothing is downloaded. The wheel is built offline from a copy of the sources (so the checkout
gets no ``build/`` folder, and no stale ``build/lib`` file can slip into the wheel), installed
into a new ``venv --without-pip`` by this interpreter's pip (``pip --python``), and run from
another folder. The new venv borrows torch and the other dependencies from this interpreter's
site-packages through a ``.pth`` line: a plain path entry, so the ``.pth`` files in there (the
editable install's link to ``src/``) are not processed and the checkout stays invisible.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the project (pyproject.toml, README.md, src/)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    dist = tmp_path / "dist"
    # --no-build-isolation: build with this interpreter's setuptools (the dev extra) instead of
    # fetching one; --no-index with --no-deps: pip looks nothing up.
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--no-index", "--wheel-dir", str(dist), str(source)])  # fmt: skip
    (wheel,) = dist.glob("adasp-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A new venv holding the wheel; its dependencies come from this interpreter's."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    dependencies = site.getsitepackages()
    if site.ENABLE_USER_SITE:
        dependencies.append(site.getusersitepackages())
    dependencies = [p for p in dependencies if Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "adasp_test_dependencies.pth").write_text(
        "\n".join(dependencies) + "\n"
    )
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
          "--no-deps", "--no-index", str(wheel)])  # fmt: skip
    return venv


def test_wheel_ships_the_presets_and_trains_quickstart_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    presets = ROOT / "src" / "adasp" / "configs"
    expected = {
        f"adasp/configs/{p.relative_to(presets).as_posix()}" for p in presets.rglob("*.yaml")
    }
    assert {"adasp/configs/quickstart.yaml", "adasp/configs/_base_/person.yaml"} <= expected
    assert expected <= shipped, f"presets missing from the wheel: {sorted(expected - shipped)}"

    venv = _fresh_venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # PYTHONPATH could point at the checkout's src/; the venv must find adasp on its own.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = (
        "import json, sys, adasp.engine.config as c; "
        "print(json.dumps([c.__file__, str(c.PRESET_DIR), sys.path]))"
    )
    found = _run([str(venv / "bin" / "python"), "-c", probe], cwd=elsewhere, env=env)
    module_file, preset_dir, path = json.loads(found.stdout)
    package = Path(module_file).parents[1]
    assert package.is_relative_to(venv) and Path(preset_dir) == package / "configs"
    checkout = {ROOT, ROOT / "src"}
    assert not [entry for entry in path if entry and Path(entry).resolve() in checkout], path

    out = tmp_path / "run"
    _run(
        [str(venv / "bin" / "adasp"), "train", "--config", "quickstart", "--output", str(out),
         "--no-progress", "--device", "cpu", "schedule.epochs=1",
         # A run of a few seconds: 16 identities x 8 images at 64x32, batches of 4 x 4.
         f"data.root={tmp_path / 'synthetic'}",
         "data.options={num_identities: 16, images_per_identity: 8, image_size: [64, 32]}",
         "data.image_size=[64,32]", "data.batch_size=16", "data.num_instances=4",
         "data.num_workers=0", "schedule.warmup_iters=2"],
        cwd=elsewhere, env=env,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == 1 and 0.0 <= metrics["mAP"] <= 1.0
