"""The promises every command keeps: global options anywhere, one `--json` envelope, registered commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from lipsyncctl.cli import state as st
from lipsyncctl.cli.argv import GLOBAL_PARAMS, hoist_global_options
from lipsyncctl.cli.main import COMMAND_MODULES, app, main, register_commands
from tests.conftest import REPO

ROOT = typer.main.get_command(app)
GLOBAL_FLAGS = {"--json", "--quiet", "-q", "--verbose", "-v"}


def _paths(command, prefix: list[str]):  # type: ignore[no-untyped-def]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield [*prefix, name]
        yield from _paths(sub, [*prefix, name])


COMMAND_PATHS = list(_paths(ROOT, []))


def _state_after(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, bool, bool]:
    """(verbose, quiet, json) as the root callback parsed them for ``argv + --help`` (nothing runs)."""
    assert main([*argv, "--help"]) == 0
    capsys.readouterr()
    s = st.state()
    return s.verbose, s.quiet, s.json


# ----------------------------------------------------------------------------------------------
# 1. Global options before or after the command name


def test_every_command_is_covered() -> None:
    flat = {" ".join(p) for p in COMMAND_PATHS}
    assert {"doctor", "sync", "prep", "models", "models list", "presets", "presets list", "presets show",
                    "presets keys"} <= flat


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_global_options_before_and_after_the_command_are_the_same(path: list[str],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert _state_after(["--json", "-q", "-vv", *path], capsys) == (2, True, True)
    assert _state_after([*path, "--json", "-q", "-vv"], capsys) == (2, True, True)
    assert _state_after([*path, "--quiet", "--verbose"], capsys) == (1, True, False)
    # counts add up wherever they stand: one before, two after
    assert _state_after(["-v", *path, "-v", "--verbose"], capsys) == (3, False, False)
    assert _state_after(path, capsys) == (0, False, False)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_no_command_declares_a_global_option_of_its_own(path: list[str]) -> None:
    command = ROOT
    for name in path:
        command = command.commands[name]
    own = {flag for p in command.params for flag in (*p.opts, *p.secondary_opts)}
    assert not own & GLOBAL_FLAGS, f"`{' '.join(path)}` declares {sorted(own & GLOBAL_FLAGS)} itself"


def test_global_options_are_declared_once_on_the_root() -> None:
    root = {p.name: set(p.opts) for p in ROOT.params if p.name in GLOBAL_PARAMS}
    assert root == {"verbose": {"--verbose", "-v"}, "quiet": {"--quiet", "-q"}, "json_out": {"--json"},
                    "progress_format": {"--progress"}}


@pytest.mark.parametrize(("argv", "hoisted"), [
    (["doctor", "--json"], ["--json", "doctor"]),
    (["models", "list", "-vv", "-q"], ["-vv", "-q", "models", "list"]),
    # option values stay with their option, whatever they look like
    (["sync", "--set", "-v", "-o", "-q", "--json"], ["--json", "sync", "--set", "-v", "-o", "-q"]),
    (["sync", "--set=-v", "-v"], ["-v", "sync", "--set=-v"]),
    # a global option's value goes with it; `--progress=json` is one token
    (["prep", "a.mp4", "--progress", "json", "-o", "o"], ["--progress", "json", "prep", "a.mp4", "-o", "o"]),
    (["prep", "a.mp4", "--progress=lines"], ["--progress=lines", "prep", "a.mp4"]),
    (["sync", "-o", "--progress", "--json"], ["--json", "sync", "-o", "--progress"]),
    # after `--` nothing is an option
    (["prep", "-o", "out", "--", "-v"], ["prep", "-o", "out", "--", "-v"]),
    # bundles of non-global short flags are the command's own
    (["prep", "a.mp4", "-o", "o", "-fn"], ["prep", "a.mp4", "-o", "o", "-fn"]),
])
def test_hoist_global_options(argv: list[str], hoisted: list[str]) -> None:
    assert hoist_global_options(ROOT, argv) == hoisted


def test_global_option_after_the_command_really_runs_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


# ----------------------------------------------------------------------------------------------
# 2. One --json envelope


def _json(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    assert main(argv) == code
    doc = json.loads(capsys.readouterr().out)
    assert isinstance(doc, dict) and isinstance(doc["ok"], bool)
    return doc


def test_presets_list_is_an_object(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(["presets", "list", "--json"], 0, capsys)
    assert doc["ok"] is True and {p["name"] for p in doc["presets"]} >= {"tiny", "latentsync-1.5"}


def test_presets_show(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(["presets", "show", "tiny", "--json"], 0, capsys)
    assert doc["ok"] is True and doc["preset"] == "tiny" and doc["config"]["name"] == "tiny"


def _leaves(tree: dict, prefix: str = "") -> dict:  # type: ignore[type-arg]
    out = {}
    for k, v in tree.items():
        out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_presets_keys_lists_every_key_with_its_default_bounds_and_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    """The keys of presets and --set, from the schema that validates them: every leaf of the resolved defaults once,
    with that default, its declared limits and a description; a section alone; the training configuration's with
    --train; an unknown section is a usage error listing the sections."""
    from lipsyncctl import config as cfg
    from lipsyncctl.training.config import resolve_train_config

    doc = _json(["presets", "keys", "--json"], 0, capsys)
    rows = {r["key"]: r for r in doc["keys"]}
    assert len(rows) == len(doc["keys"]) and {k: r["default"] for k, r in rows.items()} == _leaves(cfg.Config().to_dict())
    assert rows["inference.steps"] == {"key": "inference.steps", "type": "int", "default": 20, "bounds": ">= 1, <= 1000",
                                       "description": "DDIM inference steps"}
    assert rows["curate.shot_threshold"]["bounds"] == "> 0, <= 255"  # gt: exclusive
    assert rows["faces.select"]["type"] == "largest | id | point | speaker"
    assert rows["output.pix_fmt"]["type"] == "str or null" and rows["faces.point"]["type"] == "list of float or null"
    assert all(r["description"] for r in rows.values())  # every key says what it does
    section = _json(["presets", "keys", "output", "--json"], 0, capsys)["keys"]
    assert [r["key"] for r in section] == [k for k in rows if k.startswith("output.")]
    train = {r["key"]: r for r in _json(["presets", "keys", "--train", "--json"], 0, capsys)["keys"]}
    assert {k: r["default"] for k, r in train.items()} == _leaves(resolve_train_config(None).to_dict()) | {
        "name": "defaults", "description": ""}
    assert all(r["description"] for r in train.values())
    err = _json(["presets", "keys", "bogus", "--json"], 3, capsys)["error"]  # an unknown key: 3, as in --set
    assert err["message"] == "no configuration section 'bogus'" and "inference" in err["hint"]
    assert _json(["presets", "keys", "output.crf", "--json"], 0, capsys)["keys"] == [rows["output.crf"]]
    err = _json(["presets", "keys", "output.crff", "--json"], 3, capsys)["error"]
    assert err["message"] == "no configuration key 'output.crff'" and "`lipsyncctl presets keys output`" in err["hint"]
    err = _json(["presets", "keys", "--train", "loss.x", "--json"], 3, capsys)["error"]
    assert "`lipsyncctl presets keys --train loss`" in err["hint"]
    assert main(["presets", "keys", "inference"]) == 0
    human = capsys.readouterr().out  # piped: one line per key (grep finds a key with its default and meaning)
    line = next(ln for ln in human.splitlines() if "inference.gpu_paste" in ln)
    assert "bool" in line and "false" in line and "GPU option" in line
    assert main(["presets", "keys", "faces.point"]) == 0  # a cell is text, not Rich markup: "[x, y]" stays
    assert "pixel [x, y] inside the face" in capsys.readouterr().out


def test_models_list_installed_is_a_boolean(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(["models", "list", "--json"], 0, capsys)
    assert doc["ok"] is True
    assert all(isinstance(m["installed"], bool) and isinstance(m["partial"], bool) for m in doc["models"])


def test_models_path_missing_is_an_error_envelope(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(["models", "path", "latentsync-1.5", "--json"], 4, capsys)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 4


def test_doctor_ok_follows_its_exit_code(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from lipsyncctl import api
    from lipsyncctl.checks import doctor as checks

    def fake(config, outputs_dir, **kwargs):  # type: ignore[no-untyped-def]
        return checks.DoctorResult(checks=[checks.Check("python", "fail", "too old", hint="upgrade")], preset=None)

    monkeypatch.setattr(api, "doctor", fake)  # the CLI's one door into the library
    doc = _json(["doctor", "--json"], 4, capsys)
    assert doc["ok"] is False and doc["checks"][0]["status"] == "fail"


def test_successful_sync_says_ok(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from lipsyncctl import api

    class Done:
        warnings: list[str] = []

        def to_dict(self) -> dict:  # type: ignore[type-arg]
            return {"output": "out.mp4", "frames": 3}

    monkeypatch.setattr(api, "sync", lambda *a, **k: Done())
    doc = _json(["sync", "-i", "v.mp4", "-a", "a.wav", "-o", str(tmp_path / "o.mp4"), "--json"], 0, capsys)
    assert doc == {"ok": True, "output": "out.mp4", "frames": 3}


def test_prep_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fractions import Fraction

    from tests.sync_media import sample_frames, write_clip

    clip = write_clip(tmp_path / "v.mkv", sample_frames(2, scale=0.5), Fraction(25))
    doc = _json(["prep", str(clip), "-o", str(tmp_path / "o"), "--dry-run", "--allow-no-audio", "--json"], 0, capsys)
    assert doc["ok"] is True and doc["items"][0]["status"] == "planned"


def test_envelope_replaces_a_results_own_ok() -> None:
    assert st.envelope({"ok": True, "n": 1}, ok=False) == {"ok": False, "n": 1}
    assert list(st.envelope({"n": 1})) == ["ok", "n"]


README_JQ = "lipsyncctl presets list --json | jq -e .ok"


def test_readme_jq_example_works(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's example, exactly: `jq -e .ok` exits 0 only when .ok is neither false nor null."""
    readme = (REPO / "README.md").read_text()
    assert f"\n{README_JQ}\n" in readme
    doc = _json(["presets", "list", "--json"], 0, capsys)  # the same logic in-process
    assert doc["ok"] not in (False, None)
    exe = Path(sys.executable).with_name("lipsyncctl")
    if shutil.which("jq") and exe.is_file():  # and the real pipeline where jq is installed
        proc = subprocess.run(README_JQ.replace("lipsyncctl", str(exe), 1), shell=True, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == "true", proc.stderr


# ----------------------------------------------------------------------------------------------
# 8. Registered commands


def test_listed_command_modules_are_registered() -> None:
    assert set(COMMAND_MODULES) <= set(ROOT.commands)
    assert set(ROOT.commands) == set(COMMAND_MODULES)  # every command comes from the list


def test_a_missing_listed_module_is_an_import_error() -> None:
    with pytest.raises(ModuleNotFoundError, match="lipsyncctl.cli.no_such_command"):
        register_commands(typer.Typer(), ("doctor", "no_such_command"))


def test_commands_exist_exactly_when_their_module_does() -> None:
    modules = {p.stem for p in (REPO / "lipsyncctl" / "cli").glob("*.py")}
    for name in ("curate", "train"):
        assert (name in COMMAND_MODULES) == (name in modules), name


# ----------------------------------------------------------------------------------------------
# 5. Tables in a pipe or a log keep their full values


def test_tables_are_not_cut_when_not_a_terminal(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    long = "/very/long/" + "/".join(f"folder-{i:02d}" for i in range(20)) + "/clip_01:00:00:00.mov"
    out = st.console()
    assert not out.is_terminal and out.width == st.UNBOUNDED_WIDTH  # pytest's stdout is not a terminal
    buffer = io.StringIO()
    piped = Console(file=buffer, width=st.UNBOUNDED_WIDTH, soft_wrap=True)
    piped.print(st.table("t", ["input", "status"], [(long, "done")]))
    text = buffer.getvalue()
    assert long in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) < len(long) + 40  # no padding to 10,000 columns


def test_a_terminal_keeps_its_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "90")
    assert st.console().width == 90


