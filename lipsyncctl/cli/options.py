"""Options shared by commands that take a run configuration (--preset, --set, --print-config)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import typer
import yaml

from lipsyncctl import api
from lipsyncctl import config as cfg
from lipsyncctl.cli import state as st

PresetOpt = typer.Option(
    None, "--preset", "-p", help="Preset name (see `lipsyncctl presets list`) or a YAML file."
)
SetOpt = typer.Option(
    None, "--set", help="Override one preset key, e.g. --set inference.steps=10 (repeatable; `lipsyncctl presets keys` lists them)."
)
PrintConfigOpt = typer.Option(
    False, "--print-config", help="Print the resolved configuration as YAML and exit."
)


def resolve(
    preset: str | None, sets: list[str] | None, flags: Mapping[str, Any], print_config: bool
) -> cfg.Config:
    """Resolve defaults < preset < --set < flags; with --print-config print it and exit 0."""
    config = api.resolve_config(preset, sets or (), flags)
    if print_config:
        print_and_exit(config.to_dict())
    return config


def print_and_exit(config: dict[str, Any]) -> NoReturn:
    """``--print-config``: the resolved configuration (run or training) as YAML, or as JSON with ``--json``; exit 0."""
    if st.state().json:
        st.emit_json(config)
    else:
        typer.echo(yaml.safe_dump(config, sort_keys=False), nl=False)
    raise typer.Exit(0)
