"""The configuration keys as their schemas declare them (``lipsyncctl presets keys``, the CLI's option bounds): type,
default, bounds and description, read from the schema that validates presets and ``--set`` (nothing restated)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel

from lipsyncctl.config import Config, keys_command
from lipsyncctl.errors import ConfigError


@dataclass(frozen=True)
class KeyInfo:
    """One configuration key as its schema declares it (``lipsyncctl presets keys``)."""

    key: str          # dotted: "inference.steps"
    type: str         # "int", "bool", "float", "str", "auto | cpu", "int or null"...
    default: Any      # the built-in default (JSON value)
    bounds: str       # "", ">= 1, <= 1000"
    description: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def field_bounds(field: Any) -> tuple[tuple[float | None, bool], tuple[float | None, bool]]:
    """A pydantic field's numeric limits as declared (``Field(ge=..., gt=..., le=..., lt=...)``):
    ``((low, inclusive), (high, inclusive))``, None where there is none."""
    low: tuple[float | None, bool] = (None, True)
    high: tuple[float | None, bool] = (None, True)
    for m in field.metadata:
        if getattr(m, "ge", None) is not None:
            low = (m.ge, True)
        if getattr(m, "gt", None) is not None:
            low = (m.gt, False)
        if getattr(m, "le", None) is not None:
            high = (m.le, True)
        if getattr(m, "lt", None) is not None:
            high = (m.lt, False)
    return low, high


def _type_name(annotation: Any) -> str:
    import types
    from typing import Union, get_origin

    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        named = " or ".join(_type_name(a) for a in args if a is not type(None))
        return named + (" or null" if type(None) in args else "")
    if origin in (list, tuple, Sequence):
        inner = [a for a in get_args(annotation) if a is not Ellipsis]
        return f"list of {_type_name(inner[0])}" if inner else "list"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def describe_keys(schema: type[BaseModel] | None = None, section: str | None = None) -> list[KeyInfo]:
    """Every key of ``schema`` (the run :class:`Config`; ``TrainConfig`` for training), or of one ``section``, in
    declaration order: its type, built-in default, declared bounds and description, read from the schema that
    validates presets and ``--set`` (nothing restated). A dotted ``section`` (``"output.crf"``) gives that key.

    Raises:
        ConfigError: ``section`` is not one of the schema's sections (they are listed), or not one of its keys
            (an unknown key, exit 3, as in a preset or ``--set``).
    """
    schema = schema or Config
    if section is not None and "." in section:
        head = section.split(".", 1)[0]
        found = [k for k in describe_keys(schema, head) if k.key == section]
        if not found:
            raise ConfigError(f"no configuration key {section!r}",
                              hint=f"`{keys_command(schema)} {head}` lists that section's keys")
        return found
    defaults = schema().model_dump(mode="json")
    sections = [name for name, f in schema.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]
    if section is not None and section not in sections:
        raise ConfigError(f"no configuration section {section!r}", hint=f"sections: {', '.join(sections)}")
    out: list[KeyInfo] = []

    def walk(model: type[BaseModel], prefix: str, values: Mapping[str, Any]) -> None:
        for name, f in model.model_fields.items():
            key = f"{prefix}{name}"
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
                walk(f.annotation, f"{key}.", values[name])
                continue
            (low, low_in), (high, high_in) = field_bounds(f)
            bounds = []
            if low is not None:
                bounds.append(f"{'>=' if low_in else '>'} {low}")
            if high is not None:
                bounds.append(f"{'<=' if high_in else '<'} {high}")
            out.append(KeyInfo(key, _type_name(f.annotation), values.get(name), ", ".join(bounds),
                               " ".join((f.description or "").split())))

    if section is None:
        walk(schema, "", defaults)
    else:
        walk(schema.model_fields[section].annotation, f"{section}.", defaults[section])  # type: ignore[arg-type]
    return out
