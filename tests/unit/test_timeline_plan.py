"""Timeline planning without rendering: exact frame ranges on a 23.976 edit at 01:00:00:00, skips,
handles for transitions, nested stacks, EDL and FCP XML through the OTIO adapters, dub cuts, VAD,
per-shot options, shard/GPU/relink parsing."""

from __future__ import annotations

import shlex
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.errors import ConfigError, UsageError
from lipsyncctl.media import timecode as tb
from lipsyncctl.runner.devices import parse_gpus
from lipsyncctl.runner.shards import parse_shard
from lipsyncctl.timeline import dub as dubs
from lipsyncctl.timeline.segments import _name_segments, plan_timeline
from lipsyncctl.timeline.source import MediaResolver, installed_adapters, parse_relink, read_timeline
from tests.conftest import shared_path
from tests.timeline_media import EXPECTED_SHOTS, EXPECTED_SKIPS, FILM, build_edit, clip, rt, tr, write_sources


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tlmedia")
    write_sources(folder, shared_path("fixtures", "demo1_video.mp4"))
    return folder


def test_plan_of_the_demo_edit(media: Path) -> None:
    path = build_edit(media)
    plan = plan_timeline(read_timeline(path), MediaResolver(media), handles=3)
    assert plan.fps == FILM and plan.global_start == 86400 and plan.duration == 62
    got = {s.name: (s.record_start, s.record_frames, s.source_start) for s in plan.segments}
    assert got == EXPECTED_SHOTS
    assert [s.name for s in plan.segments] == ["A1", "B1", "B3", "A3"]  # record order, V2 flattened in
    reasons = {k.name: k.reason for k in plan.skipped}
    assert set(reasons) == set(EXPECTED_SKIPS)
    for name, why in EXPECTED_SKIPS.items():
        assert why in reasons[name]
    seg = {s.name: s for s in plan.segments}
    # handles: 3 asked; B1 has 8 frames before its in point, 30-18=12 after; B3 ends 2 frames before b's end
    assert (seg["A1"].handle_in, seg["A1"].handle_out) == (3, 3)
    assert (seg["B3"].handle_in, seg["B3"].handle_out) == (3, 2)
    assert seg["B1"].media_start == 86400 and seg["B1"].render_start == 5 and seg["B1"].render_frames == 16
    assert seg["A3"].track == "inner" and seg["A3"].clip_path == (0, 6, 0, 0)
    d = plan.to_dict()
    assert d["start"] == "01:00:00:00" and d["segments"][1]["record"]["in"] == "01:00:00:12"
    assert d["segments"][1]["source"]["in"] == "01:00:00:08"


def test_transition_handles_exceed_the_asked_handles(media: Path) -> None:
    import opentimelineio as otio

    tl = otio.schema.Timeline(name="t", global_start_time=rt(0))
    v = otio.schema.Track()
    v.extend([clip("a", "cam_a.mkv", 10, 10, available=(0, 40)),
              otio.schema.Transition(in_offset=rt(4), out_offset=rt(6)),
              clip("b", "cam_b.mkv", 86402, 10, available=(86400, 30))])
    tl.tracks.append(v)
    plan = plan_timeline(tl, MediaResolver(media), handles=1)
    a, b = plan.segments
    assert (a.handle_in, a.handle_out) == (1, 6)  # outgoing clip runs on for out_offset
    assert (b.handle_in, b.handle_out) == (2, 1)  # incoming needs 4 before; the media has only 2
    assert any("needs 4 handle frames" in w for w in b.warnings)


def test_edl_through_the_cmx3600_adapter(media: Path) -> None:
    if "cmx_3600" not in installed_adapters():
        pytest.skip("otio-cmx3600-adapter is not installed (extra 'edl')")
    edl = media / "cut.edl"
    edl.write_text(
        "TITLE: cut\nFCM: NON-DROP FRAME\n\n"
        "001  AX       V     C        00:00:00:04 00:00:00:16 01:00:00:00 01:00:00:12\n"
        "* FROM CLIP NAME: cam_a.mkv\n"
        "002  AX       V     C        01:00:00:08 01:00:00:18 01:00:00:12 01:00:00:22\n"
        "* FROM FILE: cam_b.mkv\n", encoding="utf-8")
    plan = plan_timeline(read_timeline(edl, rate=23.976), MediaResolver(media), handles=0)
    assert plan.fps == FILM
    # cam_b's source timecode 01:00:00:08 minus its TIMECODE tag 01:00:00:00 = file frame 8
    assert [(s.media.name, s.record_start, s.record_frames, s.source_start) for s in plan.segments] == [
        ("cam_a.mkv", 0, 12, 4), ("cam_b.mkv", 12, 10, 8)]


