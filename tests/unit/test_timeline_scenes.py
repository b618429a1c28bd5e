"""`sync --split-scenes`: a flat master cut into shots with PySceneDetect (lipsyncctl/timeline/scenes.py),
its edit written to OUT/scenes.otio and dubbed by the timeline job, shot by shot."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.cli.main import main
from tests.conftest import shared_path
from tests.sync_media import write_clip
from tests.timeline_media import FILM, SIZE, fixture_frames

BASE = ["--preset", "tiny", "--steps", "1", "--handles", "0", "--set", "faces.detect_every=3"]


def _solid(rgb: tuple[int, int, int], n: int) -> list[np.ndarray]:
    return [np.full((SIZE[1], SIZE[0], 3), rgb, np.uint8) for _ in range(n)]


def _noise(n: int, seed: int = 0) -> list[np.ndarray]:
    gen = np.random.default_rng(seed)
    return [gen.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two masters: ``cuts`` (red 6 | noise 6 | face 8 | blue 6: hard cuts at 6, 12, 20) and ``programme``
    (face 12 | grey 8 | mirrored face 12: cuts at 12 and 20), lossless FFV1 at 23.976, and a dub."""
    root = tmp_path_factory.mktemp("scenes")
    fixture = shared_path("fixtures", "demo1_video.mp4")
    face = fixture_frames(fixture, 0, 12)
    cuts = write_clip(root / "cuts.mkv", [*_solid((200, 30, 30), 6), *_noise(6), *face[:8],
                                          *_solid((20, 40, 220), 6)], FILM)
    programme = write_clip(root / "programme.mkv", [*face, *_solid((90, 90, 90), 8),
                                                    *fixture_frames(fixture, 120, 12, mirror=True)], FILM,
                           tags={"timecode": "10:00:00:00"})
    return {"root": root, "cuts": cuts, "programme": programme, "dub": shared_path("fixtures", "demo1_audio.wav")}


def test_detect_scenes_cuts_at_the_hard_cuts(media: dict[str, Path]) -> None:
    from lipsyncctl.timeline.mediaio import read_frames
    from lipsyncctl.timeline.scenes import detect_scenes

    frames = read_frames(media["cuts"], 0, 26)
    assert detect_scenes(frames, 26, FILM, threshold=27, min_frames=3) == [(0, 6), (6, 12), (12, 20), (20, 26)]
    # a shortest shot longer than the first shot: no shot is shorter, the cut at 6 is gone
    merged = detect_scenes(read_frames(media["cuts"], 0, 26), 26, FILM, threshold=27, min_frames=7)
    assert merged[0][0] == 0 and merged[-1][1] == 26 and all(b - a >= 7 for a, b in merged[:-1])
    assert 6 not in [a for a, _ in merged]


def test_detect_scenes_one_shot_without_cuts() -> None:
    from lipsyncctl.timeline.scenes import detect_scenes

    assert detect_scenes(iter(_solid((10, 10, 10), 9)), 9, Fraction(25), threshold=27, min_frames=3) == [(0, 9)]


def test_scene_edit_written_and_reused(media: dict[str, Path], tmp_path: Path) -> None:
    import opentimelineio as otio

    from lipsyncctl.timeline.scenes import write_scene_edit

    edit = write_scene_edit(media["programme"], tmp_path, threshold=27, min_frames=4)
    assert edit.path == tmp_path / "scenes.otio" and edit.scenes == [(0, 12), (12, 20), (20, 32)]
    assert not edit.reused and edit.fps == FILM
    tl = otio.adapters.read_from_file(str(edit.path))
    clips = list(tl.find_clips())
    assert [c.name for c in clips] == ["scene_001", "scene_002", "scene_003"]
    start = otio.opentime.from_timecode("10:00:00:00", float(FILM)).to_frames()
    assert tl.global_start_time.to_frames() == start  # record = source times: the master's timecode
    for c, (a, b) in zip(clips, edit.scenes, strict=True):
        assert c.source_range.start_time.to_frames() == start + a and c.source_range.duration.to_frames() == b - a
        assert Path(c.media_reference.target_url) == media["programme"].resolve()
        assert c.range_in_parent().start_time.to_frames() == a
    again = write_scene_edit(media["programme"], tmp_path, threshold=27, min_frames=4)
    assert again.reused and again.scenes == edit.scenes
    assert not write_scene_edit(media["programme"], tmp_path, threshold=30, min_frames=4).reused  # other settings


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def _scene_args(media: dict[str, Path], out: Path) -> list[str]:
    return ["--video", str(media["programme"]), "--audio", f"de={media['dub']}", "--split-scenes",
            "--scene-min-frames", "4", "-o", str(out), *BASE]


