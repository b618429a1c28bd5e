"""Timeline clips on image sequences (OTIO ``ImageSequenceReference``, as VFX plates are exchanged): planned at the
reference's rate with its ``start_frame`` mapped to the files on disk, shown frame for frame in the conform,
rendered, and kept (its folder re-based) in the relinked timeline. A frame step, or a file missing from the
sequence, is skipped with the reason; before, every such clip was skipped as "unsupported media reference"."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.cli.main import main
from lipsyncctl.timeline.segments import plan_timeline
from lipsyncctl.timeline.source import MediaResolver, read_timeline
from tests.conftest import shared_path
from tests.sync_media import decode_rgb
from tests.timeline_media import fixture_frames, tr, write_edit

RATE = Fraction(24)  # the plates' rate, from the reference (the files alone would be read at 25)


@pytest.fixture(scope="module")
def plates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``plates/shot.1000.png`` .. ``shot.1023.png`` (fixture frames 0-23) and a copy with frame 1010 missing."""
    import cv2

    root = tmp_path_factory.mktemp("plates")
    for folder, skip in (("plates", None), ("holed", 1010)):
        (root / folder).mkdir()
        for i, rgb in enumerate(fixture_frames(shared_path("fixtures", "demo1_video.mp4"), 0, 24)):
            if 1000 + i != skip:
                cv2.imwrite(str(root / folder / f"shot.{1000 + i}.png"), rgb[:, :, ::-1])
    return root


def _plate(folder: str = "plates", *, start_frame: int = 1001, step: int = 1, available: bool = True):  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    return otio.schema.ImageSequenceReference(
        target_url_base=f"{folder}/", name_prefix="shot.", name_suffix=".png", start_frame=start_frame,
        frame_step=step, rate=float(RATE), frame_zero_padding=4,
        available_range=tr(0, 23, RATE) if available else None)


def _clip(name: str, ref, start: int, duration: int, **metadata):  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    return otio.schema.Clip(name=name, media_reference=ref, source_range=tr(start, duration, RATE),
                            metadata=metadata or None)


def test_a_plate_is_planned_at_its_rate_from_its_start_frame(plates: Path) -> None:
    import opentimelineio as otio

    unrated = _plate(start_frame=1003, available=False)
    unrated.rate = 1.0  # OTIO's default: the clip's range says 24
    no_rate = _plate(available=False)
    no_rate.rate = 1.0
    edit = write_edit(plates / "edit.otio", [
        _clip("P1", _plate(), 4, 10),                                 # time 4 = frame 1005 = file index 5
        _clip("P2", _plate(start_frame=1000, available=False), 2, 6),  # time 2 = frame 1002 = index 2
        _clip("P3", _plate("holed"), 0, 4),
        _clip("P4", _plate(step=2), 0, 4),
        _clip("P5", _plate("nowhere"), 0, 4),
        _clip("P6", otio.schema.ExternalReference(target_url="plates/shot.%04d.png"), 0, 4),  # a file's name
        _clip("P7", unrated, 0, 4),            # time 0 = frame 1003 = index 3, the files before it its handles
        otio.schema.Clip(name="P8", media_reference=no_rate, source_range=tr(0, 4, Fraction(1)))])
    plan = plan_timeline(read_timeline(edit), MediaResolver(plates), handles=5)
    assert [(s.name, s.media.name, s.media_fps, s.source_start, s.source_frames, s.media_url)
            for s in plan.segments] == [
        ("P1", "shot.%04d.png", RATE, 5, 10, "plates/shot.%04d.png"),
        ("P2", "shot.%04d.png", RATE, 2, 6, "plates/shot.%04d.png"),
        ("P7", "shot.%04d.png", RATE, 3, 4, "plates/shot.%04d.png")]
    assert plan.segments[0].media_size == (360, 640)
    # P7's render starts 3 frames before its timecode 00:00:00:00: counted past midnight, as SMPTE does
    assert (plan.segments[2].handle_in, plan.segments[2].render_timecode) == (3, "23:59:59:21")
    assert [(k.name, k.reason) for k in plan.skipped] == [
        ("P3", "missing media: 1 frame missing from the image sequence shot.%04d.png (the first: 1010)"),
        ("P4", "unsupported media reference: image sequence with a frame step of 2"),
        ("P5", f"missing media: nowhere/shot.%04d.png (looked for {plates / 'nowhere/shot.%04d.png'})"),
        ("P6", f"missing media: plates/shot.%04d.png (looked for {plates / 'plates/shot.%04d.png'})"),
        ("P8", "unsupported media reference: an image sequence stating no rate")]
    assert all("24.000 fps on a 23.976 fps timeline" in " ".join(s.warnings) for s in plan.segments)