def test_fcp_xml_round_trip(media: Path) -> None:
    import opentimelineio as otio

    if "fcp_xml" not in installed_adapters():
        pytest.skip("otio-fcp-adapter is not installed (extra 'fcp')")
    tl = otio.schema.Timeline(name="fcp", global_start_time=rt(86400))
    v = otio.schema.Track(name="V1")
    for c in (clip("A1", (media / "cam_a.mkv").as_uri(), 4, 12, available=(0, 40)),
              clip("B1", (media / "cam_b.mkv").as_uri(), 86408, 10, available=(86400, 30))):
        v.append(c)
    v.append(otio.schema.Gap(source_range=tr(0, 5)))
    v.append(clip("A2", (media / "cam_a.mkv").as_uri(), 30, 6, available=(0, 40)))
    tl.tracks.append(v)
    xml = media / "cut.xml"
    otio.adapters.write_to_file(tl, str(xml), adapter_name="fcp_xml")
    plan = plan_timeline(read_timeline(xml), MediaResolver(media), handles=0)
    assert [(s.record_start, s.record_frames, s.source_start) for s in plan.segments] == [
        (0, 12, 4), (12, 10, 8), (27, 6, 30)]


def test_a_clip_stating_no_range_is_its_whole_media(media: Path, tmp_path: Path) -> None:
    # valid OTIO (no source range, no available range: the whole file) was an internal error, exit 1
    import opentimelineio as otio

    from lipsyncctl.errors import MediaError
    from lipsyncctl.timeline.source import probe_media

    def bare(url: str) -> otio.schema.Timeline:
        tl, track = otio.schema.Timeline(name="t"), otio.schema.Track(name="V1")
        track.append(otio.schema.Clip(name="whole", media_reference=otio.schema.ExternalReference(target_url=url)))
        tl.tracks.append(track)
        return tl

    facts = probe_media(media / "cam_a.mkv")
    (seg,) = plan_timeline(bare("cam_a.mkv"), MediaResolver(media)).segments
    assert (seg.source_start, seg.source_frames, seg.record_frames, seg.media_fps) == (0, facts.frames, facts.frames,
                                                                                      facts.fps)
    with pytest.raises(MediaError, match="clip 'whole': no source range, and its media \\(gone.mkv\\) is not found"):
        plan_timeline(bare("gone.mkv"), MediaResolver(media))
    # a sound clip stating no range is its sound file's length (it was probed as a video: "no video stream")
    import numpy as np

    from lipsyncctl.media.audio import write_wav

    write_wav(tmp_path / "bed.wav", np.zeros((48000, 1), np.float32), 48000)
    tl = bare("cam_a.mkv")
    sound = otio.schema.Track(name="A1", kind=otio.schema.TrackKind.Audio)
    sound.append(otio.schema.Clip(name="bed", media_reference=otio.schema.ExternalReference(
        target_url=str(tmp_path / "bed.wav"))))
    tl.tracks.append(sound)
    plan_timeline(tl, MediaResolver(media))
    assert sound[0].trimmed_range().duration.to_seconds() == 1.0
    # in a nested stack too (it was probed as a video there: the kind came from the top track)
    tl = bare("cam_a.mkv")
    inner = otio.schema.Track(name="inner A", kind=otio.schema.TrackKind.Audio)
    inner.append(otio.schema.Clip(name="bed", media_reference=otio.schema.ExternalReference(
        target_url=str(tmp_path / "bed.wav"))))
    tl.tracks[0].append(otio.schema.Stack(name="nest", children=[inner]))
    plan_timeline(tl, MediaResolver(media))
    assert inner[0].trimmed_range().duration.to_seconds() == 1.0


def test_flattening_splits_a_partly_hidden_clip(media: Path) -> None:
    import opentimelineio as otio

    tl = otio.schema.Timeline(name="t")
    low, high = otio.schema.Track(name="V1"), otio.schema.Track(name="V2")
    low.append(clip("long", "cam_a.mkv", 0, 30, available=(0, 40)))
    high.extend([otio.schema.Gap(source_range=tr(0, 10)), clip("top", "cam_b.mkv", 86400, 5, available=(86400, 30))])
    tl.tracks.extend([low, high])
    plan = plan_timeline(tl, MediaResolver(media))
    assert [(s.name, s.record_start, s.record_frames, s.source_start, s.whole_clip) for s in plan.segments] == [
        ("long", 0, 10, 0, False), ("top", 10, 5, 0, True), ("long", 15, 15, 15, False)]
    assert len({s.id for s in plan.segments}) == 3
    # said by the run, not only in each shot's row of the report (a real run printed nothing of it)
    split = "the clip is split by a clip on a higher track; each visible part is its own shot"
    assert [w for w in plan.warnings if split in w] == [f"{s.id}: {split}" for s in plan.segments if s.name == "long"]


