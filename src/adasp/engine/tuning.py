"""Tuning with the same budget for every method: select on one seed, then confirm over fresh seeds.

A fair comparison of methods (losses, say) gives each the same number of tries at its
hyper-parameters, chooses on validation data, and only then spends seeds on the chosen recipe.
``adasp sweep --group loss.name=none,adasp,triplet --grid loss.weight=0.1,1.0
--grid-for adasp:loss.temperature=0.04,0.08 --select-by mAP --seeds 3 --output DIR`` does so:

1. **Selection.** For each group value ``g`` (a method), every cell of the grid ``A_g`` — the
   shared ``--grid`` axes times ``g``'s own ``--grid-for g:...`` axes — trains once with
   ``train.seed = 0`` into ``DIR/<g>/selection/`` (an ordinary sweep). An axis that changes
   nothing that ``g``'s runs compute (``loss.weight`` when ``loss.name=none``) is dropped
   for ``g`` rather than trained twice; the summary names it. The winner is

       c*_g = argmax_{c in A_g} metric(c, seed 0)          (first in grid order on ties)

   evaluated on the config's test sets, which for tuning must be the *validation* split.
2. **Confirmation.** ``c*_g`` trains with seeds ``1..N`` into ``DIR/<g>/seeds/``. Seed 0 is not
   reused: it is the seed ``c*_g`` won on, so its value is biased upward by the selection
   (the winner's curse) and would inflate ``g``'s mean by ``1/N`` of that bias.

The budget of a group is ``|A_g|`` (after dropping inert axes); ``tuning.json`` records it,
the rule, every cell's value and the winners. Groups with unequal budgets are reported as such.
Everything is resumable: each phase is a sweep, so running the same command again completes it.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adasp.engine.config import effective_config, load_config
from adasp.engine.run_folder import RunFolder
from adasp.engine.sweep import GridAxis, Sweep, expand_grid, parse_grid
from adasp.engine.typed_config import ConfigError
from adasp.errors import UserInputError
from adasp.evaluation.results import METRIC_NAMES
from adasp.evaluation.seed_statistics import SEED_KEY
from adasp.evaluation.tuning_report import GroupSelection, SelectionCell, TuningSummary
from adasp.utils.atomic import atomic_write_json
from adasp.utils.json_files import read_json_object

#: The tuning's own manifest (beside the groups' sweep folders).
TUNING_MANIFEST = "tuning.json"
#: The seed every selection run uses.
SELECTION_SEED = 0


def parse_group_axes(specs: Sequence[str], groups: GridAxis) -> dict[str, list[GridAxis]]:
    """``["VALUE:key=v1,v2", ...]`` (``--grid-for``) as the extra axes of each group value.

    Raises:
        ConfigError: an item without ``VALUE:``, or naming a value the group axis lacks.
    """
    out: dict[str, list[GridAxis]] = {value: [] for value in groups.values}
    for spec in specs:
        value, sep, axis = spec.partition(":")
        if not sep or "=" in value:
            raise ConfigError(
                f"--grid-for {spec!r} is not of the form GROUP:key=v1,v2 (e.g. "
                "adasp:loss.temperature=0.04,0.08)"
            )
        if value not in out:
            raise ConfigError(
                f"--grid-for {spec!r}: {value!r} is not a value of --group {groups.key} "
                f"(values: {', '.join(groups.values)})"
            )
        out[value].append(parse_grid(axis))
    return out


@dataclass(frozen=True)
class GroupPlan:
    """One group's part of a tuning: its overrides, the axes it is tuned over (inert axes
    dropped) and the folder names of its two phases."""

    value: str
    folder: str
    overrides: tuple[str, ...]
    axes: tuple[GridAxis, ...]
    dropped: tuple[str, ...]

    @property
    def budget(self) -> int:
        """Selection runs: the number of cells of the group's grid."""
        return math.prod(len(a.values) for a in self.axes)


def _resolved(config: str, overrides: Sequence[str]) -> str:
    """What a run computes, as text (keys the run ignores left out)."""
    return json.dumps(effective_config(load_config(config, list(overrides))), sort_keys=True)


def _inert_axes(config: str, base: Sequence[str], axes: Sequence[GridAxis]) -> list[str]:
    """The keys of the axes whose values give the same resolved config in every cell."""
    inert = []
    for index, axis in enumerate(axes):
        others = [a for i, a in enumerate(axes) if i != index]
        same = True
        for other_values in itertools.product(*(a.values for a in others)):
            rest = [o for a, v in zip(others, other_values, strict=True) for o in a.overrides(v)]
            configs = {_resolved(config, [*base, *rest, *axis.overrides(v)]) for v in axis.values}
            if len(configs) > 1:
                same = False
                break
        if same:
            inert.append(axis.key)
    return inert