def test_piped_cli_table_shows_long_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real command's table on a captured (non-TTY) stdout: the whole path, no ``…``."""
    deep = tmp_path.joinpath(*(f"a-rather-long-folder-name-{i}" for i in range(6)))
    deep.mkdir(parents=True)
    (deep / "broken.mp4").write_bytes(b"not a video at all")
    assert main(["prep", str(deep / "broken.mp4"), "-o", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert str(deep / "broken.mp4") in out and "…" not in out
    assert "failed" in out


def test_help_prose_flows_and_examples_keep_their_lines() -> None:
    """A prose paragraph becomes one line (the terminal wraps it: at 80 columns each source line broke in two);
    a paragraph with indented lines (examples, a table of stages) keeps its lines and its ``\\b``."""
    from lipsyncctl.cli.main import reflow

    text = "First line\nstill the first.\n\n\b\nExamples:\n  a --b\n  c\n\n\b\nProse kept by\nClick's mark.\n\nPlain\nprose."
    assert reflow(text).split("\n\n") == ["First line still the first.", "\b\nExamples:\n  a --b\n  c",
                                          "Prose kept by Click's mark.", "Plain prose."]


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_help_has_no_prose_line_broken_in_the_source(path: list[str]) -> None:
    """At 200 columns no prose line of any command's help ends where its source line ended: a short line whose
    sentence goes on in lower case on the next line (not an indented example or table row) is such a cut."""
    import os

    done = subprocess.run([sys.executable, "-m", "lipsyncctl", *path, "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}, check=True)
    lines = [line[1:] if line.startswith(" ") else line for line in done.stdout.splitlines()]
    for a, b in zip(lines, lines[1:], strict=False):
        if "│" in a or "│" in b or not a.strip() or not b[:1].islower():
            continue  # the options' table, a paragraph's end, a line that starts a sentence or is indented
        assert len(a.rstrip()) > 150 or a.rstrip().endswith((":", ",", ";")), (path, a.rstrip(), b.rstrip())


def test_exit_codes_are_one_table() -> None:
    """Every error class's exit code (and the CLI's own) is in errors.EXIT_STATUS, which the man pages print, and the
    README's table has exactly those codes."""
    import re

    from lipsyncctl import errors
    from lipsyncctl.cli.main import EXIT_CODES

    codes = [code for code, _ in errors.EXIT_STATUS]
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.LipsyncError)]
    assert {c.exit_code for c in classes} | set(EXIT_CODES.values()) <= set(codes)
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Exit codes and `--json`"):]
    table = table[:table.index("\n\n", table.index("| code |"))]
    assert [int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.M)] == codes


def test_the_readme_names_every_known_model() -> None:
    """The Models section names each model of the registry (it listed 8 of 13)."""
    from lipsyncctl.checkpoints.registry import load_registry

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Models"):readme.index("## Python API")]
    missing = [name for name in load_registry().models if f"`{name}`" not in section]
    assert not missing, missing


def test_json_lists_the_warnings_shown_while_the_job_ran(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # a train's validation render said "tiny preset: NOT lip-synced" on stderr, and its --json had "warnings": [];
    # an error document left out the non-finite steps skipped before the run stopped
    from lipsyncctl import api, progress
    from lipsyncctl.errors import MissingModelError

    st.set_state(st.CliState(json=True))
    st.warn("said while it ran")
    assert st.with_warnings({"warnings": ["its own"], "n": 1}) == {"warnings": ["its own", "said while it ran"],
                                                                   "n": 1}
    assert st.with_warnings({"warnings": ["said while it ran"]}) == {"warnings": ["said while it ran"]}
    assert st.with_warnings({"n": 1}) == {"n": 1}  # a result without warnings keeps its shape

    def failing() -> None:
        progress.warning("step 1: non-finite loss; skipped")
        raise MissingModelError("gone")

    monkeypatch.setattr(api, "list_models", failing)
    assert main(["--json", "models", "list"]) == 4
    doc = json.loads(capsys.readouterr().out)
    assert doc["warnings"] == ["step 1: non-finite loss; skipped"] and doc["error"]["message"] == "gone"
    # an interrupted job's partial result keeps its own warnings, and those shown besides are added
    from lipsyncctl.errors import Interrupted

    def interrupted() -> None:
        progress.warning("shown while it ran")
        raise Interrupted("interrupted", partial={"warnings": ["its own"], "done": 1})

    monkeypatch.setattr(api, "list_models", interrupted)
    assert main(["--json", "models", "list"]) == 130
    doc = json.loads(capsys.readouterr().out)
    assert doc["warnings"] == ["its own", "shown while it ran"] and doc["done"] == 1