def test_a_languages_own_warnings_are_said_with_the_runs() -> None:
    # a clip the relinked timeline keeps on its original media (partly covered) was said only in report.json
    from lipsyncctl.timeline.segments import TimelinePlan
    from lipsyncctl.timeline.types import LanguageCounts, LanguageResult, TimelineResult

    plan = TimelinePlan(name="t", fps=Fraction(25), global_start=0, duration=10, segments=[], skipped=[],
                        warnings=[], transitions=[])
    de = LanguageResult(dub="de.wav", counts=LanguageCounts(), shots=[], warnings=["long_01: only part is visible"])
    result = TimelineResult(plan, {"de": de, "fr": LanguageResult(dub="fr.wav", counts=LanguageCounts(), shots=[])},
                            (0, 1), False, ["the run's"])
    assert result.all_warnings() == ["the run's", "de: long_01: only part is visible"]
    assert result.to_dict()["warnings"] == result.all_warnings()


def test_an_effect_the_render_does_not_apply_is_said(media: Path) -> None:
    """A flop or a resize from the NLE stays in the relinked timeline for the NLE to apply; the plan says so."""
    import opentimelineio as otio

    tl = otio.schema.Timeline(name="t")
    track = otio.schema.Track(name="V1")
    flopped, warped = clip("F", "cam_a.mkv", 0, 10, available=(0, 40)), clip("W", "cam_a.mkv", 10, 10)
    flopped.effects.append(otio.schema.Effect(name="flop", effect_name="Flop"))
    warped.effects.append(otio.schema.LinearTimeWarp(time_scalar=1.0))  # a 1x time warp: nothing to say
    track.extend([flopped, warped])
    tl.tracks.append(track)
    plan = plan_timeline(tl, MediaResolver(media))
    f, w = plan.segments
    assert f.warnings == ["effect Flop not rendered: the render is the media as it is, the relinked timeline keeps "
                          "the effect for the NLE, the conform shows the shot without it"] and not w.warnings
    assert [x for x in plan.warnings if "Flop" in x] == [f"{f.id}: {f.warnings[0]}"]  # (the shot id, as reports name it)


def test_shot_ids_are_stable_when_a_shot_is_skipped(media: Path) -> None:
    import opentimelineio as otio

    def edit(skip: str | None) -> dict[str, str]:
        tl = otio.schema.Timeline(name="t", global_start_time=rt(86400))
        v = otio.schema.Track(name="V1")
        for k, name in enumerate(["sh010", "sh020", "sh030"]):
            c = clip(name, "cam_a.mkv", 4 * k, 12, available=(0, 40))
            if name == skip == "sh010":
                c.enabled = False
            elif name == skip:
                c.markers.append(otio.schema.Marker(name="lipsync: false"))
            v.append(c)
        tl.tracks.append(v)
        return {s.name: s.id for s in plan_timeline(tl, MediaResolver(media)).segments}

    full = edit(None)
    assert full == {"sh010": "sh010_01-00-00-00", "sh020": "sh020_01-00-00-12", "sh030": "sh030_01-00-01-00"}
    assert edit("sh010") == {k: full[k] for k in ("sh020", "sh030")}  # a disabled clip
    assert edit("sh020") == {k: full[k] for k in ("sh010", "sh030")}  # a "lipsync: false" marker


def test_shot_ids_are_unique_with_duplicate_clip_names(media: Path) -> None:
    import opentimelineio as otio

    tl = otio.schema.Timeline(name="t")
    low, high = otio.schema.Track(name="V1"), otio.schema.Track(name="V2")
    low.extend([clip("same", "cam_a.mkv", 0, 10, available=(0, 40)), clip("same", "cam_a.mkv", 10, 10)])
    high.extend([otio.schema.Gap(source_range=tr(0, 20)), clip("same", "cam_b.mkv", 86400, 5, available=(86400, 30))])
    tl.tracks.extend([low, high])
    ids = [s.id for s in plan_timeline(tl, MediaResolver(media)).segments]
    assert ids == ["same_00-00-00-00", "same_00-00-00-10", "same_00-00-00-20"]
    again = [s.id for s in plan_timeline(tl, MediaResolver(media)).segments]
    assert again == ids and len(set(ids)) == 3
    # visible shots never share a record frame; were two to collide, the track index then a counter tell them apart
    seg = plan_timeline(tl, MediaResolver(media)).segments[0]
    twins = [replace(seg), replace(seg, clip_path=(1, 1)), replace(seg, clip_path=(1, 1))]
    _name_segments(twins, FILM, 0)
    assert [s.id for s in twins] == ["same_00-00-00-00", "same_00-00-00-00_t2", "same_00-00-00-00_t2_2"]


def test_relink_and_media_root(media: Path, tmp_path: Path) -> None:
    r = MediaResolver(tmp_path, relink=parse_relink([f"/Volumes/edit={media}"]))
    assert r.resolve("file:///Volumes/edit/cam_a.mkv") == (media / "cam_a.mkv").resolve()
    assert MediaResolver(tmp_path).resolve("/elsewhere/cam_b.mkv") is None
    assert MediaResolver(tmp_path, media_root=media).resolve("/elsewhere/cam_b.mkv") == (media / "cam_b.mkv").resolve()
    with pytest.raises(UsageError):
        parse_relink(["no-equals"])


