"""What `sync --timeline` reads from an EDL and hands back to an NLE: the record start timecode kept in the
plan and the relinked EDL/OTIO, a dissolve's incoming clip linked to its own file, and an event whose file
does not carry its clip name or reel refused instead of rendered from the wrong picture."""

from __future__ import annotations

import re
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.timeline.outputs import relinked_timeline, write_timelines
from lipsyncctl.timeline.segments import plan_timeline
from lipsyncctl.timeline.source import MediaResolver, installed_adapters, read_timeline
from lipsyncctl.timeline.types import ShotOutcome, ShotStatus
from tests.sync_media import write_clip

#: A 25 fps cut at 01:00:00:00: cam_a 25 frames, then a 10-frame dissolve into cam_b (whose file starts at
#: 01:00:00:00), written as Avid does: the dissolve event names both sides and the outgoing file's path.
DISSOLVE_EDL = """TITLE: diss
FCM: NON-DROP FRAME

001  cama     V     C        00:00:00:04 00:00:01:04 01:00:00:00 01:00:01:00
* FROM CLIP NAME: cam_a.mkv
* FROM CLIP: cam_a.mkv
002  cama     V     C        00:00:01:04 00:00:01:04 01:00:01:00 01:00:01:00
002  camb     V     D    010 01:00:00:10 01:00:01:14 01:00:01:00 01:00:02:04
* FROM CLIP NAME: cam_a.mkv
* FROM CLIP: cam_a.mkv
* TO CLIP NAME: cam_b.mkv
"""


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "cmx_3600" not in installed_adapters():
        pytest.skip("otio-cmx3600-adapter is not installed (extra 'edl')")
    folder = tmp_path_factory.mktemp("interchange")
    write_clip(folder / "cam_a.mkv", [np.full((32, 32, 3), 4 * i, np.uint8) for i in range(60)], Fraction(25))
    write_clip(folder / "cam_b.mkv", [np.full((32, 32, 3), 255 - 4 * i, np.uint8) for i in range(60)],
               Fraction(25), tags={"timecode": "01:00:00:00"})
    return folder


def test_the_record_start_survives_into_the_plan(media: Path) -> None:
    edl = media / "diss.edl"
    edl.write_text(DISSOLVE_EDL, encoding="utf-8")
    timeline = read_timeline(edl)
    plan = plan_timeline(timeline, MediaResolver(media), handles=0)
    assert (plan.fps, plan.global_start) == (25, 90000)
    doc = plan.to_dict()
    assert doc["start"] == "01:00:00:00"
    assert [(s["record"]["in"], s["record"]["out"]) for s in doc["segments"]] == [
        ("01:00:00:00", "01:00:01:00"), ("01:00:01:00", "01:00:02:04")]


def test_a_dissolve_links_the_incoming_clip_to_its_own_file(media: Path) -> None:
    """OTIO's reader links the incoming clip to '* FROM CLIP: cam_a.mkv' (the outgoing file): cam_b it is."""
    edl = media / "diss.edl"
    edl.write_text(DISSOLVE_EDL, encoding="utf-8")
    plan = plan_timeline(read_timeline(edl), MediaResolver(media), handles=0)
    assert [(s.name, s.media.name, s.source_start, s.source_frames) for s in plan.segments] == [
        ("cam_a.mkv", "cam_a.mkv", 4, 25), ("cam_b.mkv", "cam_b.mkv", 10, 29)]
    # '* TO CLIP: path' (OTIO's own writer states it) is taken as the incoming file
    stated = media / "diss_to.edl"
    stated.write_text(DISSOLVE_EDL + "* TO CLIP: sub/cam_b_copy.mkv\n", encoding="utf-8")
    (media / "sub").mkdir(exist_ok=True)
    (media / "sub" / "cam_b_copy.mkv").write_bytes((media / "cam_b.mkv").read_bytes())
    plan = plan_timeline(read_timeline(stated), MediaResolver(media), handles=0)
    assert plan.segments[1].media == (media / "sub" / "cam_b_copy.mkv").resolve()


