"""Run folders: every file name of a run, one writer at a time, finished runs kept, output
locations checked up front.

- :class:`RunFolder` — the one owner of a run folder's file names (config, checkpoints, model
  files, metrics, log, TensorBoard, lock) and of its claim: the trainer, the sweep, the
  callbacks and the CLI ask it for paths and name no file themselves.
- :class:`RunFolderLock` — an exclusive OS lock (``fcntl.flock``) on ``RUN/.adasp.lock``,
  held by the one process that writes the folder. The kernel releases it when the process
  dies, so a SIGKILLed run never leaves a stale lock; the file records who holds it, for the
  message the next writer gets.
- :func:`check_run_outputs` — a folder holding a run's outputs is refused unless the user
  resumes it or asks to overwrite it.
- :func:`prepare_output_dir`, :func:`check_output_file` — every command checks that it can
  write where it was told to before it does any work.

Over 500 lines on purpose: the names of a run's files and every rule about who may write them
(lock, finished-run protection, ``--overwrite``'s set-aside, other commands' outputs) live in
one module, so that a name and the checks on it cannot drift apart.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from adasp.engine.distributed import DistributedContext, broadcast_object
from adasp.errors import UserInputError

#: The lock file inside a run folder.
LOCK_NAME = ".adasp.lock"
CONFIG_NAME = "config.yaml"
MODEL_NAME = "model.pt"
METRICS_NAME = "metrics.json"
LOG_NAME = "log.jsonl"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT_NAME = "last.pt"
BEST_MODEL_NAME = "best.pt"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
#: A sweep run that failed holds this file (its error).
FAILED_NAME = "failed.json"
PROCESS_OUTPUT_NAME = "train.log"

#: Files whose presence marks a folder as holding a run.
RUN_OUTPUTS = (MODEL_NAME, METRICS_NAME, CONFIG_NAME, LOG_NAME)

#: What ``--overwrite`` removes besides :data:`RUN_OUTPUTS` (and the variant model files).
RUN_FOLDERS = (CHECKPOINTS_DIR, TENSORBOARD_DIR)


class RunFolderBusy(UserInputError):
    """Another process is writing the run folder."""


def _problem(error: OSError) -> str:
    if error.errno == errno.EROFS:
        return "it is on a read-only file system"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    return error.strerror or str(error)


def missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first (what creating
    ``path`` would create)."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _first_existing(path: Path) -> Path:
    missing = missing_folders(path)
    found = missing[-1].parent if missing else path
    return found if found.exists() else Path("/")  # a relative path under a deleted cwd


def prepare_output_dir(
    path: str | os.PathLike, what: str = "--output", option: str | None = None
) -> Path:
    """Create the output folder ``path`` if needed and check that files can be written in it.

    Raises:
        UserInputError: one line naming the path and the problem (it is a file, it lies under
            a file, it is on a read-only file system, permission denied).
    """
    folder = Path(path).expanduser()
    existing = _first_existing(folder)
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under {existing}, which is a file"
        fix = f"choose another {option}" if option else f"choose a folder path for {what}"
        raise UserInputError(f"{what} {folder} {where}; {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            import tempfile

            probe = stack.enter_context(tempfile.TemporaryFile(dir=folder))
            probe.write(b"x")
    except OSError as error:
        raise UserInputError(
            f"cannot write into {what} {folder}: {_problem(error)}; choose another {option or what}"
        ) from None
    return folder


def check_output_file(path: str | os.PathLike, what: str = "--output") -> Path:
    """Check that the file ``path`` can be written (its folder is created if needed), before any
    work is done. An existing file is allowed (it is replaced atomically at the end).

    Raises:
        UserInputError: ``path`` is a folder, or its folder cannot be written.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise UserInputError(f"{what} {target} is a folder; give a file path for {what}")
    prepare_output_dir(target.parent, what=f"the folder of {what}", option=what)
    return target


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is (or was being made) a training run folder."""
    folder = Path(path)
    return (folder / LOCK_NAME).exists() or any(
        (folder / name).exists() for name in (*RUN_OUTPUTS, *RUN_FOLDERS)
    )


class RunFolderLock:
    """An exclusive lock on a run folder, for ``with`` or :meth:`acquire`/:meth:`release`.

    Args:
        folder: the run folder (created if missing).
        enabled: False makes every call a no-op (DDP ranks other than 0).

    Raises:
        RunFolderBusy: on :meth:`acquire`, when another live process holds the folder; the
            message names it and when it started.
    """

    def __init__(self, folder: str | os.PathLike, enabled: bool = True) -> None:
        self.folder = Path(folder).expanduser()
        self.enabled = enabled
        self._fd: int | None = None
        self._created: list[Path] = []  # the folders acquire() created, deepest first
        self._created_lock_file = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunFolderLock:
        if not self.enabled or self._fd is not None:
            return self
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one writer is the user's responsibility
            return self
        created = missing_folders(self.folder)
        prepare_output_dir(self.folder)
        self._created = created or self._created
        path = self.folder / LOCK_NAME
        created_lock_file = not path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a folder by that name, another user's file...
            problem = "it is a folder" if error.errno == errno.EISDIR else _problem(error)
            raise UserInputError(
                f"cannot open the lock file {path} of {self.folder}: {problem}; remove it, "
                "or choose another --output"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").split()
            os.close(fd)
            pid = holder[0] if holder else "?"
            started = " ".join(holder[1:]) if len(holder) > 1 else "an unknown time"
            raise RunFolderBusy(
                f"{self.folder} is in use by process {pid} (started at {started}); wait for it "
                "or choose another --output"
            ) from None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {stamp}\n".encode(), 0)
        self._fd = fd
        self._created_lock_file = created_lock_file
        return self

    def release(self, discard: bool = False) -> None:
        """Unlock the folder. ``discard`` (a run that failed to start) also removes the lock
        file and the folders :meth:`acquire` created, while they hold nothing else, so that a
        failed start leaves nothing behind; a folder that existed before is kept as it was."""
        if discard and self._created_lock_file:
            with contextlib.suppress(OSError):  # removed while still locked: no one holds it
                (self.folder / LOCK_NAME).unlink()
            for folder in self._created:
                with contextlib.suppress(OSError):  # not empty (or gone): keep it
                    folder.rmdir()
            self._created, self._created_lock_file = [], False
        if self._fd is None:
            return
        import fcntl

        # The file stays: removing it would let a third process lock a new inode while a
        # second one still waits on the old.
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def lock_if_run_folder(folder: str | os.PathLike, enabled: bool = True) -> RunFolderLock:
    """A held :class:`RunFolderLock` on ``folder`` if it is a run folder, else a no-op lock
    (commands that write a file into any folder lock it only when a run lives there)."""
    return RunFolderLock(folder, enabled=enabled and is_run_folder(folder)).acquire()


def check_run_outputs(folder: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run in a folder that already holds one, unless told what to do.

    With ``overwrite`` nothing is refused; the caller removes the previous run with
    :func:`remove_run_outputs` when the new one starts writing.

    Raises:
        UserInputError: the folder holds run outputs and neither ``resume`` nor ``overwrite``
            is set; or ``resume`` is set but only the outputs of a finished run remain (its
            ``checkpoints/`` was deleted), so there is nothing to continue from.
    """
    folder = Path(folder).expanduser()
    found = [name for name in RUN_OUTPUTS if (folder / name).exists()]
    checkpoint = RunFolder(folder).checkpoint
    if overwrite:
        return  # the caller removes the old run (remove_run_outputs) when it starts writing
    if resume:
        finished = {"model.pt", "metrics.json"} & set(found)
        if finished and not checkpoint.exists():
            raise UserInputError(
                f"{folder} holds a finished run ({', '.join(sorted(finished))}) but no "
                f"{checkpoint.relative_to(folder)} to resume from; choose another --output, or "
                "pass --overwrite to train it again from the start"
            )
        return
    if (folder / PREVIOUS_RUN).exists():
        found.append(PREVIOUS_RUN)  # a run an interrupted --overwrite set aside
    if found or checkpoint.exists():
        names = found + ([str(checkpoint.relative_to(folder))] if checkpoint.exists() else [])
        raise UserInputError(
            f"{folder} already holds a run ({', '.join(names)}); pass --resume to continue it, "
            "or choose another --output (--overwrite replaces it)"
        )