def test_shot_options_from_metadata_and_markers() -> None:
    import opentimelineio as otio

    from lipsyncctl.timeline.shots import shot_options

    c = clip("x", "a.mkv", 0, 5, lipsync={"face": 1, "guidance": 2.0, "set": ["faces.detect_every=2"]})
    o = shot_options(c)
    assert (o.face_id, o.guidance, o.enabled) == (1, 2.0, None)
    assert o.overrides() == {"faces.detect_every": 2, "inference.guidance": 2.0, "faces.select": "id",
                             "faces.track_id": 1}
    c.markers.append(otio.schema.Marker(name="lipsync: off"))
    assert shot_options(c).enabled is False
    # a marker's comment says it too (Premiere and Resolve put a marker's text there; the name was read alone)
    commented = clip("z", "a.mkv", 0, 5)
    commented.markers.append(otio.schema.Marker(name="note", comment="lipsync: false"))
    assert shot_options(commented).enabled is False
    with pytest.raises(ConfigError, match="unknown lipsync option"):
        shot_options(clip("y", "a.mkv", 0, 5, lipsync={"fase": 1}))
    with pytest.raises(ConfigError, match="expected true/false") as err:  # the edit's options: not a preset's
        shot_options(clip("y", "a.mkv", 0, 5, lipsync="maybe"))
    assert "lipsync options in the edit" in err.value.hint and "presets" not in err.value.hint


def test_dub_cuts_tile_sample_accurately() -> None:
    rate = 48000
    samples = np.arange(rate * 3, dtype=np.float32)[None] / (rate * 3)
    d = dubs.DubTrack("de", samples, rate, Fraction(1, 2), "x")
    # consecutive 23.976 cuts join without a gap or overlap and start at floor(f * rate / fps)
    pieces = [d.cut(f, 7, FILM) for f in range(0, 56, 7)]
    joined = np.concatenate(pieces, axis=1)
    offset = rate // 2
    first = tb.samples_at(0, FILM, rate)
    assert joined.shape[1] == tb.samples_at(56, FILM, rate) - first
    assert np.all(joined[0, :offset] == 0)  # before the dub starts: silence
    assert np.array_equal(joined[0, offset:], samples[0, : joined.shape[1] - offset])
    assert d.cut(10, 1, FILM).shape[1] in (2002, 2003)  # 48000 * 1001 / 24000 = 2002.0


def _hint_of(name: str) -> str | None:
    with pytest.raises(UsageError) as err:
        dubs.parse_audio_specs([name])
    return err.value.hint


