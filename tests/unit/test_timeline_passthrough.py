"""Pass-through shots in the conform: a clip the plan does not lip-sync but whose media is there
(``lipsync: false``, a time warp) plays its source picture (a warp at its speed), dissolves included;
black stays for gaps, missing media and a wrong-media EDL event. The plan and report still list those
clips as skipped, and the relinked timelines leave them alone. Conforms are lossless FFV1 in RGB, checked
frame by frame without a render."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.timeline.segments import plan_timeline
from lipsyncctl.timeline.source import MediaResolver, read_timeline
from lipsyncctl.timeline.types import ShotOutcome, ShotStatus
from tests.conftest import shared_path
from tests.sync_media import decode_rgb, write_clip
from tests.timeline_media import FILM, assert_dissolve, build_edit, clip, media_frames, rt, write_sources


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("passthrough")
    write_sources(folder, shared_path("fixtures", "demo1_video.mp4"))
    return folder


def _conform(plan, outcomes, tmp_path: Path, pix_fmt: str | None = None):  # type: ignore[no-untyped-def]
    """The conform's RGB frames (FFV1 RGB); with ``pix_fmt`` its luma planes (FFV1 in that YUV format)."""
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.dub import DubTrack
    from lipsyncctl.timeline.outputs import conform

    dub = DubTrack("de", np.zeros((1, 48000), np.float32), 48000, Fraction(0), "de.wav")
    config = cfg.resolve("tiny").with_overrides({"output.audio_codec": "pcm", "output.codec": "ffv1",
                                                 "output.pix_fmt": pix_fmt})
    out = conform(plan, outcomes, dub, tmp_path / "edit.conform.mkv", config)
    return decode_rgb(out) if pix_fmt is None else _luma(out)


