"""`lipsyncctl presets list|show|keys`."""

from __future__ import annotations

import json

import typer
import yaml

from lipsyncctl import api
from lipsyncctl.cli import state as st

presets_app = typer.Typer(
    help="List and show run presets (YAML files validated by a strict schema).", no_args_is_help=True
)


@presets_app.command("list")
def list_cmd(
    train: bool = typer.Option(False, "--train", help="The training presets (train --preset) instead."),
) -> None:
    """List the built-in presets: those of sync, prep, score and curate, or with --train those of train.

    With --json: {"ok": true, "presets": [{"name", "description", "path"}, ...]}.
    """
    rows = api.presets(train=train)

    def human(c) -> None:  # type: ignore[no-untyped-def]
        c.print(st.table("training presets" if train else "presets (sync, prep, score, curate)",
                         ["name", "description"], [(r["name"], r["description"]) for r in rows]))
        if not train:
            c.print("training presets: lipsyncctl presets list --train")

    st.result({"presets": rows}, human)


@presets_app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Preset name or YAML file."),
    resolved: bool = typer.Option(
        True, "--resolved/--raw", help="Show it merged over the defaults (default) or as written."
    ),
    train: bool = typer.Option(False, "--train", help="A training preset (train --preset; `tiny` is both kinds)."),
) -> None:
    """Show a preset (validated), merged over the defaults unless --raw.

    With --json: {"ok": true, "preset": NAME, "resolved": BOOL, "config": {...}}.
    """
    data = api.preset(name, train=train, resolved=resolved)
    st.result({"preset": name, "resolved": resolved, "config": data},
              lambda c: typer.echo(yaml.safe_dump(data, sort_keys=False), nl=False))


@presets_app.command("keys")
def keys_cmd(
    section: str | None = typer.Argument(None, help="Only this section's keys (inference, faces, output...), or one "
                                         "key (output.crf)."),
    train: bool = typer.Option(False, "--train", help="The training configuration's keys (train --preset/--set)."),
) -> None:
    """List every configuration key: its type or choices, default, bounds and meaning.

    These are the keys of presets and of --set SECTION.KEY=VALUE, read from the schema that validates them.
    With --json: {"ok": true, "keys": [{"key", "type", "default", "bounds", "description"}, ...]}.
    """
    keys = api.config_keys(section, train=train)
    rows = [k.to_dict() for k in keys]

    def human(c) -> None:  # type: ignore[no-untyped-def]
        c.print(st.table(f"{'training ' if train else ''}configuration keys{f' ({section})' if section else ''}",
                         ["key", "type", "default", "bounds", "description"],
                         [(k.key, k.type, k.default if isinstance(k.default, str) else json.dumps(k.default),
                           k.bounds, k.description) for k in keys]))

    st.result({"keys": rows}, human)


def register(app: typer.Typer) -> None:
    app.add_typer(presets_app, name="presets")
