"""Unit tests of :mod:`adasp.engine.run_folder`: output locations checked up front, one writer
per run folder (an OS lock the kernel drops with its process), finished runs kept."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adasp.engine.run_folder import (
    LOCK_NAME,
    RUN_FOLDERS,
    RUN_OUTPUTS,
    RunFolderBusy,
    RunFolderLock,
    check_output_file,
    check_run_outputs,
    is_run_folder,
    lock_if_run_folder,
    prepare_output_dir,
    remove_run_outputs,
)
from adasp.errors import UserInputError

HOLDER = textwrap.dedent(
    """
    import sys, time
    from adasp.engine.run_folder import RunFolderLock
    lock = RunFolderLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
    """
)


@contextlib.contextmanager
def lock_held_elsewhere(folder: Path):
    """Another process holding the lock of ``folder`` (SIGKILLed on exit); yields it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = holder.stdout.readline()
        assert line.strip() == "locked", holder.stderr.read()
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)


@contextlib.contextmanager
def os_errors_under(root: Path, code: int, monkeypatch):
    """Make every creation or write-open of a path under ``root`` fail with OS error ``code``
    (reads still work): a read-only file system (EROFS) for the process, even as root."""
    real_open, real_mkdir = os.open, os.mkdir
    prefix = str(root)

    def under(path) -> bool:
        if isinstance(path, int):
            return False
        name = os.path.abspath(os.fsdecode(path))
        return name == prefix or name.startswith(prefix + os.sep)

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def fake_mkdir(path, mode=0o777, *, dir_fd=None):
        if under(path):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", fake_open)
        patch.setattr(os, "mkdir", fake_mkdir)
        yield


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------- prepare_output_dir


def test_prepare_output_dir_creates_nested_folders_and_leaves_no_probe(tmp_path):
    folder = tmp_path / "a" / "b" / "run"
    assert prepare_output_dir(folder) == folder
    assert folder.is_dir() and list(folder.iterdir()) == []
    # An existing folder with files is fine, and left as it was.
    (folder / "keep.txt").write_text("x")
    assert prepare_output_dir(str(folder)) == folder
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


def test_prepare_output_dir_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert prepare_output_dir("~/runs/q") == tmp_path / "runs" / "q"
    assert (tmp_path / "runs" / "q").is_dir()


def test_prepare_output_dir_refuses_a_file(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("precious")
    with pytest.raises(UserInputError) as error:
        prepare_output_dir(taken)
    assert _one_line(error) == (f"--output {taken} is a file; choose a folder path for --output")
    assert taken.read_text() == "precious"


@pytest.mark.parametrize("depth", [1, 3])
def test_prepare_output_dir_refuses_a_path_under_a_file(tmp_path, depth):
    note = tmp_path / "note.txt"
    note.write_text("x")
    folder = note.joinpath(*[f"sub{i}" for i in range(depth)])
    with pytest.raises(UserInputError) as error:
        prepare_output_dir(folder, what="--output")
    assert _one_line(error) == (
        f"--output {folder} lies under {note}, which is a file; choose a folder path for --output"
    )


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "new"])
@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (errno.EROFS, "it is on a read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
        (errno.ENOSPC, "no space left on the device"),
    ],
)
def test_prepare_output_dir_names_an_unwritable_folder(
    tmp_path, monkeypatch, code, problem, exists
):
    root = tmp_path / "mount"
    root.mkdir()
    folder = root / "run" if not exists else root
    with os_errors_under(root, code, monkeypatch), pytest.raises(UserInputError) as error:
        prepare_output_dir(folder)
    assert _one_line(error) == (
        f"cannot write into --output {folder}: {problem}; choose another --output"
    )
    assert not (root / "run").exists() and list(root.iterdir()) == []


def test_prepare_output_dir_names_the_option(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserInputError, match=r"^--sweep-dir .* is a file; .* for --sweep-dir$"):
        prepare_output_dir(tmp_path / "f", what="--sweep-dir")


# ---------------------------------------------------------------------- check_output_file


def test_check_output_file_creates_its_folder_and_allows_an_existing_file(tmp_path):
    target = tmp_path / "new" / "deeper" / "e.npz"
    assert check_output_file(target) == target
    assert target.parent.is_dir() and not target.exists()
    target.write_bytes(b"old")
    assert check_output_file(str(target)) == target
    assert target.read_bytes() == b"old"  # replaced (atomically) only when the work is done


