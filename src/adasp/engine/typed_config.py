"""Turning nested dicts (from YAML) into typed dataclasses, strictly.

Unknown keys, wrong types and values outside a ``Literal`` fail with a message that names the
dotted key and what is allowed. Used by :mod:`adasp.engine.config`; generic on purpose.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from adasp.errors import UserInputError, did_you_mean


class ConfigError(UserInputError):
    """An invalid configuration: the message names the key and the allowed values."""


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if annotation is type(None):
        return "null"
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def convert(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against ``annotation`` and convert it (e.g. list -> tuple, int -> float)."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {_type_name(annotation)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ConfigError(
                f"config key '{key}': {value!r} is not allowed; allowed: "
                + ", ".join(repr(a) for a in allowed)
            )
        return value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"config key '{key}': expected a list of {len(args)} values, got {value!r}"
                )
            return tuple(
                convert(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        items = [convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        _, value_type = get_args(annotation) or (str, Any)
        return {str(k): convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {annotation!r} for '{key}'")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from mapping ``data``; missing keys take the defaults."""
    where = f"'{prefix}'" if prefix else "the top level"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config {where}: expected a mapping of keys, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        dotted = ", ".join(
            f"'{prefix + '.' if prefix else ''}{k}'{did_you_mean(k, fields)}" for k in unknown
        )
        raise ConfigError(
            f"unknown config key {dotted}; allowed keys at {where}: {', '.join(sorted(fields))}"
        )
    values = {}
    for name in fields:
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            values[name] = convert(data[name], hints[name], key)
    return cls(**values)


def first_non_finite(obj: Any, prefix: str = "") -> tuple[str, float] | None:
    """The dotted key and value of the first float in ``obj`` (a dataclass, nested) that is
    infinite or NaN, or None.

    YAML reads ``.inf`` and ``.nan`` as floats, and every range check that is open on one side
    (``> 0``) lets ``inf`` through: the one rule that no float field of a config is non-finite.
    """
    if dataclasses.is_dataclass(obj):
        items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    elif isinstance(obj, Mapping):
        items = ((str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"[{i}]", v) for i, v in enumerate(obj))
    else:
        return (prefix, obj) if isinstance(obj, float) and not math.isfinite(obj) else None
    for name, value in items:
        key = name if not prefix else prefix + name if name.startswith("[") else f"{prefix}.{name}"
        found = first_non_finite(value, key)
        if found is not None:
            return found
    return None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts/lists, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


__all__ = ["ConfigError", "convert", "first_non_finite", "from_dict", "to_dict"]
