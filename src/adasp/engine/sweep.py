"""Parameter sweeps: every combination of a grid of config values, each a normal run.

``adasp sweep --config C --grid loss.temperature=0.01,0.02,0.04 --output DIR`` trains one run
per value in ``DIR/<key>=<value>/``. Finished runs (with ``metrics.json``) are skipped and
interrupted ones resumed, so re-running the same command completes a sweep. The metrics of all
runs are collected into ``DIR/results.csv`` and ``DIR/results.md``. A ``train.seed`` axis
(``--seeds N``, see :func:`seed_axis`) repeats every combination with N seeds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adasp.engine.config import load_config, resolve_config_path
from adasp.engine.run_folder import RunFolder
from adasp.engine.typed_config import ConfigError
from adasp.errors import UserInputError
from adasp.evaluation.results import METRIC_NAMES
from adasp.evaluation.seed_statistics import SEED_KEY
from adasp.utils.atomic import atomic_write_json, atomic_write_text
from adasp.utils.json_files import read_json_object
from adasp.utils.tables import format_table

MANIFEST = "sweep.json"
#: What to do about a torn manifest: the runs' folders keep their results.
_MANIFEST_FIX = (
    "delete it and run the same adasp sweep command again (it writes the manifest again and "
    "keeps the finished runs)"
)
#: Longest run folder name; longer ones end in a hash of the full name instead.
MAX_NAME = 150


class RunInterrupted(UserInputError):
    """A sweep's run process stopped without a result for a reason other than bad input."""


@dataclass(frozen=True)
class GridAxis:
    """One swept config key and its values (as written, parsed like overrides).

    A linked axis sets several keys together: ``loss.name+loss.weight=triplet+1.0,adasp+0.1``
    gives two runs, one per ``+``-joined value tuple (e.g. to pair each loss with its weight).
    """

    key: str
    values: tuple[str, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.key.split("+"))

    def overrides(self, value: str) -> list[str]:
        """The ``key=value`` overrides that set this axis to ``value``."""
        parts = value.split("+") if len(self.keys) > 1 else [value]
        return [f"{k}={v}" for k, v in zip(self.keys, parts, strict=True)]


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so ``[128,64],[256,128]`` gives two values."""
    parts: list[str] = []
    depth, current = 0, list[str]()
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def parse_grid(spec: str) -> GridAxis:
    """``key=v1,v2,...`` as a :class:`GridAxis`."""
    key, sep, values = spec.partition("=")
    items = _split_values(values) if sep else []
    if not sep or not key.strip() or not all(items):
        raise ConfigError(
            f"--grid {spec!r} is not of the form key=v1,v2,... (e.g. loss.temperature=0.02,0.04)"
        )
    if len(set(items)) != len(items):
        raise ConfigError(f"--grid {spec!r} repeats a value")
    axis = GridAxis(key.strip(), tuple(items))
    if len(axis.keys) > 1:
        bad = [v for v in items if len(v.split("+")) != len(axis.keys)]
        if bad or not all(axis.keys):
            raise ConfigError(
                f"--grid {spec!r}: a linked axis of {len(axis.keys)} keys needs values of "
                f"{len(axis.keys)} '+'-joined parts (e.g. loss.name+loss.weight=triplet+1.0,adasp+0.1)"
            )
    return axis


def _digest(configs: Sequence[Any], without_seed: bool) -> str:
    """A short hash of the runs' resolved configs (seeds removed and duplicates merged when
    ``without_seed``)."""
    resolved = []
    for config in configs:
        values = config.to_dict()
        if without_seed:
            values["train"].pop("seed", None)
        if not without_seed or values not in resolved:
            resolved.append(values)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]


def _adds_seeds(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    """Whether grid ``new`` is grid ``old`` with more values appended to its seed axis (the
    runs already in the folder keep their names, so the sweep grows in place)."""
    if [a["key"] for a in old] != [a["key"] for a in new]:
        return False
    for before, after in zip(old, new, strict=True):
        if before["values"] == after["values"]:
            continue
        grown = after["values"][: len(before["values"])] == before["values"]
        if before["key"] != SEED_KEY or not grown:
            return False
    return True


#: The most seeds ``adasp sweep --seeds`` takes.
MAX_SEEDS = 1000


def seed_axis(count: int) -> GridAxis:
    """The axis ``train.seed=0,1,...,count-1`` of ``adasp sweep --seeds count``.

    ``adasp report`` aggregates over it: mean ± std per cell of the other axes, and paired
    differences against a baseline cell (:mod:`adasp.evaluation.seed_statistics`).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserInputError(f"--seeds must be a positive integer (e.g. 3), got {count!r}")
    if count > MAX_SEEDS:
        # Each seed is a training run per cell: a larger count is a typo, not a plan.
        raise UserInputError(
            f"--seeds {count} asks for {count} training runs per combination; at most "
            f"{MAX_SEEDS} (3 to 10 is usual)"
        )
    return GridAxis(SEED_KEY, tuple(str(seed) for seed in range(count)))


