"""`sync --timeline` over an Avid AAF composition (OTIO's AAF adapter, extra ``aaf``): the edit Media Composer
writes for AMA-linked QuickTime files (pyaaf2 builds it here) is planned at its record timecode with each source
frame found through the tape mob's timecode, rendered, and handed back as a relinked AAF whose clips play the
renders from ``file://`` locators under master mobs of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from lipsyncctl.timeline import source
from lipsyncctl.timeline.segments import plan_timeline
from lipsyncctl.timeline.source import MediaResolver, read_timeline
from tests.conftest import shared_path
from tests.sync_media import write_clip
from tests.timeline_media import FILM, fixture_frames, write_aaf

#: name -> (record start, frames, source start in file frames); cam_c has no locator (Avid-managed media)
CUTS = {"cam_a": (0, 12, 4), "cam_b": (12, 10, 8), "cam_c": (22, 6, 0)}


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "AAF" not in source.installed_adapters():
        pytest.skip("otio-aaf-adapter is not installed (extra 'aaf')")
    folder = tmp_path_factory.mktemp("aaf")
    fixture = shared_path("fixtures", "demo1_video.mp4")
    a = write_clip(folder / "cam_a.mov", fixture_frames(fixture, 0, 30), FILM, codec="libx264")
    b = write_clip(folder / "cam_b.mov", fixture_frames(fixture, 120, 30, mirror=True), FILM, codec="libx264",
                   tags={"timecode": "01:00:00:00"})
    dub = folder / "de.wav"
    dub.write_bytes(shared_path("fixtures", "demo1_audio.wav").read_bytes())
    return write_aaf(folder / "cut.aaf", {"cam_a": a, "cam_b": b, "cam_c": a},
                     [(name, src, frames) for name, (_, frames, src) in CUTS.items()],
                     tape_timecode={"cam_b": 86400}, unlinked=("cam_c",), dub=("A2 DE dub", dub, 28))


def test_an_avid_composition_is_planned_at_its_record_timecode(cut: Path) -> None:
    timeline = read_timeline(cut)
    plan = plan_timeline(timeline, MediaResolver(cut.parent), handles=0)
    assert plan.fps == FILM and plan.global_start == 86400  # the composition's timecode track: 01:00:00:00
    got = {s.name: (s.record_start, s.record_frames, s.source_start) for s in plan.segments}
    assert got == {k: v for k, v in CUTS.items() if k != "cam_c"}  # cam_b: 01:00:00:08 on its tape = its frame 8
    assert [s.media for s in plan.segments] == [cut.parent / "cam_a.mov", cut.parent / "cam_b.mov"]
    assert [(s.name, s.reason) for s in plan.skipped] == [("cam_c", "missing media (no media reference)")]


def test_the_relinked_aaf_plays_the_renders_at_the_same_record_times(cut: Path, tmp_path: Path, models_dir: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import opentimelineio as otio

    out = tmp_path / "out"
    rc = main(["--json", "sync", "--timeline", str(cut), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
               "-o", str(out), "--preset", "tiny", "--steps", "1", "--handles", "0"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["counts"]["rendered"] == 2, res
    de = res["languages"]["de"]
    assert [Path(t).name for t in de["timelines"]] == ["cut.otio", "cut.aaf"]
    assert not [w for w in de["warnings"] if "could not write" in w]
    source_ids = {c.name: c.metadata["AAF"]["MobID"] for c in read_timeline(cut).find_clips()}
    relinked = otio.adapters.read_from_file(str(out / "de" / "current" / "cut.aaf"))
    assert relinked.global_start_time.to_frames() == 86400
    picture = {c.name: c for c in relinked.video_tracks()[0].find_clips()}
    shots = {s["name"]: s for s in de["shots"]}
    for name in ("cam_a", "cam_b"):
        clip, (record, frames, src) = picture[name], CUTS[name]
        assert clip.range_in_parent().start_time.to_frames() == record and clip.duration().to_frames() == frames
        assert clip.source_range.start_time.to_frames() == src + (86400 if name == "cam_b" else 0)  # its timecode
        url = clip.media_reference.target_url
        assert url.startswith("file://") and Path(otio.url_utils.filepath_from_url(url)).resolve() == \
            Path(shots[name]["output"]).resolve()
        # the render starts at the source frame's timecode: the clip's source time is where it plays from
        avail = clip.media_reference.available_range
        assert clip.source_range.start_time.to_frames() - avail.start_time.to_frames() == 0
        assert clip.metadata["AAF"]["MobID"] != source_ids[name]  # its own master mob, not the camera file's
    assert isinstance(picture["cam_c"].media_reference, otio.schema.MissingReference)
    assert [t.name for t in relinked.audio_tracks()] == ["A2 DE dub", "Dub de"]


def test_an_aaf_sound_track_is_a_dub_and_is_written_back_at_the_edit_rate(cut: Path, tmp_path: Path) -> None:
    """The AAF reader states a WAV's clip in samples (16000/s); the writer takes frames only: the relinked AAF
    restates it, same times."""
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import write_timelines

    timeline = read_timeline(cut)
    (sound,) = timeline.audio_tracks()
    assert sound.name == "A2 DE dub" and sound.find_clips()[0].source_range.start_time.rate == 16000
    written, warnings = write_timelines(timeline, cut, tmp_path / "out")
    assert [p.name for p in written] == ["cut.otio", "cut.aaf"] and not warnings
    back = otio.adapters.read_from_file(str(tmp_path / "out" / "cut.aaf"))
    (clip,) = back.audio_tracks()[0].find_clips()
    assert clip.range_in_parent().start_time.to_frames() == 0 and clip.duration().to_frames() == 28
    assert Path(otio.url_utils.filepath_from_url(clip.media_reference.target_url)) == cut.parent / "de.wav"


def test_without_the_adapter_an_aaf_is_exit_4_naming_the_package(cut: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "installed_adapters", lambda: ["otio_json"])
    rc = main(["--json", "sync", "--timeline", str(cut), "--audio", "de=x.wav", "-o", str(tmp_path / "o"),
               "--preset", "tiny", "--dry-run"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 4 and "otio-aaf-adapter" in res["error"]["hint"]


def test_a_clip_without_a_locator_is_found_by_its_files_stem_under_media_root(cut: Path, tmp_path: Path) -> None:
    """Avid names a master mob after its file's stem: ``--media-root`` finds ``cam_c.mov`` for ``cam_c``, unless two
    media files share the stem (which one is not known: still missing)."""
    import shutil

    root = tmp_path / "originals"
    root.mkdir()
    shutil.copy(cut.parent / "cam_a.mov", root / "cam_c.mov")
    (root / "cam_c.wav").write_bytes(b"not a video")  # not a media extension of a picture: ignored
    timeline = read_timeline(cut)
    plan = plan_timeline(timeline, MediaResolver(cut.parent, media_root=root), handles=0)
    got = {s.name: (s.media, s.record_start, s.source_start) for s in plan.segments}
    assert got["cam_c"] == ((root / "cam_c.mov").resolve(), 22, 0) and not plan.skipped
    shutil.copy(root / "cam_c.mov", root / "cam_c.mxf")
    plan = plan_timeline(timeline, MediaResolver(cut.parent, media_root=root), handles=0)
    assert [(s.name, s.reason) for s in plan.skipped] == [("cam_c", "missing media (no media reference)")]


FCPX_2398 = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE fcpxml>
<fcpxml version="1.8">
  <resources>
    <format id="r1" frameDuration="1001/24000s" width="360" height="640"/>
    <asset id="r2" name="cam_a" src="file:///media/cam_a.mov" start="0s" duration="30030/24000s" hasVideo="1"
           format="r1"/>
  </resources>
  <library><event name="e"><project name="cut">
    <sequence format="r1" tcStart="3600s" tcFormat="NDF" duration="12012/24000s">
      <spine><asset-clip name="cam_a" ref="r2" offset="3600s" start="4004/24000s" duration="12012/24000s"/></spine>
    </sequence>
  </project></event></library>
</fcpxml>
"""


