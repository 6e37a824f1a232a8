"""The experiment configuration: typed sections, YAML presets with ``_base_`` inheritance and
``key=value`` overrides, validated when loaded.

A preset is a YAML file whose keys mirror :class:`ExperimentConfig`; ``_base_`` (a shipped
preset's name such as ``cpu/mobilenet``, or a path relative to the file under its folder; or a
list of them) names presets it extends, merged key by key. Overrides
such as ``loss.temperature=0.05`` or ``model.backbone=resnet50_ibn_a`` are applied last.
Everything is checked at load time: unknown keys, wrong types, values outside the allowed set,
and cross-field rules (a positive temperature, K instances dividing the batch, known loss,
backbone and dataset names).

Over 500 lines on purpose: each section's keys, their loading and their checks are read
together (one module to learn what a key means and what it accepts).
"""

from __future__ import annotations

import copy
import importlib.resources
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adasp.engine.typed_config import ConfigError, first_non_finite, from_dict, to_dict
from adasp.errors import MissingPathError, did_you_mean
from adasp.evaluation.options import EvaluationOptions
from adasp.models.options import HeadOptions
from adasp.utils.checks import check_float, check_seed
from adasp.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD
from adasp.utils.text_files import read_utf8


def _package_presets() -> Path:
    """The presets folder shipped inside the package (``adasp/configs``; ``configs/`` at the
    top of a checkout links to it)."""
    folder = importlib.resources.files("adasp").joinpath("configs")
    # Every pip install (wheel, editable, source checkout) puts adasp on the file system, where
    # this is a Path; ``_base_`` names files relative to a preset, so presets are read as files.
    return folder if isinstance(folder, Path) else Path(str(folder))


#: Folder of the presets shipped in the package: ``--config market1501/adasp`` reads
#: ``PRESET_DIR / "market1501/adasp.yaml"``.
PRESET_DIR = _package_presets()


@dataclass
class TestSetConfig:
    """An extra test set evaluated beside the main one (e.g. CUHK03 detected, VERI-WILD large)."""

    name: str = ""
    dataset: str = ""
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Dataset, P×K batches, augmentation and loading."""

    dataset: str = "synthetic"
    root: str | None = None  # None: the dataset's default (synthetic: ~/.cache/adasp/synthetic)
    options: dict[str, Any] = field(default_factory=dict)
    test_sets: list[TestSetConfig] = field(default_factory=list)
    image_size: tuple[int, int] = (256, 128)  # (height, width)
    batch_size: int = 64  # global batch over all DDP ranks
    num_instances: int = 8  # K instances per identity
    # "images": an epoch is len(train) // batch_size batches (fast-reid's and torchreid's epoch,
    # so the recipes' epoch counts carry over); "identities": one pass over the identities.
    epoch_length: Literal["images", "identities"] = "images"
    flip_p: float = 0.5
    padding: int = 10
    random_erasing_p: float = 0.5
    autoaugment_p: float = 0.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_workers: int = 2
    test_batch_size: int = 128
    pin_memory: bool | None = None  # page-locked batches for async GPU copies; None: on CUDA
    persistent_workers: bool = True  # keep loader workers alive between epochs
    prefetch_factor: int = 4  # batches each worker prepares ahead
    # "gpu": workers only read JPEG bytes; decoding and augmentation run batched on the training
    # device (adasp.data.gpu_decode), for when the CPU workers cannot keep up. No AutoAugment.
    decode: Literal["cpu", "gpu"] = "cpu"
    # Keep each decoded training image in its worker's memory after the first epoch (CPU
    # decode): identical batches, less worker CPU. For small datasets (memory: H*W*3 bytes per
    # image per worker).
    cache_decoded: bool = False


@dataclass
class ModelConfig(HeadOptions):
    """Backbone and head (see :func:`adasp.models.build_model`): the head's fields are the
    models package's :class:`~adasp.models.options.HeadOptions`."""

    backbone: str = "resnet50"
    pretrained: str | None = None  # None, "imagenet" or a path to a local weights file
    last_stride: int = 1
    backbone_options: dict[str, Any] = field(default_factory=dict)  # e.g. zero_init_residual
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False