def _luma(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [np.frombuffer(f.planes[0], np.uint8).reshape(f.planes[0].height, -1)[:, :f.width].copy()
                for f in c.decode(video=0)]


def test_the_conform_keeps_the_samples_of_what_it_shows_unchanged(media: Path, tmp_path: Path) -> None:
    """Written in YUV (lossless FFV1 4:2:0, the sources' format), a shot the conform shows as it is in its file
    is that file's samples, not an RGB round trip of them (which moved about one level of luma in most pixels)."""
    plan = plan_timeline(read_timeline(build_edit(media)), MediaResolver(media))
    got = _conform(plan, {}, tmp_path, pix_fmt="yuv420p")
    cam_a, cam_b = _luma(media / "cam_a.mkv"), _luma(media / "cam_b.mkv")
    assert len(got) == 62
    shown = [*zip(range(42, 50), cam_a[26:34], strict=True), *zip(range(50, 56), cam_b[2:13:2], strict=True),
             *zip(range(56, 62), cam_a[30:36], strict=True)]  # A3 (its source), B2 at 2x, A4 left alone
    for t, frame in shown:
        assert np.array_equal(got[t], frame), t


def test_the_conform_shows_pass_through_shots_and_black_where_media_is_missing(media: Path,
                                                                               tmp_path: Path) -> None:
    """The demo edit (tests/timeline_media.build_edit), nothing rendered: A4 (``lipsync: false``) shows
    cam_a 30-35, B2 (2x time warp) every second frame of cam_b from 2; the disabled A2 (nothing under it)
    and MISS (missing media) are black. The plan still lists them as skipped."""
    plan = plan_timeline(read_timeline(build_edit(media)), MediaResolver(media))
    skipped = {k["name"]: k for k in plan.to_dict()["skipped"]}
    assert skipped["A4"]["reason"] == "lipsync: false" and skipped["A4"]["conform"] == "source"
    assert skipped["B2"]["reason"].startswith("time warp: speed 2x") and skipped["B2"]["conform"] == "source"
    assert skipped["MISS"]["conform"] == skipped["A2"]["conform"] == "black"
    assert [s.name for s in plan.segments] == ["A1", "B1", "B3", "A3"]  # neither is rendered
    assert [(s.name, s.index) for s in plan.pictures()] == [
        ("A1", 0), ("B1", 1), ("B3", 2), ("A3", 3), ("B2", -1), ("A4", -2)]
    b2 = plan.shot(-1)
    assert (b2.source_start, b2.source_frames, b2.speed, b2.handle_in, b2.handle_out) == (2, 11, 2, 0, 0)

    got = _conform(plan, {}, tmp_path)
    assert len(got) == plan.duration == 62
    cam_a, cam_b = media / "cam_a.mkv", media / "cam_b.mkv"
    black = np.zeros_like(got[0])
    for t in range(30, 42):  # A2 disabled over nothing, then MISS
        assert np.array_equal(got[t], black), t
    for t, frame in zip(range(42, 50), media_frames(cam_a, 26, 8), strict=True):  # A3 (not rendered: its source)
        assert np.array_equal(got[t], frame), t
    for t, frame in zip(range(50, 56), media_frames(cam_b, 2, 11)[::2], strict=True):  # B2 at 2x
        assert np.array_equal(got[t], frame), t
    for t, frame in zip(range(56, 62), media_frames(cam_a, 30, 6), strict=True):  # A4, left alone
        assert np.array_equal(got[t], frame), t


def test_time_warps_play_at_their_speed_or_as_a_still(media: Path) -> None:
    """0.5x repeats each source frame twice; a freeze frame and a reverse speed hold the first frame."""
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import _segment_frames

    tl = otio.schema.Timeline(name="w", global_start_time=rt(0))
    v = otio.schema.Track(name="V1")
    for name, effect in (("slow", otio.schema.LinearTimeWarp(time_scalar=0.5)), ("freeze", otio.schema.FreezeFrame()),
                         ("back", otio.schema.LinearTimeWarp(time_scalar=-1.0))):
        c = clip(name, "cam_a.mkv", 10, 6, available=(0, 40))
        c.effects.append(effect)
        v.append(c)
    tl.tracks.append(v)
    plan = plan_timeline(tl, MediaResolver(media))
    assert plan.segments == [] and [k.reason for k in plan.skipped] == [
        "time warp: speed 0.5x (not supported)", "time warp: freeze frame (not supported)",
        "time warp: speed -1x (not supported)"]
    slow, freeze, back = (k.source for k in plan.skipped)
    assert (slow.speed, slow.source_frames, freeze.speed, freeze.source_frames) == (Fraction(1, 2), 3, 0, 1)
    src = media_frames(media / "cam_a.mkv", 10, 3)
    for shot, expect in ((slow, [src[0], src[0], src[1], src[1], src[2], src[2]]), (freeze, [src[0]] * 6),
                         (back, [src[0]] * 6)):
        got = [rgb for rgb, _ in _segment_frames(shot, None, plan.fps)]
        assert len(got) == 6 and all(np.array_equal(g, e) for g, e in zip(got, expect, strict=True)), shot.name


def test_a_dissolve_into_a_pass_through_shot(media: Path, tmp_path: Path) -> None:
    """A (rendered: its source inverted) | dissolve 3+2 | B (``lipsync: false``): B's source, with the
    frames before its in point, is mixed under A's render; after the dissolve B's source alone."""
    import opentimelineio as otio

    tl = otio.schema.Timeline(name="d", global_start_time=rt(86400))
    v = otio.schema.Track(name="V1")
    v.append(clip("A", "cam_a.mkv", 4, 12, available=(0, 40)))
    v.append(otio.schema.Transition(in_offset=rt(3), out_offset=rt(2), transition_type="SMPTE_Dissolve"))
    v.append(clip("B", "cam_b.mkv", 86408, 10, available=(86400, 30), lipsync=False))
    tl.tracks.append(v)
    plan = plan_timeline(tl, MediaResolver(media))
    (a,) = plan.segments
    (span,) = plan.transitions
    assert (span.outgoing, span.incoming, span.start, span.cut, span.end) == (0, -1, 9, 12, 14)
    assert (a.handle_in, a.handle_out) == (0, 2) and plan.skipped[0].reason == "lipsync: false"
    render = write_clip(tmp_path / "a.mkv", [255 - f for f in media_frames(a.media, a.render_start, a.render_frames)],
                        FILM, pix_fmt="bgr0")
    got = _conform(plan, {a.id: ShotOutcome(ShotStatus.DONE, "k", output=str(render))}, tmp_path)
    assert len(got) == 22
    a_frames = [255 - f for f in media_frames(a.media, a.source_start, 14)]  # 12 visible + 2 of tail handle
    b_frames = media_frames(media / "cam_b.mkv", 8 - 3, 13)                   # 3 before B's in point + 10
    assert_dissolve(got, a_frames, b_frames, 9, 5)


def test_relinked_timelines_leave_pass_through_clips_alone(media: Path) -> None:
    from lipsyncctl.timeline.outputs import relinked_timeline

    timeline = read_timeline(build_edit(media))
    plan = plan_timeline(timeline, MediaResolver(media))
    a1 = plan.segments[0]
    out, _ = relinked_timeline(timeline, plan, {a1.id: ShotOutcome(ShotStatus.DONE, "abc123", output="/r/a1.mov")},
                               "de")
    clips = {c.name: c for c in out.find_clips()}
    assert set(clips["A1"].media_references()) == {"DEFAULT_MEDIA", "lipsync_de"}  # relinked
    for name, url in (("A4", "cam_a.mkv"), ("B2", "cam_b.mkv")):
        assert set(clips[name].media_references()) == {"DEFAULT_MEDIA"}, name
        assert clips[name].media_reference.target_url == url and "lipsyncctl" not in clips[name].metadata


def test_a_wrong_media_edl_event_stays_black(tmp_path: Path) -> None:
    """The file found for an EDL event carries neither its clip name nor its reel: its picture is not
    trusted, so the conform shows black there (and the plan warns), not the wrong shot."""
    from lipsyncctl.timeline.source import installed_adapters

    if "cmx_3600" not in installed_adapters():
        pytest.skip("otio-cmx3600-adapter is not installed (extra 'edl')")
    write_clip(tmp_path / "cam_a.mkv", [np.full((32, 32, 3), 8 + 4 * i, np.uint8) for i in range(40)], Fraction(25))
    edl = tmp_path / "wrong.edl"
    edl.write_text("TITLE: wrong\nFCM: NON-DROP FRAME\n\n"
                   "001  cama     V     C        00:00:00:00 00:00:00:10 01:00:00:00 01:00:00:10\n"
                   "* FROM CLIP NAME: cam_a.mkv\n"
                   "002  camb     V     C        00:00:00:10 00:00:00:20 01:00:00:10 01:00:00:20\n"
                   "* FROM CLIP NAME: cam_b.mkv\n* FROM CLIP: cam_a.mkv\n", encoding="utf-8")
    plan = plan_timeline(read_timeline(edl, rate=25), MediaResolver(tmp_path))
    (skip,) = plan.skipped
    assert skip.reason.startswith("wrong media?") and skip.source is None
    assert plan.to_dict()["skipped"][0]["conform"] == "black"
    assert any(w.startswith("cam_b.mkv: skipped (wrong media?") for w in plan.warnings)
    got = _conform(plan, {}, tmp_path)
    src = media_frames(tmp_path / "cam_a.mkv", 0, 10)
    assert len(got) == 20 and all(np.array_equal(g, s) for g, s in zip(got[:10], src, strict=True))
    assert all(not g.any() for g in got[10:])


def test_an_interlaced_edit_is_conformed_interlaced(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sources of one field order (a 1080i50 master's, top field first): the plan knows it (it is part of a shot's
    render key, as is sync.deinterlace for such media only) and the conform keeps it, each shown frame still its
    source's own samples."""
    from lipsyncctl.media.probe import probe
    from lipsyncctl.media.reader import VideoReader
    from lipsyncctl.media.writer import VideoWriter

    folder = tmp_path / "media"
    folder.mkdir()
    for name in ("cam_a.mkv", "cam_b.mkv"):
        src = media / name
        with VideoReader(src) as reader, VideoWriter(folder / name, FILM, codec="ffv1", pix_fmt="yuv420p",
                                                     field_order="tt") as writer:
            for frame in reader:
                writer.write(frame.av_frame)
        assert probe(folder / name).video.field_order == "tt"  # type: ignore[union-attr]
    plan = plan_timeline(read_timeline(build_edit(folder)), MediaResolver(folder))
    assert {s.media_fields for s in plan.segments} == {"tt"}
    got = _conform(plan, {}, tmp_path, pix_fmt="yuv420p")
    assert probe(tmp_path / "edit.conform.mkv").video.field_order == "tt"  # type: ignore[union-attr]
    cam_a = _luma(media / "cam_a.mkv")
    for t, frame in zip(range(42, 50), cam_a[26:34], strict=True):
        assert np.array_equal(got[t], frame), t
    progressive = plan_timeline(read_timeline(build_edit(media)), MediaResolver(media))
    assert {s.media_fields for s in progressive.segments} == {None}
    keys = {(where.name, mode): _shot_keys(where, tmp_path / f"{where.name}-{mode}", monkeypatch, mode)
            for where in (folder, media) for mode in ("auto", "off")}
    assert keys[folder.name, "auto"] != keys[folder.name, "off"]  # the faces come from other pictures
    assert not set(keys[folder.name, "auto"]) & set(keys[folder.name, "off"])
    assert keys[media.name, "auto"] == keys[media.name, "off"]  # a progressive source's renders stay


def _shot_keys(folder: Path, out: Path, monkeypatch: pytest.MonkeyPatch, deinterlace: str) -> list[str]:
    """The render keys of a dry run of the edit over ``folder``'s media."""
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.job import run_timeline
    from lipsyncctl.timeline.types import TimelineJob
    from tests.mediagen import make_wav

    out.mkdir()
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(out.parent / "models"))  # one set: their fingerprints are in the keys
    dub = make_wav(out / "de.wav", 3.0, rate=16000, channels=1)
    res = run_timeline(TimelineJob(timeline=build_edit(folder), output=out / "out", audio=[("de", dub)],
                                   dry_run=True), cfg.resolve("tiny", [f"sync.deinterlace={deinterlace}"]))
    return [s["key"] for s in res.to_dict()["languages"]["de"]["shots"]]


_FCP_RATE = "<rate><timebase>24</timebase><ntsc>TRUE</ntsc></rate>"


def _fcp_item(media: Path, n: int, *, speed: str | None = None, reverse: str = "FALSE", variable: str = "0",
              at: int | None = None, enabled: bool = True) -> str:
    """An FCP 7 XML clipitem ``S{n}`` of 8 frames of cam_a from frame ``2 + n``, at record frame ``at`` (``8 n``),
    with a time remap filter when ``speed`` is given, turned off when not ``enabled``."""
    remap = "".join(f"<parameter><parameterid>{k}</parameterid><name>{k}</name><value>{v}</value></parameter>"
                    for k, v in (("variablespeed", variable), ("speed", speed), ("reverse", reverse)))
    filt = ("<filter><effect><name>Time Remap</name><effectid>timeremap</effectid><effectcategory>motion"
            f"</effectcategory><effecttype>motion</effecttype><mediatype>video</mediatype>{remap}</effect></filter>"
            if speed is not None else "")
    file = (f'<file id="f1"><name>cam_a.mkv</name><pathurl>{(media / "cam_a.mkv").as_uri()}</pathurl>{_FCP_RATE}'
            "<duration>40</duration></file>" if n == 0 else '<file id="f1"/>')
    at = 8 * n if at is None else at
    return (f'<clipitem id="c{n}"><name>S{n}</name>{"" if enabled else "<enabled>FALSE</enabled>"}<duration>40'
            f"</duration>{_FCP_RATE}<start>{at}</start><end>{at + 8}</end><in>{2 + n}</in><out>{10 + n}</out>"
            f"{file}{filt}</clipitem>")


def _fcp_xml(path: Path, *tracks: str) -> Path:
    """An FCP 7 XML sequence of 24000/1001 fps with these ``<track>`` elements, bottom first."""
    from lipsyncctl.timeline.source import installed_adapters

    if "fcp_xml" not in installed_adapters():
        pytest.skip("otio-fcp-adapter is not installed (extra 'fcp')")
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE xmeml>\n<xmeml version="4"><sequence id="s">'
                    f"<name>seq</name><duration>32</duration>{_FCP_RATE}<media><video>{''.join(tracks)}</video>"
                    "</media></sequence></xmeml>\n", encoding="utf-8")
    return path


