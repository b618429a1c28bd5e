"""The checker of the architecture configs that travel with the weights (:class:`~.unet_config.UNetConfig`,
:class:`~.syncnet.StableSyncNetConfig`): every field of a frozen dataclass checked against its annotation and its
:class:`Bounds` (:func:`normalize_fields`), strictly typed (``True`` is not an integer, ``320.0`` is not an
integer, a number is not a string), with one conversion: a string holding a number, where the field is numeric, is
read as that number (PyYAML 1.1 reads ``1e-05`` as a string). Lists become tuples. Unknown keys are refused by name
(:func:`check_keys`). It imports nothing but the standard library (``nets`` depends on torch alone).
"""

from __future__ import annotations

import functools
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """The allowed range of a numeric config field (of every element of a tuple field)."""

    low: float
    high: float | None = None
    low_open: bool = False  # ``low`` itself excluded (an epsilon must be > 0)

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is not None:
            return f"in [{self.low:g}, {self.high:g}]"
        return f"{'>' if self.low_open else '>='} {self.low:g}"


AT_LEAST_1 = Bounds(1)
AT_LEAST_0 = Bounds(0)
ABOVE_0 = Bounds(0, low_open=True)
_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")


def normalize_fields(config: Any, bounds: Mapping[str, Bounds], prefix: str = "") -> None:
    """Check every field of the frozen dataclass ``config`` against its annotation and ``bounds`` (by
    field name), converting in place as the module docstring says (call it from ``__post_init__``).

    Raises:
        ValueError: ``"<prefix><field>: expected an integer, got True (bool)"``, ``"...: must be > 0, got 0"``.
    """
    hints = _hints(type(config))
    for f in fields(config):
        key = prefix + f.name
        value = _coerce(getattr(config, f.name), hints[f.name], key)
        limit = bounds.get(f.name)
        if limit is not None:
            for i, item in enumerate(value if isinstance(value, tuple) else (value,)):
                for x in item if isinstance(item, tuple) else (item,):
                    if x is not None and not limit.admits(x):
                        where = f"{key}[{i}]" if isinstance(value, tuple) else key
                        raise ValueError(f"{where}: must be {limit}, got {x!r}")
        object.__setattr__(config, f.name, value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (int, float, bool, str, ``X | None``, ``X | Y``, tuples, config dataclasses)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for alt in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, alt, key)
            except ValueError:
                continue
        raise _wrong(value, " or ".join(_name(a) for a in args), key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _wrong(value, _name(tp), key)
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not variadic and len(value) != len(args):
            raise ValueError(f"{key}: expected {len(args)} values, got {len(value)}")
        kinds = [args[0]] * len(value) if variadic else list(args)
        return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, kinds, strict=True)))
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise _wrong(value, _name(tp), key)
        return value
    if tp is int:
        if isinstance(value, str) and _INT_TEXT.match(value):
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(value, "an integer", key)
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _wrong(value, "a number", key) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _wrong(value, "a finite number", key)
        return value  # an int stays an int: a float field takes one (``mid_block_scale_factor: 1``)
    if is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return tp.from_dict(dict(value))  # type: ignore[attr-defined]
        raise _wrong(value, "a mapping", key)
    raise TypeError(f"{key}: no rule for the field type {tp!r}")  # a programming error, not a config error


def _name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    if typing.get_origin(tp) is tuple:
        return "a list"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _wrong(value: Any, expected: str, key: str) -> ValueError:
    return ValueError(f"{key}: expected {expected}, got {value!r} ({type(value).__name__})")


def check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {where} (allowed: {', '.join(sorted(allowed))})")