@dataclass
class LossConfig:
    """``ce_weight·CE(label smoothing) + weight·metric``.

    ``ce_weight: 0`` trains the metric loss alone; ``name: none`` trains cross-entropy alone.
    ``temperature`` is the Sparse Pairwise losses' τ (unused by the other losses, so a sweep over
    ``loss.name`` can keep it); every other option goes under ``options.<loss name>``, e.g.
    ``options: {triplet: {margin: 0.3}, supcon: {temperature: 0.07}}``. Which options a loss
    takes from this section is declared once, at its registration (see
    :class:`adasp.losses.LossInfo` and :func:`loss_term_options`).
    """

    name: str = "adasp"  # a metric loss from adasp.losses.LOSSES, or "none"
    weight: float = 1.0  # λ
    temperature: float = 0.04  # τ of SP-H, SP-LH and AdaSP
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    ce_weight: float = 1.0
    label_smoothing: float = 0.1
    # Replay the Sparse Pairwise loss's forward + backward from a CUDA graph (one launch for
    # ~120 small kernels; adasp.losses.graphed). CUDA only, eager elsewhere. Prepared, not yet
    # measured on a GPU.
    cuda_graph: bool = False


@dataclass
class OptimConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    bias_lr_factor: float = 1.0
    bias_weight_decay: float | None = None  # None: same as weight_decay
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    fused: bool = True  # fused (one-kernel) Adam/AdamW/SGD steps on CUDA; ignored elsewhere
    # Fused Adam/AdamW on CPU parameters too: about 4x faster updates, equal to the per-tensor
    # step up to float rounding (not bit for bit), so off unless asked for.
    fused_cpu: bool = False


@dataclass
class ScheduleConfig:
    """Epochs, linear warm-up, frozen backbone, then multi-step or cosine-after-delay decay."""

    epochs: int = 60
    warmup_iters: int = 2000
    warmup_factor: float = 0.1  # lr multiplier at iteration 0
    scheduler: Literal["multistep", "cosine"] = "cosine"
    milestones: list[int] = field(default_factory=lambda: [30, 50])  # epochs (multistep)
    gamma: float = 0.1  # multistep factor
    cosine_delay_epochs: int = 30  # cosine annealing starts after this epoch
    min_lr_factor: float = 0.002  # cosine floor, as a fraction of lr
    freeze_backbone_iters: int = 0


@dataclass
class TrainConfig:
    """The training loop's settings (see :class:`adasp.engine.trainer.TrainingSettings`)."""

    seed: int = 0
    amp: Literal["none", "bf16", "fp16"] = "none"  # GPU only; ignored on CPU with a warning
    deterministic: bool = True
    eval_every: int = 10  # epochs; 0 evaluates only at the end
    checkpoint_every_iters: int = 0  # also checkpoint mid-epoch; 0: at the end of each epoch
    log_every: int = 20  # iterations; loss values are read from the device only then
    ddp_static_graph: bool = False  # DDP static_graph=True: faster, needs a fixed graph
    # A rank that does not answer a collective for this long (stopped, stuck, its node lost)
    # ends the run on every rank with one line naming it, instead of a silent wait.
    ddp_timeout_s: float = 300.0
    # torch intra-op threads of the training process (None: torch's default, one per core);
    # on few cores shared with the loader workers fewer can be faster (benchmarks/training_cpu.py)
    intra_op_threads: int | None = None
    # Keep freed large host blocks for the next step instead of unmapping them (glibc): the
    # same values, ~10x fewer page faults per CPU step (adasp.engine.cpu_speed)
    reuse_host_memory: bool = False
    tensorboard: bool = True  # also log to RUN/tensorboard
    # Callbacks from adasp.engine.CALLBACKS, in order: a name, or {name: {option: value}}, e.g.
    # [ema, {keep_best: {metric: rank1}}, {precise_bn: {batches: 20}}, mlflow, harmful_pairs].
    callbacks: list[Any] = field(default_factory=list)


