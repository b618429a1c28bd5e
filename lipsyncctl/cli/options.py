"""Options shared by commands that take a run configuration (--preset, --set, --print-config)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

from lipsyncctl import api
from lipsyncctl import config as cfg
from lipsyncctl.cli import state as st

PresetOpt = typer.Option(
    None, "--preset", "-p", help="Preset name (see `lipsyncctl presets list`) or a YAML file."
)
SetOpt = typer.Option(
    None, "--set", help="Override one preset key, e.g. --set inference.steps=10 (repeatable)."
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
        if st.state().json:
            st.emit_json(config.to_dict())
        else:
            typer.echo(cfg.dump_yaml(config), nl=False)
        raise typer.Exit(0)
    return config