#: Where ``--overwrite`` keeps the previous run until the new one has written its first
#: checkpoint (inside the run folder, so that the moves are renames on one file system).
PREVIOUS_RUN = ".adasp-previous-run"


def set_aside_run_outputs(folder: str | os.PathLike, enabled: bool = True) -> None:
    """For ``--overwrite``: move the previous run's outputs into ``RUN/.adasp-previous-run``
    instead of deleting them; :func:`discard_set_aside_run` deletes them once the new run has
    written its first checkpoint, :func:`restore_set_aside_run` puts them back if it fails
    before that. Call it holding the folder's lock.

    A set-aside run left by a killed ``--overwrite`` is the last complete run: it is kept, and
    what the killed run wrote since is removed instead.
    """
    if not enabled:
        return
    folder = Path(folder).expanduser()
    aside = folder / PREVIOUS_RUN
    if aside.exists():
        remove_run_outputs(folder)
        return
    names = [name for name in (*RUN_OUTPUTS, *RUN_FOLDERS) if (folder / name).exists()]
    if not names:
        return
    try:
        aside.mkdir()
        for name in names:
            os.replace(folder / name, aside / name)
    except OSError as error:
        raise UserInputError(
            f"--overwrite could not move the previous run's {error.filename} aside: "
            f"{_problem(error)}; remove it yourself or choose another --output"
        ) from None