def test_audio_specs_offsets_shards_gpus(tmp_path: Path) -> None:
    assert dubs.parse_audio_specs(["de=de.wav", "fr.wav"]) == [("de", Path("de.wav")), ("fr", Path("fr.wav"))]
    with pytest.raises(UsageError):
        dubs.parse_audio_specs(["de=a.wav", "de=b.wav"])
    for bad in ("../esc=de.wav", "=de.wav", "de fr=de.wav"):  # not a label: said (it was "file not found")
        with pytest.raises(UsageError, match="is not a language label"):
            dubs.parse_audio_specs([bad])
    with pytest.raises(UsageError, match="--audio de=: no file after the label") as err:  # (`de=$DE` unset: it
        dubs.parse_audio_specs(["de="])                                                  # was "file not found: .")
    assert "may be unset" in (err.value.hint or "")
    (tmp_path / "a=b.wav").write_bytes(b"")  # a file whose name holds '=' is that file (labelled: its name is none)
    with pytest.raises(UsageError, match=r"a=b.wav: its name 'a=b' is not a language label"):
        dubs.parse_audio_specs([str(tmp_path / "a=b.wav")])
    assert dubs.parse_audio_specs([f"de={tmp_path / 'a=b.wav'}"]) == [("de", tmp_path / "a=b.wav")]
    # an unlabelled file's name is its language's folder: one that is no label is refused (`...wav` delivered its
    # version to OUT/../v001, beside the inputs; `DE dub.wav` made `OUT/DE dub`)
    for name in ("...wav", "..wav", "DE dub.wav", "de.final.wav"):
        with pytest.raises(UsageError, match="is not a language label") as err:
            dubs.parse_audio_specs([name])
        assert err.value.hint == f"label it: --audio {shlex.quote('de=' + name)}"  # (pasted into a shell: one word)
    assert _hint_of("DE dub.wav") == "label it: --audio 'de=DE dub.wav'"
    with pytest.raises(UsageError, match="'DE' given twice"):  # one folder on a case-insensitive volume
        dubs.parse_audio_specs(["de=a.wav", "DE=b.wav"])
    # a file and a track of one language (in case), before any dub is decoded
    from lipsyncctl import api

    with pytest.raises(UsageError, match="'DE' given twice"):
        api.timeline_job("edit.otio", tmp_path / "out", audio=["de=a.wav"], audio_tracks=["DE=A2"])
    # an unlabelled track whose name gives no label (its folder's name)
    for name in ("..", "1 st"):
        with pytest.raises(UsageError, match="its name gives no language label"):
            dubs.parse_track_specs([name])
    assert dubs.parse_track_specs(["Dub FR", "de=A2"]) == [("Dub_FR", "Dub FR"), ("de", "A2")]
    assert dubs.parse_offset("01:00:01:00", FILM, 86400) == Fraction(24, FILM)
    assert dubs.parse_offset("-0.5", FILM, 0) == Fraction(-1, 2)
    # a drop-frame label that names no frame (skipped at a minute that is no tenth) is refused: it was placed on the
    # frame before (01:01:00;00 at 01:00:59;28)
    ntsc = Fraction(30000, 1001)
    for label in ("01:01:00;00", "01:01:00;01"):
        with pytest.raises(UsageError, match="no such drop-frame timecode"):
            dubs.parse_offset(label, ntsc, 0)
    assert dubs.parse_offset("01:01:00;02", ntsc, 0) * ntsc == 107892 + 1800  # the minute's first frame
    assert dubs.parse_offset("01:10:00;00", ntsc, 0) * ntsc == 107892 + 17982  # a tenth minute keeps ;00
    with pytest.raises(UsageError, match=r"frames 00, 01, 02, 03 are skipped"):
        dubs.parse_offset("00:01:00;03", Fraction(60000, 1001), 0)
    # drop frame at 29.97, as the timeline's start is read (a DF edit at 01:00:00;00 starts at frame 107892):
    # the dub starts at the edit's first frame, not 108 frames (3.6 s) later
    ntsc = Fraction(30000, 1001)
    assert dubs.parse_offset("01:00:00;00", ntsc, 107892) == 0
    assert dubs.parse_offset("01:00:00:00", ntsc, 107892) == Fraction(108, ntsc)  # non-drop: 108 frames later
    assert dubs.parse_offset("01:00:01;00", Fraction(25), 90000) == 1  # no drop frame at 25: ';' is ':'
    with pytest.raises(UsageError, match="not a timecode at 25.000 fps"):
        dubs.parse_offset("01:00:00:30", Fraction(25), 0)
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4",
                                "SLURM_ARRAY_TASK_MIN": "3"}) == (2, 4)
    assert parse_shard("auto", {"SGE_TASK_ID": "2", "SGE_TASK_FIRST": "1", "SGE_TASK_LAST": "3"}) == (1, 3)
    for bad in ("4/4", "x", "1-2"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    with pytest.raises(UsageError):
        parse_shard("auto", {})
    with pytest.raises(UsageError, match="the number of shards must be at least 1"):  # (it said "0..-1")
        parse_shard("1/0")
    assert parse_gpus("0,1") == ["cuda:0", "cuda:1"]


def test_shard_auto_counts_the_tasks_of_a_stepped_array() -> None:
    """SLURM --array=0-4:2 (tasks 0, 2, 4) and SGE -t 1-9:4 (1, 5, 9) are three shards each, every one taken
    once (shard 1 of 3 was never run, the last task failed); SGE's 'undefined' outside an array is no array."""
    slurm = {"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2"}
    assert [parse_shard("auto", {**slurm, "SLURM_ARRAY_TASK_ID": t}) for t in ("0", "2", "4")] == \
        [(0, 3), (1, 3), (2, 3)]
    sge = {"SGE_TASK_FIRST": "1", "SGE_TASK_LAST": "9", "SGE_TASK_STEPSIZE": "4"}
    assert [parse_shard("auto", {**sge, "SGE_TASK_ID": t}) for t in ("1", "5", "9")] == [(0, 3), (1, 3), (2, 3)]
    with pytest.raises(UsageError, match="not on the array's step"):
        parse_shard("auto", {**slurm, "SLURM_ARRAY_TASK_ID": "3"})
    with pytest.raises(UsageError, match="no array-job variables"):
        parse_shard("auto", {"SGE_TASK_ID": "undefined", "SGE_TASK_LAST": "undefined"})
    with pytest.raises(UsageError, match="SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT"):
        parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "1"})  # an array started without its count
    with pytest.raises(UsageError, match=r"LIPSYNCCTL_SHARD_COUNT is set but LIPSYNCCTL_SHARD_INDEX is not a number "
                                         r"\('abc'\)"):  # (it said the index was not set)
        parse_shard("auto", {"LIPSYNCCTL_SHARD_INDEX": "abc", "LIPSYNCCTL_SHARD_COUNT": "2"})
    assert parse_shard("auto", {"SGE_TASK_ID": "undefined", "LIPSYNCCTL_SHARD_INDEX": "1",
                                "LIPSYNCCTL_SHARD_COUNT": "2"}) == (1, 2)
    # SGE counts from 1 where SGE_TASK_FIRST is not given (a 2-task array was shards 1/3 and 2/3: 0/3 never ran)
    assert [parse_shard("auto", {"SGE_TASK_ID": t, "SGE_TASK_LAST": "2"}) for t in ("1", "2")] == [(0, 2), (1, 2)]


