"""Cross-dissolves in the conform: the plan's transition spans, and the conform's frames checked one by one
against the weighted mix of the two shots (lossless FFV1 in RGB, so within one level of rounding) — with
a fake render on one side and the source on the other, with a render that lacks the handle (the source
fills in), and end to end with the tiny preset."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.timeline.outputs import dissolve_weight
from lipsyncctl.timeline.segments import plan_timeline
from lipsyncctl.timeline.source import MediaResolver
from lipsyncctl.timeline.types import ShotOutcome, ShotStatus
from tests.conftest import shared_path
from tests.sync_media import decode_rgb, write_clip
from tests.timeline_media import FILM, assert_dissolve, clip, media_frames, rt, write_sources


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dissolve")
    write_sources(folder, shared_path("fixtures", "demo1_video.mp4"))
    return folder


def _edit(before: int = 3, after: int = 2, kind: str = "SMPTE_Dissolve", gap: bool = False):  # type: ignore[no-untyped-def]
    """A (cam_a 4-16) | dissolve before+after | B (cam_b 01:00:00:08, 10 frames) at 01:00:00:00, 23.976."""
    import opentimelineio as otio

    tl = otio.schema.Timeline(name="d", global_start_time=rt(86400))
    v = otio.schema.Track(name="V1")
    v.append(clip("A", "cam_a.mkv", 4, 12, available=(0, 40)))
    if gap:
        v.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(rt(0), rt(3))))
    v.append(otio.schema.Transition(in_offset=rt(before), out_offset=rt(after), transition_type=kind))
    v.append(clip("B", "cam_b.mkv", 86408, 10, available=(86400, 30)))
    tl.tracks.append(v)
    return tl


def test_weights_are_linear_at_frame_middles() -> None:
    assert [dissolve_weight(k, 2) for k in range(2)] == [0.25, 0.75]
    assert [dissolve_weight(k, 5) for k in range(5)] == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert dissolve_weight(0, 1) == 0.5


def test_the_plan_knows_the_dissolve(media: Path) -> None:
    plan = plan_timeline(_edit(), MediaResolver(media))
    (span,) = plan.transitions
    assert (span.outgoing, span.incoming, span.cut, span.start, span.end, span.kind) == (0, 1, 12, 9, 14,
                                                                                         "SMPTE_Dissolve")
    a, b = plan.segments
    assert (a.handle_out, b.handle_in) == (2, 3)  # the handles the dissolve needs are rendered
    assert plan.to_dict()["transitions"][0]["before"] == 3 and not plan.warnings
    # --handles 12 where B's media has 8 frames before its cut: no fault of the dissolve, which needs 3 (it warned
    # "needs 12 handle frames, the media has 8"); a dissolve that needs 10 does
    a, b = plan_timeline(_edit(), MediaResolver(media), handles=12).segments
    assert b.handle_in == 8 and not b.warnings
    (_, b) = plan_timeline(_edit(before=10), MediaResolver(media), handles=12).segments
    assert b.warnings == ["the transition before needs 10 handle frames, the media has 8"]
    wipe = plan_timeline(_edit(kind="SMPTE_Wipe"), MediaResolver(media))
    assert len(wipe.transitions) == 1 and "SMPTE_Wipe is played as a dissolve" in wipe.warnings[0]
    assert plan_timeline(_edit(gap=True), MediaResolver(media)).transitions == []  # beside a gap: a cut


@pytest.mark.parametrize("short_render", [False, True])
def test_the_conform_plays_the_dissolve(media: Path, tmp_path: Path, short_render: bool) -> None:
    """A is 'rendered' (its source frames inverted, so render and source differ), B is not. With
    ``short_render`` A's render lacks its tail handle: those dissolve frames come from A's source."""
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.dub import DubTrack
    from lipsyncctl.timeline.outputs import conform

    plan = plan_timeline(_edit(), MediaResolver(media))
    a, b = plan.segments
    if short_render:
        a.handle_out = 0
    render = write_clip(tmp_path / "a.mkv", [255 - f for f in media_frames(a.media, a.render_start, a.render_frames)],
                        FILM, pix_fmt="bgr0")
    outcomes = {a.id: ShotOutcome(ShotStatus.DONE, "k", output=str(render))}
    dub = DubTrack("de", np.zeros((1, 48000), np.float32), 48000, Fraction(0), "de.wav")
    config = cfg.resolve("tiny").with_overrides({"output.audio_codec": "pcm", "output.codec": "ffv1"})
    got = decode_rgb(conform(plan, outcomes, dub, tmp_path / "edit.conform.mkv", config))
    assert len(got) == plan.duration == 22

    # A on record frames 0..13 (12 visible + 2 of tail handle), B on 9..21 (3 of head handle + 10 visible)
    a_frames = [255 - f for f in media_frames(a.media, a.source_start, 12)]
    a_tail = media_frames(a.media, a.source_start + 12, 2)
    a_frames += a_tail if short_render else [255 - f for f in a_tail]
    b_frames = media_frames(b.media, b.source_start - 3, 13)
    assert_dissolve(got, a_frames, b_frames, 9, 5, strict=True)


@pytest.mark.slow  # opt-in (-m slow): about a minute on 2 CPU cores; the test above checks the same mix in seconds
def test_tiny_render_dissolves_between_the_renders(media: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``sync --timeline --conform`` with the tiny preset, lossless FFV1: the conform's dissolve frames are
    the mix of the two lip-synced renders (their handle frames beyond the cut included)."""
    import opentimelineio as otio

    from lipsyncctl.cli.main import main

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    edit = tmp_path / "d.otio"
    tl = _edit(before=2, after=2)
    for c, url in zip(tl.find_clips(), ("cam_a.mkv", "cam_b.mkv"), strict=True):
        c.media_reference.target_url = str(media / url)
    otio.adapters.write_to_file(tl, str(edit))
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", "--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
               "-o", str(out), "--preset", "tiny", "--steps", "1", "--set", "faces.detect_every=3",
               "--handles", "0", "--codec", "ffv1", "--conform"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0, res
    shots = res["languages"]["de"]["shots"]
    assert [s["status"] for s in shots] == ["done", "done"]
    assert [s["handles"] for s in res["plan"]["segments"]] == [[0, 2], [2, 0]]  # only what the dissolve needs
    ra, rb = (media_frames(Path(s["output"]), 0, 14) for s in shots)  # A: 12 + 2 tail; B: 2 head + 10 (+ 2 held)
    assert not np.array_equal(ra[0], rb[0])
    got = decode_rgb(Path(res["languages"]["de"]["conform"]))
    assert len(got) == 22
    a_at = {t: ra[t] for t in range(14)}
    b_at = {t: rb[t - 10] for t in range(10, 22)}
    for t, frame in enumerate(got):
        if t < 10:
            assert np.array_equal(frame, a_at[t]), t
        elif t >= 14:
            assert np.array_equal(frame, b_at[t]), t
        else:
            w = dissolve_weight(t - 10, 4)
            expect = a_at[t].astype(np.float64) * (1 - w) + b_at[t].astype(np.float64) * w
            assert np.abs(frame.astype(np.float64) - expect).max() <= 1, t


