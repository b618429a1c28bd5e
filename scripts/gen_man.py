#!/usr/bin/env python
"""Generate the man pages in ``man/`` from the Typer command tree.

One page per command: ``lipsyncctl.1`` for the root, ``lipsyncctl-<cmd>.1`` for each command and
``lipsyncctl-<group>-<cmd>.1`` for commands inside a group (``presets show``). Everything comes from
the same click objects that ``--help`` renders (help text, usage, arguments, options with defaults),
so a page cannot say something the command does not; ``tests/cli/test_manpages.py`` fails when the
committed pages drift from the code. Pages carry no date, so regenerating is reproducible.

Usage::

    python scripts/gen_man.py               # rewrite man/ (removes pages of commands that are gone)
    python scripts/gen_man.py --out DIR     # write somewhere else
    python scripts/gen_man.py --check       # exit 1 if man/ is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MAN_DIR = REPO / "man"
PROG = "lipsyncctl"

ENVIRONMENT = (
    ("LIPSYNCCTL_MODELS", "The models directory. Default: models/ of a source checkout (the folder holding "
     "registry.yaml), otherwise $LIPSYNCCTL_HOME/models."),
    ("LIPSYNCCTL_HOME", "Base directory for user state. Default: the platform's user data directory."),
    ("LIPSYNCCTL_FFMPEG", "The ffmpeg binary to use. Otherwise ffmpeg on PATH, otherwise the binary "
     "bundled with imageio-ffmpeg."),
    ("LIPSYNCCTL_DEBUG", "Set to 1 to print the Python traceback of an error in addition to the one-line "
     "error: and hint: messages."),
)


@dataclass
class Node:
    """One command of the tree: its path from the root (``["presets", "show"]``), object and context."""

    path: list[str]
    command: Any  # a Typer/click Command (Typer vendors click, so no isinstance checks)
    ctx: Any

    @property
    def is_group(self) -> bool:
        return hasattr(self.command, "list_commands")

    @property
    def page(self) -> str:
        return "-".join([PROG, *self.path])

    @property
    def title(self) -> str:
        return " ".join([PROG, *self.path])


def walk(command: Any, path: list[str] | None = None, parent: Any = None) -> Iterator[Node]:
    """Depth-first over the command tree, root first, in the order ``--help`` lists commands."""
    path = path or []
    name = path[-1] if path else PROG
    ctx = command.make_context(name, [], parent=parent, resilient_parsing=True)
    yield Node(path, command, ctx)
    if hasattr(command, "list_commands"):
        for sub in command.list_commands(ctx):
            child = command.get_command(ctx, sub)
            if child is None or getattr(child, "hidden", False):
                continue
            yield from walk(child, [*path, sub], ctx)


def root_command() -> Any:
    """The click command of the lipsyncctl app (with every command module that imports in this build)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import typer

    from lipsyncctl.cli.main import app

    return typer.main.get_command(app)


# ----------------------------------------------------------------------------------------------
# roff


