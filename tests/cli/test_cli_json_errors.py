"""`--json` on failure: a script reads exactly one JSON document on stdout, whatever went wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main


@pytest.mark.parametrize(("argv", "code"), [
    (["--json", "presets", "show", "no-such-preset"], 3),       # library error (ConfigError)
    (["--json", "sync", "-i", "in.mp4"], 2),                     # usage error after the root callback
    (["--json", "no-such-command"], 2),                          # usage error before it
    (["--json", "--no-such-option"], 2),                         # bad global option
    (["--json", "sync", "-i", "missing.mp4", "-a", "missing.wav", "-o", "out.mp4", "--preset", "tiny"], 5),
])
def test_json_failure_prints_one_error_document(argv: list[str], code: int, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    out, err = capsys.readouterr()
    doc = json.loads(out)  # one document, nothing else on stdout
    assert doc["ok"] is False
    assert doc["error"]["exit_code"] == code
    assert doc["error"]["message"] and doc["error"]["message"] in err
    assert err.startswith("error: ")


def test_without_json_a_failure_leaves_stdout_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "show", "no-such-preset"]) == 3
    assert capsys.readouterr().out == ""


def test_json_state_does_not_leak_between_invocations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "presets", "list"]) == 0
    capsys.readouterr()
    assert main(["presets", "show", "no-such-preset"]) == 3  # no --json this time
    assert capsys.readouterr().out == ""


def test_batch_failure_keeps_its_result_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """prep prints its summary, then exits 1: no second (error) document follows it."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")  # exists, fails inside the batch (a missing input is exit 5 at once)
    assert main(["--json", "prep", str(broken), "-o", str(tmp_path / "out")]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["counts"]["failed"] == 1
    assert "error" not in doc


def test_json_reaches_stdout_while_progress_bars_run(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """With stderr on a terminal the bars are live; the result must still go to stdout (a pipe or file),
    not onto the terminal through Rich's stdout redirection."""
    from lipsyncctl.cli.state import CliState

    monkeypatch.setattr(CliState, "progress_enabled", property(lambda self: True))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich treats the captured stderr as a terminal
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert main(["--json", "presets", "list"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)
    assert '"name"' not in err


@pytest.mark.parametrize("argv", [["--json"], ["--json", "models"], ["--json", "presets"]])
def test_json_without_a_command_is_one_error_document(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """No command (or a group without its subcommand) with --json: the JSON error, not Rich help on stdout."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 2 and "no command given" in err


@pytest.mark.parametrize("argv", [["sync", "-i", "v.mp4", "-a", "a.wav", "-o", ""], ["prep", "", "-o", "out"],
                                  ["prep", "v.mp4", "--output="], ["sync", "--audio-offset=", "-t", "e.otio"]])
def test_an_empty_argument_is_a_usage_error(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A script's unset variable: exit 2 naming the option (a path "" read as the current folder: prep took every
    file there, sync -o "" was an internal error)."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "an empty value" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_verbose_adds_the_causes_and_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-v: the error's underlying cause on its own line; -vv: the traceback; neither without -v."""
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    argv = ["sync", "-i", str(bad), "-a", str(bad), "-o", str(tmp_path / "o.mp4"), "--preset", "tiny"]
    assert main(argv) == 5
    assert "cause:" not in capsys.readouterr().err
    assert main(["-v", *argv]) == 5
    err = capsys.readouterr().err
    assert "cause: InvalidDataError" in err and "Traceback" not in err
    assert main(["-vv", *argv]) == 5
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["models", "info", "{x}/nope.pt"], ["models", "convert", "{x}/nope.pt", "{x}/o.st"],
                                  ["curate", "report", "{x}/nope"]])
def test_a_missing_input_is_bad_media_in_these_commands_too(argv: list[str], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main([a.format(x=tmp_path) for a in argv]) == 5
    assert "nope" in capsys.readouterr().err


def _lipsyncctl(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lipsyncctl", *args], **kwargs)


def test_closed_stdout_is_a_usage_error_and_closed_stderr_is_silence() -> None:
    """``>&-``: one error line and exit 2 (it was an internal error: None has no write); ``2>&-``: the command runs
    and its JSON still reaches stdout."""
    closed_out = _lipsyncctl(["--json", "presets", "list"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, preexec_fn=lambda: os.close(1))
    assert closed_out.returncode == 2
    assert closed_out.stderr.splitlines() == ["error: standard output is closed",
                                              "hint: redirect it instead: > FILE or > /dev/null"]
    closed_err = _lipsyncctl(["--json", "presets", "list"], capture_output=False, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, preexec_fn=lambda: os.close(2))
    assert closed_err.returncode == 0 and json.loads(closed_err.stdout)["ok"] is True


@pytest.mark.parametrize("args", [["presets", "list"], ["--json", "models", "list"], ["sync", "--help"]])
def test_a_reader_that_stops_early_ends_the_command_quietly_with_1(args: list[str]) -> None:
    """``lipsyncctl ... | head``: no traceback and no error line (Click and Rich stop writing), exit 1 as README says."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    try:
        done = subprocess.run([sys.executable, "-m", "lipsyncctl", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True)
    finally:
        os.close(write)
    assert done.returncode == 1 and done.stderr == ""
