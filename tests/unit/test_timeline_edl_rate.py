"""The frame rate of an EDL read without --edl-rate: stated in a comment, else told by the largest frame
number of its timecodes and its FCM line; undecidable files fail naming --edl-rate."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import progress
from lipsyncctl.errors import MediaError, UsageError
from lipsyncctl.timeline.segments import plan_timeline
from lipsyncctl.timeline.source import MediaResolver, detect_edl_rate, installed_adapters, read_timeline
from tests.sync_media import write_clip

NTSC = Fraction(30000, 1001)

#: Two events at 25 fps: 25 frames of cam_a from frame 4, then 39 frames of cam_b from 01:00:00:10
#: (its timecode tag is 01:00:00:00) - the second source out point counts frame 24.
EDL_25 = """TITLE: cut25
FCM: NON-DROP FRAME

001  AX       V     C        00:00:00:04 00:00:01:04 01:00:00:00 01:00:01:00
* FROM CLIP NAME: cam_a.mkv
002  AX       V     C        01:00:00:10 01:00:01:24 01:00:01:00 01:00:02:14
* FROM CLIP NAME: cam_b.mkv
"""


def _event(n: int, src_in: str, src_out: str, rec_in: str, rec_out: str, name: str = "cam_a.mkv") -> str:
    return f"{n:03d}  AX       V     C        {src_in} {src_out} {rec_in} {rec_out}\n* FROM CLIP NAME: {name}\n"


def _edl(*events: str, fcm: str = "NON-DROP FRAME", comments: str = "") -> str:
    return f"TITLE: t\nFCM: {fcm}\n{comments}\n" + "".join(events)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "cmx_3600" not in installed_adapters():
        pytest.skip("otio-cmx3600-adapter is not installed (extra 'edl')")
    folder = tmp_path_factory.mktemp("edl25")
    frames = [np.full((32, 32, 3), 4 * i, np.uint8) for i in range(60)]
    write_clip(folder / "cam_a.mkv", frames, Fraction(25))
    write_clip(folder / "cam_b.mkv", frames, Fraction(25), tags={"timecode": "01:00:00:00"})
    write_clip(folder / "cam_ntsc.mkv", frames, NTSC)
    write_clip(folder / "cam_df.mkv", frames, NTSC, tags={"timecode": "01:00:00;00"})
    return folder


def test_a_25_fps_edl_without_a_rate_plans_at_25(media: Path) -> None:
    edl = media / "cut25.edl"
    edl.write_text(EDL_25, encoding="utf-8")
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        timeline = read_timeline(edl)
    plan = plan_timeline(timeline, MediaResolver(media), handles=0)
    assert plan.fps == 25
    assert [(s.media.name, s.record_start, s.record_frames, s.source_start, s.source_frames)
            for s in plan.segments] == [("cam_a.mkv", 0, 25, 4, 25), ("cam_b.mkv", 25, 39, 10, 39)]
    assert not [w for s in plan.segments for w in s.warnings]  # no "media at 25 fps on a 24 fps timeline"
    found = timeline.metadata["lipsyncctl"]["edl_rate"]
    assert (found["rate"], found["assumed"]) == ("25/1", False)
    assert "frames up to 24" in found["how"]
    assert ("message", "EDL frame rate 25 fps (its timecodes count frames up to 24)") in sink.events


def test_fcm_drop_frame_reads_at_29_97(media: Path) -> None:
    edl = media / "df.edl"
    edl.write_text(_edl(_event(1, "00:00:00;02", "00:00:01;12", "00:00:00;00", "00:00:01;10", "cam_ntsc.mkv"),
                        fcm="DROP FRAME"), encoding="utf-8")
    plan = plan_timeline(read_timeline(edl), MediaResolver(media), handles=0)
    assert plan.fps == NTSC
    assert [(s.record_frames, s.source_start, s.source_frames) for s in plan.segments] == [(40, 2, 40)]
    assert plan.segments[0].media_fps == NTSC and not plan.segments[0].warnings


def test_a_drop_frame_edit_shows_drop_frame_timecode(media: Path) -> None:
    """At 29.97 drop frame (FCM or ';') the plan, the report rows and the conform's stamp count drop frame as the
    NLE shows them (01:00:00;00 is frame 107892, which non-drop shows as 00:59:56:12); a source whose tag is
    drop frame gives its render's timecode so; shot ids stay non-drop (stable names); a non-drop edit at
    29.97 stays non-drop."""
    from lipsyncctl.media import timecode as tb

    assert tb.timecode(107892, NTSC, True) == "01:00:00;00" and tb.timecode(107892, NTSC) == "00:59:56:12"
    assert tb.timecode(90000, Fraction(25), True) == "01:00:00:00"  # no drop frame at 25
    edl = media / "df_hour.edl"
    edl.write_text(_edl(_event(1, "01:00:00;02", "01:00:01;12", "01:00:00;00", "01:00:01;10", "cam_df.mkv"),
                        fcm="DROP FRAME"), encoding="utf-8")
    timeline = read_timeline(edl)
    plan = plan_timeline(timeline, MediaResolver(media), handles=2)
    assert plan.drop_frame and plan.global_start == 107892
    (seg,) = plan.segments
    shown = plan.to_dict()
    assert shown["start"] == "01:00:00;00" and shown["drop_frame"] is True
    assert shown["segments"][0]["record"]["in"] == "01:00:00;00" and shown["segments"][0]["record"]["out"] == "01:00:01;10"
    assert seg.media_drop and shown["segments"][0]["source"]["in"] == "01:00:00;02"
    assert seg.render_timecode == "01:00:00;00"  # the head handle: 2 frames before the source in
    assert seg.id.endswith("_00-59-56-12")
    non_drop = media / "ndf.edl"
    non_drop.write_text(_edl(_event(1, "00:00:00:02", "00:00:01:12", "01:00:00:00", "01:00:01:10", "cam_ntsc.mkv")),
                        encoding="utf-8")
    plain = plan_timeline(read_timeline(non_drop, rate=29.97), MediaResolver(media), handles=0)
    assert not plain.drop_frame and plain.to_dict()["start"] == "01:00:00:00" and plain.global_start == 108000


def test_an_fcp_xml_lists_a_drop_frame_render_at_its_drop_frame_timecode(media: Path, tmp_path: Path) -> None:
    # the FCP XML writer labelled every file's timecode non-drop: a drop-frame render (01:00:00;00 in its tmcd, as
    # its source) was listed as 00:59:56:12 NDF, a timecode the file does not carry
    import shutil
    import xml.etree.ElementTree as ET

    from lipsyncctl.timeline.outputs import relinked_timeline, write_timelines
    from lipsyncctl.timeline.types import ShotOutcome, ShotStatus

    if "fcp_xml" not in installed_adapters():
        pytest.skip("otio-fcp-adapter is not installed (extra 'fcp')")
    edl = media / "df_xml.edl"
    edl.write_text(_edl(_event(1, "01:00:00;02", "01:00:01;12", "01:00:00;00", "01:00:01;10", "cam_df.mkv"),
                        fcm="DROP FRAME"), encoding="utf-8")
    timeline = read_timeline(edl)
    plan = plan_timeline(timeline, MediaResolver(media), handles=2)
    (seg,) = plan.segments
    render = Path(shutil.copy(media / "cam_df.mkv", tmp_path / "render.mkv"))
    outcomes = {seg.id: ShotOutcome(ShotStatus.DONE, "k", language="de", segment=seg.id, output=str(render))}
    relinked, _ = relinked_timeline(timeline, plan, outcomes, "de")
    written, warnings = write_timelines(relinked, media / "cut.xml", tmp_path / "out", inputs=[media / "cam_df.mkv"])
    assert tmp_path / "out" / "cut.xml" in written, warnings
    files = {f.findtext("pathurl"): f for f in ET.parse(tmp_path / "out" / "cut.xml").getroot().iter("file")
             if f.findtext("pathurl")}
    mine = files[render.resolve().as_uri()]
    assert (mine.findtext("timecode/string"), mine.findtext("timecode/displayformat")) == (seg.render_timecode, "DF")
    assert seg.render_timecode == "01:00:00;00"


@pytest.mark.parametrize("drop", [True, False])
def test_the_written_edl_counts_its_timecodes_as_the_edit_did(media: Path, tmp_path: Path, drop: bool) -> None:
    """OTIO's EDL writer writes drop frame at 29.97 whatever the edit counts: the EDL handed back has the
    input's count and FCM line, so its record in is the input's 01:00:00:00 (or 01:00:00;00), and it reads
    back to the same frames."""
    from lipsyncctl.timeline.outputs import write_timelines

    sep, fcm = (";", "DROP FRAME") if drop else (":", "NON-DROP FRAME")
    edl = media / f"count_{drop}.edl"
    edl.write_text(_edl(_event(1, f"00:00:00{sep}02", f"00:00:01{sep}12", f"01:00:00{sep}00", f"01:00:01{sep}10",
                               "cam_ntsc.mkv"), fcm=fcm), encoding="utf-8")
    timeline = read_timeline(edl, rate=29.97)
    written, _ = write_timelines(timeline, edl, tmp_path)
    text = (tmp_path / edl.name).read_text()
    assert f"FCM: {fcm}" in text.splitlines()[:3]
    event = next(line for line in text.splitlines() if line.startswith("001"))
    assert event.split()[-4:] == [f"00:00:00{sep}02", f"00:00:01{sep}12", f"01:00:00{sep}00", f"01:00:01{sep}10"]
    again = plan_timeline(read_timeline(tmp_path / edl.name, rate=29.97), MediaResolver(media), handles=0)
    first = plan_timeline(timeline, MediaResolver(media), handles=0)
    assert (again.global_start, again.drop_frame) == (first.global_start, drop)
    assert [(s.record_start, s.source_start, s.source_frames) for s in again.segments] == \
        [(s.record_start, s.source_start, s.source_frames) for s in first.segments]


def test_an_fcp_xml_sequence_states_drop_frame() -> None:
    import opentimelineio as otio

    from lipsyncctl.timeline.source import is_drop_frame_timeline

    if "fcp_xml" not in installed_adapters():
        pytest.skip("otio-fcp-adapter is not installed (extra 'fcp')")
    rate = 30000 / 1001
    timeline = otio.schema.Timeline("t", global_start_time=otio.opentime.RationalTime(107892, rate))
    timeline.tracks.append(otio.schema.Track())
    xml = otio.adapters.write_to_string(timeline, "fcp_xml")
    assert "<displayformat>NDF</displayformat>" in xml
    as_ndf = otio.adapters.read_from_string(xml, "fcp_xml")
    as_df = otio.adapters.read_from_string(xml.replace(">NDF<", ">DF<"), "fcp_xml")
    assert not is_drop_frame_timeline(as_ndf, NTSC) and is_drop_frame_timeline(as_df, NTSC)
    assert not is_drop_frame_timeline(as_df, Fraction(25))


def test_an_explicit_edl_rate_wins(media: Path) -> None:
    edl = media / "stated.edl"
    edl.write_text(_edl(_event(1, "00:00:00:04", "00:00:00:16", "01:00:00:00", "01:00:00:12"),
                        comments="* FPS: 25\n"), encoding="utf-8")  # a header comment OTIO alone refuses
    detected = read_timeline(edl)  # (held: OTIO frees the metadata of a dropped timeline)
    assert detected.metadata["lipsyncctl"]["edl_rate"]["rate"] == "25/1"
    timeline = read_timeline(edl, rate=23.976)
    plan = plan_timeline(timeline, MediaResolver(media), handles=0)
    assert plan.fps == Fraction(24000, 1001)
    assert timeline.metadata["lipsyncctl"]["edl_rate"]["how"] == "given with --edl-rate"


def test_a_whole_rate_given_for_media_at_the_ntsc_rate_beside_it_is_asked_again(media: Path) -> None:
    # `--edl-rate 24` for a 23.976 show (its timecodes count alike): every shot "outside the media's frames", exit 5
    # with a hint about finding the media
    edl = media / "ntsc_given_30.edl"
    edl.write_text(_edl(_event(1, "00:00:00:04", "00:00:01:04", "01:00:00:00", "01:00:01:00", "cam_ntsc.mkv")),
                   encoding="utf-8")
    with pytest.raises(UsageError) as info:
        read_timeline(edl, rate=30)
    assert info.value.message.startswith("--edl-rate 30: ntsc_given_30.edl's media (cam_ntsc.mkv...) run at 29.97 fps")
    assert info.value.hint.startswith("--edl-rate 29.97")
    timeline = read_timeline(edl, rate=29.97)  # the media's rate reads, and so do media at the rate given:
    assert timeline.metadata["lipsyncctl"]["edl_rate"]["rate"] == "30000/1001"
    edl.write_text(_edl(_event(1, "00:00:00:04", "00:00:01:04", "01:00:00:00", "01:00:01:00")), encoding="utf-8")
    at25 = read_timeline(edl, rate=25)  # (held: OTIO frees the metadata of a dropped timeline)
    assert at25.metadata["lipsyncctl"]["edl_rate"]["rate"] == "25/1"  # (cam_a: 25 fps)


def test_a_list_of_reels_alone_links_each_event_by_its_reel(media: Path) -> None:
    # tape-style lists name no file (no `* FROM CLIP` comment): every event was "missing media", and --media-root,
    # which the hint named, did not help
    edl = media / "reels" / "reels.edl"
    edl.parent.mkdir(exist_ok=True)
    edl.write_text("TITLE: reels\nFCM: NON-DROP FRAME\n\n"
                   "001  cam_a    V     C        00:00:00:04 00:00:00:16 01:00:00:00 01:00:00:12\n"
                   "002  cam_b    V     C        01:00:00:10 01:00:00:20 01:00:00:12 01:00:00:22\n", encoding="utf-8")
    timeline = read_timeline(edl, rate=25)
    plan = plan_timeline(timeline, MediaResolver(edl.parent, media_root=media), handles=0)
    assert [(s.media.name, s.source_start, s.source_frames) for s in plan.segments] == [
        ("cam_a.mkv", 4, 12), ("cam_b.mkv", 10, 10)]
    alone = plan_timeline(timeline, MediaResolver(edl.parent), handles=0)  # not beside the list: missing, said so
    assert not alone.segments and all("missing media" in k.reason for k in alone.skipped)
    # an event that names its file and a reel that is another file's stem: the file it names (the reel won)
    from lipsyncctl.timeline.source import link_by_name

    named = edl.parent / "named.edl"
    named.write_text("TITLE: named\nFCM: NON-DROP FRAME\n\n"
                     "001  cam_b    V     C        00:00:00:04 00:00:00:16 01:00:00:00 01:00:00:12\n"
                     "* FROM CLIP NAME: cam_a.mkv\n", encoding="utf-8")
    held = read_timeline(named, rate=25)  # (held: OTIO frees the metadata of a dropped timeline)
    (event,) = held.find_clips()
    assert link_by_name(event, MediaResolver(edl.parent, media_root=media)) == "cam_a.mkv"
    (seg,) = plan_timeline(held, MediaResolver(edl.parent, media_root=media), handles=0).segments
    assert seg.media.name == "cam_a.mkv"


def test_an_edl_rate_below_its_timecodes_is_a_usage_error(media: Path) -> None:
    edl = media / "cut25_at_24.edl"
    edl.write_text(EDL_25, encoding="utf-8")
    with pytest.raises(UsageError) as info:
        read_timeline(edl, rate=24)
    assert "--edl-rate 24" in info.value.message and "frame 24" in info.value.message
    assert "--edl-rate" in info.value.hint


def test_an_edl_rate_its_events_do_not_read_at_is_a_usage_error_naming_those_they_do(media: Path) -> None:
    """--edl-rate 24 on an edit cut at 25 (its source and record durations agree at 25 only): exit 2 naming the rate
    it reads at; it was exit 5 with a hint to pass --edl-rate, which the user had."""
    edl = media / "cut25_given_24.edl"
    edl.write_text(_edl(_event(1, "00:00:00:05", "00:00:02:00", "01:00:00:00", "01:00:01:20")), encoding="utf-8")
    with pytest.raises(UsageError) as info:
        read_timeline(edl, rate=24)
    assert "cannot read the EDL at 24 fps, given with --edl-rate" in info.value.message
    assert info.value.message.endswith("its timecodes read at 25 fps") and info.value.exit_code == 2
    assert "leave --edl-rate out" in info.value.hint
    timeline = read_timeline(edl, rate=25)  # (held: OTIO frees the metadata of a dropped timeline)
    assert timeline.metadata["lipsyncctl"]["edl_rate"]["rate"] == "25/1"


def test_an_undecidable_edl_fails_naming_edl_rate(tmp_path: Path) -> None:
    if "cmx_3600" not in installed_adapters():
        pytest.skip("otio-cmx3600-adapter is not installed (extra 'edl')")
    edl = tmp_path / "odd.edl"
    edl.write_text(_edl(_event(1, "00:00:00:04", "00:00:00:75", "01:00:00:00", "01:00:00:71")), encoding="utf-8")
    with pytest.raises(MediaError) as info:
        read_timeline(edl)
    err = info.value
    assert str(edl) in err.message and "frame 75" in err.message and "\n" not in err.message
    assert "--edl-rate" in err.hint and "re-export" not in err.hint
    assert err.exit_code == 5


EV = "001  AX  V  C  00:00:00:00 00:00:00:{ff} 01:00:00:00 01:00:00:{ff}\n"


@pytest.mark.parametrize(("text", "rate", "assumed"), [
    (_edl(EV.format(ff="17")), Fraction(24), True),             # fits every rate: today's 24, with a warning
    (_edl(EV.format(ff="24")), Fraction(25), False),
    (_edl(EV.format(ff="27")), Fraction(30), True),             # 29.97 NDF counts the same
    (_edl(EV.format(ff="27"), fcm="DROP FRAME"), NTSC, False),
    (_edl(EV.format(ff="27").replace(":27", ";27"), fcm=""), NTSC, False),  # ';' marks drop frame
    (_edl(EV.format(ff="45")), Fraction(50), False),
    (_edl(EV.format(ff="55")), Fraction(60), True),
    (_edl(EV.format(ff="10") + "* LOC: 01:00:00:24 RED note\n"), Fraction(25), False),  # locators count too
    (_edl(EV.format(ff="10") + "* FPS: 25\n"), Fraction(25), False),
    (_edl(EV.format(ff="10") + "* FRAME RATE: 23.976\n"), Fraction(24000, 1001), False),
    (_edl(EV.format(ff="10") + "* FPS: 30\n", fcm="DROP FRAME"), NTSC, False),
    (_edl(EV.format(ff="10") + "* FROM CLIP NAME: shot 25 fps take 01:00:00:29.mov\n"), Fraction(24), True),
])
def test_detect_edl_rate(text: str, rate: Fraction, assumed: bool) -> None:
    found = detect_edl_rate(text)
    assert (found.rate, found.assumed) == (rate, assumed)
    assert ("assumed" in found.note()) == assumed and found.how in found.note()


@pytest.mark.parametrize(("text", "why"), [
    (_edl(EV.format(ff="75")), "beyond every standard rate"),
    (_edl(EV.format(ff="61"), fcm="DROP FRAME"), "beyond every standard rate"),
    (_edl(EV.format(ff="24") + "* FPS: 24\n"), "counts frame 24"),
    (_edl(EV.format(ff="10") + "* FPS: 24\n" + "* FPS: 25\n"), "states"),
    (_edl(EV.format(ff="10") + "* FPS: 25\n", fcm="DROP FRAME"), "drop frame"),
])
def test_contradictory_or_unknown_rates_fail_naming_edl_rate(text: str, why: str) -> None:
    with pytest.raises(MediaError) as info:
        detect_edl_rate(text, "cut.edl")
    assert info.value.message.startswith("cut.edl: cannot tell its frame rate") and why in info.value.message
    assert "--edl-rate" in info.value.hint


#: Frames never past 23 and equal source/record durations: the timecodes fit every standard rate.
AMBIGUOUS = _edl(_event(1, "00:00:00:02", "00:00:00:20", "00:00:00:00", "00:00:00:18"))


def _dry_run(edl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **job: object):  # type: ignore[no-untyped-def]
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.job import run_timeline
    from lipsyncctl.timeline.types import TimelineJob
    from tests.mediagen import make_wav

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    dub = make_wav(tmp_path / "de.wav", 2.0, rate=16000, channels=1)
    return run_timeline(TimelineJob(timeline=edl, output=tmp_path / "out", audio=[("de", dub)], dry_run=True,
                                    **job), cfg.resolve("tiny"))  # type: ignore[arg-type]


def test_timecodes_that_fit_every_rate_are_settled_by_the_media(media: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """cam_a runs at 25: the EDL is read at 25, said so, and no "assumed" warning is left."""
    edl = media / "ambiguous.edl"
    edl.write_text(AMBIGUOUS, encoding="utf-8")
    res = _dry_run(edl, tmp_path, monkeypatch)
    assert res.plan.fps == 25
    assert not any("assumed" in w for w in res.warnings)
    ntsc = media / "ambiguous_ntsc.edl"
    ntsc.write_text(AMBIGUOUS.replace("cam_a.mkv", "cam_ntsc.mkv"), encoding="utf-8")
    timeline = read_timeline(ntsc)
    assert timeline.metadata["lipsyncctl"]["edl_rate"]["rate"] == "30000/1001"
    assert "its media (cam_ntsc.mkv...) run at 29.97" in timeline.metadata["lipsyncctl"]["edl_rate"]["how"]


def test_undecidable_rate_without_media_is_a_usage_error(tmp_path: Path) -> None:
    """Nothing tells 24 from 25: exit 2 asking for --edl-rate, never a silent 24."""
    if "cmx_3600" not in installed_adapters():
        pytest.skip("otio-cmx3600-adapter is not installed (extra 'edl')")
    edl = tmp_path / "lonely.edl"
    edl.write_text(AMBIGUOUS, encoding="utf-8")
    with pytest.raises(UsageError) as info:
        read_timeline(edl)
    err = info.value
    assert err.exit_code == 2 and "cannot tell the EDL's frame rate" in err.message
    assert "24, 23.976, 25" in err.message and "none of its media were found" in err.message
    assert "--edl-rate 24" in err.hint
    given = read_timeline(edl, rate=25)  # (held: OTIO frees the metadata of a dropped timeline)
    assert given.metadata["lipsyncctl"]["edl_rate"]["rate"] == "25/1"


def test_media_at_two_rates_do_not_decide(media: Path) -> None:
    edl = media / "mixed.edl"
    edl.write_text(AMBIGUOUS + _event(2, "00:00:00:02", "00:00:00:12", "00:00:00:18", "00:00:01:04",
                                      "cam_ntsc.mkv"), encoding="utf-8")
    with pytest.raises(UsageError) as info:
        read_timeline(edl)
    assert "its media run at 25 (cam_a.mkv) and 29.97 (cam_ntsc.mkv)" in info.value.message


def _speeds_edl(media: Path) -> Path:
    """Eight events at 25 fps, with speeds stated both ways (see the test below)."""
    m2 = "M2   AX       {speed}                {tc}\n"
    edl = media / "speeds.edl"
    edl.write_text(_edl(
        _event(1, "00:00:00:04", "00:00:00:14", "01:00:00:00", "01:00:00:10"),
        _event(2, "01:00:00:10", "01:00:00:20", "01:00:00:10", "01:00:00:20", "cam_b.mkv")   # as at normal speed
        + m2.format(speed="050.0", tc="01:00:00:10"),
        _event(3, "00:00:00:20", "00:00:01:00", "01:00:00:20", "01:00:01:00")                # reverse, 1x
        + m2.format(speed="-025.0", tc="00:00:00:20"),
        _event(4, "00:00:00:20", "00:00:01:00", "01:00:01:00", "01:00:01:05"),               # same source, no M2
        _event(5, "00:00:00:00", "00:00:00:10", "01:00:01:05", "01:00:01:10")                # written at 2x
        + m2.format(speed="050.0", tc="00:00:00:00"),
        _event(6, "00:00:01:05", "00:00:01:10", "01:00:01:10", "01:00:01:15")                # 1x: nothing
        + m2.format(speed="025.0", tc="00:00:01:05"),
        _event(7, "00:00:00:10", "00:00:00:15", "01:00:01:15", "01:00:01:20") + "* FREEZE FRAME\n",
        _event(8, "00:00:00:12", "00:00:00:17", "01:00:01:20", "01:00:02:00")                # a still by M2
        + m2.format(speed="000.0", tc="00:00:00:12")),
        encoding="utf-8")
    return edl


def test_the_speed_of_an_m2_line_is_kept_whichever_source_out_the_editor_wrote(media: Path) -> None:
    """OTIO's reader takes an M2 speed only when the event's source out is written at that speed; an editor that
    writes it at normal speed (the record's duration) got a clip at normal speed, rendered in place of the edit's
    2x or reversed shot. Both forms now plan as time warps (passed through at their speed); a 1x M2 changes
    nothing, the reader's own warp is not doubled, and a same-reel event without an M2 stays as it is."""
    timeline = read_timeline(_speeds_edl(media))
    warps = [[(type(e).__name__, getattr(e, "time_scalar", None)) for e in c.effects] for c in timeline.find_clips()]
    assert warps == [[], [("LinearTimeWarp", 2.0)], [("LinearTimeWarp", -1.0)], [], [("LinearTimeWarp", 2.0)], [],
                     [("FreezeFrame", 0.0)], [("LinearTimeWarp", 0.0)]]
    plan = plan_timeline(timeline, MediaResolver(media), handles=0)
    assert [(s.record_start, s.source_start, s.source_frames) for s in plan.segments] == [
        (0, 4, 10), (25, 20, 5), (35, 30, 5)]
    assert [(k.reason, k.source.speed, k.source.source_start, k.source.source_frames) for k in plan.skipped] == [
        ("time warp: speed 2x (not supported)", 2, 10, 19),      # cam_b's frames 10, 12 .. 28
        ("time warp: speed -1x (not supported)", 0, 20, 1),      # a reverse plays as a still (the conform reads forward)
        ("time warp: speed 2x (not supported)", 2, 0, 9),
        ("time warp: freeze frame (not supported)", 0, 10, 1),
        ("time warp: speed 0x (not supported)", 0, 12, 1)]


def test_an_ntsc_m2_of_normal_speed_is_no_time_warp(media: Path) -> None:
    """At 29.97 an M2 of 029.97 (or 029.9, as some editors round) is 1x, and 059.94 is 2x, not 1.9987x."""
    edl = media / "ntsc_m2.edl"
    edl.write_text(_edl(
        _event(1, "00:00:00:02", "00:00:00:12", "00:00:00:00", "00:00:00:10", "cam_ntsc.mkv")
        + "M2   AX       029.97                00:00:00:02\n",
        _event(2, "00:00:00:12", "00:00:00:22", "00:00:00:10", "00:00:00:20", "cam_ntsc.mkv")
        + "M2   AX       059.94                00:00:00:12\n",
        # the source out written at the speed: OTIO's reader makes the warp itself, 060.0 / 29.97 = 2.002x (a frame
        # off every ~500); it is the M2's stated 2x
        _event(3, "00:00:00:22", "00:00:01:12", "00:00:00:20", "00:00:01:00", "cam_ntsc.mkv")
        + "M2   AX       060.0                00:00:00:22\n"), encoding="utf-8")
    timeline = read_timeline(edl, rate=29.97)
    assert [[getattr(e, "time_scalar", None) for e in c.effects] for c in timeline.find_clips()] == [[], [2.0], [2.0]]


def test_the_relinked_edl_states_each_speed_as_the_edit_does(media: Path, tmp_path: Path) -> None:
    """OTIO's CMX 3600 writer divided by the speed (a 2x event of 10 frames got 5 source frames, a reverse one an out
    point before its in point, an M2 of 000.0 stopped the EDL with ZeroDivisionError) and named the clip on the M2
    line: the relinked EDL now states each event's source out at its speed and the reel on its M2 line, and reads
    back with the same speeds and ranges."""
    from lipsyncctl.timeline.outputs import write_timelines

    edl = _speeds_edl(media)
    timeline = read_timeline(edl)
    written, warnings = write_timelines(timeline, edl, tmp_path)
    assert [p.name for p in written] == ["speeds.otio", "speeds.edl"] and warnings == []
    text = (tmp_path / "speeds.edl").read_text()
    events = [line.split() for line in text.splitlines() if line[:3].isdigit()]
    assert [e[5] for e in events] == ["00:00:00:14", "01:00:01:05", "00:00:01:00", "00:00:01:00", "00:00:00:10",
                                      "00:00:01:10", "00:00:00:11", "00:00:00:13"]  # 2x: 20 frames; stills: 1
    assert [line.split()[1] for line in text.splitlines() if line.startswith("M2")] == [e[1] for e in events
                                                                                       if e[0] in "002 003 005 007 008"]
    back = read_timeline(tmp_path / "speeds.edl", rate=25)
    assert [[(type(e).__name__, getattr(e, "time_scalar", None)) for e in c.effects] for c in back.find_clips()] == [
        [(type(e).__name__, getattr(e, "time_scalar", None)) for e in c.effects] for c in timeline.find_clips()
    ][:7] + [[("FreezeFrame", 0.0)]]  # a speed of 0 is written as the still it is
    assert [c.source_range for c in back.find_clips()] == [c.source_range for c in timeline.find_clips()]


def _written_edl(tmp_path: Path, name: str, items: list) -> str:  # type: ignore[type-arg]
    """The relinked EDL of a one-track 25 fps edit of ``items``, as ``write_timelines`` writes it (no warning)."""
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import write_timelines

    if "cmx_3600" not in installed_adapters():
        pytest.skip("otio-cmx3600-adapter is not installed (extra 'edl')")
    timeline = otio.schema.Timeline(name)
    track = otio.schema.Track(kind=otio.schema.TrackKind.Video)
    timeline.tracks.append(track)
    for item in items:
        track.append(item)
    source = tmp_path / f"{name}.edl"
    source.write_text(f"TITLE: {name}\n", encoding="utf-8")
    written, warnings = write_timelines(timeline, source, tmp_path / "out")
    assert [p.name for p in written] == [f"{name}.otio", f"{name}.edl"] and warnings == []
    return (tmp_path / "out" / f"{name}.edl").read_text()


def test_the_relinked_edl_keeps_a_dissolves_speeds_apart_and_writes_any_reverse(tmp_path: Path) -> None:
    """OTIO's CMX writer put a dissolve's outgoing M2 under its incoming event (read back, a 1x incoming clip took
    the outgoing clip's 2x), left the dissolve's cut line at the outgoing clip's divided out point, and raised on
    a reverse whose source in is below its length (no EDL delivered). Each speed now reads back on its own clip,
    the cut line starts where the outgoing event ends, and the reverse is written."""
    import opentimelineio as otio
    from opentimelineio.opentime import RationalTime as RT
    from opentimelineio.opentime import TimeRange as TR


    def clip(name: str, reel: str, start: int, speed: float | None = None) -> otio.schema.Clip:
        out = otio.schema.Clip(name, media_reference=otio.schema.ExternalReference(
            target_url=f"/m/{name}.mov", available_range=TR(RT(0, 25), RT(10000, 25))),
            source_range=TR(RT(start, 25), RT(50, 25)), metadata={"cmx_3600": {"reel": reel}})
        if speed is not None:
            out.effects.append(otio.schema.LinearTimeWarp(time_scalar=speed))
        return out

    def dissolve() -> otio.schema.Transition:
        return otio.schema.Transition(in_offset=RT(5, 25), out_offset=RT(5, 25),
                                      transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve)

    text = _written_edl(tmp_path, "speeds", [clip("a", "A", 100, 2.0), dissolve(), clip("b", "B", 200),  # 2x into 1x
                                             clip("c", "C", 10, -1.0),               # reverse from frame 10 (raised)
                                             clip("e", "A", 300, 0.5), dissolve(), clip("f", "A", 400)])  # one reel
    events = [line.split() for line in text.splitlines() if line[:3].isdigit()]
    assert [e[:2] + e[-4:] for e in events] == [
        ["001", "A", "00:00:04:00", "00:00:07:15", "00:00:00:00", "00:00:01:20"],    # 45 frames at 2x: 90
        ["002", "A", "00:00:07:15", "00:00:07:15", "00:00:01:20", "00:00:01:20"],    # the cut: at a's out
        ["002", "B", "00:00:07:20", "00:00:10:00", "00:00:01:20", "00:00:04:00"],
        ["003", "C", "00:00:00:10", "00:00:02:10", "00:00:04:00", "00:00:06:00"],
        ["004", "A", "00:00:12:00", "00:00:12:23", "00:00:06:00", "00:00:07:20"],    # 45 frames at 0.5x: 23
        ["005", "A", "00:00:12:23", "00:00:12:23", "00:00:07:20", "00:00:07:20"],
        ["005", "A", "00:00:15:20", "00:00:18:00", "00:00:07:20", "00:00:10:00"]]
    assert [line.split()[1:] for line in text.splitlines() if line.startswith("M2")] == [
        ["A", "050.0", "00:00:04:00"], ["A", "050.0", "00:00:07:15"], ["C", "-025.0", "00:00:00:10"],
        ["A", "012.5", "00:00:12:00"], ["A", "012.5", "00:00:12:23"]]
    back = read_timeline(tmp_path / "out" / "speeds.edl", rate=25)
    assert [(c.name, [getattr(e, "time_scalar", None) for e in c.effects]) for c in back.find_clips()] == [
        ("a", [2.0]), ("b", []), ("c", [-1.0]), ("e", [0.5]), ("f", [])]


def test_the_relinked_edl_writes_reverses_into_a_dissolve_and_clips_without_a_reel(tmp_path: Path) -> None:
    """A reverse on a dissolve's incoming side (the writer states it at the in point less the transition) keeps its
    sign; a clip without a reel (an EDL's AX event, named with a space) is written AX, not as a reel with a space
    that no EDL reader parses (its M2 then went to the event before)."""
    import opentimelineio as otio
    from opentimelineio.opentime import RationalTime as RT
    from opentimelineio.opentime import TimeRange as TR


    def clip(name: str, reel: str | None, start: int, speed: float) -> otio.schema.Clip:
        return otio.schema.Clip(name, media_reference=otio.schema.ExternalReference(target_url=f"/m/{name}.mov"),
                                source_range=TR(RT(start, 25), RT(50, 25)),
                                metadata={"cmx_3600": {"reel": reel}} if reel else None,
                                effects=[otio.schema.LinearTimeWarp(time_scalar=speed)])

    text = _written_edl(tmp_path, "rev", [clip("a", "A", 100, -1.0),
                                          otio.schema.Transition(in_offset=RT(5, 25), out_offset=RT(5, 25)),
                                          clip("b", "B", 200, -2.0), clip("shot one", None, 300, 2.0),
                                          clip("", "D", 400, -1.0)])  # no name: the mark alone
    assert "~" not in text and [line.split()[1] for line in text.splitlines() if line[:3].isdigit()] == [
        "A", "A", "B", "AX", "D"]
    assert not any(line.rstrip().endswith("CLIP NAME:") for line in text.splitlines())
    back = read_timeline(tmp_path / "out" / "rev.edl", rate=25)
    assert [(c.name, [getattr(e, "time_scalar", None) for e in c.effects]) for c in back.find_clips()] == [
        ("a", [-1.0]), ("b", [-2.0]), ("shot one", [2.0]), (back.find_clips()[3].name, [-1.0])]


def test_an_m2_speed_is_written_as_nles_write_it() -> None:
    from lipsyncctl.timeline.edl_text import m2_speed_text as _m2_speed

    assert [_m2_speed(Fraction(v)) for v in (50, -25, 0, Fraction(25, 2), 100)] == [
        "050.0", "-025.0", "000.0", "012.5", "100.0"]
    assert _m2_speed(2 * Fraction(30000, 1001)) == "059.94"


def test_a_dissolves_outgoing_m2_is_not_read_as_the_incoming_clips_speed(media: Path) -> None:
    """An M2 under a dissolve names the outgoing reel at its own source in (as OTIO's writer and some NLEs write it):
    it matched neither line's source in and went to the incoming clip, a 1x shot then planned at 2x."""
    edl = media / "dissolve_m2.edl"
    edl.write_text(_edl(
        "001  A001     V     C        00:00:00:04 00:00:00:24 01:00:00:00 01:00:00:10\n"
        "M2   A001      050.0                00:00:00:04\n",
        "002  A001     V     C        00:00:00:24 00:00:00:24 01:00:00:10 01:00:00:10\n"
        "002  B001     V     D 004    00:00:01:00 00:00:01:10 01:00:00:10 01:00:00:20\n"
        "M2   A001      050.0                00:00:00:04\n"), encoding="utf-8")
    timeline = read_timeline(edl, rate=25)
    assert [((c.metadata.get("cmx_3600") or {}).get("reel"), [getattr(e, "time_scalar", None) for e in c.effects])
            for c in timeline.find_clips()] == [("A001", [2.0]), ("B001", [])]
    # a dissolve within one reel: an M2 at neither line's source in is the outgoing clip's, unless a "* TO" comment
    # follows it
    for to, speeds in (("", [[2.0], []]), ("* TO CLIP NAME: b\n", [[2.0], [2.0]])):
        edl.write_text(_edl(
            "001  A001     V     C        00:00:00:04 00:00:00:24 01:00:00:00 01:00:00:10\n"
            "M2   A001      050.0                00:00:00:04\n",
            "002  A001     V     C        00:00:00:24 00:00:00:24 01:00:00:10 01:00:00:10\n"
            "002  A001     V     D 004    00:00:01:00 00:00:01:10 01:00:00:10 01:00:00:20\n"
            "M2   A001      050.0                00:00:00:04\n" + to), encoding="utf-8")
        assert [[getattr(e, "time_scalar", None) for e in c.effects]
                for c in read_timeline(edl, rate=25).find_clips()] == speeds


def test_an_edl_rate_given_with_another_format_is_warned_about(media: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An .otio carries its own rates: --edl-rate with it is said to be ignored (it was, in silence)."""
    import opentimelineio as otio

    edl = media / "cut25_for_otio.edl"
    edl.write_text(EDL_25, encoding="utf-8")
    timeline = read_timeline(edl)
    for clip in timeline.find_clips():
        clip.media_reference = otio.schema.ExternalReference(target_url=str(media / clip.name))
    cut = tmp_path / "cut.otio"
    otio.adapters.write_to_file(timeline, str(cut))
    res = _dry_run(cut, tmp_path, monkeypatch, edl_rate=23.976)
    assert res.plan.fps == 25
    assert "--edl-rate 23.976 ignored: cut.otio is not an EDL (its own rates are used)" in res.warnings
    (tmp_path / "e").mkdir()
    assert not any("--edl-rate" in w for w in _dry_run(edl, tmp_path / "e", monkeypatch, edl_rate=25).warnings)