def test_vad_finds_the_fixture_dialogue() -> None:
    from lipsyncctl.timeline.mediaio import read_audio

    wav = shared_path("fixtures", "demo1_audio.wav")
    samples, rate = read_audio(wav)
    d = dubs.DubTrack("de", samples, rate, Fraction(1), str(wav))
    speech = dubs.detect_speech(d)
    assert speech and 1.2 < speech[0][0] < 1.7  # speech starts ~0.45 s into the file, which starts at 1 s
    assert all(b > a for a, b in speech)
    silent = dubs.DubTrack("x", np.zeros((1, rate), np.float32), rate, Fraction(0), "silence")
    assert dubs.detect_speech(silent) == []


def test_speech_is_found_window_by_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long dub is looked at VAD_WINDOW_S seconds at a time: with 3 s windows the fixture's dialogue is
    still found from its first word to its last (a stretch over a window's edge is one stretch again)."""
    wav = shared_path("fixtures", "demo1_audio.wav")
    d = dubs.load_dub_file("de", wav, Fraction(1))
    whole = dubs.detect_speech(d)
    monkeypatch.setattr(dubs, "VAD_WINDOW_S", 3)
    windowed = dubs.detect_speech(d)
    assert windowed[0][0] == pytest.approx(whole[0][0], abs=0.02)
    assert windowed[-1][1] == pytest.approx(whole[-1][1], abs=0.02)
    assert sum(b - a for a, b in windowed) == pytest.approx(sum(b - a for a, b in whole), rel=0.05)
    assert not any(round((b - 1) % 3, 6) == 0 for _, b in windowed[:-1])  # none ends at a window's edge


def test_dubs_and_the_conform_sound_are_streamed(tmp_path: Path) -> None:
    """A dub is decoded once onto disk (an unnamed mapped file) and the conform's sound comes in blocks: a
    minute of 48 kHz stereo dub plus M&E (23 MB each as float32) costs Python a fraction of that."""
    import tracemalloc
    from types import SimpleNamespace

    from lipsyncctl.media.audio import write_wav
    from lipsyncctl.timeline.outputs import conform_audio
    from tests import mediagen as mg

    wav = write_wav(tmp_path / "minute.wav", (mg.tone(2.0, 48000, 2) for _ in range(30)), 48000)
    size = 60 * 48000 * 2 * 4
    plan = SimpleNamespace(duration=60 * 25, fps=Fraction(25), segments=[])
    tracemalloc.start()
    try:
        d = dubs.load_dub_file("de", wav, Fraction(0), folder=tmp_path / "work")
        assert isinstance(d.samples.base, np.memmap) and not any((tmp_path / "work").iterdir())
        total = sum(block.shape[1] for block in conform_audio(plan, d, wav))  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 60 * 48000 and peak < size / 5, f"{peak / 1e6:.1f} MB"


def test_fingerprint_follows_files_rewritten_inside_a_model_folder(tmp_path) -> None:
    import os

    from lipsyncctl.runner.store import file_fingerprint

    folder = tmp_path / "vae"
    folder.mkdir()
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"a" * 100)
    before = file_fingerprint(folder)
    assert file_fingerprint(folder) == before
    st = folder.stat()
    weights.write_bytes(b"b" * 100)
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))  # the folder itself looks unchanged
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert file_fingerprint(folder) != before