def test_check_output_file_refuses_a_folder(tmp_path):
    folder = tmp_path / "e.npz"
    folder.mkdir()
    with pytest.raises(UserInputError) as error:
        check_output_file(folder)
    assert _one_line(error) == f"--output {folder} is a folder; give a file path for --output"


@pytest.mark.parametrize("parts", [["e.npz"], ["sub", "e.npz"]])
def test_check_output_file_refuses_a_file_under_a_file(tmp_path, parts):
    note = tmp_path / "note.txt"
    note.write_text("x")
    with pytest.raises(UserInputError) as error:
        check_output_file(note.joinpath(*parts))
    message = _one_line(error)
    assert message.startswith("the folder of --output ") and str(note) in message
    assert "is a file" in message or "which is a file" in message


def test_check_output_file_on_a_read_only_file_system(tmp_path, monkeypatch):
    with os_errors_under(tmp_path, errno.EROFS, monkeypatch), pytest.raises(UserInputError) as e:
        check_output_file(tmp_path / "e.npz")
    assert _one_line(e) == (
        f"cannot write into the folder of --output {tmp_path}: it is on a read-only file system; "
        "choose another --output"
    )


# ---------------------------------------------------------------------- RunFolderLock


def test_the_lock_records_its_holder_and_is_reentrant_and_released(tmp_path):
    folder = tmp_path / "run"
    lock = RunFolderLock(folder)
    assert not lock.held
    with lock:
        assert lock.held and lock.acquire() is lock  # a second acquire is a no-op
        pid, started = (folder / LOCK_NAME).read_text().split(" ", 1)
        assert int(pid) == os.getpid() and started.strip()
        # Another opener of the file (another process, or this one) is refused.
        with pytest.raises(RunFolderBusy, match=rf"in use by process {os.getpid()} "):
            RunFolderLock(folder).acquire()
    assert not lock.held
    # The lock file stays (see release); the folder is free again.
    assert (folder / LOCK_NAME).exists()
    with RunFolderLock(folder) as again:
        assert again.held
    lock.release()  # releasing twice is harmless


def test_a_disabled_lock_does_nothing(tmp_path):
    folder = tmp_path / "run"
    with RunFolderLock(folder, enabled=False) as lock:
        assert not lock.held
    assert not folder.exists()


@pytest.mark.slow
def test_a_lock_held_by_another_process_is_refused_naming_it(tmp_path):
    folder = tmp_path / "run"
    with lock_held_elsewhere(folder) as holder:
        with pytest.raises(RunFolderBusy) as error:
            RunFolderLock(folder).acquire()
        message = _one_line(error)
        assert message.startswith(f"{folder} is in use by process {holder.pid} (started at ")
        assert message.endswith("); wait for it or choose another --output")
        assert isinstance(error.value, UserInputError)
        # The refused attempt did not clobber the holder's record.
        assert (folder / LOCK_NAME).read_text().split()[0] == str(holder.pid)


@pytest.mark.slow
def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "run"
    with lock_held_elsewhere(folder) as holder:
        with pytest.raises(RunFolderBusy):
            RunFolderLock(folder).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        assert holder.returncode == -signal.SIGKILL
        # The kernel dropped the lock with the process, though its file (and pid) remain.
        assert (folder / LOCK_NAME).read_text().split()[0] == str(holder.pid)
        with RunFolderLock(folder) as lock:
            assert lock.held
            assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_the_lock_checks_its_folder_first(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UserInputError, match="is a file"):
        RunFolderLock(tmp_path / "taken").acquire()


def test_an_unopenable_lock_file_is_a_one_line_error(tmp_path):
    folder = tmp_path / "run"
    (folder / LOCK_NAME).mkdir(parents=True)  # not a file: open() fails
    with pytest.raises(UserInputError) as error:
        RunFolderLock(folder).acquire()
    assert _one_line(error) == (
        f"cannot open the lock file {folder / LOCK_NAME} of {folder}: it is a folder; remove it, "
        "or choose another --output"
    )


