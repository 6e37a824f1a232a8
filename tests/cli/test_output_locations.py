"""Issue 11, item 5: every command checks that it can write its ``--output`` before any work.

For ``train``, ``evaluate``, ``sweep`` (a folder) and ``extract``, ``export``, ``search`` (a
file): an output that is a file (or a folder), one that lies under a file, one on a read-only
file system, and a run folder another process writes, each give exit status 2 and ONE line
``adasp CMD: error: ...`` naming the path and the problem, before anything is loaded, built or
computed. The inputs are real (a checkpoint, images, embeddings): a positive control shows that
with a good ``--output`` the same command does get to that work.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adasp.cli import main
from tests.engine.conftest import tiny_overrides
from tests.engine.test_run_folder_unit import lock_held_elsewhere, os_errors_under


@dataclass(frozen=True)
class Inputs:
    data_root: Path
    checkpoint: Path
    images: Path
    embeddings: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    """A real (untrained) checkpoint as ``adasp train`` writes it, a folder of images and an
    embedding file with query and gallery rows: enough for each command to reach its work."""
    from adasp.engine.checkpoint import save_checkpoint
    from adasp.engine.config import load_config
    from adasp.engine.inference import build_inference_model
    from adasp.evaluation import save_embeddings

    base = tmp_path_factory.mktemp("inputs")
    config = load_config("quickstart", tiny_overrides(base / "data"))
    model = build_inference_model(config, None, torch.device("cpu"))
    checkpoint = base / "model.pt"
    save_checkpoint(
        checkpoint,
        {
            "format": "adasp-model-1",
            "config": config.to_dict(),
            "num_classes": 0,
            "model": model.state_dict(),
        },
    )
    images = base / "images"
    rng = np.random.default_rng(0)
    for identity in ("7", "9"):
        (images / identity).mkdir(parents=True)
        for camera in (1, 2):
            pixels = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(images / identity / f"{camera}_{identity}.png")
    embeddings = base / "embeddings.npz"
    save_embeddings(
        embeddings,
        rng.normal(size=(6, 8)).astype(np.float32),
        [1, 2, 1, 2, 1, 2],
        [0, 0, 1, 1, 1, 1],
        [f"img{i}.png" for i in range(6)],
        ["query", "query", "gallery", "gallery", "gallery", "gallery"],
    )
    return Inputs(base / "data", checkpoint, images, embeddings)


#: Commands whose --output is a folder, and those whose --output is a file (with its suffix).
FOLDER_COMMANDS = ["train", "evaluate", "sweep"]
FILE_COMMANDS = {
    "extract": ".npz",
    "export": ".onnx",
    "search": ".json",
    "search-with-model": ".csv",
}
COMMANDS = [*FOLDER_COMMANDS, *FILE_COMMANDS]


def argv(command: str, output: Path, inputs: Inputs) -> list[str]:
    """The command line of ``command`` writing ``output``, with real inputs."""
    out = ["--output", str(output)]
    ckpt = ["--checkpoint", str(inputs.checkpoint)]
    tiny = tiny_overrides(inputs.data_root)
    return {
        "train": ["train", "--config", "quickstart", *out, "--device", "cpu", "--no-progress",
                  *tiny],
        "evaluate": ["evaluate", *ckpt, *out, "--device", "cpu"],
        "sweep": ["sweep", "--config", "quickstart", "--grid", "loss.weight=0.1,0.5", *out,
                  "--device", "cpu", *tiny],
        "extract": ["extract", *ckpt, "--folder", str(inputs.images), *out, "--device", "cpu"],
        "export": ["export", *ckpt, *out],
        "search": ["search", "--embeddings", str(inputs.embeddings), "--topk", "2", *out],
        "search-with-model": ["search", *ckpt, "--query-folder", str(inputs.images),
                              "--gallery-folder", str(inputs.images), *out, "--device", "cpu"],
    }[command]  # fmt: skip


#: Where each command's work starts when its output is good: the step the positive control
#: reaches (and the refused commands never do).
WORK_STARTS = {
    "train": "build_datasets",
    "evaluate": "build_inference_model",
    "sweep": "Sweep",
    "extract": "build_inference_model",
    "export": "build_inference_model",
    "search": "search_embeddings",
    "search-with-model": "build_inference_model",
}


class WorkStarted(Exception):
    """Raised where a command's real work would start (the positive control's signal)."""


@pytest.fixture
def work(monkeypatch) -> list[str]:
    """The steps of real work a command took: loading the checkpoint, listing images and
    loading embeddings are recorded and done; building the model or the datasets, the sweep
    or the search raises :class:`WorkStarted`."""
    import importlib

    calls: list[str] = []

    def recorded(module_name, name):
        # By module name: adasp.evaluation's ``search`` function hides its search module.
        module = importlib.import_module(module_name)
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    def stop(module_name, name):
        module = importlib.import_module(module_name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            raise WorkStarted(name)

        monkeypatch.setattr(module, name, wrapper)

    recorded("adasp.engine.inference", "resolve_run_config")
    recorded("adasp.data.folder", "list_folder_images")
    recorded("adasp.evaluation.embeddings", "load_embeddings")
    stop("adasp.engine.inference", "build_inference_model")
    stop("adasp.engine.builders", "build_datasets")
    stop("adasp.engine.sweep", "Sweep")
    stop("adasp.evaluation.search", "search_embeddings")
    return calls


def refused(command: str, capsys) -> str:
    """The one error line of a refused ``command`` (asserting it is one line, no traceback)."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    name = command.split("-")[0]
    assert lines[0].startswith(f"adasp {name}: error: "), lines[0]
    return lines[0]