def test_a_file_that_is_not_the_named_source_is_not_rendered(media: Path) -> None:
    """An event whose stated path is another clip's file is skipped with a warning naming both."""
    edl = media / "wrong.edl"
    edl.write_text("TITLE: wrong\nFCM: NON-DROP FRAME\n\n"
                   "001  camb     V     C        00:00:00:04 00:00:01:04 01:00:00:00 01:00:01:00\n"
                   "* FROM CLIP NAME: cam_b.mkv\n* FROM CLIP: cam_a.mkv\n"
                   "002  AX       V     C        00:00:00:04 00:00:00:14 01:00:01:00 01:00:01:10\n"
                   "* FROM CLIP: cam_a.mkv\n"                       # nothing named: nothing to check
                   "003  cama     V     C        00:00:00:20 00:00:00:24 01:00:01:10 01:00:01:14\n"
                   "* FROM CLIP NAME: take one\n* FROM CLIP: cam_a.mkv\n",   # the reel names the file
                   encoding="utf-8")
    plan = plan_timeline(read_timeline(edl), MediaResolver(media), handles=0)
    assert [s.media.name for s in plan.segments] == ["cam_a.mkv", "cam_a.mkv"]
    (skip,) = plan.skipped
    assert skip.name == "cam_b.mkv" and skip.reason.startswith("wrong media?")
    assert "clip name 'cam_b.mkv' and reel 'camb'" in skip.reason and "cam_a.mkv" in skip.reason
    assert any(w.startswith("cam_b.mkv: skipped (wrong media?") for w in plan.warnings)


def test_an_edl_written_by_otio_links_the_file_it_names(media: Path, tmp_path: Path) -> None:
    """OTIO's CMX writer makes the reel up from the file's name (``clip.mp4`` -> ``clipmp4``: an extension holding
    a digit is kept) and says so in a comment: the event names its file and is planned, not "wrong media?"; the
    relinked EDL drops that comment beside the render's reel."""
    import opentimelineio as otio

    (tmp_path / "in").mkdir()
    source = write_clip(tmp_path / "in" / "clip.mp4", [np.full((32, 32, 3), 4 * i, np.uint8) for i in range(40)],
                        Fraction(25), codec="mpeg4")
    tl = otio.schema.Timeline(name="walk")
    track = otio.schema.Track(name="V1")
    span = otio.opentime.TimeRange(otio.opentime.RationalTime(2, 25), otio.opentime.RationalTime(15, 25))
    track.append(otio.schema.Clip(name="sh010", source_range=span,
                                  media_reference=otio.schema.ExternalReference(target_url=str(source))))
    tl.tracks.append(track)
    edl = tmp_path / "tl" / "edit.edl"
    edl.parent.mkdir()
    otio.adapters.write_to_file(tl, str(edl))
    text = edl.read_text()
    assert "clipmp4" in text and "* OTIO TRUNCATED REEL NAME FROM: clip.mp4" in text, text  # what OTIO writes
    timeline = read_timeline(edl, rate=25)
    plan = plan_timeline(timeline, MediaResolver(edl.parent), handles=0)
    assert not plan.skipped and [(s.name, s.media) for s in plan.segments] == [("sh010", source.resolve())]
    seg = plan.segments[0]
    render = tmp_path / "render.mp4"
    shutil.copy(source, render)
    # the source's own note of its file (an EDL as an NLE or OTIO writes it) goes too: the relinked event named the
    # render and the camera file, two TO/FROM CLIP lines
    cmx = timeline.tracks[0][0].metadata.setdefault("cmx_3600", {})
    cmx["comments"] = [*cmx.get("comments", []), f"FROM CLIP: {source}", "FROM CLIP NAME: sh010"]
    outcomes = {seg.id: ShotOutcome(ShotStatus.DONE, "abcdef0123", language="de", segment=seg.id,
                                    output=str(render))}
    relinked, _ = relinked_timeline(timeline, plan, outcomes, "de")
    write_timelines(relinked, edl, tmp_path / "out", inputs=[source])
    out = (tmp_path / "out" / "edit.edl").read_text()
    assert "LSABCDEF" in out and "TRUNCATED" not in out, out
    files = [line for line in out.splitlines() if re.match(r"\*\s*(FROM|TO) CLIP:", line)]
    assert len(files) == 1 and files[0].endswith("render.mp4"), out


