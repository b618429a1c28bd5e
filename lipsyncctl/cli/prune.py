"""`lipsyncctl prune OUT`: old deliveries and unused renders out of a `sync --timeline` output folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from lipsyncctl.cli import state as st

if TYPE_CHECKING:
    from lipsyncctl.api import PruneResult

HELP = """Remove old versions (and with --renders unused cached renders) from a sync --timeline output folder.

\b
Examples:
  lipsyncctl prune out/ --dry-run     # what would go, and the space it frees
  lipsyncctl prune out/ --keep 3      # the 3 newest versions of each language stay (and current's)
  lipsyncctl prune out/ --renders     # also the cached renders no kept version uses

A version is removed only when it holds exactly the files its report.json lists; one with files a person
added is left alone and named. Relinked timelines of a removed version (in an NLE project) no longer find
its renders. With --renders, a rerun renders those shots again. The space freed counts a file once its
last link is gone (a version's renders are links of the cache). Exit codes: 0 ok, 2 usage (not an output
folder of sync --timeline; --renders where versions hold copies, not links), 5 no such folder, 6 busy (a run
is writing there; --wait waits), 130 interrupted (each version is whole or gone).
"""


def prune(
    folder: Path = typer.Argument(..., help="The -o folder of a `sync --timeline` run."),
    keep: int = typer.Option(1, "--keep", "-k", min=1, help="Versions kept per language, the newest (current's "
                             "version is kept besides)."),
    renders: bool = typer.Option(False, "--renders", help="Also remove cached renders no kept version uses "
                                 "(and their job records): a rerun renders those shots again."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Say what would be removed; remove nothing."),
    wait: bool = typer.Option(False, "--wait", help="If a run is writing to FOLDER, wait for it (else exit 6)."),
) -> None:
    from lipsyncctl import api

    res = api.prune(folder, keep=keep, renders=renders, dry_run=dry_run, wait=wait)
    st.result(res.to_dict, lambda console: _render(console, res))


def _render(console: Console, res: PruneResult) -> None:
    verb = "would remove" if res.dry_run else "removed"
    rows = [(lang.language, " ".join(lang.kept), " ".join(lang.removed) or "-",
             "; ".join(f"{v}: {why}" for v, why in lang.left.items()) or "-") for lang in res.languages]
    console.print(st.table(f"{res.folder}: versions", ["language", "kept", verb, "left alone"], rows))
    if res.renders:
        console.print(f"{verb} {len(res.renders)} cached render(s) and {len(res.records)} job record(s)")
    console.print(f"{'would free' if res.dry_run else 'freed'} {st.human_size(res.freed_bytes)}")


def register(app: typer.Typer) -> None:
    app.command("prune", help=HELP)(prune)