def test_a_lock_file_that_cannot_be_written_is_a_one_line_error(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    real_open = os.open

    def refuse_the_lock_file(path, flags, mode=0o777, **kwargs):  # another user's file
        if str(path).endswith(LOCK_NAME):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", refuse_the_lock_file)
    with pytest.raises(UserInputError, match=r"lock file .*: permission denied; remove it"):
        RunFolderLock(folder).acquire()


def test_lock_if_run_folder_locks_run_folders_only(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    lock = lock_if_run_folder(plain)
    assert not lock.held and not (plain / LOCK_NAME).exists()
    for marker in (*RUN_OUTPUTS, *RUN_FOLDERS, LOCK_NAME):
        run = tmp_path / f"run-{marker}"
        run.mkdir()
        (run / marker).mkdir() if marker in RUN_FOLDERS else (run / marker).write_text("")
        assert is_run_folder(run)
        with lock_if_run_folder(run) as held:
            assert held.held
    assert not lock_if_run_folder(tmp_path / "run-model.pt", enabled=False).held


@pytest.mark.slow
def test_lock_if_run_folder_refuses_a_busy_run_folder(tmp_path):
    run = tmp_path / "run"
    with lock_held_elsewhere(run) as holder:
        with pytest.raises(RunFolderBusy, match=f"in use by process {holder.pid} "):
            lock_if_run_folder(run)


# ---------------------------------------------------------------------- check_run_outputs


def _fill(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


def test_an_empty_or_foreign_folder_may_be_used(tmp_path):
    check_run_outputs(tmp_path / "missing", resume=False, overwrite=False)
    _fill(tmp_path / "run", ["notes.txt", LOCK_NAME, "eval/metrics.json"])
    check_run_outputs(tmp_path / "run", resume=False, overwrite=False)


@pytest.mark.parametrize("name", [*RUN_OUTPUTS, "checkpoints/last.pt"])
def test_any_run_output_is_refused_without_resume(tmp_path, name):
    folder = tmp_path / "run"
    _fill(folder, [name])
    with pytest.raises(UserInputError) as error:
        check_run_outputs(folder, resume=False, overwrite=False)
    assert _one_line(error) == (
        f"{folder} already holds a run ({name}); pass --resume to continue it, or choose "
        "another --output (--overwrite replaces it)"
    )
    assert (folder / name).read_text() == name


def test_the_refusal_names_every_output_found(tmp_path):
    folder = tmp_path / "run"
    _fill(folder, [*RUN_OUTPUTS, "checkpoints/last.pt"])
    with pytest.raises(UserInputError, match=r"\(model.pt, metrics.json, config.yaml, "
                       r"log.jsonl, checkpoints/last.pt\)"):  # fmt: skip
        check_run_outputs(folder, resume=False, overwrite=False)


@pytest.mark.parametrize(
    "names",
    [
        [],
        ["config.yaml", "log.jsonl"],  # killed before its first checkpoint: starts afresh
        ["config.yaml", "log.jsonl", "checkpoints/last.pt"],
        [*RUN_OUTPUTS, "checkpoints/last.pt"],  # finished, checkpoint kept
    ],
)
def test_resume_is_allowed_where_there_is_something_to_continue(tmp_path, names):
    folder = tmp_path / "run"
    _fill(folder, names)
    check_run_outputs(folder, resume=True, overwrite=False)
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == sorted(
        Path(n).name for n in names
    )


@pytest.mark.parametrize("finished", [["model.pt"], ["metrics.json"], ["model.pt", "metrics.json"]])
def test_resume_of_a_finished_run_without_checkpoint_is_refused(tmp_path, finished):
    folder = tmp_path / "run"
    _fill(folder, [*finished, "config.yaml", "log.jsonl"])
    with pytest.raises(UserInputError) as error:
        check_run_outputs(folder, resume=True, overwrite=False)
    assert _one_line(error) == (
        f"{folder} holds a finished run ({', '.join(sorted(finished))}) but no "
        "checkpoints/last.pt to resume from; choose another --output, or pass --overwrite to "
        "train it again from the start"
    )


def test_overwrite_removes_the_run_and_nothing_else(tmp_path):
    folder = tmp_path / "run"
    run_files = [*RUN_OUTPUTS, "checkpoints/last.pt", "checkpoints/.last.pt.1.tmp",
                 "tensorboard/events.out"]  # fmt: skip
    _fill(folder, [*run_files, "notes.txt", "eval/metrics.json", LOCK_NAME])
    with RunFolderLock(folder):
        check_run_outputs(folder, resume=False, overwrite=True)  # allowed, nothing removed yet
        assert all((folder / name).exists() for name in run_files)
        remove_run_outputs(folder)  # what the trainer does when the new run starts writing
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    assert left == sorted([LOCK_NAME, "eval", "eval/metrics.json", "notes.txt"])
    check_run_outputs(folder, resume=False, overwrite=False)  # free to start again