NAMED_EDL = """TITLE: names
FCM: NON-DROP FRAME

001  TAPE01   V     C        00:00:00:00 00:00:00:10 01:00:00:00 01:00:00:10
* FROM CLIP NAME:  sh010
* OTIO TRUNCATED REEL NAME FROM: clip.mp4
002  TAPE01   V     C        00:00:00:00 00:00:00:10 01:00:00:10 01:00:00:20
* FROM CLIP NAME:  sh020
* FROM CLIP: /mnt/edit/in/clip.mp4
003  clipmp4  V     C        00:00:00:00 00:00:00:10 01:00:00:20 01:00:01:05
* FROM CLIP NAME:  sh030
004  TAPE01   V     C        00:00:00:00 00:00:00:10 01:00:01:05 01:00:01:15
* FROM CLIP NAME:  sh040
* FROM CLIP: /mnt/edit/in/other.mp4
005  TAPE01   V     C        00:00:00:00 00:00:00:10 01:00:01:15 01:00:02:00
* FROM CLIP NAME:  other.mp4
* FROM CLIP: /mnt/edit/in/clip.mp4
"""


def test_the_name_check_takes_otios_reel_comment_not_the_events_path(media: Path) -> None:
    """clip.mp4 is the file an event names by OTIO's truncated-reel comment or by a reel cut from its whole name;
    not by its ``FROM CLIP`` path alone (the path the file was found by: it would pass every event), nor when the
    clip name is another file's."""
    from lipsyncctl.timeline.segments import name_mismatch
    from lipsyncctl.timeline.source import MediaFacts

    edl = media / "names.edl"
    edl.write_text(NAMED_EDL, encoding="utf-8")
    clips = list(read_timeline(edl, rate=25).find_clips())
    facts = MediaFacts(Path("/data/in/clip.mp4"), Fraction(25), 40, 32, 32, None, None)
    found = {c.name: name_mismatch(c, facts) for c in clips}
    assert [n for n, why in found.items() if why is None] == ["sh010", "sh030"], found
    assert "clip name 'sh020' and reel 'TAPE01'" in str(found["sh020"])
    assert "clip name 'sh040' and reel 'TAPE01'" in str(found["sh040"])
    assert "clip name 'other.mp4'" in str(found["other.mp4"])


def test_relinked_edl_and_otio_keep_the_record_start(media: Path, tmp_path: Path) -> None:
    import opentimelineio as otio

    edl = media / "diss.edl"
    edl.write_text(DISSOLVE_EDL, encoding="utf-8")
    timeline = read_timeline(edl)
    plan = plan_timeline(timeline, MediaResolver(media), handles=0)
    seg = plan.segments[0]
    render = tmp_path / "render_a.mkv"
    render.write_bytes((media / "cam_a.mkv").read_bytes())
    outcomes = {seg.id: ShotOutcome(ShotStatus.DONE, "k", language="de", segment=seg.id, output=str(render))}
    relinked, _ = relinked_timeline(timeline, plan, outcomes, "de")
    written, warnings = write_timelines(relinked, edl, tmp_path / "out", inputs=[media / "cam_a.mkv"])
    assert [p.name for p in written] == ["diss.otio", "diss.edl"] and not warnings
    back = otio.adapters.read_from_file(str(tmp_path / "out" / "diss.otio"))
    assert otio.opentime.to_timecode(back.global_start_time, 25) == "01:00:00:00"
    text = (tmp_path / "out" / "diss.edl").read_text()
    events = [line.split() for line in text.splitlines() if line[:1].isdigit()]
    assert events[0][-2:] == ["01:00:00:00", "01:00:01:00"]
    assert text.splitlines()[1] == "FCM: NON-DROP FRAME"  # as the input's (dropped at rates without drop frame)
    again = read_timeline(tmp_path / "out" / "diss.edl", rate=25)
    assert otio.opentime.to_timecode(again.global_start_time, 25) == "01:00:00:00"
    clips = list(again.find_clips())
    assert [c.trimmed_range_in_parent().start_time.value for c in clips][:1] == [0]