def discard_set_aside_run(folder: str | os.PathLike, enabled: bool = True) -> None:
    """Delete the run :func:`set_aside_run_outputs` kept (the new run has a checkpoint now)."""
    aside = Path(folder).expanduser() / PREVIOUS_RUN
    if enabled and aside.exists():
        shutil.rmtree(aside, ignore_errors=True)


def restore_set_aside_run(folder: str | os.PathLike, enabled: bool = True) -> None:
    """Put back the run :func:`set_aside_run_outputs` kept, removing what the new run wrote
    before failing (a no-op once the new run has written its first checkpoint)."""
    folder = Path(folder).expanduser()
    aside = folder / PREVIOUS_RUN
    if not (enabled and aside.exists()):
        return
    remove_run_outputs(folder)
    for path in aside.iterdir():
        os.replace(path, folder / path.name)
    aside.rmdir()


def remove_run_outputs(folder: str | os.PathLike) -> None:
    """Remove a run's outputs (:data:`RUN_OUTPUTS`, :data:`RUN_FOLDERS`) from ``folder``, for
    ``--overwrite``; other files stay. Call it holding the folder's lock."""
    folder = Path(folder).expanduser()
    try:
        for name in RUN_OUTPUTS:
            (folder / name).unlink(missing_ok=True)
        for variant in RunFolder(folder).variant_models():
            variant.unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            if (folder / name).exists():
                shutil.rmtree(folder / name)
    except OSError as error:
        raise UserInputError(
            f"--overwrite could not remove the previous run's {error.filename}: {_problem(error)}; "
            "remove it yourself or choose another --output"
        ) from None


#: What a training run writes in its folder (besides TensorBoard and the lock): the files and
#: folders that mark a folder as holding one.
TRAINING_RUN_MARKS = ("config.yaml", "log.jsonl", "model.pt", "checkpoints")

#: Names inside a training run folder that belong to the run: no other command writes them.
RUN_RESERVED_NAMES = (*RUN_OUTPUTS, *RUN_FOLDERS, LOCK_NAME)