@dataclass(frozen=True)
class SweepRun:
    """One combination: its folder name, each axis's value, and the overrides that make it."""

    name: str
    assignment: tuple[tuple[str, str], ...]  # (axis key, value as written)
    overrides: tuple[str, ...]


def _folder_name(assignment: Sequence[tuple[str, str]]) -> str:
    text = ",".join(f"{k}={v}" for k, v in assignment)
    name = "".join(c if c.isalnum() or c in "=,.-_+" else "_" for c in text)
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 17]}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return name


def expand_grid(axes: Sequence[GridAxis]) -> list[SweepRun]:
    """Every combination of the axes' values, in grid order."""
    keys = [k for a in axes for k in a.keys]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"a key appears in two --grid options: {keys}")
    runs = []
    for values in itertools.product(*(a.values for a in axes)):
        assignment = tuple((a.key, v) for a, v in zip(axes, values, strict=True))
        overrides = tuple(o for a, v in zip(axes, values, strict=True) for o in a.overrides(v))
        runs.append(SweepRun(_folder_name(assignment), assignment, overrides))
    names = [r.name for r in runs]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise ConfigError(
            f"two grid values give the same run folder {clash!r} (characters other than letters, "
            "digits and =,.-_+ become '_'); make the values differ in those characters"
        )
    return runs