def _relinked(media: Path, tmp_path: Path, edl_text: str = DISSOLVE_EDL, offset: float = 0.0):  # type: ignore[no-untyped-def]
    """The EDL's plan, its relinked timeline with cam_a's shot rendered (a stamped copy of the source) and a
    2 s dub starting ``offset`` s after the first frame."""
    from lipsyncctl.media.mux import stamp_timecode
    from lipsyncctl.timeline.dub import DubTrack
    from lipsyncctl.timeline.outputs import render_reel

    edl = media / "diss.edl"
    edl.write_text(edl_text, encoding="utf-8")
    timeline = read_timeline(edl)
    plan = plan_timeline(timeline, MediaResolver(media), handles=2)
    seg = plan.segments[0]
    render = tmp_path / "out" / "de" / "shots" / "001.mkv"
    render.parent.mkdir(parents=True)
    write_clip(render, [np.zeros((32, 32, 3), np.uint8)] * seg.render_frames, Fraction(25))
    stamp_timecode(render, seg.render_timecode, reel=render_reel("abcdef0123"))
    outcomes = {seg.id: ShotOutcome(ShotStatus.DONE, "abcdef0123", language="de", segment=seg.id, output=str(render))}
    dub_file = tmp_path / "de.wav"
    dub_file.write_bytes(b"")  # only its path is written into the timeline
    dub = DubTrack("de", np.zeros((2, 96000), np.float32), 48000, Fraction(offset).limit_denominator(100), str(dub_file))
    relinked, _ = relinked_timeline(timeline, plan, outcomes, "de", dub=dub)
    return edl, timeline, plan, relinked, render


def test_the_relinked_edl_names_the_renders_reel_at_its_timecode(media: Path, tmp_path: Path) -> None:
    from lipsyncctl.media.probe import probe
    from lipsyncctl.timeline.source import MediaFacts

    edl, _, plan, relinked, render = _relinked(media, tmp_path)
    seg = plan.segments[0]
    assert (seg.handle_in, seg.render_timecode) == (2, "00:00:00:02")
    written, _ = write_timelines(relinked, edl, tmp_path / "out" / "de", inputs=[media / "cam_a.mkv"])
    events = [line.split() for line in (tmp_path / "out" / "de" / "diss.edl").read_text().splitlines()
              if line[:1].isdigit()]
    assert events[0][1] == "LSABCDEF" == probe(render).reel
    assert events[0][4:8] == ["00:00:00:04", "00:00:01:04", "01:00:00:00", "01:00:01:00"]  # inside the render's
    # the relinked EDL read back: its event links to the render (clip name + reel) and passes the cross-check
    from lipsyncctl.timeline.segments import name_mismatch

    back = read_timeline(tmp_path / "out" / "de" / "diss.edl", rate=25)
    first = next(iter(back.find_clips()))
    facts = MediaFacts(render, Fraction(25), seg.render_frames, 32, 32, probe(render).timecode, probe(render).reel)
    assert name_mismatch(first, facts) is None