def test_dry_run_plans_without_the_weights(media: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default preset's weights are not installed: a dry run still plans (exit 0) and names them."""
    import json

    from lipsyncctl.cli.main import main

    edit = build_edit(media, "dry.otio")
    out = media / "dry_out"
    rc = main(["--json", "-q", "sync", "--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
               "-o", str(out), "--dry-run"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0, res
    assert res["dry_run"] and res["counts"]["to_render"] == len(EXPECTED_SHOTS) and not out.exists()
    missing = {(m["model"], m["role"]): m for m in res["missing_models"]}
    assert {("latentsync-1.5", "unet"), ("latentsync-1.5", "whisper")} <= set(missing)  # its repo's whisper too
    assert missing["latentsync-1.5", "unet"]["fetch"] == "lipsyncctl models fetch latentsync-1.5"
    assert list(models_dir.iterdir()) == []  # nothing fetched or written


def _timeline_cli(media: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str,
                  json_out: bool = False) -> tuple[int, str]:
    """Exit code and stderr (with ``json_out``: stdout, the --json result)."""
    from lipsyncctl.cli.main import main

    rc = main(["--json" if json_out else "-q", "sync", "--timeline", str(build_edit(media, "guard.otio")), "--audio",
               f"de={shared_path('fixtures', 'demo1_audio.wav')}", "-o", str(out), "--preset", "tiny", *extra])
    captured = capsys.readouterr()
    return rc, captured.out if json_out else captured.err


def _no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """The output checks must come before the timeline is even read."""
    from lipsyncctl.timeline import job

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the timeline was read before -o was checked")

    monkeypatch.setattr(job, "opened_timeline", fail)


def test_output_named_like_a_media_file_is_a_usage_error(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _no_reading(monkeypatch)
    rc, err = _timeline_cli(media, tmp_path / "dubbed.mp4", capsys)
    assert rc == 2 and "-o" in err and "folder" in err and not (tmp_path / "dubbed.mp4").exists()


def test_unwritable_output_fails_at_once_naming_o(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import os

    _no_reading(monkeypatch)
    # a file where the output folder's parent should be
    (tmp_path / "afile").write_text("x")
    rc, err = _timeline_cli(media, tmp_path / "afile" / "out", capsys)
    assert rc == 1 and f"-o {tmp_path / 'afile' / 'out'}" in err
    # a folder without write permission (faked: the tests may run as root, who may write anywhere)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real_access(p, mode, **kw))
    rc, err = _timeline_cli(media, ro / "out", capsys)
    assert rc == 1 and f"-o {ro / 'out'}" in err and "permission denied" in err and not (ro / "out").exists()
    # a dry run only warns
    monkeypatch.undo()
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real_access(p, mode, **kw))
    rc, out = _timeline_cli(media, ro / "out", capsys, "--dry-run", json_out=True)
    assert rc == 0 and any("a run would fail there" in w for w in json.loads(out)["warnings"])


def test_an_audio_track_without_a_name_is_taken_by_its_number(tmp_path: Path) -> None:
    # FCP XML and EDL audio tracks carry no name: --audio-track could not address one ("audio tracks: '', ''")
    import opentimelineio as otio

    from lipsyncctl.media.audio import write_wav

    rate = 48000
    tl = otio.schema.Timeline(name="t")
    video = otio.schema.Track(name="V1")
    video.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(25, 25))))
    tl.tracks.append(video)
    for k in (1, 2):
        write_wav(tmp_path / f"a{k}.wav", np.full((rate, 2), 0.1 * k, np.float32), rate)
        track = otio.schema.Track(kind=otio.schema.TrackKind.Audio)
        track.append(otio.schema.Clip(name=f"a{k}", media_reference=otio.schema.ExternalReference(
            target_url=f"a{k}.wav", available_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(25, 25))),
            source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(25, 25))))
        tl.tracks.append(track)
    second = dubs.load_dub_track("de", tl, "A2", MediaResolver(tmp_path), Fraction(25), folder=tmp_path)
    assert second.source == "track:A2" and np.allclose(np.asarray(second.samples), 0.2, atol=1e-4)
    with pytest.raises(UsageError, match=r"'A3': no audio track of that name \(or number, A1...\)") as err:
        dubs.load_dub_track("de", tl, "A3", MediaResolver(tmp_path), Fraction(25), folder=tmp_path)
    assert err.value.hint == "audio tracks in the timeline: A1 '', A2 ''"


def test_a_file_that_is_no_json_named_otio_is_said_to_be_none(media: Path, tmp_path: Path) -> None:
    # a video named .otio got OTIO's "JSON parse error ... The document is empty"
    import shutil

    from lipsyncctl.errors import MediaError

    fake = Path(shutil.copy(media / "cam_a.mkv", tmp_path / "cut.otio"))
    with pytest.raises(MediaError, match="cut.otio: not an OTIO file") as err:
        read_timeline(fake)
    assert err.value.exit_code == 5 and "--video" in err.value.hint
    (tmp_path / "half.otio").write_text('{"OTIO_SCHEMA": "Timeline.1", ')  # JSON cut short: the parser's own words
    with pytest.raises(MediaError, match="half.otio: cannot read the timeline .*JSON parse error"):
        read_timeline(tmp_path / "half.otio")


def test_a_generator_is_skipped_without_a_warning(media: Path) -> None:
    # an EDL's BL (black) events were "skipped (generator (black))" warnings on every run
    import opentimelineio as otio

    tl, track = otio.schema.Timeline(name="t"), otio.schema.Track(name="V1")
    black = otio.schema.Clip(name="BL", media_reference=otio.schema.GeneratorReference(generator_kind="black"),
                             source_range=tr(0, 5))
    track.extend([black, clip("A", "cam_a.mkv", 0, 10, available=(0, 40))])
    tl.tracks.append(track)
    plan = plan_timeline(tl, MediaResolver(media))
    assert [(k.name, k.reason) for k in plan.skipped] == [("BL", "generator (black)")]
    assert not [w for w in plan.warnings if "generator" in w] and len(plan.segments) == 1


