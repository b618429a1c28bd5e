"""`lipsyncctl prep` through the CLI in-process: exit codes, --json result, dry run, usage errors."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from lipsyncctl.media.probe import probe
from tests import mediagen as mg


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    mg.make_clip(d / "a.mp4", fps=Fraction(30000, 1001), frames=15)
    mg.make_clip(d / "b.mov", frames=5, rotation=90)
    return d


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_result_and_exit_0(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, _ = _run(["--json", "prep", str(clips), "-o", str(out), "--encoder-preset", "ultrafast",
                            "--fps", "source", "--jobs", "2"], capsys)
    assert code == 0
    data = json.loads(stdout)
    assert data["ok"] and data["counts"]["done"] == 2
    by_name = {Path(i["input"]).name: i for i in data["items"]}
    assert by_name["a.mp4"]["fps"] == "30000/1001" and by_name["a.mp4"]["frames"] == 15
    v = probe(out / "a.mp4").video
    assert v is not None and v.fps == Fraction(30000, 1001) and v.frame_count == 15
    assert (out / "b.wav").is_file() and probe(out / "b.mp4").video.rotation == 0  # type: ignore[union-attr]
    # second run: skipped, still exit 0
    code, stdout, _ = _run(["--json", "prep", str(clips), "-o", str(out), "--encoder-preset", "ultrafast",
                            "--fps", "source"], capsys)
    assert code == 0 and json.loads(stdout)["counts"]["skipped"] == 2


def test_failures_exit_1_after_the_summary(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mg.make_garbage(clips / "junk.mp4")
    code, stdout, stderr = _run(["prep", str(clips), "-o", str(tmp_path / "out"), "--encoder-preset",
                                 "ultrafast"], capsys)
    assert code == 1
    assert "3 file(s): 2 done, 1 failed" in stdout  # the summary comes first, on stdout
    assert stderr.strip().splitlines()[-2].startswith("error: 1 of 3 file(s) failed")
    assert (tmp_path / "out" / "a.mp4").is_file()  # the rest went on


def test_dry_run_and_usage_errors(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _run(["--json", "prep", str(clips / "a.mp4"), "-o", str(tmp_path / "o"), "--dry-run"], capsys)
    assert code == 0 and json.loads(stdout)["items"][0]["status"] == "planned"
    assert not (tmp_path / "o").exists()
    assert _run(["prep", str(clips), "-o", str(tmp_path / "o"), "--scale", "big"], capsys)[0] == 2
    assert _run(["prep", str(tmp_path / "nothing*.mp4"), "-o", str(tmp_path / "o")], capsys)[0] == 2
    assert _run(["prep", str(clips), "-o", str(tmp_path / "o"), "--fps", "0"], capsys)[0] == 3  # config range


def test_missing_input_file_is_bad_media(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A named input that does not exist is exit 5 in every command, before any work."""
    out = tmp_path / "o"
    code, _, stderr = _run(["prep", str(clips / "a.mp4"), str(clips / "gone.mp4"), "-o", str(out)], capsys)
    assert code == 5 and "gone.mp4" in stderr and "not found" in stderr
    assert not out.exists()


@pytest.mark.parametrize("command", ["prep", "sync"])
def test_codec_help_lists_the_schema_names(command: str, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.config import VIDEO_CODECS

    monkeypatch.setenv("COLUMNS", "400")  # one row per option: names are not wrapped
    code, stdout, _ = _run([command, "--help"], capsys)
    assert code == 0
    (row,) = [line for line in stdout.splitlines() if line.lstrip("│ ").startswith("--codec ")]
    assert ", ".join(VIDEO_CODECS) in row


def test_codec_alias_on_the_command_line(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _run(["--json", "prep", str(clips / "b.mov"), "-o", str(tmp_path / "out"),
                            "--codec", "prores", "--dry-run"], capsys)
    assert code == 0
    (item,) = json.loads(stdout)["items"]
    assert Path(item["output"]).name == "b.mov"