def test_relinked_urls_keep_the_inputs_form(media: Path, tmp_path: Path) -> None:
    import opentimelineio as otio

    edl, timeline, plan, relinked, render = _relinked(media, tmp_path)
    folder = tmp_path / "out" / "de"
    written, _ = write_timelines(relinked, edl, folder, inputs=[media / "cam_a.mkv"])
    back = otio.adapters.read_from_file(str(folder / "diss.otio"))
    clip = next(iter(back.video_tracks()[0].find_clips()))
    assert clip.media_reference.target_url == "shots/001.mkv"  # the EDL named a relative file
    # relative from the output folder; an absolute path stays absolute, a file:// URL a URL
    for url, expect in [("cam_a.mkv", "shots/001.mkv"), (str(media / "cam_a.mkv"), str(render.resolve())),
                        ((media / "cam_a.mkv").as_uri(), render.resolve().as_uri())]:
        plan.segments[0].media_url = url
        again, _ = relinked_timeline(timeline, plan, {plan.segments[0].id: ShotOutcome(
            ShotStatus.DONE, "k", output=str(render))}, "de")
        base_tl = media / "sub" / "cut.otio"  # the input timeline's folder is media/sub
        write_timelines(again, base_tl, folder, inputs=[media / "cam_a.mkv"])
        got = otio.adapters.read_from_file(str(folder / "cut.otio"))
        url_out = next(iter(got.video_tracks()[0].find_clips())).media_reference.target_url
        assert url_out == expect
        original = next(iter(got.video_tracks()[0].find_clips())).media_references()["DEFAULT_MEDIA"].target_url
        if url == "cam_a.mkv":  # the input's relative URL re-based: still the same file
            assert not original.startswith("/") and (folder / original).resolve() == media / "sub" / "cam_a.mkv"


