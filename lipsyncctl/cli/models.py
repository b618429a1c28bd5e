"""`lipsyncctl models list|fetch|verify|convert|info|path`: the checkpoint registry and files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.text import Text

from lipsyncctl.cli import state as st

if TYPE_CHECKING:
    from lipsyncctl.api import ModelCheck

models_app = typer.Typer(
    help="Known checkpoints: list, fetch (the only command that downloads), verify, convert, info, path.",
    no_args_is_help=True,
)

@models_app.command("list")
def list_cmd() -> None:
    """Show the known models, whether they are installed, and where."""
    from lipsyncctl import api

    listing = api.list_models()
    data = listing.to_dict()
    rows = data["models"]
    mdir = listing.models_dir

    def human(console: Console) -> None:
        table = st.table(None, ["name", "installed", "size", "licence", "description"], [])
        for r in rows:
            installed, style = ("yes", "green") if r["installed"] else ("partial", "yellow") if r["partial"] else ("no", "dim")
            table.add_row(r["name"], Text(installed, style=style),
                          st.human_size(r["size"]) if r["size"] else "", r["licence"] or "see card", r["description"])
        console.print(table)
        console.print(f"models dir: {mdir} (from {data['models_dir_source']})", markup=False, highlight=False)

    st.result(data, human)


@models_app.command("fetch")
def fetch_cmd(
    names: list[str] = typer.Argument(..., help="Model names (see `lipsyncctl models list`)."),
    force: bool = typer.Option(False, "--force", help="Download again even when the files are there."),
    deps: bool = typer.Option(True, "--deps/--no-deps", help="Also fetch the models these need (e.g. the VAE)."),
) -> None:
    """Download models into the models dir (the only command that downloads; hashes are checked).

    Hub files go through huggingface_hub (a dropped connection resumes within the run); other URLs also
    resume a download an earlier run left unfinished. Honours HF_ENDPOINT (mirror), HF_TOKEN and
    HF_HUB_OFFLINE=1. Unknown hashes are recorded in <models dir>/local.yaml by the first download and
    verified against it afterwards.
    """
    from lipsyncctl import api

    results = [r.to_dict() for r in api.fetch_models(names, force=force, deps=deps)]

    def human(console: Console) -> None:
        rows = [(r["model"], f["path"], f["status"], st.human_size(f["size"]),
                 (f["sha256"] or "")[:16] + (f" ({f['sha256_origin']})" if f["sha256_origin"] else ""))
                for r in results for f in r["files"]]
        console.print(st.table("fetched", ["model", "file", "status", "size", "sha256"], rows))

    st.result({"models": results}, human)


@models_app.command("verify")
def verify_cmd(
    names: list[str] | None = typer.Argument(None, help="Models to check (default: every installed one)."),
    hashes: bool = typer.Option(True, "--hash/--no-hash", help="Compute sha256 (slow for big files)."),
    load: bool = typer.Option(True, "--load/--no-load", help="Check that each file loads (names and shapes)."),
    record: bool = typer.Option(False, "--record", help="Remember the sha256 of good files whose hash is unknown."),
) -> None:
    """Check sizes, hashes and loadability of installed models. Exit 4 when missing or corrupt."""
    from lipsyncctl import api

    checks = api.verify_models(names, hashes=hashes, load=load, record=record)
    models_dir = api.list_models().models_dir
    st.result({"models_dir": str(models_dir), "models": [c.to_dict() for c in checks]},
              lambda c: _render_verify(c, checks), ok=all(c.ok for c in checks))
    api.check_models(checks)  # corrupt or missing: the error (exit 4) with the fetch command


def _render_verify(console: Console, checks: list[ModelCheck]) -> None:
    table = st.table("verify", ["model", "file", "status", "size", "detail"], [])
    for c in checks:
        for f in c.files:
            style = "green" if f.status == "ok" else "yellow" if f.status == "missing" else "bold red"
            table.add_row(c.name, f.path, Text(f.status, style=style), st.human_size(f.size), Text(f.detail))
    console.print(table)


@models_app.command("convert")
def convert_cmd(
    source: Path = typer.Argument(..., help="Official checkpoint file or diffusers VAE folder."),
    output: Path = typer.Argument(..., help="The .safetensors file to write."),
    fp16: bool = typer.Option(False, "--fp16", help="Store weights as float16 (half the size)."),
    config: str | None = typer.Option(
        None, "--config", help="Architecture config (UNet: stage2, stage2_512, ...; syncnet: syncnet_16_pixel_attn, "
        "...; or a YAML path). Default: the official config the tensors match."),
    kind: str | None = typer.Option(None, "--kind", help="unet, whisper, vae, stable-syncnet or syncnet-eval "
                                    "(default: detected)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
) -> None:
    """Convert an official checkpoint to safetensors with its config in the header (fast, zero-copy loading)."""
    from lipsyncctl import api

    res = api.convert_checkpoint(source, output, kind=kind, config=config, fp16=fp16, overwrite=overwrite)
    st.result(res.to_dict, lambda c: c.print(
        f"wrote {res.output} ({res.kind}, config {res.config_name or '-'}, {res.num_tensors} tensors, "
        f"{res.dtype}, {st.human_size(res.size_bytes)})", markup=False, highlight=False))


@models_app.command("info")
def info_cmd(
    file: Path = typer.Argument(..., help="A checkpoint file or diffusers folder."),
    match: bool = typer.Option(True, "--match/--no-match", help="Name the official config the tensors match."),
) -> None:
    """Show a checkpoint's container, tensor count, dtypes, parameters and detected model kind."""
    from lipsyncctl import api

    info = api.inspect_checkpoint(file, match=match)
    data = info.to_dict()

    def human(console: Console) -> None:
        rows = [
            ("file", str(info.path)), ("format", info.format), ("container", info.container),
            ("size", st.human_size(info.size_bytes)), ("tensors", str(info.num_tensors)),
            ("elements", f"{info.num_elements:,}"),
            ("dtypes", ", ".join(f"{k} x{v}" for k, v in sorted(info.dtypes.items()))),
            ("kind", info.kind), ("config", info.config or "-"),
        ]
        rows += [(f"meta: {k}", str(v)[:200]) for k, v in info.metadata.items()]
        console.print(st.table(None, ["field", "value"], rows))

    st.result(data, human)


@models_app.command("path")
def path_cmd(
    name: str = typer.Argument(..., help="Model name."),
    role: str | None = typer.Argument(None, help="File role (unet, whisper, vae, ...); default: the main file."),
) -> None:
    """Print the path of an installed model file (exit 4 when it is not installed)."""
    from lipsyncctl import api

    p = api.model_path(name, role)
    st.result({"name": name, "role": role, "path": str(p)}, lambda c: typer.echo(str(p)))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
