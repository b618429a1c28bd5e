"""`lipsyncctl doctor`: can this machine run lipsyncctl (and a given preset)?"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lipsyncctl.cli import options
from lipsyncctl.cli import state as st

if TYPE_CHECKING:
    from lipsyncctl.api import DoctorResult

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def doctor(
    preset: str | None = options.PresetOpt,
    sets: list[str] | None = options.SetOpt,
    print_config: bool = options.PrintConfigOpt,
    outputs: Path | None = typer.Option(
        None, "--outputs", "-o", help="Where outputs will be written (checked: it can be written, and its free "
        "space). Default: the current folder, whose write access only warns.", show_default=False,
    ),
) -> None:
    """Check Python, torch, GPUs, ffmpeg, PyAV, presets, disk and models; with --preset, its VRAM needs.

    Exits 0 when every required check passes, 4 otherwise (each failing check has a hint).
    """
    from lipsyncctl import api

    train_config = None
    if preset and preset not in options.cfg.list_presets() and preset in api.train_presets():
        config, train_config = None, api.resolve_train_config(preset, sets or ())  # a training preset
        if print_config:
            options.print_and_exit(train_config.to_dict())
    else:  # --print-config alone prints the defaults (it ran every check instead)
        config = options.resolve(preset, sets, {}, print_config) if (preset or sets or print_config) else None
    res = api.doctor(config, outputs_dir=outputs, train_config=train_config)
    st.result(res.to_dict, lambda c: _render(c, res), ok=res.ok)
    if not res.ok:
        names = ", ".join(c.name for c in res.failures)
        stderr = st.state().stderr
        stderr.print(f"error: {len(res.failures)} required check(s) failed: {names}", markup=False,
                     highlight=False)
        for c in res.failures:
            if c.hint:
                stderr.print(f"hint: {c.name}: {c.hint}", markup=False, highlight=False)
        raise typer.Exit(4)


def _render(console: Console, res: DoctorResult) -> None:
    table = Table(title="lipsyncctl doctor" + (f" (preset {res.preset})" if res.preset else ""),
                  title_justify="left")
    for col in ("check", "status", "detail", "hint"):
        table.add_column(col, overflow="fold")
    for c in res.checks:
        label = c.status if c.status in ("ok", "skip") else c.status.upper()
        if c.status == "fail" and not c.required:
            label += " (optional)"
        table.add_row(c.name, Text(label, style=_STYLE[c.status]), Text(c.detail), Text(c.hint))
    console.print(table)
    if res.ok:
        console.print("[green]all required checks passed[/]")
    else:
        console.print(f"[bold red]{len(res.failures)} required check(s) failed[/]")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
