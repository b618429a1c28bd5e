"""`sync --timeline` fails closed (issue 13.7): an edit with nothing to render is exit 5, `--min-sync` without
the evaluation SyncNet is exit 4 before any render (unless `--unchecked-gates warn`), a shot whose sync was
not measured fails `--min-sync`, and a dub shorter than the edit warns naming the shots that get silence.

Everything but the one opt-out render runs as a dry run or fails before rendering (no model loads)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lipsyncctl.cli.main import main
from lipsyncctl.timeline.types import ShotStatus
from tests.conftest import shared_path
from tests.timeline_media import build_edit, clip, rt, write_edit, write_sources

BASE = ["--preset", "tiny", "--steps", "1", "--handles", "0", "--set", "faces.detect_every=3"]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gates")
    write_sources(root, shared_path("fixtures", "demo1_video.mp4"))
    return root


def _edit(path: Path, *clips) -> Path:  # type: ignore[no-untyped-def]
    return write_edit(path, list(clips), name="gates", start=86400)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    """(exit code, the --json document, stderr)."""
    capsys.readouterr()
    rc = main(["--json", "sync", *args])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out) if cap.out.strip() else {}, cap.err


def _error_line(err: str) -> str:
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return line


# ---- nothing to do is not success ---------------------------------------------------------------

def test_all_media_missing_is_exit_5(tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit = _edit(tmp_path / "e.otio", clip("sh010", "gone/a.mov", 0, 10), clip("sh020", "gone/b.mov", 0, 10),
                 clip("sh030", "gone/c.mov", 0, 10), clip("sh040", "gone/d.mov", 0, 10))
    dub = f"de={shared_path('fixtures', 'demo1_audio.wav')}"
    for extra in ([], ["--dry-run"]):  # the plan says so too: its real run could not succeed
        out = tmp_path / f"out{len(extra)}"
        rc, doc, err = _run(["--timeline", str(edit), "--audio", dub, "-o", str(out), *BASE, *extra], capsys)
        assert rc == 5, err
        line = _error_line(err)
        assert "nothing to lip-sync: all 4 clip(s) of the edit were skipped (4 missing media)" in line
        assert "sh010: missing media" in line and "sh030" in line and "and 1 more" in line and "sh040" not in line
        assert "--media-root" in err and "--relink" in err
        assert doc["ok"] is False and doc["error"]["exit_code"] == 5
        assert not (out / "de").exists()


def test_edit_without_clips_and_all_left_alone_are_exit_5(media: Path, tmp_path: Path, models_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import opentimelineio as otio

    dub = f"de={shared_path('fixtures', 'demo1_audio.wav')}"
    empty = _edit(tmp_path / "empty.otio", otio.schema.Gap(source_range=otio.opentime.TimeRange(rt(0), rt(24))))
    rc, _, err = _run(["--timeline", str(empty), "--audio", dub, "-o", str(tmp_path / "o1"), *BASE], capsys)
    assert rc == 5 and "has no clips on its video tracks" in _error_line(err)
    off = clip("A1", str(media / "cam_a.mkv"), 4, 12, available=(0, 40), lipsync=False)
    alone = _edit(tmp_path / "alone.otio", off)
    rc, _, err = _run(["--timeline", str(alone), "--audio", dub, "-o", str(tmp_path / "o2"), *BASE], capsys)
    assert rc == 5 and "(1 lipsync: false): A1: lipsync: false" in _error_line(err)
    assert "remove their `lipsync: false`" in err


# ---- a gate that cannot be evaluated fails ------------------------------------------------------

@pytest.mark.parametrize(("flags", "words"), [(["--gpus", "0"], "--gpus 0: this machine has 0 CUDA GPU(s) visible"),
                                            (["--device", "cuda"], "'cuda' requested but CUDA is not available")])
def test_a_device_this_machine_lacks_is_exit_4_before_any_shot(media: Path, tmp_path: Path, models_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                                              words: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--gpus / --device checked up front (on a CPU machine): every shot failed and a version was published."""
    import torch

    from lipsyncctl.timeline import job as job_module

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")

    def no_read(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the edit was read although its device is missing")

    monkeypatch.setattr(job_module, "_read_and_run", no_read)
    edit = _edit(tmp_path / "e.otio", clip("A1", str(media / "cam_a.mkv"), 4, 12, available=(0, 40)))
    args = ["--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
            "-o", str(tmp_path / "out"), *BASE, *flags]
    rc, doc, err = _run(args, capsys)
    assert rc == 4 and words in err and doc["error"]["exit_code"] == 4
    assert not (tmp_path / "out" / "de").exists()


def test_min_sync_without_the_syncnet_is_exit_4_before_any_render(media: Path, tmp_path: Path, models_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from lipsyncctl.timeline import job as job_module

    def no_render(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("rendered although the gate cannot be evaluated")

    edit = _edit(tmp_path / "e.otio", clip("A1", str(media / "cam_a.mkv"), 4, 12, available=(0, 40)))
    args = ["--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
            "-o", str(tmp_path / "out"), *BASE, "--min-sync", "1.5"]
    with monkeypatch.context() as mp:
        mp.setattr(job_module, "_render", no_render)
        mp.setattr(job_module.dubs, "detect_speech", no_render)  # fails before the dubs are even read
        rc, doc, err = _run(args, capsys)
        assert rc == 4, err
        assert "--min-sync 1.5 needs the evaluation SyncNet 'syncnet-v2', which is not installed" in _error_line(err)
        assert "lipsyncctl models fetch syncnet-v2" in err and "--unchecked-gates warn" in err
        assert doc["error"]["exit_code"] == 4 and not (tmp_path / "out" / "de").exists()
        # the same through the config key
        rc, _, err = _run([*args[:-2], "--set", "timeline.min_sync=1.5"], capsys)
        assert rc == 4 and "syncnet-v2" in err
    # a dry run plans and lists it beside the other missing models
    rc, doc, err = _run([*args, "--dry-run"], capsys)
    assert rc == 0, err
    (gate,) = [m for m in doc["missing_models"] if m["model"] == "syncnet-v2"]
    assert gate["fetch"] == "lipsyncctl models fetch syncnet-v2" and "--min-sync" in gate["role"]
    # opted out: planned with a warning, and nothing listed as missing for it
    rc, doc, err = _run([*args, "--dry-run", "--unchecked-gates", "warn"], capsys)
    assert rc == 0 and not [m for m in doc["missing_models"] if m["model"] == "syncnet-v2"]
    assert any("--min-sync 1.5 will not be checked" in w for w in doc["warnings"]) and "will not be checked" in err


@pytest.mark.slow
def test_opt_out_renders_and_passes_unchecked(media: Path, tmp_path: Path, models_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    edit = _edit(tmp_path / "e.otio", clip("A1", str(media / "cam_a.mkv"), 4, 8, available=(0, 40)))
    out = tmp_path / "out"
    rc, doc, err = _run(["--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
                         "-o", str(out), *BASE, "--min-sync", "1.5", "--unchecked-gates", "warn"], capsys)
    assert rc == 0, err
    (shot,) = doc["languages"]["de"]["shots"]
    assert shot["status"] == "done" and any("--min-sync 1.5 not checked" in w for w in shot["warnings"])
    report = json.loads(Path(doc["languages"]["de"]["report"]).read_text())
    assert report["ok"] is True and any("not checked" in w for w in report["warnings"])


def _row(sync_after: float | None, status: ShotStatus = ShotStatus.DONE) -> SimpleNamespace:
    return SimpleNamespace(status=status, sync_after=sync_after, warnings=[])


def test_unmeasured_shot_fails_min_sync_unless_opted_out() -> None:
    from lipsyncctl.timeline.gates import apply_min_sync

    rows = [_row(None), _row(0.5), _row(4.0), _row(None, ShotStatus.NO_FACE)]
    assert apply_min_sync(rows, 2.0, "fail", True, "official") == []  # type: ignore[arg-type]
    assert [r.status for r in rows] == [ShotStatus.UNDER_MIN_SYNC, ShotStatus.UNDER_MIN_SYNC, ShotStatus.DONE,
                                        ShotStatus.NO_FACE]
    assert "not measured" in rows[0].warnings[0] and "--unchecked-gates warn" in rows[0].warnings[0]
    assert "0.50 (official scale) is under --min-sync 2.0" in rows[1].warnings[0]
    rows = [_row(None), _row(0.5)]
    apply_min_sync(rows, 2.0, "warn", True, "official")  # type: ignore[arg-type]
    assert [r.status for r in rows] == [ShotStatus.DONE, ShotStatus.UNDER_MIN_SYNC]  # a measured score still counts
    assert "not checked" in rows[0].warnings[0]
    rows = [_row(None)]  # no evaluation SyncNet at all (installed when the run started, gone at the QC)
    (w,) = apply_min_sync(rows, 2.0, "fail", False, None)  # type: ignore[arg-type]
    assert "not installed" in w and rows[0].status == ShotStatus.UNDER_MIN_SYNC
    assert apply_min_sync([_row(None)], None, "fail", False, None) == []  # type: ignore[arg-type]


# ---- mismatches warn ------------------------------------------------------------------------------

def test_short_dub_warns_naming_the_silent_shots(media: Path, tmp_path: Path, models_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The demo edit (62 frames at 23.976 from 01:00:00:00) with a 1 s dub: A1 (record 0-12) is covered, B1
    (12-22) and B3 (22-30) partly/not at all, A3 (42-50) gets silence."""
    from lipsyncctl.media.audio import write_wav

    edit = build_edit(media, "demo.otio")
    short = write_wav(tmp_path / "short.wav", np.full((48000, 1), 0.1, np.float32), 48000)
    rc, doc, err = _run(["--timeline", str(edit), "--audio", f"de={short}", "-o", str(tmp_path / "out"), *BASE,
                         "--dry-run"], capsys)
    assert rc == 0, err
    (w,) = [w for w in doc["warnings"] if w.startswith("dub de")]
    assert "dub de (1.000 s) does not cover the edit (01:00:00:00-01:00:02:14, 2.586 s)" in w
    assert "it ends at 1.000 s (last frame 01:00:00:23)" in w
    silent = w.split("silent shots: ")[1].split(";")[0]
    partly = w.split("partly silent: ")[1]
    assert "A3_" in silent and "B3_" in partly and "A1_" not in w and "B1_" not in w
    assert "does not cover the edit" in err  # printed by the CLI
    # a dub as long as the edit says nothing; one starting late names the shots before it
    whole = write_wav(tmp_path / "whole.wav", np.full((48000 * 3, 1), 0.1, np.float32), 48000)
    rc, doc, _ = _run(["--timeline", str(edit), "--audio", f"de={whole}", "-o", str(tmp_path / "out"), *BASE,
                       "--dry-run"], capsys)
    assert rc == 0 and not [w for w in doc["warnings"] if w.startswith("dub de")]
    rc, doc, _ = _run(["--timeline", str(edit), "--audio", f"de={whole}", "--audio-offset", "01:00:01:00",
                       "-o", str(tmp_path / "out"), *BASE, "--dry-run"], capsys)
    (w,) = [w for w in doc["warnings"] if w.startswith("dub de")]
    assert "it starts at 1.001 s (first frame 01:00:01:00)" in w and "it ends" not in w
    silent, partly = w.split("silent shots: ")[1].split(";")[0], w.split("partly silent: ")[1]
    assert "A1_" in silent and "B1_" in silent and "B3_" in partly and "A3_" not in w
    # one starting after the edit's end says where (it said the edit's end, clamped)
    rc, doc, _ = _run(["--timeline", str(edit), "--audio", f"de={whole}", "--audio-offset", "02:00:00:00",
                       "-o", str(tmp_path / "out"), *BASE, "--dry-run"], capsys)
    (w,) = [w for w in doc["warnings"] if w.startswith("dub de")]
    assert "it starts at 3603.600 s (first frame 02:00:00:00) (after the edit's end)" in w, w  # (23.976: 1 h of TC)
    # an offset in seconds is said as given, with the frame it falls in (it said 0.459 s, that frame's start)
    rc, doc, _ = _run(["--timeline", str(edit), "--audio", f"de={whole}", "--audio-offset", "0.5",
                       "-o", str(tmp_path / "out"), *BASE, "--dry-run"], capsys)
    (w,) = [w for w in doc["warnings"] if w.startswith("dub de")]
    assert "it starts at 0.500 s (first frame 01:00:00:11)" in w, w