def test_a_clip_a_higher_track_splits_points_each_visible_part_at_its_render(media: Path, tmp_path: Path) -> None:
    # the relinked timeline kept the original media for the whole clip: its visible parts played un-dubbed in the
    # NLE (only report.json said so); now the clip is cut where the cover starts and ends, each part on its render
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import DEFAULT_KEY, relinked_timeline
    from lipsyncctl.timeline.types import ShotOutcome, ShotStatus

    tl = otio.schema.Timeline(name="t")
    low, high = otio.schema.Track(name="V1"), otio.schema.Track(name="V2")
    low.append(clip("long", "cam_a.mkv", 2, 30, available=(0, 40)))
    high.extend([otio.schema.Gap(source_range=tr(0, 10)), clip("top", "cam_b.mkv", 86400, 5, available=(86400, 30))])
    tl.tracks.extend([low, high])
    plan = plan_timeline(tl, MediaResolver(media), handles=2)
    first, top, last = plan.segments
    outcomes = {}
    for seg in (first, last):
        render = tmp_path / f"{seg.id}.mkv"
        render.write_bytes(b"r")
        outcomes[seg.id] = ShotOutcome(ShotStatus.DONE, f"k{seg.id}", language="de", segment=seg.id,
                                       output=str(render))
    relinked, warnings = relinked_timeline(tl, plan, outcomes, "de")
    assert not warnings
    pieces = list(relinked.tracks[0])
    assert [(p.source_range.start_time.value, p.source_range.duration.value) for p in pieces] == [
        (2, 10), (12, 5), (17, 15)]  # the hidden span between keeps the original
    assert [p.active_media_reference_key for p in pieces] == ["lipsync_de", DEFAULT_KEY, "lipsync_de"]
    assert [Path(p.media_reference.target_url).name for p in pieces] == [f"{first.id}.mkv", "cam_a.mkv",
                                                                        f"{last.id}.mkv"]
    assert [p.metadata["lipsyncctl"]["status"] for p in pieces] == ["done", "covered", "done"]
    assert relinked.tracks[0].duration() == tl.tracks[0].duration()
    assert [p.range_in_parent().start_time.value for p in pieces] == [0, 10, 15]
    # the top clip (whole) is untouched by the split; the input timeline too
    assert len(list(tl.tracks[0])) == 1 and tl.tracks[0][0].active_media_reference_key == DEFAULT_KEY


@pytest.mark.parametrize("rate", [float(FILM), 23.976])  # an exact float, and the rounded one many exports carry
def test_a_clip_covered_at_its_head_or_at_a_rounded_rate_is_cut_too(media: Path, tmp_path: Path, rate: float) -> None:
    # a clip covered only at its head pointed its whole range at a render of the visible part (8 frames past the
    # render's end); one stored at 23.976 (2997/125, not 24000/1001) was never cut (the whole clip on its original)
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import DEFAULT_KEY, relinked_timeline
    from lipsyncctl.timeline.types import ShotOutcome, ShotStatus

    def at(start: int, duration: int) -> otio.opentime.TimeRange:
        return otio.opentime.TimeRange(otio.opentime.RationalTime(start, rate), otio.opentime.RationalTime(duration, rate))

    long = otio.schema.Clip(name="long", source_range=at(2, 30), media_reference=otio.schema.ExternalReference(
        target_url="cam_a.mkv", available_range=at(0, 40)))
    long.markers.append(otio.schema.Marker(name="late note", marked_range=at(25, 1)))
    long.markers.append(otio.schema.Marker(name="past the end", marked_range=at(32, 1)))
    # the clip's options (as --segments writes them, at its first frame, in the covered head): the whole clip's
    long.markers.append(otio.schema.Marker(name="opts", marked_range=at(2, 1), metadata={"lipsync": {"face": 1}}))
    low, high = otio.schema.Track(name="V1", children=[long]), otio.schema.Track(name="V2")
    high.append(otio.schema.Clip(name="top", source_range=at(86400, 6), media_reference=otio.schema.ExternalReference(
        target_url="cam_b.mkv", available_range=at(86400, 30))))
    tl = otio.schema.Timeline(name="t", tracks=[low, high])
    plan = plan_timeline(tl, MediaResolver(media), handles=2)
    seg = next(s for s in plan.segments if s.name == "long")
    assert not seg.whole_clip and seg.clip_offset == 6
    render = tmp_path / "r.mkv"
    render.write_bytes(b"r")
    outcomes = {seg.id: ShotOutcome(ShotStatus.DONE, "k", language="de", segment=seg.id, output=str(render))}
    relinked, warnings = relinked_timeline(tl, plan, outcomes, "de")
    pieces = list(relinked.tracks[0])
    assert not warnings and [(round(p.source_range.start_time.value), round(p.source_range.duration.value))
                             for p in pieces] == [(2, 6), (8, 24)]
    assert [p.active_media_reference_key for p in pieces] == [DEFAULT_KEY, "lipsync_de"]
    assert [p.metadata["lipsyncctl"]["status"] for p in pieces] == ["covered", "done"]
    assert [[m.name for m in p.markers] for p in pieces] == [["opts"], ["late note", "past the end", "opts"]]
    from lipsyncctl.timeline.shots import shot_options

    assert [shot_options(p).face_id for p in pieces] == [1, 1]  # fed back in, each piece keeps the clip's options