class Sweep:
    """A sweep over ``axes`` of the config ``config`` (with ``overrides``) into ``output``.

    Args:
        config: preset name or YAML path.
        axes: the grid.
        output: the sweep folder.
        overrides: applied to every run before its grid values.
        device: passed to every run.
        processes: run each combination as its own ``adasp train`` process (logs in
            ``<run>/train.log``) instead of in this process.
        jobs: with ``processes``, how many runs at once (devices assigned round-robin).
        devices: devices for process runs, e.g. ``["cuda:0", "cuda:1"]``.
        retry_failed: run again the runs that failed before (``<run>/failed.json``); by
            default they are skipped, since runs are deterministic and would fail again.

    A run that fails (bad data, a diverging loss) is recorded in ``<run>/failed.json`` and
    the sweep goes on with the others; :meth:`run` then reports the failures. A run process
    that is killed or crashes is reported in :attr:`interrupted` and resumed next time.
    """

    def __init__(
        self,
        config: str,
        axes: Sequence[GridAxis],
        output: str | Path,
        overrides: Sequence[str] = (),
        device: str = "auto",
        processes: bool = False,
        jobs: int = 1,
        devices: Sequence[str] = (),
        retry_failed: bool = False,
        progress: bool = True,
    ) -> None:
        if not axes:
            raise ConfigError("a sweep needs at least one --grid key=v1,v2,... or --seeds N")
        if jobs < 1:
            raise UserInputError(f"--jobs must be >= 1, got {jobs}")
        self.config_path = str(resolve_config_path(config))
        self.axes = list(axes)
        self.output = Path(output).expanduser()
        self.overrides = list(overrides)
        self.device = device
        self.processes = processes
        self.jobs = jobs
        self.devices = list(devices) or [device]
        self.retry_failed = retry_failed
        self.progress = progress  # bars of in-process runs (process runs log to files)
        #: Process runs that stopped without a result this time (killed, crashed): not
        #: recorded as failed, so that the next invocation resumes them.
        self.interrupted: dict[str, str] = {}
        self.runs = expand_grid(self.axes)
        if any(a.key == SEED_KEY for a in self.axes) and any(
            o.partition("=")[0].strip() == SEED_KEY for o in self.overrides
        ):
            # The grid's value would silently win over the override.
            raise ConfigError(
                f"{SEED_KEY} is both an override and a sweep axis (--seeds or --grid); drop "
                "the override"
            )
        # Validate every combination before anything runs.
        configs = []
        for run in self.runs:
            try:
                configs.append(load_config(self.config_path, [*self.overrides, *run.overrides]))
            except ConfigError as error:
                raise ConfigError(f"sweep run {run.name}: {error}") from None
        # What the runs compute: a preset edited between two invocations is detected. The
        # seed is left out, so that adding seeds to a sweep keeps its digest.
        self.config_digest = _digest(configs, without_seed=True)
        self._digest_with_seeds = _digest(configs, without_seed=False)  # sweeps before 0.2

    def manifest(self) -> dict[str, Any]:
        return {
            "config": self.config_path,
            "config_digest": self.config_digest,
            "overrides": self.overrides,
            "grid": [{"key": a.key, "values": list(a.values)} for a in self.axes],
            "runs": [
                {"name": r.name, "values": dict(r.assignment), "overrides": list(r.overrides)}
                for r in self.runs
            ],
        }

    def _write_manifest(self) -> None:
        path = self.output / MANIFEST
        manifest = self.manifest()
        if path.exists():
            old = read_json_object(path, _MANIFEST_FIX)
            keys = ("overrides", "grid")
            # The same preset may sit elsewhere now (a moved venv, presets moved into the
            # package); the digest below tells whether its content changed.
            same_config = old.get("config") == manifest["config"] or (
                Path(str(old.get("config"))).name == Path(manifest["config"]).name
                and "config_digest" in old
            )
            same = {k: old.get(k) for k in keys} == {k: manifest[k] for k in keys}
            if not same_config or not (same or _adds_seeds(old["grid"], manifest["grid"])):
                raise UserInputError(
                    f"{self.output} holds a different sweep ({path}); use another --output or "
                    "the same --config, overrides and --grid options (only more seeds may be "
                    "added: --seeds N with a larger N)"
                )
            digest = old.get("config_digest", self.config_digest)
            if digest not in (self.config_digest, self._digest_with_seeds):
                raise UserInputError(
                    f"the preset {self.config_path} (or a preset it inherits) changed since the "
                    f"sweep in {self.output} started, so its runs would mix two configurations; "
                    "restore it, or start a new sweep in another --output"
                )
        atomic_write_json(path, manifest)

    def status(self) -> dict[str, str]:
        """``done``, ``failed``, ``partial`` (a checkpoint, no metrics) or ``todo`` per run."""
        out = {}
        for run in self.runs:
            folder = RunFolder(self.output / run.name)
            if folder.is_finished():
                out[run.name] = "done"
            elif folder.failed.exists():
                out[run.name] = "failed"
            elif folder.has_checkpoint():
                out[run.name] = "partial"
            else:
                out[run.name] = "todo"
        return out

    def run(self) -> list[dict[str, Any]]:
        """Run every unfinished combination, then collect and return the results."""
        self.output.mkdir(parents=True, exist_ok=True)
        self._write_manifest()
        status = self.status()
        skip = {"done"} if self.retry_failed else {"done", "failed"}
        pending = [r for r in self.runs if status[r.name] not in skip]
        counts = {s: list(status.values()).count(s) for s in ("done", "failed")}
        print(
            f"sweep {self.output}: {len(self.runs)} runs, {counts['done']} done, "
            f"{counts['failed']} failed before, {len(pending)} to run",
            file=sys.stderr,
        )
        if self.processes:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                futures = [
                    pool.submit(self._attempt, run, self.devices[i % len(self.devices)])
                    for i, run in enumerate(pending)
                ]
                for future in futures:
                    future.result()
        else:
            for run in pending:
                self._attempt(run, self.device)
        return collect_results(self.output)

    def failures(self) -> dict[str, str]:
        """Run name -> the recorded error of every failed run."""
        out = {}
        for run in self.runs:
            path = RunFolder(self.output / run.name).failed
            if path.exists():
                record = read_json_object(path, "delete it and run the sweep with --retry-failed")
                out[run.name] = str(record.get("error", "unknown error"))
        return out

    def _attempt(self, run: SweepRun, device: str) -> None:
        folder = self.output / run.name
        RunFolder(folder).failed.unlink(missing_ok=True)
        try:
            if self.processes:
                self._run_process(run, device)
            else:
                self._run_in_process(run)
        except RunInterrupted as error:
            print(f"sweep: {error}", file=sys.stderr)
            self.interrupted[run.name] = str(error)
        except UserInputError as error:
            print(f"sweep: run {run.name} failed: {error}", file=sys.stderr)
            atomic_write_json(RunFolder(folder).failed, {"run": run.name, "error": str(error)})

    def _run_in_process(self, run: SweepRun) -> None:
        from adasp.engine.trainer import Trainer

        print(f"sweep: training {run.name}", file=sys.stderr)
        config = load_config(self.config_path, [*self.overrides, *run.overrides])
        Trainer.from_config(
            config, self.output / run.name, device=self.device, resume=True, progress=self.progress
        ).fit()

    def _run_process(self, run: SweepRun, device: str) -> None:
        folder = self.output / run.name
        folder.mkdir(parents=True, exist_ok=True)
        from adasp.plugins import loaded_plugins

        # Child processes register what this one's plugins registered.
        plugins = [arg for module in loaded_plugins() for arg in ("--plugin", module)]
        command = [
            sys.executable, "-m", "adasp", *plugins, "train", "--config", self.config_path,
            "--output", str(folder), "--resume", "--no-progress", "--device", device,
            *self.overrides, *run.overrides,
        ]  # fmt: skip
        log_path = RunFolder(folder).process_output
        print(f"sweep: training {run.name} on {device} (log: {log_path})", file=sys.stderr)
        with log_path.open("a", encoding="utf-8") as log:
            code = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, check=False
            ).returncode
        if code == 2:  # adasp's exit status for bad input: it would fail the same way again
            raise UserInputError(f"sweep run {run.name} failed (exit {code}); see {log_path}")
        if code != 0:
            # Killed, interrupted or crashed: not recorded, so the next invocation resumes it.
            raise RunInterrupted(
                f"sweep run {run.name} stopped (exit {code}); see {log_path}; "
                "run the sweep again to resume it"
            )