def holds_training_run(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds (or held the start of) a training run, as opposed to, e.g.,
    the ``metrics.json`` of an ``adasp evaluate`` output folder."""
    return any((Path(folder) / name).exists() for name in TRAINING_RUN_MARKS)


def check_not_run_files(
    path: str | os.PathLike, what: str = "--output", *, folder: bool = False
) -> None:
    """Refuse an output that is one of a training run's own files (``model.pt``,
    ``checkpoints/last.pt``, ``metrics.json``...), lies in one of its reserved folders, or,
    with ``folder``, is the run folder itself (a command writing its ``metrics.json`` there).

    A run's files belong to its run: written over, the run can no longer be resumed or read.
    Other files beside them (``runs/r/model.onnx``) are fine.

    Raises:
        UserInputError: one line naming the run and where to write instead.
    """
    target = Path(path).expanduser().absolute()
    for candidate in (target, *target.parents):
        if not holds_training_run(candidate):
            continue
        if candidate == target:
            if not folder:
                break  # a file path that is a folder: check_output_file says so
            raise UserInputError(
                f"{what} {target} holds a training run, and its files (metrics.json...) belong "
                f"to it; write elsewhere, e.g. {what} {target / 'eval'}"
            )
        first = target.relative_to(candidate).parts[0]
        if first in RUN_RESERVED_NAMES:
            instead = candidate / ("eval" if folder else f"exports/{target.name}")
            raise UserInputError(
                f"{what} {target} is the run's {first} in {candidate}, and a run's files belong "
                f"to it; write elsewhere, e.g. {what} {instead}"
            )
        break


class RunFolder:
    """The files of one run folder: every name a run writes is here, and nowhere else.

    Args:
        path: the run folder.

    Example:
        >>> run = RunFolder("runs/q")
        >>> run.checkpoint, run.model, run.model_variant("ema")
        (PosixPath('runs/q/checkpoints/last.pt'), PosixPath('runs/q/model.pt'), \
PosixPath('runs/q/model_ema.pt'))
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config(self) -> Path:
        """The resolved config (YAML)."""
        return self.path / CONFIG_NAME

    @property
    def checkpoint(self) -> Path:
        """Everything needed to resume (model, optimiser, RNG, callbacks...)."""
        return self.path / CHECKPOINTS_DIR / LAST_CHECKPOINT_NAME

    @property
    def model(self) -> Path:
        """The final model file (weights and config)."""
        return self.path / MODEL_NAME

    def model_variant(self, name: str) -> Path:
        """A model file saved beside :attr:`model` (e.g. ``"ema"``: ``model_ema.pt``)."""
        return self.path / f"{Path(MODEL_NAME).stem}_{name}{Path(MODEL_NAME).suffix}"

    def variant_models(self) -> list[Path]:
        """The variant model files present (:meth:`model_variant`) and ``best.pt``."""
        stem, suffix = Path(MODEL_NAME).stem, Path(MODEL_NAME).suffix
        found = sorted(self.path.glob(f"{stem}_*{suffix}")) if self.path.is_dir() else []
        return [*found, self.best_model]

    @property
    def best_model(self) -> Path:
        """The model file of the best evaluation (keep-best callback)."""
        return self.path / BEST_MODEL_NAME

    @property
    def metrics(self) -> Path:
        """The final metrics; written last, so its presence marks a finished run."""
        return self.path / METRICS_NAME

    @property
    def log(self) -> Path:
        """JSON lines, one event each."""
        return self.path / LOG_NAME

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def mlflow(self) -> Path:
        """The default local MLflow store of the run."""
        return self.path / MLFLOW_DIR

    @property
    def lock(self) -> Path:
        return self.path / LOCK_NAME

    @property
    def failed(self) -> Path:
        """Written by a sweep when the run failed (its message)."""
        return self.path / FAILED_NAME

    @property
    def process_output(self) -> Path:
        """A run's stdout and stderr when a sweep trains it in a child process."""
        return self.path / PROCESS_OUTPUT_NAME

    def start(self, config: Any | None, *, replace: bool) -> None:
        """Make the folder ready for a run that starts writing: the previous run removed when
        ``replace`` (``--overwrite``), the folder created, the resolved config written."""
        if replace:
            set_aside_run_outputs(self.path)  # removed at the new run's first checkpoint
        self.path.mkdir(parents=True, exist_ok=True)
        if config is not None:
            from adasp.engine.config import save_config

            save_config(config, self.config)

    def present(self) -> list[str]:
        """The run outputs present, by name (folders end in ``/``)."""
        names = [
            *(n for n in (METRICS_NAME, MODEL_NAME) if (self.path / n).exists()),
            *(p.name for p in self.variant_models() if p.exists()),
            *(f"{n}/" for n in (CHECKPOINTS_DIR,) if (self.path / n).exists()),
            *(n for n in (LOG_NAME,) if (self.path / n).exists()),
            *(f"{n}/" for n in (TENSORBOARD_DIR, MLFLOW_DIR) if (self.path / n).exists()),
        ]
        return names

    def is_finished(self) -> bool:
        return self.metrics.exists()

    def has_checkpoint(self) -> bool:
        return self.checkpoint.exists()

    def check_outputs(self, *, resume: bool, overwrite: bool) -> None:
        """:func:`check_run_outputs` for this folder."""
        check_run_outputs(self.path, resume=resume, overwrite=overwrite)

    def remove_outputs(self) -> None:
        """:func:`remove_run_outputs` for this folder (hold its lock)."""
        remove_run_outputs(self.path)

    def discard_set_aside(self, enabled: bool = True) -> None:
        """:func:`discard_set_aside_run` for this folder (the new run checkpointed)."""
        discard_set_aside_run(self.path, enabled)

    def restore_set_aside(self, enabled: bool = True) -> None:
        """:func:`restore_set_aside_run` for this folder (the new run failed before that)."""
        restore_set_aside_run(self.path, enabled)

    def claim(self, ctx: DistributedContext, *, resume: bool, overwrite: bool) -> RunFolderLock:
        """Lock the folder for this run (rank 0 holds the lock for the whole group) and check
        that it may be written (:func:`check_run_outputs`), on every rank.

        Raises:
            UserInputError: the folder is busy, unwritable, or holds a run not to be replaced.
        """
        if resume and overwrite:
            raise UserInputError("--resume continues a run and --overwrite replaces it; pass one")
        lock = RunFolderLock(self.path, enabled=ctx.is_main)
        error: UserInputError | None = None
        if ctx.is_main:
            try:
                lock.acquire()
                self.check_outputs(resume=resume, overwrite=overwrite)
            except BaseException as caught:
                lock.release()
                if isinstance(caught, OSError):
                    caught = UserInputError(f"cannot use {self.path} as a run folder: {caught}")
                elif not isinstance(caught, UserInputError):
                    raise
                error = caught
        message = broadcast_object(str(error) if error is not None else None, ctx)
        if error is not None:
            raise error
        if message is not None:
            raise UserInputError(message)
        return lock
