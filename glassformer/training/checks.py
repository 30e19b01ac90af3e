"""Validation shared by the training settings dataclasses (``LMSettings``, ``TranslationSettings`` ...).

Settings arrive from Python, from command-line flags and from JSON config files,
so a value can be of the wrong type (``{"steps": "ten"}``) as easily as out of
range.  Each check raises a :class:`ConfigError` that names the setting, the
value and what would be valid, before anything is read or written.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from ..errors import ConfigError


def check_types(settings) -> None:
    """Refuse a field whose value does not match its annotation (``int | None``, ``tuple[float, float]`` ...)."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value, hint = getattr(settings, f.name), hints[f.name]
        if not _matches(value, hint):
            raise ConfigError(f"{f.name}={value!r} is invalid; it must be {_describe(hint)}")


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if origin is tuple:                              # a JSON list is the natural spelling of a tuple
        return (isinstance(value, (tuple, list)) and len(value) == len(args)
                and all(_matches(v, a) for v, a in zip(value, args)))
    return isinstance(value, origin or hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} " + ("numbers" if all(a is float for a in args) else "values")
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null",
             dict: "an object of named values"}
    return names.get(origin or hint, getattr(hint, "__name__", str(hint)))


def check_positive_int(settings, *names: str, optional: bool = False) -> None:
    """Each named field is an integer >= 1 (or None, if ``optional``)."""
    for name in names:
        value = getattr(settings, name)
        if optional and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name}={value!r} is invalid; it must be a positive integer"
                              + (" (or null)" if optional else ""))


def check_range(settings, name: str, low: float, high: float = math.inf, *, low_open: bool = False,
                high_open: bool = False, optional: bool = False) -> None:
    """The named number lies in the interval from ``low`` to ``high`` (open ends where asked)."""
    value = getattr(settings, name)
    if optional and value is None:
        return
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        if high == math.inf:
            rule = f"{'>' if low_open else '>='} {low:g}"
        else:
            rule = "in " + ("(" if low_open else "[") + f"{low:g}, {high:g}" + (")" if high_open else "]")
        raise ConfigError(f"{name}={value!r} is invalid; it must be {rule}" + (" (or null)" if optional else ""))


# The settings that several training tasks share, and their ranges: check_shared_settings checks
# each one a task's settings have (None is allowed where the field's annotation allows it).
SHARED_RANGES: dict[str, dict[str, Any]] = {
    "lr": {"low": 0, "low_open": True},
    "min_lr_ratio": {"low": 0, "high": 1},
    "warmup": {"low": 0},
    "weight_decay": {"low": 0},
    "label_smoothing": {"low": 0, "high": 1, "high_open": True},
    "shift": {"low": 0},
    "clip_norm": {"low": 0, "low_open": True},
    "time_limit": {"low": 0, "low_open": True},
    "keep_checkpoints": {"low": 0},
}


def check_shared_settings(settings) -> None:
    """The ranges of :data:`SHARED_RANGES` for the fields ``settings`` has, and Adam's ``betas``
    (each in [0, 1); stored as a tuple, as a JSON list arrives as a list)."""
    hints = typing.get_type_hints(type(settings))
    names = {f.name for f in dataclasses.fields(settings)}
    for name, rule in SHARED_RANGES.items():
        if name in names:
            check_range(settings, name, **rule, optional=type(None) in typing.get_args(hints[name]))
    if "betas" in names:
        if not all(0 <= b < 1 for b in settings.betas):
            raise ConfigError(f"betas={list(settings.betas)} is invalid; each must be in [0, 1)")
        settings.betas = tuple(settings.betas)


def check_preset(settings, family: str) -> None:
    """``settings.preset`` names a preset of ``family`` and ``settings.model`` holds only valid fields of it."""
    from ..models import preset

    try:
        preset(settings.preset, family=family, **settings.model)
    except TypeError as e:                   # a value of the wrong type that the config's checks did not expect
        raise ConfigError(f"model={settings.model!r} is invalid for preset {settings.preset!r}: {e}") from None


__all__ = ["check_types", "check_positive_int", "check_range", "check_shared_settings", "check_preset", "SHARED_RANGES"]
