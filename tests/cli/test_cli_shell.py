"""The CLI shell: cheap --help, error -> exit code boundary, --version, --json, and the layering rules."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lipsyncctl
from lipsyncctl import config as cfg
from lipsyncctl import errors
from lipsyncctl.cli.main import main
from tests.conftest import REPO

PACKAGE = REPO / "lipsyncctl"
HEAVY = ("torch", "diffusers", "transformers", "av", "cv2")


def test_help_does_not_import_heavy_modules() -> None:
    """`lipsyncctl --help` and every command's --help start without torch & co (subprocess: clean state)."""
    code = f"""
import contextlib, io, sys
import typer
from lipsyncctl.cli.main import app, main

def paths(cmd, prefix):
    yield prefix
    ctx = cmd.make_context(prefix[-1] if prefix else "lipsyncctl", [], resilient_parsing=True)
    for name in getattr(cmd, "list_commands", lambda ctx: [])(ctx):
        yield from paths(cmd.get_command(ctx, name), prefix + [name])

for p in paths(typer.main.get_command(app), []):
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(p + ["--help"])
    assert rc == 0, (p, rc)
    loaded = [m for m in {HEAVY!r} if m in sys.modules]
    assert not loaded, f"--help of {{p}} imported {{loaded}}"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_entry_point_version_subprocess() -> None:
    proc = subprocess.run([sys.executable, "-m", "lipsyncctl", "--version"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"lipsyncctl {lipsyncctl.__version__}"


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lipsyncctl {lipsyncctl.__version__}"
    assert main(["--json", "--version"]) == 0  # (a wrapper that always adds --json got plain text)
    assert json.loads(capsys.readouterr().out) == {"lipsyncctl": lipsyncctl.__version__}


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-such-option"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and "--no-such-option" in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_json_presets_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "presets", "list"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    rows = doc["presets"]
    assert [r["name"] for r in rows] == list(cfg.list_presets())
    assert all(Path(r["path"]).is_file() for r in rows)


def test_presets_of_train_listed_and_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """`presets list --train` and `presets show --train NAME` (as `presets keys --train`): the training presets, with
    their descriptions; `tiny` is a preset of both kinds, told apart by the flag."""
    from lipsyncctl.training.config import list_train_presets

    assert main(["--json", "presets", "list", "--train"]) == 0
    rows = json.loads(capsys.readouterr().out)["presets"]
    assert [r["name"] for r in rows] == list(list_train_presets())
    assert all(r["description"] and Path(r["path"]).is_file() for r in rows)
    assert main(["presets", "list"]) == 0
    assert "presets list --train" in capsys.readouterr().out  # the plain list says where the others are
    assert main(["--json", "presets", "show", "--train", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["model"]["unet_config"] == "tiny"  # the training one
    assert main(["--json", "presets", "show", "tiny"]) == 0
    assert "inference" in json.loads(capsys.readouterr().out)["config"]  # the run one
    assert main(["--json", "presets", "show", "--train", "--raw", "stage2"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["name"] == "stage2"
    # a run's train.yaml is a training preset, raw too (its record's own keys dropped)
    import tempfile

    import yaml

    from lipsyncctl.training.config import resolve_train_config

    cfg = resolve_train_config("tiny")
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "train.yaml"
        record.write_text(yaml.safe_dump({**cfg.to_dict(), "stream_hash": cfg.stream_hash(),
                                          "data": {**cfg.to_dict()["data"], "path": tmp}}))
        assert main(["--json", "presets", "show", "--train", "--raw", str(record)]) == 0
        shown = json.loads(capsys.readouterr().out)["config"]
    assert "stream_hash" not in shown and "path" not in shown["data"] and shown["name"] == "tiny"
    assert main(["presets", "show", "--train", "latentsync-1.5"]) == 3
    assert "a preset of sync" in capsys.readouterr().err
    assert main(["--json", "train", "--list-presets"]) == 0
    assert json.loads(capsys.readouterr().out)["presets"] == {r["name"]: r["path"] for r in rows}


@pytest.mark.parametrize(
    "exc",
    [
        errors.JobFailedError("2 of 3 items failed"),
        errors.UsageError("bad"),
        errors.ConfigError("x.yaml: unknown key 'a.b'"),
        errors.MissingModelError("model 'latentsync-1.6' is not installed"),
        errors.MissingToolError("ffmpeg not found"),
        errors.DeviceError("cuda requested"),
        errors.MediaError("clip.mp4: no video stream"),
        errors.NoFaceError("no face in clip.mp4"),
        errors.Interrupted("interrupted"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_library_errors_map_to_their_exit_code(
    exc: errors.LipsyncError, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.delenv("LIPSYNCCTL_DEBUG", raising=False)
    monkeypatch.setattr(cfg, "resolve", fail)  # `presets show` calls it inside the command
    assert main(["presets", "show", "tiny"]) == exc.exit_code
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"error: {exc.message}"
    if exc.hint:
        assert err.splitlines()[1] == f"hint: {exc.hint}"
    assert "Traceback" not in err


def test_exit_code_table_is_the_documented_one() -> None:
    codes = {cls.__name__: cls.exit_code for cls in (
        errors.JobFailedError, errors.UsageError, errors.ConfigError, errors.MissingModelError,
        errors.MissingToolError, errors.DeviceError, errors.CheckpointError, errors.MediaError,
        errors.NoFaceError, errors.Interrupted)}
    assert codes == {"JobFailedError": 1, "UsageError": 2, "ConfigError": 3, "MissingModelError": 4,
                     "MissingToolError": 4, "DeviceError": 4, "CheckpointError": 4, "MediaError": 5,
                     "NoFaceError": 5, "Interrupted": 130}


def test_an_interrupt_while_the_command_is_built_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A SIGTERM in the first ~0.3 s (the command built, its help reflowed) was a traceback with no JSON on stdout
    (exit 130 all the same): 11 of 40 tries of a farm's job script."""
    import json

    from lipsyncctl.cli import main as main_mod

    def interrupt(command: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(main_mod, "_reflowed", interrupt)
    assert main(["--json", "presets", "show", "tiny"]) == 130
    out, err = capsys.readouterr()
    assert json.loads(out)["error"] == {"message": "interrupted", "hint": "nothing had started: rerun the same "
                                        "command", "exit_code": 130}
    assert "Traceback" not in err


def test_keyboard_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cfg, "resolve", interrupt)
    assert main(["presets", "show", "tiny"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # a command that writes nothing has nothing to resume (score said "rerun ... to resume; finished outputs ...")
    assert "hint: nothing was written: rerun the same command" in err
    assert main(["--progress", "json", "score", "x.mp4"]) == 130
    assert "hint: nothing was written" in capsys.readouterr().err
    assert main(["prep", "x.mp4", "-o", "y"]) == 130
    assert "hint: rerun the same command to resume; finished outputs are kept" in capsys.readouterr().err
    assert main(["prep", "x.mp4", "-o", "y", "-n"]) == 130
    assert "hint: nothing was written" in capsys.readouterr().err
    # one clip has nothing to resume; a batch or a timeline has
    monkeypatch.setattr("lipsyncctl.api.sync", interrupt)
    monkeypatch.setattr("lipsyncctl.api.sync_batch", interrupt)
    assert main(["sync", "-i", "x.mp4", "-a", "x.wav", "-o", "y.mp4", "--preset", "tiny"]) == 130
    assert "an output not finished was not written (one already there is as it was)" in capsys.readouterr().err
    assert main(["sync", "--batch=rows.csv", "--preset", "tiny"]) == 130
    assert "hint: rerun the same command to resume" in capsys.readouterr().err
    monkeypatch.setattr("lipsyncctl.api.timeline_job", interrupt)
    for flag in ("-t", "--timeline"):  # an edit's finished shots are kept: it resumes
        assert main(["sync", flag, "edit.otio", "-a", "de=x.wav", "-o", "out", "--preset", "tiny"]) == 130
        assert "hint: rerun the same command to resume" in capsys.readouterr().err


def test_unexpected_exception_is_one_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cfg, "resolve", bug)
    monkeypatch.delenv("LIPSYNCCTL_DEBUG", raising=False)
    assert main(["presets", "show", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RuntimeError: boom" in err and "LIPSYNCCTL_DEBUG=1" in err


def test_debug_shows_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise errors.MediaError("clip.mp4: truncated")

    monkeypatch.setattr(cfg, "resolve", fail)
    monkeypatch.setenv("LIPSYNCCTL_DEBUG", "1")
    assert main(["presets", "show", "tiny"]) == 5
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "error: clip.mp4: truncated" in err


# ----------------------------------------------------------------------------------------------
# Layering: only lipsyncctl/cli/ talks to the user


UI_MODULES = ("typer", "rich", "click")
FORBIDDEN_CALLS = {("sys", "exit"), ("os", "_exit"), ("logging", "basicConfig")}
FORBIDDEN_NAMES = {"print", "exit", "quit"}
#: the one exception: a pool worker process ends itself after an interrupt (the pool would hand it the next
#: queued task, and SystemExit raised in a task is sent back as its result); the user's process never exits here
ALLOWED = {("lipsyncctl/runner/workers.py", "os._exit")}


def _library_files() -> list[Path]:
    cli = PACKAGE / "cli"
    return [p for p in sorted(PACKAGE.rglob("*.py")) if cli not in p.parents]


def _violations(source: str, rel: str) -> list[str]:
    tree = ast.parse(source, filename=rel)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            if name.split(".")[0] in UI_MODULES:
                found.append(f"{rel}:{node.lineno} imports {name}")
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN_NAMES:
                found.append(f"{rel}:{node.lineno} calls {f.id}()")
            if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                    and (f.value.id, f.attr) in FORBIDDEN_CALLS and (rel, f"{f.value.id}.{f.attr}") not in ALLOWED):
                found.append(f"{rel}:{node.lineno} calls {f.value.id}.{f.attr}()")
    return found


def test_only_cli_imports_ui_prints_or_exits() -> None:
    files = _library_files()
    assert PACKAGE / "checks" / "doctor.py" in files and PACKAGE / "config.py" in files
    problems = [v for p in files for v in _violations(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert not problems, "library code must raise and report progress, not print/exit:\n" + "\n".join(problems)


def test_layering_scan_catches_violations() -> None:
    src = "import sys\nfrom rich.console import Console\nprint('x')\nsys.exit(2)\n"
    found = _violations(src, "lipsyncctl/bad.py")
    assert found == [
        "lipsyncctl/bad.py:2 imports rich.console",
        "lipsyncctl/bad.py:3 calls print()",
        "lipsyncctl/bad.py:4 calls sys.exit()",
    ]


@pytest.mark.parametrize("ignored", [False, True])
def test_a_worker_ignores_sigint_when_its_parent_does(ignored: bool) -> None:
    """A job started with `&` from a script ignores SIGINT (so does every process it spawns); a group SIGINT
    stopped its workers anyway and the parent, going on, reported them dead (exit 1). A worker keeps an inherited
    ignore; otherwise SIGINT interrupts its task like SIGTERM."""
    code = ("import signal\n"
            + ("signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if ignored else "")
            + "from lipsyncctl.runner import workers\n"
            "workers._interrupt_handlers()\n"
            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is "
            "workers._terminated, signal.getsignal(signal.SIGINT) is workers._terminated)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.split() == (["True", "True", "False"] if ignored else ["False", "True", "True"])


def test_a_sigterm_after_the_result_ends_with_the_commands_code() -> None:
    """A SIGTERM in the interpreter's teardown, after the result was printed (`"ok": true`), killed the process (exit
    143, an undocumented code); it ends with the command's own code."""
    code = ("import os, signal, time\nfrom lipsyncctl.cli.main import _exit_on_sigterm\n_exit_on_sigterm(0)\n"
            "print('{\"ok\": true}')\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(5)\nraise SystemExit(9)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == '{"ok": true}'
    # a SIGINT too (130 with no error line); and after the last exit hook, when Python puts the default actions back
    # for its own handlers, both are ignored (the signal landed there: 143 with "ok": true printed)
    code = ("import os, signal, time\nfrom lipsyncctl.cli import main\nmain._exit_on_sigterm(3)\n"
            "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\nraise SystemExit(9)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 3, done.stderr
    code = ("import signal\nfrom lipsyncctl.cli import main\nmain._exit_on_sigterm(0)\nmain._ignore_late_signals()\n"
            "print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.stdout.split() == ["True", "True"], done.stderr


@pytest.mark.parametrize("case", ["int", "term", "json", "ignored"])
def test_ctrl_c_while_the_cli_imports_is_an_interrupt_not_a_traceback(case: str) -> None:
    """A Ctrl-C right after Enter lands while the CLI imports (~0.2 s): it printed a KeyboardInterrupt traceback from
    inside an import (once a RuntimeError from a class half made, exit 1). The entry holds it (and a SIGTERM) until the
    imports are done, then reports it as any interrupt: exit 130, the error line, or the JSON document with --json. A
    SIGINT the caller ignores (a script's `&`) stays ignored. (The signal is sent as the CLI imports rich, to land
    there each time; `python -m lipsyncctl` and the console script both start at the entry.)"""
    import os

    sig = "SIGTERM" if case == "term" else "SIGINT"
    code = f"""
import importlib.abc, os, signal, sys
{"signal.signal(signal.SIGINT, signal.SIG_IGN)" if case == "ignored" else ""}
class Hit(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "rich":
            os.kill(os.getpid(), signal.{sig})
        return None
sys.meta_path.insert(0, Hit())
sys.argv = ["lipsyncctl", {'"--json", ' if case == "json" else ""}"--version"]
from lipsyncctl.__main__ import entry
entry()
"""
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    if case == "ignored":
        assert (proc.returncode, proc.stdout.split()[0]) == (0, "lipsyncctl"), proc.stderr
        return
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    if case == "json":
        doc = json.loads(proc.stdout)
        assert doc["ok"] is False and doc["error"]["message"] == "interrupted"
    else:
        assert proc.stderr.startswith("error: interrupted\n") and proc.stdout == ""
    scripts = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'lipsyncctl = "lipsyncctl.__main__:entry"' in scripts
    assert "entry()" in (REPO / "lipsyncctl" / "__main__.py").read_text(encoding="utf-8")


def test_help_into_a_pipe_keeps_every_word() -> None:
    # `lipsyncctl sync --help | grep` drew at 80 columns and cut long words with an ellipsis: the config keys
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    for command in (["sync"], ["prep"]):
        out = subprocess.run([sys.executable, "-m", "lipsyncctl", *command, "--help"], capture_output=True, text=True,
                             env=env, check=True).stdout
        assert "…" not in out and "inference.steps" in out, command
    # a width asked for is kept (and the CLI runs: an import in the width's branch once broke every command but help)
    wide = subprocess.run([sys.executable, "-m", "lipsyncctl", "--version"], capture_output=True, text=True,
                          env={**env, "COLUMNS": "100"}, check=False)
    assert wide.returncode == 0 and wide.stdout.startswith("lipsyncctl "), wide.stderr