def output_path(command: str, parent: Path, stem: str = "out") -> Path:
    return parent / f"{stem}{FILE_COMMANDS.get(command, '')}"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_good_output_reaches_the_work(command, inputs, work, tmp_path, capsys):
    """The positive control: these inputs are enough for the command to start its work."""
    with pytest.raises(WorkStarted, match=WORK_STARTS[command]):
        main(argv(command, output_path(command, tmp_path / "fresh"), inputs))
    if command in ("evaluate", "extract", "export", "search-with-model"):
        assert work[0] == "resolve_run_config"  # the checkpoint was loaded first
    if command == "search":
        assert work == ["load_embeddings", "search_embeddings"]
    capsys.readouterr()


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_a_folder_output_that_is_a_file(command, inputs, work, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("precious")
    assert main(argv(command, taken, inputs)) == 2
    line = refused(command, capsys)
    assert line.endswith(f"error: --output {taken} is a file; choose a folder path for --output")
    assert work == [] and taken.read_text() == "precious"


@pytest.mark.parametrize("command", list(FILE_COMMANDS))
def test_a_file_output_that_is_a_folder(command, inputs, work, tmp_path, capsys):
    taken = output_path(command, tmp_path, "taken")
    taken.mkdir()
    (taken / "inside.txt").write_text("precious")
    assert main(argv(command, taken, inputs)) == 2
    line = refused(command, capsys)
    assert line.endswith(f"error: --output {taken} is a folder; give a file path for --output")
    assert work == [] and [p.name for p in taken.iterdir()] == ["inside.txt"]


@pytest.mark.parametrize("depth", [0, 2], ids=["directly", "deeper"])
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_under_a_file(command, depth, inputs, work, tmp_path, capsys):
    note = tmp_path / "note.txt"
    note.write_text("precious")
    output = output_path(command, note.joinpath(*["sub"] * depth))
    assert main(argv(command, output, inputs)) == 2
    line = refused(command, capsys)
    # The path named is the file in the way, and the message says that it is a file.
    assert f" {note} is a file;" in line or f"lies under {note}, which is a file;" in line
    assert "--output" in line
    assert work == [] and note.read_text() == "precious"


@pytest.mark.parametrize("exists", [True, False], ids=["existing-folder", "new-folder"])
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_on_a_read_only_file_system(
    command, exists, inputs, work, tmp_path, monkeypatch, capsys
):
    # Tests run as root, where chmod stops no write: every write under the mount fails with
    # EROFS instead, as on a read-only mount.
    mount = tmp_path / "mount"
    folder = mount if exists else mount / "new"
    mount.mkdir()
    output = folder if command in FOLDER_COMMANDS else output_path(command, folder)
    with os_errors_under(mount, errno.EROFS, monkeypatch):
        assert main(argv(command, output, inputs)) == 2
    line = refused(command, capsys)
    assert f"cannot write into --output {folder}: " in line or (
        f"cannot write into the folder of --output {folder}: " in line
    )
    assert "read-only file system" in line
    assert work == [] and list(mount.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_in_a_run_folder_another_process_writes(command, inputs, work, tmp_path, capsys):
    run = tmp_path / "run"
    with lock_held_elsewhere(run) as holder:
        output = run if command in FOLDER_COMMANDS else output_path(command, run, "result")
        assert main(argv(command, output, inputs)) == 2
        line = refused(command, capsys)
    assert f"error: {run} is in use by process {holder.pid} (started at " in line
    assert line.endswith("wait for it or choose another --output")
    assert work == [] and sorted(p.name for p in run.iterdir()) == [".adasp.lock"]


def test_a_search_without_output_writes_nothing_and_checks_nothing(inputs, tmp_path, capsys):
    assert main(["search", "--embeddings", str(inputs.embeddings), "--topk", "2"]) == 0
    assert "searched 2 queries against 4 gallery images" in capsys.readouterr().out


def test_extract_writes_where_it_was_checked(inputs, tmp_path, capsys):
    """End to end with a good output (no model stub): the file the check allowed is written."""
    output = tmp_path / "deep" / "er" / "e.npz"
    assert main(argv("extract", output, inputs)) == 0
    from adasp.evaluation import load_embeddings

    assert load_embeddings(output).features.shape[0] == 4
    capsys.readouterr()


@pytest.mark.parametrize("command", ["evaluate", "extract", "export", "search-with-model"])
def test_a_command_refused_after_the_check_leaves_no_new_folder(command, inputs, tmp_path, capsys):
    # The output check creates the folders; a missing checkpoint, found after it, stops the
    # command: the folders it created are removed again, one that existed before is kept.
    missing = tmp_path / "no-such-model.pt"
    existing = tmp_path / "existing"
    existing.mkdir()
    output = output_path(command, existing / "new" / "deeper")
    line = argv(command, output, inputs)
    line[line.index("--checkpoint") + 1] = str(missing)
    assert main(line) == 2
    assert str(missing) in refused(command, capsys)
    assert existing.is_dir() and list(existing.iterdir()) == []
