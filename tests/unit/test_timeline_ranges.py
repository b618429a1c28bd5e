"""`sync --segments FILE`: per-range options (lipsync: false, face, audio_offset, set) from a JSON/YAML
file (lipsyncctl/timeline/ranges.py), for one clip (cut into shots at the ranges) and for an edit (ranges
over whole shots), and their validation errors."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.cli.main import main
from lipsyncctl.errors import ConfigError, UsageError
from lipsyncctl.media import timecode as tb
from lipsyncctl.timeline.ranges import SegmentsFile, clip_ranges, frame_ranges, load_segments, parse_time
from tests.conftest import shared_path
from tests.sync_media import decode_rgb, write_clip
from tests.timeline_media import FILM, build_edit, fixture_frames, write_sources

BASE = ["--preset", "tiny", "--steps", "1", "--handles", "0", "--set", "faces.detect_every=3"]


def _file(tmp_path: Path, ranges: object, name: str = "ranges.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(ranges) if name.endswith(".json") else str(ranges))
    return path


def test_times_timecode_seconds_frames() -> None:
    fps = Fraction(25)
    assert parse_time(1.5, fps, 0, "x") == 38  # round(37.5) = 38 (banker's rounding would give 38 too)
    assert parse_time("2", fps, 0, "x") == 50 and parse_time("0.4s", fps, 0, "x") == 10
    assert parse_time("12f", fps, 0, "x") == 12 and parse_time("12 F", fps, 0, "x") == 12
    assert parse_time("10:00:01:05", fps, 900000, "x") == 30  # in the picture's own timecode
    assert parse_time("00:00:01:05", fps, 0, "x") == 30
    # ';' is drop frame: not at 25 fps; YAML's .nan/.inf (JSON's NaN) were an internal error (a fraction of NaN)
    for bad in ("01:00:00:30", "abc", "1:2", True, "-3", "00:00:01;05", float("nan"), float("inf")):
        with pytest.raises(UsageError, match="x"):
            parse_time(bad, fps, 0, "x")
    # drop-frame timecode at 29.97 is read as drop frame, like the picture's own timecode tag
    ntsc = Fraction(30000, 1001)
    start = tb.tag_frames("01:00:00;00", ntsc)
    assert start == 107892 and parse_time("01:10:00;00", ntsc, start, "x") == 17982  # ten DF minutes
    with pytest.raises(UsageError, match="no such drop-frame timecode"):  # skipped at minute 1: read as ;28 before
        parse_time("01:01:00;00", ntsc, start, "x")
    assert parse_time("01:00:01.00", ntsc, start, "x") == parse_time("01:00:01:00", ntsc, start, "x")


def test_a_clips_lipsync_options_are_read_as_written() -> None:
    """An edit clip's metadata ``face_at: "640,360"`` (as --face-at takes it) was read a character at a time: the
    pixel (6, 4), the wrong face followed; a NaN offset failed deep in the render."""
    import opentimelineio as otio

    from lipsyncctl.errors import EditOptionError
    from lipsyncctl.timeline.shots import shot_options

    def clip(**options: object) -> otio.schema.Clip:
        return otio.schema.Clip(name="c", metadata={"lipsync": options})

    assert shot_options(clip(face_at="640,360")).face_at == (640.0, 360.0)
    assert shot_options(clip(face_at=[640, 360])).face_at == (640.0, 360.0)
    for bad in ({"face_at": "640"}, {"face_at": [float("nan"), 3]}, {"audio_offset": float("inf")},
                {"guidance": float("nan")}, {"face_at": [True, 1]}):  # (the --segments file's rules: one reader)
        with pytest.raises(EditOptionError, match="clip 'c': bad lipsync option"):
            shot_options(clip(**bad))


def test_load_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = _file(tmp_path, "segments:\n  - {start: 0.5, end: 1, lipsync: false}\n"
                                "  - {start: 30f, end: '00:00:02:00', face: 1, audio_offset: -0.04,"
                                " set: {inference.guidance: 2.0}, name: close-up}\n", "r.yaml")
    seg = load_segments(yaml_file)
    assert [r.options for r in seg.ranges] == [
        {"enabled": False}, {"face": 1, "audio_offset": -0.04, "set": ["inference.guidance=2.0"]}]
    assert seg.ranges[1].name == "close-up" and seg.ranges[1].number == 2
    assert load_segments(_file(tmp_path, [{"start": 0, "end": 1}])).ranges[0].options == {}


@pytest.mark.parametrize(("content", "error", "match"), [
    ("[", UsageError, "not valid JSON"),
    ({"start": 0}, UsageError, "expected a non-empty list"),
    ([], UsageError, "non-empty list"),
    ([{"start": 0}], UsageError, "range 1: no end"),
    ([{"start": 0, "end": 1, "mouth": 1}], ConfigError, "range 1: unknown key 'mouth'"),
    ([{"start": 0, "end": 1}, {"start": 1, "end": 2, "face": "left"}], ConfigError, "range 2: face 'left'"),
    ([{"start": 0, "end": 1, "lipsync": "maybe"}], ConfigError, "lipsync 'maybe'"),
    ([{"start": 0, "end": 1, "set": ["nokey"]}], ConfigError, "range 1: set"),
    # not finite: an internal error later, deep in the render or its dry run
    ("[{\"start\": 0, \"end\": 1, \"audio_offset\": NaN}]", ConfigError, "audio_offset nan: expected a finite"),
    ([{"start": 0, "end": 1, "face_at": ["a", 3]}], ConfigError, "range 1: face_at"),
    ("[{\"start\": 0, \"end\": 1, \"face_at\": [Infinity, 3]}]", ConfigError, "range 1: face_at"),
])
def test_load_errors(tmp_path: Path, content: object, error: type, match: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(error, match=match):
        load_segments(path)


def _spec(tmp_path: Path, ranges: list[dict]) -> SegmentsFile:
    return load_segments(_file(tmp_path, ranges))


def test_frame_ranges_checked(tmp_path: Path) -> None:
    fps = Fraction(25)
    got = frame_ranges(_spec(tmp_path, [{"start": "20f", "end": "30f"}, {"start": 0, "end": 0.4}]), fps, 0, 50, "c")
    assert [(r.first, r.stop, r.spec.number) for r in got] == [(0, 10, 2), (20, 30, 1)]
    assert [(r.first, r.stop, r.name, r.lipsync) for r in clip_ranges(got, 50)] == [
        (0, 10, "seg_002", None), (10, 20, "pass_001", False), (20, 30, "seg_001", None), (30, 50, "pass_002", False)]
    for ranges, match in [
        ([{"start": 0, "end": "20f"}, {"start": "10f", "end": "30f"}], "ranges 1 and 2 overlap"),
        ([{"start": "40f", "end": "60f"}], r"range 1 \(00:00:01:15-00:00:02:10\) is outside the clip"),
        ([{"start": "10f", "end": "10f"}], "end is not after start"),
        ([{"start": "00:00:00:99", "end": "10f"}], "bad timecode|not a timecode"),
    ]:
        with pytest.raises(UsageError, match=match):
            frame_ranges(_spec(tmp_path, ranges), fps, 0, 50, "the clip")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ranges")
    fixture = shared_path("fixtures", "demo1_video.mp4")
    clip = write_clip(root / "clip.mkv", fixture_frames(fixture, 0, 30), FILM)
    write_sources(root, fixture)
    return {"root": root, "clip": clip, "edit": build_edit(root), "dub": shared_path("fixtures", "demo1_audio.wav")}


def test_apply_ranges_to_an_edit(media: dict[str, Path], tmp_path: Path) -> None:
    """Record-time ranges over whole shots become markers read as the shots' options; one that splits a
    shot names both; lipsync: false skips the shot but keeps its source picture for the conform."""
    from lipsyncctl.timeline.ranges import apply_ranges
    from lipsyncctl.timeline.segments import plan_timeline
    from lipsyncctl.timeline.source import MediaResolver, read_timeline

    resolver = MediaResolver(media["root"])
    # A1 is record 0-12 (01:00:00:00 at 23.976), B1 12-22, B3 22-30 (on V2), A3 42-50
    spec = _spec(tmp_path, [{"start": "01:00:00:00", "end": "12f", "face": 1, "audio_offset": 0.1},
                            {"start": "22f", "end": "30f", "lipsync": False}])
    timeline = read_timeline(media["edit"])
    assert apply_ranges(timeline, resolver, spec) == []
    plan = plan_timeline(timeline, resolver)
    a1 = next(s for s in plan.segments if s.name == "A1")
    assert a1.options.face_id == 1 and a1.options.audio_offset == 0.1
    assert a1.options.overrides() == {"faces.select": "id", "faces.track_id": 1}
    b3 = next(s for s in plan.skipped if s.name == "B3")
    assert b3.reason == "lipsync: false" and b3.source is not None and b3.source.record_start == 22
    shown = [p.name for p in plan.pictures() if p.name != "B2"]  # B2 (a time warp) may pass through too
    assert shown == ["A1", "B1", "B3", "A3", "A4"]  # A4: lipsync: false in the edit
    with pytest.raises(UsageError, match=r"range 1 \(01:00:00:00-01:00:00:06\) splits shot 'A1' "
                                         r"\(01:00:00:00-01:00:00:12\)"):
        apply_ranges(read_timeline(media["edit"]), resolver, _spec(tmp_path, [{"start": 0, "end": "6f"}]))
    with pytest.raises(UsageError, match="outside the edit"):
        apply_ranges(read_timeline(media["edit"]), resolver, _spec(tmp_path, [{"start": 0, "end": "99f"}]))


def test_audio_offset_moves_the_dub_window() -> None:
    from lipsyncctl.timeline.dub import DubTrack, render_cut
    from lipsyncctl.timeline.segments import Segment
    from lipsyncctl.timeline.shots import ShotOptions

    samples = np.arange(2 * 16000, dtype=np.float32)[None] / 16000  # 2 s ramp at 16 kHz
    dub = DubTrack("de", samples, 16000, Fraction(0), "d.wav")
    seg = Segment(0, "s", "s", (0,), "V1", Path("m.mkv"), "m.mkv", Fraction(25), (64, 64), 0, 25, 10, 25, 10)
    plain = render_cut(dub, seg, Fraction(25))
    seg.options = ShotOptions(audio_offset=0.25)  # the dub is late there: the picture at t gets the dub at t - 0.25
    shifted = render_cut(dub, seg, Fraction(25))
    assert plain.shape == shifted.shape and plain[0, 0] == pytest.approx(1.0) and shifted[0, 0] == pytest.approx(0.75)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def test_clip_segments_dry_run_and_errors(media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(media["root"] / "models"))
    ranges = _file(tmp_path, [{"start": "12f", "end": "24f", "lipsync": False}, {"start": 0, "end": "12f"}])
    out = tmp_path / "out"
    args = ["--video", str(media["clip"]), "--audio", str(media["dub"]), "--segments", str(ranges), "-o", str(out),
            *BASE]
    rc, dry = _run([*args, "--dry-run"], capsys)
    assert rc == 0 and not out.exists()
    assert [(s["name"], s["record"]["start"], s["record"]["frames"]) for s in dry["plan"]["segments"]] == [
        ("seg_002", 0, 12)]
    assert [(k["name"], k["reason"]) for k in dry["plan"]["skipped"]] == [
        ("seg_001", "lipsync: false"), ("pass_001", "lipsync: false")]
    # validation: one line, exit 2 (times, overlaps, out of the clip, a split shot), 3 (options), 5 (no file)
    bad = _file(tmp_path, [{"start": 0, "end": "20f"}, {"start": "10f", "end": "30f"}], "bad.json")
    assert main(["sync", *args[:4], "--segments", str(bad), "-o", str(out)]) == 2
    assert "ranges 1 and 2 overlap" in capsys.readouterr().err
    far = _file(tmp_path, [{"start": 0, "end": 5}], "far.json")
    assert main(["sync", *args[:4], "--segments", str(far), "-o", str(out)]) == 2
    assert "is outside the clip clip.mkv" in capsys.readouterr().err
    opt = _file(tmp_path, [{"start": 0, "end": 1, "mouth": 2}], "opt.json")
    assert main(["sync", *args[:4], "--segments", str(opt), "-o", str(out)]) == 3
    assert main(["sync", *args[:4], "--segments", str(tmp_path / "none.json"), "-o", str(out)]) == 5  # missing
    assert not out.exists()
    # an edit: ranges in record time over whole shots; one that splits a shot names both
    split = _file(tmp_path, [{"start": "01:00:00:02", "end": "01:00:00:20"}], "split.json")
    assert main(["sync", "--timeline", str(media["edit"]), *args[2:4], "--segments", str(split), "-o", str(out),
                 "--dry-run"]) == 2
    assert "range 1 (01:00:00:02-01:00:00:20) splits shot 'A1'" in capsys.readouterr().err
    whole = _file(tmp_path, [{"start": "01:00:00:00", "end": "01:00:00:12", "lipsync": False}], "whole.json")
    rc, dry = _run(["--timeline", str(media["edit"]), *args[2:4], "--segments", str(whole), "-o", str(out),
                    "--dry-run", *BASE], capsys)
    assert rc == 0 and "A1" not in [s["name"] for s in dry["plan"]["segments"]]
    assert ("A1", "lipsync: false") in [(k["name"], k["reason"]) for k in dry["plan"]["skipped"]]


@pytest.mark.slow  # ~30 s of CPU: a tiny render and the conform
def test_clip_segments_passthrough_keeps_source_pixels(media: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import opentimelineio as otio

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(media["root"] / "models"))
    ranges = _file(tmp_path, "- {start: 0, end: 12f, audio_offset: 0.04}\n- {start: 12f, end: 24f, lipsync: false}\n",
                   "ranges.yaml")
    out = tmp_path / "out"
    rc, res = _run(["--video", str(media["clip"]), "--audio", str(media["dub"]), "--segments", str(ranges),
                    "-o", str(out), "--codec", "ffv1", "--conform", *BASE], capsys)
    assert rc == 0, res
    lang = next(iter(res["languages"].values()))
    assert [(s["name"], s["status"]) for s in lang["shots"]] == [("seg_001", "done")]
    assert (out / "segments.otio").is_file()
    src = decode_rgb(media["clip"])
    conform = decode_rgb(Path(lang["conform"]))
    assert len(conform) == 30
    assert all(np.array_equal(conform[k], src[k]) for k in range(12, 30))  # seg_002 and pass_001: the source
    assert not all(np.array_equal(conform[k], src[k]) for k in range(12))  # seg_001: rendered
    relinked = next(Path(p) for p in lang["timelines"] if p.endswith(".otio"))
    clips = list(otio.adapters.read_from_file(str(relinked)).video_tracks()[0].find_clips())
    assert [c.name for c in clips] == ["seg_001", "seg_002", "pass_001"]
    assert clips[0].markers[0].metadata["lipsync"] == {"audio_offset": 0.04}