def extra_metric_columns(metrics: dict[str, Any]) -> dict[str, float]:
    """Columns for the flat numeric sections callbacks add to ``metrics.json`` (e.g. the
    harmful-pair monitor's ``harmful_pairs: {sp-h: 0.1, ...}`` gives ``harmful_pairs/sp-h``);
    counts (``batches``) are left out."""
    out: dict[str, float] = {}
    for section, values in metrics.items():
        if section == "test_sets" or not isinstance(values, dict):
            continue
        if all(isinstance(v, (int, float)) for v in values.values()):
            out.update({f"{section}/{k}": v for k, v in values.items() if k != "batches"})
    return out


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserInputError(f"{folder} is not a sweep folder: {path} not found (run adasp sweep)")
    return read_json_object(path, _MANIFEST_FIX)


def collect_results(folder: str | Path) -> list[dict[str, Any]]:
    """One row per finished run: its grid values and metrics; writes results.csv/.md."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    keys = [axis["key"] for axis in manifest["grid"]]
    rows = []
    for run in manifest["runs"]:
        metrics_path = RunFolder(folder / run["name"]).metrics
        if not metrics_path.exists():
            continue
        metrics = read_json_object(
            metrics_path,
            f"delete the run folder {metrics_path.parent} and run the sweep again to redo that run",
        )
        row: dict[str, Any] = {"run": run["name"]}
        row.update(run["values"])
        row.update({m: metrics.get(m) for m in METRIC_NAMES})
        row.update(extra_metric_columns(metrics))
        rows.append(row)
    columns = ["run", *keys, *METRIC_NAMES]
    extra = sorted({k for r in rows for k in r} - set(columns))
    columns += extra
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "results.csv", buffer.getvalue())
    table_rows = [
        [r.get(k, "") for k in keys]
        + [100 * r[m] if isinstance(r.get(m), float) else "" for m in METRIC_NAMES]
        + [r.get(k, "") for k in extra]
        for r in rows
    ]
    table = format_table([*keys, *METRIC_NAMES, *extra], table_rows, precision=2, markdown=True)
    atomic_write_text(
        folder / "results.md",
        f"# Sweep results ({len(rows)} of {len(manifest['runs'])} runs finished)\n\n"
        f"Config: `{manifest['config']}`; metrics in percent.\n\n{table}\n",
    )
    return rows