class Tuning:
    """Select each group's best grid cell on seed 0, then train it over seeds ``1..seeds``.

    Args:
        config: preset name or YAML path; its test sets are the validation data.
        groups: the axis whose values are the methods compared (``--group``).
        axes: grid axes shared by every group (``--grid``).
        group_axes: extra axes per group value (``--grid-for``).
        output: the tuning folder.
        select_by: the metric of :data:`~adasp.evaluation.results.METRIC_NAMES` to maximise.
        seeds: confirmation seeds (``1..seeds``).
        overrides: applied to every run first.
        sweep_options: passed to every :class:`~adasp.engine.sweep.Sweep` (device, processes,
            jobs, devices, retry_failed).

    Raises:
        ConfigError / UserInputError: bad metric or seed count, a key in two axes, a seed in
            the overrides, or a cell whose config does not validate (before anything runs).
    """

    def __init__(
        self,
        config: str,
        groups: GridAxis,
        axes: Sequence[GridAxis],
        group_axes: Mapping[str, Sequence[GridAxis]],
        output: str | Path,
        select_by: str = "mAP",
        seeds: int = 3,
        overrides: Sequence[str] = (),
        **sweep_options: Any,
    ) -> None:
        if select_by not in METRIC_NAMES:
            raise UserInputError(
                f"--select-by {select_by!r} is not a metric; use one of {', '.join(METRIC_NAMES)}"
            )
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise UserInputError(f"--seeds must be a positive integer (e.g. 3), got {seeds!r}")
        if any(o.partition("=")[0].strip() == SEED_KEY for o in overrides) or any(
            SEED_KEY in a.keys for a in [groups, *axes, *itertools.chain(*group_axes.values())]
        ):
            raise ConfigError(
                f"a tuning sets {SEED_KEY} itself (0 to select, 1..N to confirm); drop it from "
                "the overrides and grids"
            )
        self.config = config
        self.groups = groups
        self.output = Path(output).expanduser()
        self.select_by = select_by
        self.seeds = seeds
        self.overrides = list(overrides)
        self.sweep_options = sweep_options
        self.shared_axes = list(axes)
        self.group_axes = {g: list(group_axes.get(g, ())) for g in groups.values}
        self.plans = [self._plan(run.assignment[0][1]) for run in expand_grid([groups])]

    def _plan(self, value: str) -> GroupPlan:
        axes = [*self.shared_axes, *self.group_axes[value]]
        keys = [k for a in [self.groups, *axes] for k in a.keys]
        if len(set(keys)) != len(keys):
            raise ConfigError(
                f"group {value}: a key appears twice among --group, --grid and --grid-for: {keys}"
            )
        base = [*self.overrides, *self.groups.overrides(value)]
        dropped = _inert_axes(self.config, base, axes) if axes else []
        kept = tuple(a for a in axes if a.key not in dropped)
        folder = expand_grid([GridAxis(self.groups.key, (value,))])[0].name
        return GroupPlan(value, folder, tuple(base), kept, tuple(dropped))

    # ------------------------------------------------------------------ phases
    def _selection_sweep(self, plan: GroupPlan) -> Sweep | None:
        if not plan.axes:
            return None  # one cell: nothing to choose
        return Sweep(
            self.config,
            plan.axes,
            self.output / plan.folder / "selection",
            overrides=[*plan.overrides, f"{SEED_KEY}={SELECTION_SEED}"],
            **self.sweep_options,
        )

    def _seed_sweep(self, plan: GroupPlan, winner: Sequence[str]) -> Sweep:
        seeds = GridAxis(SEED_KEY, tuple(str(s) for s in range(1, self.seeds + 1)))
        return Sweep(
            self.config,
            [seeds],
            self.output / plan.folder / "seeds",
            overrides=[*plan.overrides, *winner],
            **self.sweep_options,
        )

    def manifest(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "overrides": self.overrides,
            "group": {"key": self.groups.key, "values": list(self.groups.values)},
            "grid": [{"key": a.key, "values": list(a.values)} for a in self.shared_axes],
            "grid_for": {
                g: [{"key": a.key, "values": list(a.values)} for a in axes]
                for g, axes in self.group_axes.items()
            },
            "select_by": self.select_by,
            "seeds": self.seeds,
        }

    def _claim_folder(self) -> None:
        path = self.output / TUNING_MANIFEST
        manifest = self.manifest()
        if path.exists():
            old = read_json_object(path, f"delete {path} and run the command again")
            if {k: old.get(k) for k in manifest} != manifest:
                raise UserInputError(
                    f"{self.output} holds a different tuning ({path}); use another --output or "
                    "the same --config, overrides, --group, --grid, --grid-for, --select-by and "
                    "--seeds"
                )
        self.output.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**manifest, "summary": None})

    def run(self) -> TuningSummary:
        """Run (or complete) both phases of every group; writes and returns the summary."""
        self._claim_folder()
        sweeps = [self._selection_sweep(plan) for plan in self.plans]  # validate all first
        for plan, sweep in zip(self.plans, sweeps, strict=True):
            if sweep is not None:
                print(f"tuning: selecting {plan.value} ({plan.budget} cells)", file=sys.stderr)
                sweep.run()
        for plan in self.plans:
            selection = self._selection(plan)
            if selection.winner is None:
                continue  # a cell did not finish: confirmed once every cell has
            print(f"tuning: confirming {plan.value}: {selection.winner}", file=sys.stderr)
            self._seed_sweep(plan, selection.winner_overrides).run()
        return self.summary()

    def _selection(self, plan: GroupPlan) -> GroupSelection:
        if not plan.axes:
            cells = [SelectionCell("(single cell)", {}, (), None)]
            return GroupSelection(
                plan.value, plan.folder, 1, plan.dropped, tuple(cells), 0, self.select_by
            )
        folder = self.output / plan.folder / "selection"
        cells = []
        for run in expand_grid(plan.axes):
            metrics = read_metrics(folder / run.name)
            value: Any = metrics.get(self.select_by) if metrics else None
            score = float(value) if _is_number(value) else None
            cells.append(SelectionCell(run.name, dict(run.assignment), run.overrides, score))
        done = [c.value for c in cells]
        winner = None
        if all(v is not None for v in done):
            winner = max(range(len(cells)), key=lambda i: (done[i], -i))
        return GroupSelection(
            plan.value, plan.folder, plan.budget, plan.dropped, tuple(cells), winner, self.select_by
        )

    def summary(self) -> TuningSummary:
        """The selections and the confirmation runs as they stand; written into tuning.json."""
        selections = [self._selection(plan) for plan in self.plans]
        seeded: dict[str, dict[str, dict[str, float]]] = {}
        for plan, selection in zip(self.plans, selections, strict=True):
            seeded[plan.value] = {}
            if selection.winner is None:
                continue
            folder = self.output / plan.folder / "seeds"
            for seed in range(1, self.seeds + 1):
                metrics = read_metrics(folder / f"{SEED_KEY}={seed}")
                if metrics:
                    seeded[plan.value][str(seed)] = {
                        m: float(metrics[m]) for m in METRIC_NAMES if _is_number(metrics.get(m))
                    }
        summary = TuningSummary(
            group_key=self.groups.key,
            select_by=self.select_by,
            seeds=self.seeds,
            rule=(
                f"per group, every cell of its grid once with {SEED_KEY}={SELECTION_SEED}; the "
                f"cell with the highest {self.select_by} (first in grid order on ties) is "
                f"trained again with {SEED_KEY}=1..{self.seeds}"
            ),
            selections=tuple(selections),
            seeded=seeded,
        )
        atomic_write_json(
            self.output / TUNING_MANIFEST, {**self.manifest(), "summary": summary.as_dict()}
        )
        return summary


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(run_folder: Path) -> dict[str, Any] | None:
    """A finished run's ``metrics.json``, or None while it has none."""
    path = RunFolder(run_folder).metrics
    fix = "delete the run folder and run the same command again to retrain it"
    return read_json_object(path, fix) if path.is_file() else None


def load_tuning(folder: str | Path) -> Tuning:
    """The :class:`Tuning` that wrote ``folder`` (from its ``tuning.json``)."""
    folder = Path(folder)
    path = folder / TUNING_MANIFEST
    if not path.is_file():
        raise UserInputError(f"{folder} is not a tuning folder: {path} not found")
    data = read_json_object(path, f"delete {path} and run the tuning command again")
    group = data["group"]
    groups = GridAxis(group["key"], tuple(group["values"]))
    axes = [GridAxis(a["key"], tuple(a["values"])) for a in data["grid"]]
    per_group = {
        g: [GridAxis(a["key"], tuple(a["values"])) for a in items]
        for g, items in data["grid_for"].items()
    }
    return Tuning(
        data["config"],
        groups,
        axes,
        per_group,
        folder,
        select_by=data["select_by"],
        seeds=data["seeds"],
        overrides=data["overrides"],
    )


def is_tuning_folder(folder: str | Path) -> bool:
    return (Path(folder) / TUNING_MANIFEST).is_file()


__all__ = [
    "TUNING_MANIFEST",
    "GroupPlan",
    "Tuning",
    "is_tuning_folder",
    "load_tuning",
    "parse_group_axes",
]