#: The ``eval`` section is the evaluation package's own options (see adasp.evaluation.options).
EvalConfig = EvaluationOptions


@dataclass
class ExperimentConfig:
    """Everything a run needs; ``adasp train --config`` loads one."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvaluationOptions = field(default_factory=EvaluationOptions)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def preset_names() -> list[str]:
    """The names ``--config`` accepts for the shipped presets, e.g. ``quickstart``,
    ``market1501/adasp`` (``_base_/`` holds the recipes they extend, not presets)."""
    return sorted(
        path.relative_to(PRESET_DIR).with_suffix("").as_posix()
        for path in PRESET_DIR.rglob("*.yaml")
        if path.relative_to(PRESET_DIR).parts[0] != "_base_"
    )


def _describe_presets(names: list[str]) -> str:
    """``quickstart, {market1501,msmt17}/{adasp,triplet}``: folders that hold the same preset
    names share one entry, so the full list fits on a line."""
    top = [name for name in names if "/" not in name]
    by_folder: dict[str, list[str]] = {}
    for name in names:
        if "/" in name:
            folder, _, rest = name.rpartition("/")
            by_folder.setdefault(folder, []).append(rest)
    groups: dict[tuple[str, ...], list[str]] = {}
    for folder, files in by_folder.items():
        groups.setdefault(tuple(files), []).append(folder)

    def braces(items) -> str:
        return items[0] if len(items) == 1 else "{" + ",".join(items) + "}"

    entries = [f"{braces(folders)}/{braces(files)}" for files, folders in groups.items()]
    return ", ".join([*top, *entries]) or "none"


def resolve_config_path(name: str | Path) -> Path:
    """A config path as given, or the name of a preset shipped in the package.

    ``quickstart`` and ``market1501/adasp`` (with or without ``.yaml``) name
    ``PRESET_DIR / "quickstart.yaml"`` and ``PRESET_DIR / "market1501/adasp.yaml"``.

    Raises:
        MissingPathError: neither a file nor a preset; the message lists the presets.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    for candidate in (PRESET_DIR / name, PRESET_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise MissingPathError(
        f"config {str(name)!r} not found{did_you_mean(str(name), preset_names())}: no file "
        f"{path.absolute()} and no such preset; give a YAML file or a preset: "
        f"{_describe_presets(preset_names())}"
    )


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class DuplicateKeyError(ConfigError):
    """A key written twice in one YAML mapping (PyYAML would silently keep the last)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping, naming both lines.

    ``<<`` merge keys may still be overridden by the mapping's own keys (that is what they are
    for): only the keys written in the mapping itself are compared.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        f"key {key!r} appears twice in the same mapping (lines {first} and "
                        f"{line}); keep one of them"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


#: The most values (scalars, lists, mappings) a YAML document may expand to once its aliases
#: are followed: a config is a few hundred; nested aliases ("billion laughs") make billions,
#: which every later walk over the config would take years to visit.
MAX_YAML_VALUES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values ``node`` stands for with every alias followed (shared nodes counted
    once per reference, computed once each)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ConfigError("the YAML document refers to itself (a recursive alias); remove it")
    open_nodes.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, sizes, open_nodes)
        if total > MAX_YAML_VALUES:
            raise ConfigError(
                f"the YAML document expands to more than {MAX_YAML_VALUES:,} values through "
                "its aliases (&anchor/*alias); write the values out or remove the aliases"
            )
    open_nodes.discard(key)
    sizes[key] = total
    return total


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error as one line without the text it quotes (which may be a file's content)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or type(error).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def load_yaml(text: str) -> Any:
    """Parse YAML text like ``yaml.safe_load``, but refuse duplicate keys and documents whose
    aliases expand to more than :data:`MAX_YAML_VALUES` values.

    Raises:
        DuplicateKeyError: a key repeated in one mapping (the message names both lines).
        ConfigError: a recursive alias, or too many values once aliases are followed.
        yaml.YAMLError: invalid YAML.
    """
    loader = _UniqueKeyLoader(text)  # a SafeLoader subclass: safe
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _preset_file(name: str) -> Path | None:
    """The shipped file ``name`` names (``cpu/mobilenet``, ``_base_/person.yaml``), or None.

    A copied preset's ``../_base_/market1501.yaml`` names the shipped ``_base_/market1501.yaml``:
    leading ``../`` are dropped, and nothing outside the presets folder is returned.
    """
    parts = [part for part in Path(name).parts if part not in ("..", ".")]
    if not parts or Path(name).is_absolute():
        return None
    stem = Path(*parts)
    root = PRESET_DIR.resolve()
    for candidate in (root / stem, root / f"{stem}.yaml"):
        resolved = candidate.resolve()
        if resolved.is_file() and _inside(resolved, root):
            return resolved
    return None


def resolve_base(base: str, config: Path) -> Path:
    """The file a ``_base_`` entry of ``config`` names.

    Only two places are read: files under the folder of ``config`` (relative paths are
    relative to it), and the presets shipped in the package (by name, e.g. ``cpu/mobilenet``;
    a shipped preset may also name any file of the presets folder). Nothing else on the disk
    can be reached through a config, and no error quotes a file's content.

    Raises:
        ConfigError: the entry names a file outside those folders, or none at all; the
            message names ``config``.
    """
    folder = config.parent
    presets = PRESET_DIR.resolve()
    allowed = presets if _inside(config, presets) else folder
    local = (folder / Path(base).expanduser()).resolve()
    if local.exists():
        if local.is_file() and _inside(local, allowed):
            return local
        # Refused even when a shipped preset has the name: the user's file exists, and
        # silently reading another one instead would be a wrong answer.
        raise ConfigError(
            f"{config}: _base_ {base!r} lies outside {allowed}; a _base_ names a shipped "
            "preset (e.g. cpu/mobilenet) or a YAML file under the folder of the config naming it"
        )
    preset = _preset_file(base)
    if preset is not None:
        return preset
    raise ConfigError(
        f"{config}: _base_ {base!r} not found: no file {local} and no such preset; give a "
        f"path relative to {folder} or a preset: {_describe_presets(preset_names())}"
    )


def read_yaml_with_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML preset and merge the presets its ``_base_`` key names (recursively; see
    :func:`resolve_base` for where they may lie)."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"_base_ cycle: {chain}")
    if not path.is_file():
        raise MissingPathError(f"config file not found: {path}")
    try:
        data = load_yaml(read_utf8(path, "save the file as UTF-8", ConfigError)) or {}
    except DuplicateKeyError as error:
        raise DuplicateKeyError(f"{path}: {error}") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(data, dict):
        # The content is not quoted: the file may be anything (a base outside the presets).
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"
        )
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _merge(merged, read_yaml_with_bases(resolve_base(base, path), (*_seen, path)))
    return _merge(merged, data)


def parse_value(raw: str) -> Any:
    """A command-line value read as YAML (numbers, true/false, null, lists, mappings), or the
    text itself when it is not valid YAML; a mapping with a repeated key is an error."""
    try:
        return load_yaml(raw) if raw.strip() else ""
    except DuplicateKeyError as error:
        raise DuplicateKeyError(f"value {raw!r}: {error}") from None
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML: numbers, lists, null...)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. loss.temperature=0.05)"
            )
        value = parse_value(raw)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def upgrade_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """Keys of older adasp versions in today's form (the one place they are translated):
    ``train.measure_harmful_pairs: true`` (adasp 0.1) is the ``harmful_pairs`` callback."""
    train = data.get("train")
    if isinstance(train, dict) and "measure_harmful_pairs" in train:
        data = copy.deepcopy(data)
        train = data["train"]
        if train.pop("measure_harmful_pairs"):
            train["callbacks"] = [*train.get("callbacks", []), "harmful_pairs"]
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Load, override and validate a configuration (defaults only when ``path`` is None)."""
    data = read_yaml_with_bases(resolve_config_path(path)) if path is not None else {}
    data = upgrade_config_dict(apply_overrides(data, list(overrides or [])))
    config = from_dict(ExperimentConfig, data)
    validate_config(config)
    return config


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Build and validate a configuration from a plain dict (e.g. one saved in a checkpoint)."""
    config = from_dict(ExperimentConfig, upgrade_config_dict(data))
    validate_config(config)
    return config


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML, atomically."""
    from adasp.utils.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _number(key: str, value: Any, low: float | None = None, **bounds: Any) -> None:
    """Refuse a float field outside its range or not finite, naming the key and the range
    (``check_float``'s keywords: ``high``, ``low_open``, ``high_open``, ``note``)."""
    check_float(f"config key '{key}'", value, low, error=ConfigError, **bounds)


def loss_term_options(loss: LossConfig, name: str) -> dict[str, Any]:
    """The options of loss ``name`` in the configured objective: ``loss.options.<name>`` plus
    those the loss declares it takes from the ``loss`` section (its
    :class:`~adasp.losses.LossInfo`: the Sparse Pairwise losses' ``loss.temperature``).

    Raises:
        ConfigError: the loss declares a key that the ``loss`` section does not have.
    """
    from adasp.losses import options_from_config

    options = dict(loss.options.get(name, {}))
    for key in options_from_config(name):
        _require(
            key in LossConfig.__dataclass_fields__ and key not in ("name", "options"),
            f"loss {name!r} is registered to take its option {key!r} from config key "
            f"'loss.{key}', which does not exist",
        )
        options[key] = getattr(loss, key)
    return options


def effective_config(config: ExperimentConfig) -> dict[str, Any]:
    """``config`` as a dict with the ``loss`` section reduced to what the objective uses: two
    configs that differ only in keys the run ignores (``loss.weight`` with ``loss.name: none``,
    ``loss.temperature`` for a triplet, another loss's ``options``) give the same dict."""
    values = config.to_dict()
    loss = config.loss
    used: dict[str, Any] = {"ce_weight": loss.ce_weight}
    if loss.ce_weight > 0:
        used["label_smoothing"] = loss.label_smoothing
    if loss.name != "none":
        used.update(name=loss.name, weight=loss.weight, options=loss_term_options(loss, loss.name))
    values["loss"] = used
    return values


def validate_config(config: ExperimentConfig) -> None:
    """Cross-field and registry checks; raises :class:`ConfigError` naming the key."""
    from adasp.losses import LOSSES, build_loss, loss_options, options_from_config

    d, m, loss, o, s, t, e = (
        config.data,
        config.model,
        config.loss,
        config.optim,
        config.schedule,
        config.train,
        config.eval,
    )
    _validate_data(d)
    _validate_model(m)
    metric_names = sorted(n for n in LOSSES if n != "ce")
    _require(
        loss.name == "none" or loss.name in metric_names,
        f"config key 'loss.name': unknown loss {loss.name!r}"
        f"{did_you_mean(loss.name, ['none', *metric_names])}; allowed: none, "
        + ", ".join(metric_names),
    )
    _number("loss.weight", loss.weight, 0)
    _number("loss.ce_weight", loss.ce_weight, 0)
    _require(
        loss.ce_weight > 0 or (loss.name != "none" and loss.weight > 0),
        "config: 'loss.ce_weight' is 0 and there is no weighted metric loss ('loss.name' none or "
        "'loss.weight' 0), so nothing would be trained",
    )
    _require(
        0 <= loss.label_smoothing < 1,
        f"config key 'loss.label_smoothing' must be in [0, 1), got {loss.label_smoothing}",
    )
    _number("loss.temperature", loss.temperature, 0, low_open=True)
    for name, options in loss.options.items():
        _require(
            name in metric_names,
            f"config key 'loss.options.{name}': unknown loss {name!r}"
            f"{did_you_mean(name, metric_names)}; allowed: " + ", ".join(metric_names),
        )
        from_config = options_from_config(name)
        allowed = [
            o for o in loss_options(name) if o != "gather_distributed" and o not in from_config
        ]
        bad = sorted(set(options) - set(allowed))
        _require(
            not bad,
            f"config key 'loss.options.{name}': loss {name!r} has no option {', '.join(bad)}; "
            f"allowed: {', '.join(allowed) or 'none'}"
            + "".join(f" (its {o} is loss.{o})" for o in from_config),
        )
    # Build the losses once, so that bad option values fail here rather than at step 1.
    for name in sorted({*loss.options, *([loss.name] if loss.name != "none" else [])}):
        options = loss_term_options(loss, name)
        key = f"loss.options.{name}" if name in loss.options else "loss"
        try:
            build_loss(name, **options)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"config key '{key}': {error}") from None
    _number("optim.lr", o.lr, 0, low_open=True)
    _number("optim.weight_decay", o.weight_decay, 0)
    _number("optim.grad_clip", o.grad_clip, 0, note="0 disables")
    _number("optim.bias_lr_factor", o.bias_lr_factor, 0)
    if o.bias_weight_decay is not None:
        _number("optim.bias_weight_decay", o.bias_weight_decay, 0, note="or null")
    _number("optim.momentum", o.momentum, 0)
    _require(
        not (o.optimizer == "sgd" and o.nesterov and o.momentum == 0),
        "config key 'optim.nesterov' needs 'optim.momentum' > 0",
    )
    check_seed("config key 'train.seed'", t.seed, ConfigError)
    _require(s.epochs >= 1, f"config key 'schedule.epochs' must be >= 1, got {s.epochs}")
    _require(
        s.warmup_iters >= 0,
        f"config key 'schedule.warmup_iters' must be >= 0, got {s.warmup_iters}",
    )
    _require(
        0 < s.warmup_factor <= 1,
        f"config key 'schedule.warmup_factor' must be in (0, 1], got {s.warmup_factor}",
    )
    _require(
        list(s.milestones) == sorted(s.milestones) and all(ms > 0 for ms in s.milestones),
        f"config key 'schedule.milestones' must be increasing positive epochs, got {s.milestones}",
    )
    _require(0 < s.gamma <= 1, f"config key 'schedule.gamma' must be in (0, 1], got {s.gamma}")
    _require(
        s.cosine_delay_epochs >= 0,
        f"config key 'schedule.cosine_delay_epochs' must be >= 0, got {s.cosine_delay_epochs}",
    )
    fit_schedule_to_epochs(s)
    _require(
        0 <= s.min_lr_factor <= 1,
        f"config key 'schedule.min_lr_factor' must be in [0, 1], got {s.min_lr_factor}",
    )
    _require(
        s.freeze_backbone_iters >= 0, "config key 'schedule.freeze_backbone_iters' must be >= 0"
    )
    _require(t.eval_every >= 0, f"config key 'train.eval_every' must be >= 0, got {t.eval_every}")
    _require(t.log_every >= 1, f"config key 'train.log_every' must be >= 1, got {t.log_every}")
    _number("train.ddp_timeout_s", t.ddp_timeout_s, low=1)
    _require(
        t.checkpoint_every_iters >= 0, "config key 'train.checkpoint_every_iters' must be >= 0"
    )
    from adasp.engine.callbacks import parse_callback_spec

    for index, spec in enumerate(t.callbacks):
        parse_callback_spec(spec, index)
    e.check("eval.", ConfigError)
    # Every float field is finite (the checks above name the range of those that have one).
    found = first_non_finite(config)
    if found is not None:
        raise ConfigError(f"config key '{found[0]}' must be a finite number, got {found[1]}")


