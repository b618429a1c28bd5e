"""A command's flags declared once, as a table: each flag's names, type, help, the config key it sets, the
modes it belongs to, and its bounds (taken from the config schema, where every limit is declared).

A command builds its Typer signature from the table (:func:`signature`), then asks the table which flags were
given outside their mode (:func:`misplaced`) and which config keys they set (:func:`config_flags`), so a flag
added to the table reaches every mode it is marked for, and no mode has its own copy of the mapping.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import typer


@dataclass(frozen=True)
class Flag:
    """One option of a command.

    ``default`` is what "not given" looks like (None, or False for a plain switch), so an explicit value equal
    to the library's default (``--jobs 1``) still counts as given. ``key`` is the dotted config key the value
    overrides (between ``--set`` and nothing: flags win). ``modes`` names the modes that accept it.
    """

    name: str
    decls: tuple[str, ...]
    annotation: Any
    help: str
    key: str | None = None
    modes: frozenset[str] = frozenset({"clip", "timeline", "batch"})
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def label(self) -> str:
        """The long name as a user types it (``--face-at``)."""
        return next(d for d in self.decls if d.startswith("--")).split("/")[0]

    def given(self, value: Any) -> bool:
        """Whether the user typed it (``--no-conform`` is given; a switch left off is not)."""
        return value is not None and value != [] and value != self.default

    def option(self) -> Any:
        low, high = self.minimum, self.maximum
        if self.key is not None:
            schema_low, schema_high = schema_bounds(self.key)
            low = schema_low if low is None else low
            high = schema_high if high is None else high
        bounds = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
        finite = {"callback": finite_number} if float in typing.get_args(self.annotation) + (self.annotation,) else {}
        return typer.Option(self.default, *self.decls, help=self.help, show_default=False, **bounds, **finite)


def finite_number(value: Any) -> Any:
    """Click's callback for a number option: ``inf`` (which passes a minimum) is refused like a value out of range
    (exit 2), not taken into arithmetic that fails later as an internal error."""
    if isinstance(value, float) and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def schema_bounds(key: str, *, train: bool = False) -> tuple[float | None, float | None]:
    """The ``ge``/``le`` limits of a config key (``"inference.steps"`` -> ``(1, 1000)``; ``train``: a training key)."""
    from lipsyncctl.api import key_bounds

    return key_bounds(key, train=train)


def limits(key: str | None = None, *, train: bool = False,
           bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """A Typer option's ``min``/``max``: a config key's schema bounds (:func:`schema_bounds`), or ``bounds`` of a count
    that is no key (:data:`lipsyncctl.config.JOBS`)."""
    low, high = bounds if bounds is not None else schema_bounds(str(key), train=train)
    return {k: v for k, v in (("min", low), ("max", high)) if v is not None}


def signature(flags: Iterable[Flag]) -> inspect.Signature:
    """The keyword signature Typer reads the options from."""
    return inspect.Signature([
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.annotation, default=f.option())
        for f in flags
    ])


def misplaced(flags: Iterable[Flag], values: Mapping[str, Any], mode: str) -> list[str]:
    """Labels of the flags given in ``values`` that ``mode`` does not accept."""
    return [f.label for f in flags if mode not in f.modes and f.given(values.get(f.name))]


def config_flags(flags: Iterable[Flag], values: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """``{config key: value}`` of the flags of ``mode`` (None: not given, the preset's value stays)."""
    return {f.key: values.get(f.name) for f in flags if f.key is not None and mode in f.modes}
