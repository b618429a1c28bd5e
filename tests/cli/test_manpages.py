"""The committed man pages match the command tree, and each page's OPTIONS match that command's --help."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

MAN = REPO / "man"
REGEN = "run python scripts/gen_man.py (or make man) and commit man/"

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
OPTION = re.compile(r"-{1,2}[A-Za-z0-9][\w-]*")


def _load_gen_man():
    spec = importlib.util.spec_from_file_location("gen_man", REPO / "scripts" / "gen_man.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


gen_man = _load_gen_man()


def help_options(text: str) -> set[str]:
    """Option names in Typer's rich ``--help`` panels: rows whose first cell starts with a dash.

    Continuation lines of wrapped help text are indented to the help column, so only rows starting near
    the panel border (optionally after the ``*`` required marker) are option rows.
    """
    found: set[str] = set()
    for line in ANSI.sub("", text).splitlines():
        if not line.startswith("│"):
            continue
        body = line[1:]
        indent = len(body) - len(body.lstrip(" "))
        first = body.lstrip(" *")
        if indent > 6 or not first.startswith("-"):
            continue
        for token in first.split():
            if not OPTION.fullmatch(token):
                break
            found.add(token)
    return found


def man_options(roff: str) -> set[str]:
    """Option names in the bold parts of the ``.TP`` headers of a page's OPTIONS section."""
    assert "\n.SH OPTIONS\n" in roff, "page has no OPTIONS section"
    section = roff.split("\n.SH OPTIONS\n", 1)[1].split("\n.SH ", 1)[0].splitlines()
    found: set[str] = set()
    for i, line in enumerate(section[:-1]):
        if line == ".TP":
            for bold in re.findall(r"\\fB(.*?)\\fR", section[i + 1]):
                found |= set(OPTION.findall(bold.replace("\\-", "-")))
    return found


def test_committed_pages_match_generator(tmp_path: Path) -> None:
    pages = gen_man.render_all()
    gen_man.write(tmp_path, pages)
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.1")}
    committed = {p.name: p.read_text() for p in MAN.glob("lipsyncctl*.1")}
    missing, stale = sorted(set(fresh) - set(committed)), sorted(set(committed) - set(fresh))
    changed = sorted(n for n in set(fresh) & set(committed) if fresh[n] != committed[n])
    assert not (missing or stale or changed), (
        f"man/ is out of date (missing {missing}, stale {stale}, changed {changed}): {REGEN}"
    )
    assert gen_man.diff(MAN, pages) == []


def test_one_page_per_command() -> None:
    nodes = list(gen_man.walk(gen_man.root_command()))
    names = {n.page for n in nodes}
    assert "lipsyncctl" in names and "lipsyncctl-doctor" in names
    assert "lipsyncctl-presets-show" in names  # nested commands get <group>-<cmd> pages
    assert len(names) == len(nodes)


def test_man_options_equal_help_options(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.cli.main import main

    monkeypatch.setenv("COLUMNS", "200")
    problems = []
    for node in gen_man.walk(gen_man.root_command()):
        assert main([*node.path, "--help"]) == 0
        shown = help_options(capsys.readouterr().out)
        assert "--help" in shown, f"could not parse the --help of {node.title}"
        page = MAN / f"{node.page}.1"
        if not page.is_file():
            problems.append(f"{page.name} missing")
            continue
        documented = man_options(page.read_text())
        if documented != shown:
            problems.append(
                f"{page.name}: only in --help {sorted(shown - documented)}, only in man {sorted(documented - shown)}"
            )
    assert not problems, "; ".join(problems) + f": {REGEN}"


def test_required_sections_present() -> None:
    for name, roff in gen_man.render_all().items():
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "ENVIRONMENT", "SEE ALSO"):
            assert f"\n.SH {section}\n" in roff, f"{name}: no {section}"
        for var in ("LIPSYNCCTL_MODELS", "LIPSYNCCTL_HOME", "LIPSYNCCTL_FFMPEG", "LIPSYNCCTL_DEBUG"):
            assert var in roff
        table = roff.split(".TS\n", 1)[1].split(".TE", 1)[0]
        codes = [line.split("\t")[0] for line in table.splitlines()[1:] if "\t" in line]
        assert codes == ["0", "1", "2", "3", "4", "5", "6", "130"]


def test_help_parser_reads_required_marker_and_secondary_names() -> None:
    text = (
        "╭─ Options ──╮\n"
        "│ *  --video   -i   <path>  The clip.  [required]     │\n"
        "│    --resolved --raw <bool>  Merged or as written,   │\n"
        "│                             --not-an-option here.   │\n"
        "╰────────────╯\n"
    )
    assert help_options(text) == {"--video", "-i", "--resolved", "--raw"}


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_pages_render_without_groff_warnings(tmp_path: Path) -> None:
    gen_man.write(tmp_path, gen_man.render_all())
    proc = subprocess.run(
        ["groff", "-t", "-man", "-ww", "-z", *sorted(str(p) for p in tmp_path.glob("*.1"))],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