def test_the_conform_shows_a_plates_own_pictures(plates: Path, tmp_path: Path) -> None:
    from lipsyncctl import config as cfg
    from lipsyncctl.timeline.dub import DubTrack
    from lipsyncctl.timeline.outputs import conform

    edit = write_edit(plates / "conform.otio", [_clip("P1", _plate(), 4, 6)])  # 24 fps plate, 23.976 edit: 1:1
    plan = plan_timeline(read_timeline(edit), MediaResolver(plates))
    dub = DubTrack("de", np.zeros((1, 48000), np.float32), 48000, Fraction(0), "de.wav")
    config = cfg.resolve("tiny").with_overrides({"output.audio_codec": "pcm", "output.codec": "ffv1"})
    got = decode_rgb(conform(plan, {}, dub, tmp_path / "edit.conform.mkv", config))
    import cv2

    want = [cv2.imread(str(plates / "plates" / f"shot.{1005 + i}.png"))[:, :, ::-1] for i in range(6)]
    assert len(got) == 6 and all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_a_plate_is_rendered_and_kept_in_the_relinked_timeline(plates: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import opentimelineio as otio

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    edit = write_edit(plates / "render.otio", [_clip("P1", _plate(), 4, 8)])
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", "--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
               "-o", str(out), "--preset", "tiny", "--steps", "1", "--handles", "1", "--set", "faces.detect_every=4",
               "--conform"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0, res
    (shot,) = res["languages"]["de"]["shots"]
    assert shot["status"] == "done"
    render = Path(shot["output"])
    assert len(decode_rgb(render)) == 10  # 8 frames and a handle each side
    relinked = otio.adapters.read_from_file(str(out / "de" / "current" / "render.otio"))
    (clip,) = relinked.video_tracks()[0].find_clips()
    plate = clip.media_references()["DEFAULT_MEDIA"]
    assert isinstance(plate, otio.schema.ImageSequenceReference) and plate.start_frame == 1001
    base = (out / "de" / "current").resolve() / plate.target_url_base
    assert base.resolve() == (plates / "plates").resolve()  # re-based from the delivery folder
    assert clip.media_reference.target_url.endswith(render.name)
    conformed = decode_rgb(Path(res["languages"]["de"]["conform"]))  # the render, its QC strips read from the plate
    assert len(conformed) == 8 and Path(res["languages"]["de"]["report_html"]).is_file()


def test_a_plates_folder_is_re_based_from_where_the_timeline_is_written(tmp_path: Path) -> None:
    """``target_url_base`` relative to the input timeline's folder (``""``: that folder itself) is re-based onto the
    folder the relinked timeline is written to; a ``file://`` folder stays as it is."""
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import _with_urls

    timeline = otio.schema.Timeline("t")
    track = otio.schema.Track()
    timeline.tracks.append(track)
    for base in ("", "plates/", "file:///mnt/plates/"):
        ref = _plate()
        ref.target_url_base = base
        track.append(_clip("P", ref, 0, 4))
    out = _with_urls(timeline, tmp_path / "out" / "de" / "v001", tmp_path, "otio_json")
    assert [c.media_reference.target_url_base for c in out.find_clips()] == [
        "../../../", "../../../plates/", "file:///mnt/plates/"]