def test_an_edl_dissolve_runs_the_outgoing_source_on_after_the_cut(tmp_path: Path) -> None:
    """CMX 3600 ``D 010``: OTIO's reader puts the whole dissolve after the cut (in_offset 0): the outgoing
    clip's source runs on for 10 frames under the incoming one. Neither shot rendered: both from the source."""
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.dub import DubTrack
    from lipsyncctl.timeline.outputs import conform
    from lipsyncctl.timeline.source import installed_adapters, read_timeline
    from tests.unit.test_timeline_interchange import DISSOLVE_EDL

    if "cmx_3600" not in installed_adapters():
        pytest.skip("otio-cmx3600-adapter is not installed (extra 'edl')")
    write_clip(tmp_path / "cam_a.mkv", [np.full((32, 32, 3), 4 * i, np.uint8) for i in range(60)], Fraction(25))
    write_clip(tmp_path / "cam_b.mkv", [np.full((32, 32, 3), 255 - 4 * i, np.uint8) for i in range(60)],
               Fraction(25), tags={"timecode": "01:00:00:00"})
    edl = tmp_path / "diss.edl"
    edl.write_text(DISSOLVE_EDL, encoding="utf-8")
    plan = plan_timeline(read_timeline(edl), MediaResolver(tmp_path))
    (span,) = plan.transitions
    a, b = plan.segments
    assert (span.cut, span.before, span.after) == (25, 0, 10) and a.handle_out == 10
    dub = DubTrack("de", np.zeros((1, 48000), np.float32), 48000, Fraction(0), "de.wav")
    config = cfg.resolve("tiny").with_overrides({"output.audio_codec": "pcm", "output.codec": "ffv1"})
    got = decode_rgb(conform(plan, {}, dub, tmp_path / "edit.conform.mkv", config))
    a_src, b_src = media_frames(a.media, a.source_start, 35), media_frames(b.media, b.source_start, 29)
    for t, frame in enumerate(got):
        if 25 <= t < 35:
            w = dissolve_weight(t - 25, 10)
            expect = a_src[t].astype(np.float64) * (1 - w) + b_src[t - 25].astype(np.float64) * w
            assert np.abs(frame.astype(np.float64) - expect).max() <= 1, t
        else:
            assert np.array_equal(frame, a_src[t] if t < 25 else b_src[t - 25]), t