def test_an_fcp_xml_time_remap_is_a_time_warp(media: Path, tmp_path: Path) -> None:
    """FCP 7 XML states a clip's speed in a time remap filter, which OTIO's reader keeps as a plain effect: a 200 %
    clip was rendered at 1x (and its render relinked under the filter). Now 200 % is a 2x time warp, a reverse
    or keyframed (variable) speed plays as a still, and a 100 % filter (Premiere writes one on most clips) is no
    warp and no "effect not rendered" note."""
    xml = _fcp_xml(tmp_path / "speeds.xml", "<track>" + _fcp_item(media, 0, speed="100") + _fcp_item(media, 1, speed="200")
                   + _fcp_item(media, 2, speed="100", reverse="TRUE") + _fcp_item(media, 3, speed="100", variable="1")
                   + "</track>")
    plan = plan_timeline(read_timeline(xml), MediaResolver(tmp_path))
    (shot,) = plan.segments
    assert (shot.name, shot.source_start, shot.source_frames, shot.warnings) == ("S0", 2, 8, [])
    assert [(k.name, k.reason, k.source.speed, k.source.source_start, k.source.source_frames)
            for k in plan.skipped] == [
        ("S1", "time warp: speed 2x (not supported)", 2, 3, 15),
        ("S2", "time warp: speed -1x (not supported)", 0, 4, 1),
        ("S3", "time warp: variable speed (not supported)", 0, 5, 1)]


