"""Hyperparameters are declared once, typed, with units and ranges, in frozen dataclasses.

The UI derives its controls from these declarations, the CLI its flags, exports their metadata.
``validate`` turns any user input into a checked instance or a ValueError that says what to do.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Spec:
    """What a UI or CLI needs to know about one hyperparameter."""

    name: str
    type: type
    default: Any
    help: str
    unit: str = ""
    min: float | None = None
    max: float | None = None
    min_open: bool = False          # True: the minimum itself is excluded, as in density in (0, 1]
    choices: tuple | None = None
    step: float | None = None       # a sensible slider step
    when: tuple[str, tuple] | None = None   # (other field, values): it applies only then

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether this setting has any effect, given the other settings' ``values`` (a field
        its condition names but ``values`` lacks: it does not apply)."""
        if self.when is None:
            return True
        other, allowed = self.when
        return other in values and values[other] in allowed


def hp(default, help: str, *, unit: str = "", min=None, max=None, min_open=False, choices=None, step=None,
       when: tuple[str, Any] | None = None):
    """Declare a hyperparameter field with its explanation, unit and valid range. ``when=(name,
    value)`` (or a tuple of values) says it applies only while the field ``name`` has that value,
    e.g. ``rank`` only with ``compress="lowrank"``; a UI hides it otherwise."""
    if when is not None:
        other, allowed = when
        when = (other, tuple(allowed) if isinstance(allowed, (tuple, list, set)) else (allowed,))
    meta = dict(help=help, unit=unit, min=min, max=max, min_open=min_open, choices=choices, step=step, when=when)
    return field(default=default, metadata=meta)


def specs(cls) -> list[Spec]:
    """The declared hyperparameters of a dataclass, in order."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: fall back to the default's type
        hints = {}
    out = []
    for f in dataclasses.fields(cls):
        typ = _resolve(hints.get(f.name), f.default)
        out.append(Spec(name=f.name, type=typ, default=f.default, **f.metadata))
    return out


def _resolve(annotation, default) -> type:
    if isinstance(annotation, type):
        return annotation
    return type(default) if default is not None else str


def validate(cls, values: Mapping[str, Any] | None = None, *, owner: str | None = None, **kwargs):
    """Build ``cls`` from user values, checking type, finiteness, range and choices.

    Unknown names, NaN, values outside the declared range, and wrong choices raise a ValueError
    whose message names the parameter, the valid range and the value received; ``owner`` is what
    the message calls the settings (``"TIES-merging"``; default: the class's name).
    """
    values = {**(values or {}), **kwargs}
    by_name = {s.name: s for s in specs(cls)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise ValueError(f"unknown hyperparameter {unknown[0]!r} for {owner or cls.__name__}; "
                         f"valid names: {', '.join(by_name) or 'none (it has no settings)'}")
    out = {}
    for name, spec in by_name.items():
        out[name] = _check(spec, values.get(name, spec.default))
    return cls(**out)


def _check(spec: Spec, value):
    if spec.choices is not None:
        if value not in spec.choices:
            raise ValueError(f"{spec.name}={value!r} is not allowed; choose one of {list(spec.choices)}")
        return value
    if spec.type is bool:
        if isinstance(value, str):
            value = value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if spec.type in (int, float):
        num = _number(spec, value)
        _in_range(spec, num, value if isinstance(value, (int, float)) and not isinstance(value, bool) else num)
        return num
    if value is None or isinstance(value, spec.type):
        return value
    raise ValueError(f"{spec.name}={value!r}: expected {_KINDS.get(spec.type, 'a ' + spec.type.__name__)}")


_KINDS = {str: "a text", int: "a whole number", float: "a number", bool: "true or false"}


def _number(spec: Spec, value):
    try:
        num = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{spec.name}={value!r} is not a number; {_range_text(spec)}") from None
    if not math.isfinite(num):
        raise ValueError(f"{spec.name} must be a finite number, got {value!r}; {_range_text(spec)}")
    if spec.type is int:
        if num != int(num):
            raise ValueError(f"{spec.name}={value!r} must be a whole number; {_range_text(spec)}")
        return int(num)
    return num


def _in_range(spec: Spec, value, shown=None) -> None:
    low_bad = spec.min is not None and (value <= spec.min if spec.min_open else value < spec.min)
    high_bad = spec.max is not None and value > spec.max
    if low_bad or high_bad:
        shown = value if shown is None else shown     # as the user wrote it (0, not 0.0)
        raise ValueError(f"{spec.name}={shown!r} is out of range; {_range_text(spec)}")


def _range_text(spec: Spec) -> str:
    lo = "(" if spec.min_open else "["
    unit = f" {spec.unit}" if spec.unit else ""
    if spec.min is not None and spec.max is not None:
        return f"use a value in {lo}{spec.min}, {spec.max}]{unit}"
    if spec.min is not None:
        return f"use a value {'>' if spec.min_open else '>='} {spec.min}{unit}"
    if spec.max is not None:
        return f"use a value <= {spec.max}{unit}"
    return "use a finite number"


def as_dict(params) -> dict:
    return dataclasses.asdict(params)
