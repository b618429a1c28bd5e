"""``--progress lines|json``: progress as lines on stderr for logs and render-farm managers, whatever stderr is."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lipsyncctl import progress
from lipsyncctl.cli.main import main
from lipsyncctl.cli.progress import LineSink
from tests import mediagen as mg


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_say_each_task_at_most_once_a_second_and_at_its_total() -> None:
    clock, out = Clock(), io.StringIO()
    with progress.use_sink(LineSink(out, "lines", interval=1.0, clock=clock)):
        with progress.Task("render", total=4) as task:
            for _ in range(4):
                clock.now += 0.6  # every other step crosses a second
                task.advance()
            clock.now += 0.5
        with progress.Task("tiny models"):
            pass
        progress.message("face detector: dlib")
    assert out.getvalue().splitlines() == [
        "progress: render 0/4 (0.0%) 0.0 s",
        "progress: render 2/4 (50.0%) 1.2 s, eta 1.2 s",
        "progress: render 4/4 (100.0%) 2.4 s, eta 0.0 s",
        "done: render 4 in 2.9 s",
        "start: tiny models",
        "done: tiny models in 0.0 s",
        "face detector: dlib",
    ]


def test_a_task_an_interrupt_ends_is_stopped_not_done() -> None:
    """A log parser reads ``done:`` as a completion: a task ended by an interrupt or an error says ``stopped:`` (and
    its JSON ``finish`` carries ``"stopped": true``); interrupted runs printed ``done: render 0 in 3.8 s``."""
    for form in ("lines", "json"):
        clock, out = Clock(), io.StringIO()
        with progress.use_sink(LineSink(out, form, interval=1.0, clock=clock)), pytest.raises(KeyboardInterrupt):
            with progress.Task("render", total=4) as task:
                task.advance()
                clock.now += 1.5
                raise KeyboardInterrupt
        last = out.getvalue().splitlines()[-1]
        if form == "lines":
            assert last == "stopped: render at 1/4 after 1.5 s"
        else:
            assert json.loads(last) | {"id": 0} == {"event": "finish", "id": 0, "parent": None, "task": "render",
                                                   "done": 1, "total": 4, "percent": 25.0, "elapsed": 1.5,
                                                   "eta": None, "stopped": True}


def test_a_track_loop_an_interrupt_unwinds_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A track() whose loop an interrupt unwinds has its generator closed afterwards (GeneratorExit, as a ``break``):
    with the CLI's interrupt said (its SIGTERM/SIGINT handler), it is stopped too (`windows` and `denoise` said
    ``done`` at 3/5 after a SIGTERM); a loop left by a ``break`` stays done."""
    import gc

    from lipsyncctl.cli import main as cli_main

    def run(interrupt: bool) -> str:
        out = io.StringIO()
        with progress.use_sink(LineSink(out, "lines", interval=1.0, clock=Clock())):
            def body() -> None:
                for i in progress.track(range(5), "windows"):
                    if i == 2:
                        if interrupt:
                            cli_main._terminated(15, None)  # as the signal would (sets the flag, raises)
                        break
            try:
                body()
            except KeyboardInterrupt:
                pass
            gc.collect()
        return out.getvalue().splitlines()[-1]

    try:
        assert run(False).startswith("done: windows")
        assert run(True).startswith("stopped: windows at 2/5")
    finally:
        progress.interrupted(False)
    assert not progress.interrupted()


def test_json_lines_carry_the_task_tree_and_a_warning_once(capsys: pytest.CaptureFixture[str]) -> None:
    clock, out = Clock(), io.StringIO()
    with progress.use_sink(LineSink(out, "json", interval=1.0, clock=clock)):
        with progress.Task("shots", total=2) as shots:
            with progress.Task("denoise", total=3) as step:
                clock.now += 2
                step.advance(3)
            shots.advance()
            progress.warning("tiny preset")
            progress.warning("tiny preset")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e.get("task")) for e in events] == [
        ("start", "shots"), ("start", "denoise"), ("progress", "denoise"), ("finish", "denoise"),
        ("progress", "shots"), ("warning", None), ("finish", "shots")]
    shots_id = events[0]["id"]
    assert events[1]["parent"] == shots_id and events[0]["parent"] is None
    assert events[2] | {"id": 0} == {"event": "progress", "id": 0, "parent": shots_id, "task": "denoise", "done": 3,
                                     "total": 3, "percent": 100.0, "elapsed": 2.0, "eta": 0.0}
    assert events[4]["done"] == 1 and events[4]["percent"] == 50.0 and events[4]["eta"] == 2.0
    assert events[5] == {"event": "warning", "text": "tiny preset"}


def test_prep_reports_progress_as_json_lines_even_with_quiet(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """After the command name too (hoisted with its value), with -q; stdout keeps the one JSON result."""
    clip = mg.make_clip(tmp_path / "a.mp4", frames=12)
    code = main(["prep", str(clip), "-o", str(tmp_path / "out"), "--progress", "json", "-q", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["ok"] is True
    events = [json.loads(line) for line in captured.err.splitlines()]
    clip_events = [e for e in events if e.get("task") == "prep a.mp4"]
    assert clip_events[0]["event"] == "start" and clip_events[0]["total"] == 12
    assert clip_events[-1]["event"] == "finish" and clip_events[-1]["done"] == 12
    code = main(["--progress=lines", "prep", str(clip), "-o", str(tmp_path / "again")])
    err = capsys.readouterr().err
    assert code == 0 and "progress: prep a.mp4 12/12 (100.0%)" in err and "done: prep a.mp4 12 in" in err


def test_off_shows_no_bars_on_a_terminal_and_auto_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """On a terminal ``auto`` draws bars and ``off`` does not (a pipe shows none either way, so the terminal is
    what tells them apart)."""
    from lipsyncctl.cli import main as cli_main
    from lipsyncctl.cli import state

    monkeypatch.setattr(state.CliState, "progress_enabled", property(lambda self: True))
    made: list[bool] = []
    real = cli_main.RichSink

    def recording(*args, enabled: bool = True, **kwargs):  # type: ignore[no-untyped-def]
        made.append(enabled)
        return real(*args, enabled=False, **kwargs)  # (nothing drawn into the captured stderr)

    monkeypatch.setattr(cli_main, "RichSink", recording)
    for fmt in ("auto", "off"):
        assert main(["--progress", fmt, "presets", "list"]) == 0
    assert made == [True, False]


def test_an_unknown_progress_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--progress", "bars", "doctor"]) == 2
    assert "'bars' is not one of auto, lines, json, off" in capsys.readouterr().err


def test_json_progress_makes_every_line_of_stderr_json_but_errors(tmp_path: Path, models_dir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The warnings a command says at its end (a result's, not sent through the progress sink while it ran: here
    a dub shorter than the picture) are JSON lines too with --progress json: a log parser decodes every line."""
    from fractions import Fraction

    from tests.sync_media import sample_frames, write_clip, write_wav

    video = write_clip(tmp_path / "v.mkv", sample_frames(6, scale=0.75), Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.08)
    assert main(["sync", "--video", str(video), "--audio", str(audio), "-o", str(tmp_path / "o.mkv"),
                 "--preset", "tiny", "--codec", "ffv1", "--progress", "json"]) == 0
    events = [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln]  # every line parses
    warnings = [e["text"] for e in events if e["event"] == "warning"]
    assert any("shorter than" in w for w in warnings) and any("NOT lip-synced" in w for w in warnings), warnings
