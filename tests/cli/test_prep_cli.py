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
    assert _run(["prep", str(clips), "-o", str(tmp_path / "o"), "--fps", "0"], capsys)[0] == 2  # a flag's value
    (tmp_path / "afile").write_text("x")  # -o on a file: refused by a dry run as by the run
    code, _, err = _run(["prep", str(clips / "a.mp4"), "-o", str(tmp_path / "afile"), "--dry-run"], capsys)
    assert code == 2 and "is a file, not a folder" in err
    for flag in ("--start", "--duration"):  # inf passes a minimum: refused as not finite, not a traceback later
        code, _, err = _run(["prep", str(clips), "-o", str(tmp_path / "o"), flag, "inf"], capsys)
        assert code == 2 and f"'{flag}': inf is not a finite number" in err


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


def test_two_inputs_with_one_output_or_an_output_on_an_input_stop_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Camera cards reuse names (A001/C0001.MP4, B001/C0001.MP4): the second overwrote the first (exit 0).
    An output that would overwrite an input failed only that item (exit 1): both are usage errors (2) now."""
    for card in ("A001", "B001"):
        (tmp_path / card).mkdir()
        mg.make_clip(tmp_path / card / "C0001.mp4", frames=5)
    rc, _, err = _run(["prep", str(tmp_path / "A001"), str(tmp_path / "B001"), "-o", str(tmp_path / "out")], capsys)
    assert rc == 2 and "C0001.mp4 would both be written to" in err and not (tmp_path / "out").exists()
    rc, _, err = _run(["prep", str(tmp_path / "A001"), "-o", str(tmp_path / "A001")], capsys)
    assert rc == 2 and "refusing to overwrite an input file" in err
    rc, _, _ = _run(["prep", str(tmp_path), "-o", str(tmp_path / "out")], capsys)  # the folder that holds both
    assert rc == 0 and sorted(p.name for p in (tmp_path / "out").rglob("*.mp4")) == ["C0001.mp4", "C0001.mp4"]


def test_a_skipped_clip_without_audio_reports_no_wav_and_longer_audio_is_said(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    silent = mg.make_clip(tmp_path / "silent.mp4", frames=5, audio_rate=None)
    for _ in range(2):  # the second run skips it: its WAV was reported although none was written
        rc, out, _ = _run(["--json", "prep", str(silent), "-o", str(tmp_path / "o"), "--allow-no-audio"], capsys)
        (item,) = json.loads(out)["items"]
        assert rc == 0 and item["wav"] is None
    long_sound = mg.make_clip(tmp_path / "long.mp4", frames=5, audio_seconds=1.0)
    rc, out, _ = _run(["--json", "prep", str(long_sound), "-o", str(tmp_path / "o")], capsys)
    (item,) = json.loads(out)["items"]
    assert rc == 0 and any("longer than the picture: cut" in w for w in item["warnings"])


def test_disk_full_names_the_output_and_what_it_needs(clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Out of space while encoding: the file fails naming its output (not the hidden folder's video.mp4), the space
    free there and about what it needs; nothing is left."""
    from lipsyncctl.media.writer import VideoWriter
    from tests.cli.test_sync_cli import _FullDisk

    opened = VideoWriter._open

    def _open(self, width: int, height: int) -> None:  # type: ignore[no-untyped-def]
        opened(self, width, height)
        self._container = _FullDisk(self._container, 1)

    monkeypatch.setattr(VideoWriter, "_open", _open)
    out = tmp_path / "o"
    code, stdout, err = _run(["--json", "prep", str(clips / "a.mp4"), "-o", str(out)], capsys)
    item = json.loads(stdout)["items"][0]
    assert code == 1 and item["status"] == "failed", item
    assert item["reason"].startswith(f"{out / 'a.mp4'}: cannot write it: No space left on device (")
    assert "free there; it needs about" in item["reason"] and ".prep.~" not in item["reason"]
    assert sorted(p.name for p in out.rglob("*")) == []