def test_fcp_xml_clips_and_tracks_turned_off_stay_off(media: Path, tmp_path: Path) -> None:
    """``<enabled>FALSE</enabled>`` on a clipitem or a track, which OTIO's reader kept only in metadata (the clip was
    lip-synced and shown over what the edit shows): the clip is disabled, the track transparent, and the relinked
    XML keeps both off."""
    import xml.etree.ElementTree as ET

    from lipsyncctl.timeline.outputs import write_timelines

    xml = _fcp_xml(tmp_path / "off.xml",
                   "<track>" + _fcp_item(media, 0) + _fcp_item(media, 1, enabled=False) + "</track>",
                   "<track><enabled>FALSE</enabled>" + _fcp_item(media, 5, at=0) + "</track>")  # over S0, eye off
    timeline = read_timeline(xml)
    plan = plan_timeline(timeline, MediaResolver(tmp_path))
    assert [(s.name, s.record_start, s.source_start) for s in plan.segments] == [("S0", 0, 2)]
    assert [(k.name, k.reason) for k in plan.skipped] == [("S1", "disabled")]
    written, _ = write_timelines(timeline, xml, tmp_path / "out")
    root = ET.parse(tmp_path / "out" / "off.xml").getroot()
    off = {c.findtext("name") for c in root.iter("clipitem") if c.findtext("enabled") == "FALSE"}
    assert off == {"S1"} and [t.findtext("enabled") for t in root.iter("track")] == [None, "FALSE"]