def test_split_scenes_dry_run(media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(media["root"] / "models"))  # tiny models made once
    out = tmp_path / "out"
    rc, dry = _run([*_scene_args(media, out), "--dry-run"], capsys)
    assert rc == 0 and dry["dry_run"] and not out.exists()  # a dry run writes nothing, scenes.otio neither
    plan = dry["plan"]["segments"]
    assert [(s["name"], s["record"]["start"], s["record"]["frames"]) for s in plan] == [
        ("scene_001", 0, 12), ("scene_002", 12, 8), ("scene_003", 20, 12)]
    assert dry["counts"]["to_render"] == 3
    # what it says names no temporary file (deleted on exit): where a run writes the edit
    capsys.readouterr()
    assert main(["--json", "sync", *_scene_args(media, out), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"the edit is not written; a run writes it to {out / 'scenes.otio'}" in err and "edit written" not in err, err


def test_split_scenes_waits_for_the_folder_lock_before_writing_its_edit(
        media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """OUT/scenes.otio is the run's first write: it happens under OUT's lock, so a second run beside one that
    holds OUT exits 6 (busy) before it detects or writes anything."""
    from lipsyncctl.runner.lock import folder_lock

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(media["root"] / "models"))
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out):  # another run holds OUT
        rc, res = _run(_scene_args(media, out), capsys)
        assert rc == 6 and res["error"]["exit_code"] == 6
        assert not (out / "scenes.otio").exists()
        assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["run.lock"]


@pytest.mark.slow  # ~30 s of CPU: three tiny renders, the conform and a rerun
def test_split_scenes_end_to_end(media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    import opentimelineio as otio

    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(media["root"] / "models"))  # tiny models made once
    out = tmp_path / "out"
    args = _scene_args(media, out)
    rc, res = _run([*args, "--conform"], capsys)
    assert rc == 0, res
    assert (out / "scenes.otio").is_file()
    shots = res["languages"]["de"]["shots"]
    assert [(s["name"], s["record_start"], s["frames"]) for s in shots] == [
        ("scene_001", 0, 12), ("scene_002", 12, 8), ("scene_003", 20, 12)]
    assert res["languages"]["de"]["conform"] and res["failed"] == []
    for s in shots:  # every shot rendered on its own (the grey one has no face: its source is kept)
        assert s["status"] in ("done", "no_face") and s["rendered"]
    done = [s for s in shots if s["status"] == "done"]
    assert {s["name"] for s in done} >= {"scene_001", "scene_003"}
    assert all(Path(s["output"]).is_file() for s in done)
    relinked = next(Path(p) for p in res["languages"]["de"]["timelines"] if p.endswith(".otio"))
    assert [c.name for c in otio.adapters.read_from_file(str(relinked)).video_tracks()[0].find_clips()] == [
        "scene_001", "scene_002", "scene_003"]
    # a rerun reads the edit again and reuses every shot
    rc, again = _run(args, capsys)
    assert rc == 0 and again["counts"]["rendered"] == 0 and again["counts"]["reused"] == len(shots)


def test_split_scenes_usage_errors(media: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    dub = f"de={media['dub']}"
    rc = main(["sync", "--split-scenes", "--audio", dub, "-o", str(tmp_path / "o")])
    assert rc == 2 and "--split-scenes" in capsys.readouterr().err
    rc = main(["sync", "--video", str(media["cuts"]), "--audio", dub, "-o", str(tmp_path / "o"),
               "--split-scenes", "--scene-threshold", "0"])
    assert rc == 2  # under the schema's bound: rejected by the option itself
    edit = tmp_path / "e.otio"
    edit.write_text("{}")
    rc = main(["sync", "--timeline", str(edit), "--audio", dub, "-o", str(tmp_path / "o"), "--split-scenes"])
    assert rc == 2 and "is an edit, not a video" in capsys.readouterr().err
    rc = main(["sync", "--video", str(media["cuts"]), "--audio", dub, "-o", str(tmp_path / "o.mp4"), "--face", "1",
               "--split-scenes"])
    assert rc == 2 and "--face" in capsys.readouterr().err


def test_an_interlaced_masters_cuts_are_found_on_progressive_pictures(media: dict[str, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With sync.deinterlace auto an interlaced master's frames reach the cut detector as bwdif's pictures; the
    edit records it, so one made the other way is not reused. A progressive master's edit is the same either way."""
    from lipsyncctl.media.reader import VideoReader
    from lipsyncctl.media.writer import VideoWriter
    from lipsyncctl.timeline import mediaio
    from lipsyncctl.timeline.scenes import write_scene_edit

    interlaced = tmp_path / "i.mkv"
    with VideoReader(media["programme"]) as reader, \
            VideoWriter(interlaced, FILM, codec="ffv1", pix_fmt="yuv420p", field_order="tt") as writer:
        for frame in reader:
            writer.write(frame.image)
    asked: list[bool] = []
    read = mediaio.read_frames
    monkeypatch.setattr(mediaio, "read_frames", lambda *a, **k: (asked.append(k.get("deinterlace", False)),
                                                                 read(*a, **k))[1])
    made = write_scene_edit(interlaced, tmp_path / "a", threshold=27, min_frames=4, deinterlace=True)
    assert asked == [True] and made.scenes == [(0, 12), (12, 20), (20, 32)]
    assert not write_scene_edit(interlaced, tmp_path / "a", threshold=27, min_frames=4).reused  # off: again
    assert asked == [True, False]
    plain = write_scene_edit(media["programme"], tmp_path / "p", threshold=27, min_frames=4)
    again = write_scene_edit(media["programme"], tmp_path / "p", threshold=27, min_frames=4, deinterlace=True)
    assert again.reused and again.scenes == plain.scenes and asked == [True, False, False]