def test_fcp_xml_states_the_renders_timecode_and_urls(media: Path, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    if "fcp_xml" not in installed_adapters():
        pytest.skip("otio-fcp-adapter is not installed (extra 'fcp')")
    _, _, plan, relinked, render = _relinked(media, tmp_path)
    folder = tmp_path / "out" / "de"
    written, warnings = write_timelines(relinked, media / "cut.xml", folder, inputs=[media / "cam_a.mkv"])
    assert folder / "cut.xml" in written, warnings
    root = ET.parse(folder / "cut.xml").getroot()
    files = {f.findtext("pathurl"): f for f in root.iter("file") if f.findtext("pathurl")}
    mine = files[render.resolve().as_uri()]
    assert int(mine.findtext("timecode/frame")) == 2  # 00:00:00:02 at 25: what the render's tmcd says
    assert all(u.startswith("file://") for u in files)


@pytest.mark.parametrize(("offset", "gap", "head"), [(0.0, 0, 0), (0.5, 24000, 0), (-0.25, 0, 12000)])
def test_the_dub_track_sits_at_its_record_samples(media: Path, tmp_path: Path, offset: float, gap: int,
                                                  head: int) -> None:
    _, _, plan, relinked, _ = _relinked(media, tmp_path, offset=offset)
    (track,) = [t for t in relinked.tracks if t.name == "Dub de"]
    clip = track[-1]
    def samples(t):  # type: ignore[no-untyped-def]
        assert t.rate == 25  # the timeline's rate, fractional frames: whole samples
        return round(t.value * 48000 / 25, 6)

    assert samples(clip.range_in_parent().start_time) == gap
    assert samples(clip.source_range.start_time) == head
    end = gap + samples(clip.source_range.duration)
    assert end == min(gap + 96000 - head, plan.duration * 48000 // 25)  # ends with the dub or the edit
    assert [t.name for t in relinked.tracks][:-1] == ["V"]  # the original tracks kept


def test_the_conform_mixes_the_dub_over_an_me_track_at_the_record_timecode(media: Path, tmp_path: Path) -> None:
    """Dub (mono, from 0.5 s) + M&E (stereo, from the first frame) summed sample for sample in a PCM
    conform that starts at 01:00:00:00."""
    from lipsyncctl import config as cfg
    from lipsyncctl.media.audio import write_wav
    from lipsyncctl.timeline.dub import DubTrack
    from lipsyncctl.timeline.mediaio import read_audio
    from lipsyncctl.timeline.outputs import conform, conform_audio
    from tests.unit.test_timeline_timecode import timecode_tracks

    _, _, plan, _, render = _relinked(media, tmp_path)
    rate = 48000
    t = np.arange(rate * 3) / rate
    me = write_wav(tmp_path / "me.wav", np.stack([0.25 * np.sin(2 * np.pi * 300 * t), np.full_like(t, -0.125)], 1)
                   .astype(np.float32), rate)
    dub = DubTrack("de", (0.5 * np.sin(2 * np.pi * 500 * t[: rate]))[None].astype(np.float32), rate,
                   Fraction(1, 2), "de.wav")
    mixed = np.concatenate(list(conform_audio(plan, dub, me)), axis=1)
    n = plan.duration * rate // 25
    assert mixed.shape == (2, n)
    bed, _ = read_audio(me, rate=rate)
    expect = bed[:, :n].copy()
    expect[:, rate // 2 : rate // 2 + rate] += dub.samples[0, : n - rate // 2]
    assert np.allclose(mixed, np.clip(expect, -1, 1), atol=1e-6)
    assert np.array_equal(np.concatenate(list(conform_audio(plan, dub)), axis=1), dub.cut(0, plan.duration, plan.fps))  # no M&E: the dub alone
    seg = plan.segments[0]
    outcomes = {seg.id: ShotOutcome(ShotStatus.DONE, "k", output=str(render))}
    config = cfg.resolve("tiny").with_overrides({"output.audio_codec": "pcm", "output.codec": "ffv1"})
    out = conform(plan, outcomes, dub, tmp_path / "edit.conform.mkv", config, me=me)
    got, got_rate = read_audio(out)
    assert got_rate == rate and got.shape == (2, n)
    assert np.abs(got - mixed).max() < 2 / 32768  # 16-bit PCM
    assert timecode_tracks(out)[0] == "01:00:00:00"


def test_conform_me_must_exist_and_the_backend_is_checked_first(tmp_path: Path) -> None:
    from lipsyncctl import api
    from lipsyncctl.errors import MediaError, UsageError

    with pytest.raises(MediaError, match="--conform-me .*nope.wav: file not found") as missing:
        api.timeline_job(tmp_path / "e.otio", tmp_path / "out", audio=["de.wav"], conform_me=tmp_path / "nope.wav")
    assert missing.value.exit_code == 5  # a missing input file, as in every command
    with pytest.raises(UsageError, match="--backend 'rey': expected local or ray"):  # before any work
        api.timeline_job(tmp_path / "e.otio", tmp_path / "out", audio=["de.wav"], backend="rey")
    # one that is not sound: said before any work, a dry run too (it was read at the conform, after every render)
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.job import run_timeline
    from lipsyncctl.timeline.types import TimelineJob

    (tmp_path / "notes.wav").write_text("not a sound")
    job = TimelineJob(timeline=tmp_path / "e.otio", output=tmp_path / "out", conform_me=tmp_path / "notes.wav",
                      dry_run=True)
    with pytest.raises(MediaError, match="--conform-me .*notes.wav") as bad:
        run_timeline(job, cfg.resolve("tiny"))
    assert bad.value.exit_code == 5 and not (tmp_path / "out").exists()


def test_the_cli_hands_conform_me_to_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl import api
    from lipsyncctl.cli.main import main
    from lipsyncctl.errors import UsageError

    seen = []

    def fake(job, config):  # type: ignore[no-untyped-def]
        seen.append(job)
        raise UsageError("stop here")

    monkeypatch.setattr(api, "sync_timeline", fake)
    me = tmp_path / "me.wav"
    me.write_bytes(b"RIFF")
    rc = main(["-q", "sync", "--timeline", str(tmp_path / "e.otio"), "--audio", f"de={me}", "-o",
               str(tmp_path / "out"), "--conform", "--conform-me", str(me), "--preset", "tiny"])
    assert rc == 2 and seen and seen[0].conform_me == me


@pytest.mark.parametrize("url", [
    "file://localhost/D%3a/proj/media/cam_a.mkv", "file:///D:/proj/media/cam_a.mkv", "D:\\proj\\media\\cam_a.mkv",
    "/D:/proj/media/cam_a.mkv", "d:/PROJ/media/cam_a.mkv",
])
@pytest.mark.parametrize("old", ["D:\\proj", "/D:/proj", "file://localhost/D%3a/proj", "d:/proj/"])
def test_relink_reads_the_forms_nles_write(media: Path, url: str, old: str) -> None:
    """Premiere/Resolve/Avid on Windows write the same file several ways; --relink takes any of them."""
    (media / "media").mkdir(exist_ok=True)
    target = media / "media" / "cam_a.mkv"
    if not target.exists():
        target.write_bytes((media / "cam_a.mkv").read_bytes())
    resolver = MediaResolver(Path("/nonexistent"), relink={old: str(media)})
    assert resolver.resolve(url) == target.resolve()


def test_relink_matches_whole_path_components_and_media_root_takes_drive_paths(media: Path) -> None:
    resolver = MediaResolver(media, relink={"/Volumes/edit": "/nowhere"})
    assert resolver.relinked("/Volumes/editorial/a.mov") == "/Volumes/editorial/a.mov"
    assert resolver.relinked("/Volumes/edit/a.mov") == "/nowhere/a.mov"
    assert MediaResolver.url_path("\\\\srv\\share\\a.mov") == "//srv/share/a.mov"
    assert MediaResolver.url_path("file://srv/share/a%20b.mov") == "//srv/share/a b.mov"
    # an unrelinked Windows path is found under --media-root by its path below the drive, then by name
    (media / "deep" / "media").mkdir(parents=True, exist_ok=True)
    deep = media / "deep" / "media" / "cam_a.mkv"
    deep.write_bytes(b"x")
    rooted = MediaResolver(Path("/nonexistent"), media_root=media / "deep")
    assert rooted.resolve("E:\\media\\cam_a.mkv") == deep.resolve()
    assert MediaResolver(Path("/nonexistent"), media_root=media).resolve("E:\\x\\cam_a.mkv") == (media / "cam_a.mkv").resolve()


def test_the_renders_and_the_conform_share_one_container_checked_before_any_work(tmp_path: Path) -> None:
    """The conform's container is the renders' (it came from the first shot's file, and a first shot without
    a render, a title or a faceless wide shot, gave .mp4 for ProRes: an internal error); a container that
    cannot hold the codec stops the run before anything is read (exit 3), not at every shot."""
    from lipsyncctl import api
    from lipsyncctl import config as cfg
    from lipsyncctl.errors import ConfigError
    from lipsyncctl.timeline.outputs import shot_extension

    assert shot_extension(cfg.resolve("tiny", ["output.codec=prores_hq"])) == "mov"
    assert shot_extension(cfg.resolve("tiny", ["output.codec=ffv1"])) == "mkv"
    assert shot_extension(cfg.resolve("tiny")) == "mp4"
    clash = cfg.resolve("tiny", ["output.codec=prores_hq", "timeline.shot_container=mp4"])
    with pytest.raises(ConfigError, match="prores_hq cannot be stored in a '.mp4' file"):
        shot_extension(clash)
    job = api.timeline_job(tmp_path / "missing.otio", tmp_path / "out", audio=["de.wav"])
    with pytest.raises(ConfigError):  # before the (missing) timeline is read
        api.sync_timeline(job, clash)


def test_an_edl_with_two_audio_tracks_is_written_with_the_dub_left_to_the_otio() -> None:
    """OTIO's CMX writer refuses a third audio track: an input EDL with A and A2 events plus the relinked Dub track
    was not delivered as .edl (a warning only). The EDL gets the picture events; the dub track stays in the .otio."""
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import _for_adapter

    rate = 25
    span = otio.opentime.TimeRange(otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(50, rate))
    tl = otio.schema.Timeline(name="two audio")
    for kind, name in ((otio.schema.TrackKind.Video, "V"), (otio.schema.TrackKind.Audio, "A1"),
                       (otio.schema.TrackKind.Audio, "A2"), (otio.schema.TrackKind.Audio, "Dub de")):
        track = otio.schema.Track(name=name, kind=kind, metadata={"lipsyncctl": {"language": "de", "dub": "de.wav"}}
                                  if name.startswith("Dub") else {})
        track.append(otio.schema.Clip(name="c", source_range=span, media_reference=otio.schema.ExternalReference(
            target_url="/m/c.mov", available_range=span), metadata={"cmx_3600": {"reel": "C001"}}))
        tl.tracks.append(track)
    with pytest.raises(otio.exceptions.NotSupportedError):
        otio.adapters.write_to_string(tl, "cmx_3600")
    edl = otio.adapters.write_to_string(_for_adapter(tl, "cmx_3600"), "cmx_3600")
    assert "C001" in edl and len(tl.tracks) == 4  # the relinked timeline itself keeps its dub


def test_an_me_file_in_mpeg_ts_is_mixed_from_its_first_sample(media: Path, tmp_path: Path) -> None:
    """An M&E is read from its own start, as the dub (``own_start``): an MPEG-TS M&E's 1.4 s are not silence before
    its first sound."""
    from lipsyncctl.timeline.dub import DubTrack
    from lipsyncctl.timeline.outputs import conform_audio
    from tests.sync_media import SOUND_BURST, SOUND_RATE, burst_at, burst_sound, write_sound

    _, _, plan, _, _ = _relinked(media, tmp_path)
    me = write_sound(tmp_path / "me.ts", "mpegts", "mp2", burst_sound(1.0), audio_at=1.4)
    dub = DubTrack("de", np.zeros((1, SOUND_RATE), np.float32), SOUND_RATE, Fraction(0), "de.wav")
    mixed = np.concatenate(list(conform_audio(plan, dub, me)), axis=1)
    assert burst_at(mixed[0]) == pytest.approx(SOUND_BURST[0], abs=0.05)  # MP2's own delay, not 1.4 s


def test_the_renders_of_an_edl_are_mov_which_holds_their_reel(tmp_path: Path) -> None:
    """An EDL is relinked by reel and timecode, and MP4 holds no reel name: with shot_container auto its renders are
    MOV (an NLE found no reel on the .mp4 renders the relinked EDL named); not where MOV cannot hold the codec, nor
    for other formats or a container chosen."""
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.job import edl_renders_in_mov
    from lipsyncctl.timeline.outputs import shot_extension
    from lipsyncctl.timeline.types import TimelineJob

    def ext(timeline: str, *sets: str) -> str:
        return shot_extension(edl_renders_in_mov(TimelineJob(tmp_path / timeline, tmp_path / "out"),
                                                 cfg.resolve("tiny", list(sets))))

    assert ext("cut.edl") == "mov" and ext("CUT.EDL", "output.codec=h265") == "mov"
    assert ext("cut.otio") == "mp4" and ext("cut.xml") == "mp4"
    assert ext("cut.edl", "output.codec=ffv1") == "mkv"
    assert ext("cut.edl", "timeline.shot_container=mp4") == "mp4"


def test_a_short_or_finer_m_and_e_is_said(tmp_path: Path) -> None:
    """The conform's M&E shorter than the edit (silent after its end) or at a higher rate than the dub (mixed at the
    dub's: its top lost) is said; a short dub was, the bed was not."""
    from types import SimpleNamespace

    from lipsyncctl.timeline.finish import me_warning
    from tests import mediagen as mg

    plan, dub = SimpleNamespace(duration=70, fps=Fraction(25)), SimpleNamespace(rate=16000)  # a 2.8 s edit
    said = me_warning(mg.make_wav(tmp_path / "me.wav", 2.0, rate=48000), plan, dub)
    assert said is not None and said.startswith("--conform-me me.wav: it ends at 2.00 s of the 2.80 s edit")
    assert "mixed at the dub's 16000 Hz (the M&E is 48000 Hz" in said
    assert me_warning(mg.make_wav(tmp_path / "fine.wav", 3.0, rate=16000), plan, dub) is None