def esc(text: str) -> str:
    """Escape text for roff: backslashes, hyphens (so options copy as ASCII) and leading dots/quotes."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def help_paragraphs(text: str | None) -> list[str]:
    """Split click help text into paragraphs; honour ``\\f`` (cut) and ``\\b`` (keep line breaks)."""
    if not text:
        return []
    text = text.split("\f")[0]
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            out.append("\n".join(line.rstrip() for line in lines[1:]))
        else:
            out.append(" ".join(line.strip() for line in lines))
    return [p for p in out if p.strip()]


def short_help(node: Node, limit: int = 120) -> str:
    """The NAME line's summary: the command's own short help, else the first sentence of its help (up to ". " or
    "; "), cut when longer than ``limit`` at the last clause boundary (", ", ": ", " (") outside parentheses, never
    mid-word or inside a parenthesis (click's cut left "(LatentSync" open)."""
    if node.command.short_help:
        return node.command.short_help.rstrip(".")
    paragraphs = help_paragraphs(node.command.help)
    if not paragraphs:
        return node.title
    text, depth, end = paragraphs[0], 0, len(paragraphs[0])
    for i, ch in enumerate(text):  # the first ". " or "; " outside parentheses
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and ch in ".;" and (i + 1 == len(text) or text[i + 1].isspace()):
            end = i
            break
    sentence = text[:end]
    if len(sentence) <= limit:
        return sentence
    depth, cut = 0, 0
    for i, ch in enumerate(sentence[:limit]):
        if ch == "(" and depth == 0 and i and sentence[i - 1] == " ":
            cut = i - 1
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and sentence[i:i + 2] in (", ", ": "):
            cut = i
    return sentence[:cut] if cut else sentence[:limit].rsplit(" ", 1)[0]


def _param_entries(node: Node, kind: str) -> list[tuple[str, str]]:
    entries = []
    for p in node.command.get_params(node.ctx):
        if p.param_type_name != kind or getattr(p, "hidden", False):
            continue
        record = p.get_help_record(node.ctx)
        if record is None:
            continue
        entries.append((record[0], record[1] or ""))
    return entries


def _option_header(header: str) -> str:
    """``-p, --preset <str>`` -> bold names, italic metavar."""
    parts = []
    for token in re.split(r"(\s*,\s*|\s+/\s+|\s+)", header):
        if not token:
            continue
        if token.strip() in ("", ",", "/"):
            parts.append(esc(token))
        elif token.startswith("-"):
            parts.append(f"\\fB{esc(token)}\\fR")
        else:
            parts.append(f"\\fI{esc(token)}\\fR")
    return "".join(parts)


def render(node: Node, nodes: list[Node]) -> str:
    """The roff source of one page."""
    from lipsyncctl import __version__

    out = [
        "'\\\" t",
        f'.TH "{node.page.upper()}" "1" "" "{PROG} {__version__}" "{PROG} manual"',
        ".SH NAME",
        f"{esc(node.page)} \\- {esc(short_help(node))}",
        ".SH SYNOPSIS",
    ]
    pieces = node.command.collect_usage_pieces(node.ctx)
    if node.path:
        out.append(f"\\fB{PROG}\\fR [\\fIGLOBAL OPTIONS\\fR] \\fB{esc(' '.join(node.path))}\\fR "
                   + " ".join(f"\\fI{esc(p)}\\fR" for p in pieces))
    else:
        out.append(f"\\fB{PROG}\\fR " + " ".join(f"\\fI{esc(p)}\\fR" for p in pieces))
    out.append(".SH DESCRIPTION")
    for i, para in enumerate(help_paragraphs(node.command.help)):
        if i:
            out.append(".PP")
        if "\n" in para:
            out += [".nf", esc(para), ".fi"]
        else:
            out.append(esc(para))
    if node.path:
        out += [".PP", "Global options (\\fB\\-v\\fR, \\fB\\-q\\fR, \\fB\\-\\-json\\fR) go before the command name; "
                f"see \\fB{PROG}\\fR(1)."]
    if node.is_group:
        out.append(".SH COMMANDS")
        for child in nodes:
            if child.path[:-1] == node.path and len(child.path) == len(node.path) + 1:
                out += [".TP", f"\\fB{esc(child.path[-1])}\\fR",
                        f"{esc(short_help(child))}. See \\fB{esc(child.page)}\\fR(1)."]
    for section, kind in (("ARGUMENTS", "argument"), ("OPTIONS", "option")):
        entries = _param_entries(node, kind)
        if entries:
            out.append(f".SH {section}")
            for header, text in entries:
                out += [".TP", _option_header(header) if kind == "option" else f"\\fI{esc(header)}\\fR",
                        esc(" ".join(text.split())) or "."]
    from lipsyncctl.errors import EXIT_STATUS

    # text blocks (T{ T}) in an expanding column: a long meaning wraps within the line width
    out += [".SH EXIT STATUS", ".TS", "l lx.", *(f"{code}\tT{{\n{esc(text)}\nT}}" for code, text in EXIT_STATUS),
            ".TE"]
    out.append(".SH ENVIRONMENT")
    for name, text in ENVIRONMENT:
        out += [".TP", f"\\fB{esc(name)}\\fR", esc(text)]
    out.append(".SH SEE ALSO")
    if node.path:  # the root page, the parent group's page and the pages of sub-commands
        related = [n for n in nodes if n is not node and (
            not n.path or n.path == node.path[:-1] or n.path[:-1] == node.path)]
    else:
        related = [n for n in nodes if n.path]
    out.append(",\n".join(f"\\fB{esc(n.page)}\\fR(1)" for n in related) or f"\\fB{PROG}\\fR(1)")
    return "\n".join(out) + "\n"


def render_all(command: Any | None = None) -> dict[str, str]:
    """``{file name: roff source}`` for every command of the tree."""
    nodes = list(walk(command if command is not None else root_command()))
    return {f"{n.page}.1": render(n, nodes) for n in nodes}


def write(out_dir: Path, pages: dict[str, str]) -> list[Path]:
    """Write the pages and delete generated pages of commands that no longer exist."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"{PROG}*.1"):
        if stale.name not in pages:
            stale.unlink()
    written = []
    for name, text in pages.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def diff(out_dir: Path, pages: dict[str, str]) -> list[str]:
    """Names of pages that are missing, different or stale in ``out_dir``."""
    have = {p.name: p.read_text(encoding="utf-8") for p in out_dir.glob(f"{PROG}*.1")}
    return sorted({n for n in pages if have.get(n) != pages[n]} | (set(have) - set(pages)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MAN_DIR, help="output folder (default: man/)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = parser.parse_args(argv)
    pages = render_all()
    if args.check:
        stale = diff(args.out, pages)
        if stale:
            sys.stderr.write(f"man pages out of date: {', '.join(stale)}; run python scripts/gen_man.py\n")
            return 1
        return 0
    for path in write(args.out, pages):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
