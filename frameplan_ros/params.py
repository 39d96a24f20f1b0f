"""Declare a node's ROS parameters from one dataclass, so names, types, defaults, descriptions and ranges live
in one place (the YAML files in config/ set the deployed values; tests check both agree).

A field is written ``name: type = param(default, "description", range=(lo, hi[, step]), choices=(...),
read_only=True)``. Ranges become ParameterDescriptor integer/floating-point ranges (enforced by rclpy), choices are
enforced by ``validate`` (rclpy has no enum constraint) and listed in ``additional_constraints``.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

from frameplan_core.config import load_yaml
from frameplan_core.errors import ConfigError

T = TypeVar("T")


def param(default: Any, description: str, *, range: tuple | None = None, choices: tuple | None = None,
          read_only: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={
        "description": description, "range": range, "choices": choices, "read_only": read_only})


def _descriptor(f: dataclasses.Field, tp: Any) -> Any:
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    types = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
    if tp not in types:
        raise ConfigError(f"parameter {f.name}: unsupported type {tp}")
    md = f.metadata
    d = ParameterDescriptor(name=f.name, type=types[tp], description=md.get("description", ""),
                            read_only=bool(md.get("read_only")))
    rng = md.get("range")
    if rng is not None:
        lo, hi = rng[0], rng[1]
        step = rng[2] if len(rng) > 2 else 0
        if tp is int:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=int(step))]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=float(step))]
    if md.get("choices"):
        d.additional_constraints = "one of: " + ", ".join(map(str, md["choices"]))
    return d


def fields_of(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def validate(cls: type, name: str, value: Any) -> str | None:
    """Reason why ``value`` is not allowed for parameter ``name`` of ``cls`` (choices), else None."""
    for f, _ in fields_of(cls):
        if f.name == name:
            choices = f.metadata.get("choices")
            if choices and value not in choices and not _choice_prefix_ok(choices, value):
                return f"{name}={value!r} is not one of {list(choices)}"
            return None
    return None


def _choice_prefix_ok(choices: tuple, value: Any) -> bool:
    # "cuda:N" is allowed wherever "cuda" is.
    return isinstance(value, str) and "cuda" in choices and value.startswith("cuda:") and value[5:].isdigit()


def declare(node: Any, cls: type[T]) -> T:
    """Declare every field of ``cls`` on ``node`` (with descriptors) and return the resolved values.

    Values come from, in rising priority: the dataclass default, a --params-file (e.g. config/*.yaml), the
    node's parameter_overrides. Invalid choices raise ConfigError naming the parameter."""
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter

    overrides_ = getattr(node, "_parameter_overrides", {})  # rclpy has no public getter for the overrides
    values = {}
    for f, tp in fields_of(cls):
        default, ignore_override = f.default, False
        given = overrides_.get(f.name)
        if tp is float and given is not None and given.type_ == Parameter.Type.INTEGER:
            # `rate: 10` / `-p rate:=10` for a double parameter: rclpy would refuse the INTEGER, take it as 10.0
            default, ignore_override = float(given.value), True
        try:
            p = node.declare_parameter(f.name, default, _descriptor(f, tp), ignore_override=ignore_override)
        except ParameterException as exc:  # wrong type or out of range in a params file / -p override
            raise ConfigError(f"node {node.get_name()}: parameter {f.name}: {exc}") from exc
        value = p.value
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        reason = validate(cls, f.name, value)
        if reason:
            raise ConfigError(f"node {node.get_name()}: {reason}")
        values[f.name] = value
    return cls(**values)


def with_changes(current: T, params: list[Any]) -> T:
    """A copy of ``current`` with the rclpy Parameter values applied."""
    changes = {p.name: p.value for p in params if hasattr(current, p.name)}
    for f, tp in fields_of(type(current)):
        if f.name in changes and tp is float and isinstance(changes[f.name], int):
            changes[f.name] = float(changes[f.name])
    return dataclasses.replace(current, **changes)


def yaml_parameters(path: str | Path, node_name: str | None = None) -> dict[str, Any]:
    """The ``ros__parameters`` a ROS params file gives ``node_name`` ('/**' entries, then the node's own)."""
    data = load_yaml(path)
    out: dict[str, Any] = {}
    for key, section in data.items():
        if not isinstance(section, dict) or "ros__parameters" not in section:
            raise ConfigError(f"{path}: top-level key {key!r} must hold a 'ros__parameters' mapping")
        if key in ("/**", "**") or (node_name and key.lstrip("/") == node_name):
            out.update(section["ros__parameters"] or {})
    return out


def check_names(cls: type, names: Any, where: str) -> None:
    """ConfigError for names ``cls`` does not declare: rclpy silently drops overrides of undeclared parameters."""
    known = sorted(f.name for f, _ in fields_of(cls))
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {unknown} (no such {cls.__name__} field); known: {known}")


def check_yaml_against(cls: type, path: str | Path, node_name: str | None = None) -> dict[str, Any]:
    """Fail with ConfigError if the YAML names an unknown parameter, has a wrong type or a bad choice."""
    values = yaml_parameters(path, node_name)
    check_names(cls, values, str(path))
    known = {f.name: tp for f, tp in fields_of(cls)}
    for name, value in values.items():
        tp = known[name]
        ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{path}: parameter {name}={value!r} should be {tp.__name__}")
        reason = validate(cls, name, value)
        rng = next(f.metadata.get("range") for f, _ in fields_of(cls) if f.name == name)
        if reason is None and rng is not None and not rng[0] <= value <= rng[1]:
            reason = f"{name}={value!r} is outside [{rng[0]}, {rng[1]}]"
        if reason:
            raise ConfigError(f"{path}: {reason}")
    return values


def overrides(values: dict[str, Any]) -> list[Any]:
    """rclpy Parameter objects for Node(parameter_overrides=...)."""
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in values.items()]