def test_final_cut_pro_x_xml_at_23976_is_refused_before_it_is_read(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """otio-fcpx-xml-adapter 1.0 reads 1001/24000 s frames as 23 fps: shot 'start 4' would come out as frame 3."""
    (tmp_path / "cut.fcpxml").write_text(FCPX_2398, encoding="utf-8")
    rc = main(["--json", "sync", "--timeline", str(tmp_path / "cut.fcpxml"), "--audio", "de=x.wav", "-o",
               str(tmp_path / "o"), "--preset", "tiny", "--dry-run"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 4 and "23.976 fps" in res["error"]["message"] and "counts it as 23 fps" in res["error"]["message"]
    assert "FCP 7 XML" in res["error"]["hint"] and not (tmp_path / "o").exists()


def test_doctor_names_the_missing_adapters_package_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.checks.doctor import check_timeline_formats

    monkeypatch.setattr(source, "installed_adapters", lambda: ["AAF", "cmx_3600", "fcp_xml", "otio_json"])
    (row,) = check_timeline_formats()
    assert row.status == "ok" and row.detail == "reads .aaf .edl .otio .otiod .otioz .xml"
    monkeypatch.setattr(source, "installed_adapters", lambda: ["cmx_3600", "fcp_xml", "otio_json"])
    (row,) = check_timeline_formats()
    assert (row.status, row.required) == ("warn", False) and "not .aaf" in row.detail
    assert row.hint == "pip install otio-aaf-adapter (or the extra aaf)"


def test_an_avid_dissolve_gets_its_handles_and_is_written_back(cut: Path, tmp_path: Path) -> None:
    """A 4-frame dissolve cut at 2 between cam_a (14 frames from 4) and cam_b (12 from 8 on its tape): AAF overlaps
    it with both clips; the plan cuts at record frame 12 with 2 handle frames each side, and the relinked AAF keeps
    it."""
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import write_timelines

    media = {"cam_a": cut.parent / "cam_a.mov", "cam_b": cut.parent / "cam_b.mov"}
    path = write_aaf(tmp_path / "diss.aaf", media, [("cam_a", 4, 14), ("cam_b", 6, 12)],
                     tape_timecode={"cam_b": 86400}, dissolves={0: (4, 2)})
    timeline = read_timeline(path)
    plan = plan_timeline(timeline, MediaResolver(cut.parent), handles=0)
    got = [(s.name, s.record_start, s.record_frames, s.source_start, s.handle_in, s.handle_out) for s in plan.segments]
    assert got == [("cam_a", 0, 12, 4, 0, 2), ("cam_b", 12, 10, 8, 2, 0)]
    (span,) = plan.transitions
    assert (span.cut, span.before, span.after, span.kind) == (12, 2, 2, "SMPTE_Dissolve")
    written, warnings = write_timelines(timeline, path, tmp_path / "out")
    assert [p.name for p in written] == ["diss.otio", "diss.aaf"] and not warnings
    back = otio.adapters.read_from_file(str(tmp_path / "out" / "diss.aaf")).video_tracks()[0]
    assert [type(c).__name__ for c in back] == ["Clip", "Transition", "Clip"]
    assert (back[1].in_offset.to_frames(), back[1].out_offset.to_frames()) == (2, 2)
    assert [c.range_in_parent().start_time.to_frames() for c in back.find_clips()] == [0, 12]