def fit_schedule_to_epochs(s: ScheduleConfig) -> None:
    """Fit the schedule's epoch counts to ``schedule.epochs``, with a one-line warning each.

    A preset's schedule is written for its own length; ``schedule.epochs=N`` alone must still
    give a valid run: the cosine delay is clamped to ``N`` (the learning rate then stays
    constant), and multi-step milestones at or after epoch ``N`` (which would never apply)
    are dropped. The presets' own values are unchanged; the run's ``config.yaml`` records the
    fitted ones.
    """
    if s.scheduler == "cosine" and s.cosine_delay_epochs > s.epochs:
        warnings.warn(
            f"schedule.cosine_delay_epochs={s.cosine_delay_epochs} is more than "
            f"schedule.epochs={s.epochs}; clamped to {s.epochs} (no cosine decay in this run)",
            stacklevel=4,
        )
        s.cosine_delay_epochs = s.epochs
    late = [m for m in s.milestones if m >= s.epochs]
    if s.scheduler == "multistep" and late:
        warnings.warn(
            f"schedule.milestones {late} are not before schedule.epochs={s.epochs} and would "
            "never apply; dropped",
            stacklevel=4,
        )
        s.milestones = [m for m in s.milestones if m < s.epochs]


def _validate_data(d: DataConfig) -> None:
    from adasp.data import DATASETS

    names = sorted(DATASETS)
    _require(
        d.dataset in DATASETS,
        f"config key 'data.dataset': unknown dataset {d.dataset!r}"
        f"{did_you_mean(d.dataset, names)}; allowed: {', '.join(names)}",
    )
    for i, test_set in enumerate(d.test_sets):
        _require(
            test_set.dataset in DATASETS,
            f"config key 'data.test_sets[{i}].dataset': unknown dataset {test_set.dataset!r}"
            f"{did_you_mean(test_set.dataset, names)}; allowed: {', '.join(names)}",
        )
    _require(
        d.num_instances >= 1,
        f"config key 'data.num_instances' must be >= 1, got {d.num_instances}",
    )
    _require(
        d.num_instances <= d.batch_size,
        f"config key 'data.num_instances' (K = {d.num_instances}) is larger than "
        f"'data.batch_size' ({d.batch_size}); a batch must hold at least one identity",
    )
    _require(
        d.batch_size % d.num_instances == 0,
        f"config key 'data.batch_size' ({d.batch_size}) must be a multiple of "
        f"'data.num_instances' ({d.num_instances})",
    )
    _require(
        all(v > 0 for v in d.image_size),
        f"config key 'data.image_size' must be two positive integers, got {d.image_size}",
    )
    for key in ("flip_p", "random_erasing_p", "autoaugment_p"):
        value = getattr(d, key)
        _require(0 <= value <= 1, f"config key 'data.{key}' must be in [0, 1], got {value}")
    _require(all(v > 0 for v in d.std), f"config key 'data.std' must be positive, got {d.std}")
    _require(d.padding >= 0, f"config key 'data.padding' must be >= 0, got {d.padding}")
    _require(
        d.decode == "cpu" or d.autoaugment_p == 0,
        f"config key 'data.autoaugment_p' ({d.autoaugment_p}) must be 0 with data.decode=gpu "
        "(AutoAugment runs per image on the CPU only); set data.autoaugment_p=0 or "
        "data.decode=cpu",
    )
    _require(d.num_workers >= 0, f"config key 'data.num_workers' must be >= 0, got {d.num_workers}")
    _require(d.test_batch_size >= 1, "config key 'data.test_batch_size' must be >= 1")
    _require(
        d.prefetch_factor >= 1,
        f"config key 'data.prefetch_factor' must be >= 1 (batches each loader worker prepares "
        f"ahead), got {d.prefetch_factor}",
    )


def _validate_model(m: ModelConfig) -> None:
    from adasp.models import BACKBONES

    _require(
        m.backbone in BACKBONES,
        f"config key 'model.backbone': unknown backbone {m.backbone!r}"
        f"{did_you_mean(m.backbone, BACKBONES.names())}; allowed: " + ", ".join(BACKBONES.names()),
    )
    from adasp.models import POOLINGS

    _require(
        m.pooling in POOLINGS,
        f"config key 'model.pooling': unknown pooling {m.pooling!r}; allowed: "
        + ", ".join(POOLINGS),
    )
    _require(
        m.last_stride in (1, 2),
        f"config key 'model.last_stride' must be 1 or 2, got {m.last_stride}",
    )
    _require(
        m.embedding_dim >= 0, "config key 'model.embedding_dim' must be >= 0 (0: no reduction)"
    )
    _require(0 <= m.dropout < 1, f"config key 'model.dropout' must be in [0, 1), got {m.dropout}")
    _number("model.gem_p", m.gem_p, 0, low_open=True)
