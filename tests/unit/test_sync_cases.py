"""More end-to-end sync cases on CPU with the tiny preset: VFR input, two faces, colour tags, the
``--fps 25`` conform, DeepCache, Ctrl-C, failing fast without a face, and the active-speaker choice.

Clips are a few frames of real faces (the bundled sample); every output is checked against the source
outside the changed region (FFV1 in RGB, so "unchanged" means bit-exact).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import config as cfg
from lipsyncctl import progress
from lipsyncctl.errors import MediaError, NoFaceError, UsageError
from lipsyncctl.media.probe import ColorInfo, probe
from lipsyncctl.pipeline.clip import sync_clip
from tests import mediagen as mg
from tests.sync_media import (
    audio_info,
    decode_rgb,
    sample_frames,
    tiny_models,
    two_face_frames,
    with_sets,
    write_clip,
    write_wav,
)

NTSC = Fraction(30000, 1001)


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory):
    """One tiny model set for the module (generated once, loaded through the real loaders)."""
    with tiny_models(tmp_path_factory.mktemp("models"), "output.codec=ffv1",
                     "output.matte=true", "output.audio_codec=pcm") as env:
        yield env


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return sample_frames(12, scale=0.6)


def _frame_times(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as c:
        return sorted(float(f.time) for f in c.decode(video=0))


def _changed(result) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Per output frame, the boolean mask of pixels the run may have changed (matte > 0)."""
    return [m[..., 0] > 0 for m in decode_rgb(result.matte)]


def _assert_outside_equal(result, expected: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    got = decode_rgb(result.output)
    assert len(got) == len(expected) == result.frames
    for i, (out, src, changed) in enumerate(zip(got, expected, _changed(result), strict=True)):
        assert np.array_equal(out[~changed], src[~changed]), f"frame {i}: pixels outside the face changed"


def test_vfr_input_is_read_on_its_nominal_grid(tiny_env, frames, tmp_path: Path):
    config, models = tiny_env
    times = mg.vfr_times(10, rate=30.0, seed=1)
    video = write_clip(tmp_path / "vfr.mp4", frames[:10], Fraction(30), codec="libx264", times=times)
    info = probe(video).video
    assert info is not None and info.is_vfr
    grid = info.nominal_fps
    audio = write_wav(tmp_path / "a.wav", 0.25, rate=48000, channels=2)
    res = sync_clip(video, audio, tmp_path / "out.mkv", config, networks=models)
    n = math.ceil(Fraction(12000, 48000) * grid)
    assert res.frames == n and res.fps == grid
    assert np.allclose(_frame_times(res.output), [float(k / grid) for k in range(n)], atol=0.0006)  # CFR (MKV: 1 ms ticks)
    rate, channels, samples = audio_info(res.output)
    assert (rate, channels, samples) == (48000, 2, round(n / grid * 48000))  # PCM: exact
    assert any("variable frame rate" in w and "conformed to a constant" in w for w in res.warnings)
    # frame k shows the source frame on screen at k / grid: late frames are held, so not simply frame k
    shown = [max(i for i, t in enumerate(times) if t <= k / float(grid) + 1e-3) for k in range(n)]
    assert shown != list(range(n))
    decoded = decode_rgb(video)
    _assert_outside_equal(res, [decoded[i] for i in shown])


def test_two_faces_largest_or_the_one_at_a_point(tiny_env, tmp_path: Path):
    from lipsyncctl.cli.main import main

    config, models = tiny_env
    src = two_face_frames(3)
    split = 400  # the larger face is left of x = 400, the smaller one right of it
    video = write_clip(tmp_path / "two.mkv", src, Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.12)
    largest = sync_clip(video, audio, tmp_path / "largest.mkv", config, networks=models)
    changed = np.stack(_changed(largest))
    assert changed[:, :, :split].any() and not changed[:, :, split:].any()
    assert largest.face_select == "largest"
    _assert_outside_equal(largest, decode_rgb(video))
    # the other face is said, with where each is and how to follow one (it was not: a two-shot passed in silence)
    said = [w for w in largest.warnings if w.startswith("more than one face in 3 frames (tracks found: 0 at")]
    assert len(said) == 1 and "--face-at X,Y" in said[0], largest.warnings

    # --face-at through the CLI: the smaller face is re-rendered, and run.yaml records the choice
    out = tmp_path / "right.mkv"
    rc = main(["--json", "-q", "sync", "--video", str(video), "--audio", str(audio), "-o", str(out),
               "--preset", "tiny", "--set", "inference.guidance=1.0", "--set", "faces.detect_every=1",
               "--codec", "ffv1", "--matte", "--face-at", "537,175"])
    assert rc == 0
    right = np.stack([m[..., 0] > 0 for m in decode_rgb(tmp_path / "right.matte.mkv")])
    assert right[:, :, split:].any() and not right[:, :, :split].any()
    run = cfg.yaml.safe_load((tmp_path / "right.run.yaml").read_text())
    assert run["config"]["faces"]["select"] == "point" and run["config"]["faces"]["point"] == [537.0, 175.0]
    assert run["faces"]["select"] == "point" and run["faces"]["track_id"] is not None
    # the same face by its track id
    by_id_config = config.with_overrides({"faces.select": "id", "faces.track_id": run["faces"]["track_id"]})
    by_id = sync_clip(video, audio, tmp_path / "by_id.mkv", by_id_config, networks=models)
    assert np.array_equal(np.stack(_changed(by_id)), right)
    # the config's word, the track in its own field
    assert (by_id.face_select, by_id.face_track) == ("id", run["faces"]["track_id"])
    assert by_id.to_dict()["face_select"] == "id"
    by_id_run = cfg.yaml.safe_load((tmp_path / "by_id.run.yaml").read_text())
    assert by_id_run["faces"]["select"] == "id" and by_id_run["faces"]["track_id"] == run["faces"]["track_id"]


def test_colour_tags_and_pixel_aspect_are_carried(tiny_env, frames, tmp_path: Path):
    """The output looks and plays like the source: its colour tags, and an anamorphic pixel aspect (else a
    DV/HDV clip came back squeezed)."""
    config, models = tiny_env
    video = write_clip(tmp_path / "bt709.mp4", frames[:3], Fraction(25), codec="libx264", bt709=True,
                       sample_aspect=Fraction(4, 3))
    tags = probe(video).video.color
    assert tags == ColorInfo("bt709", "bt709", "bt709", "tv") and probe(video).video.sample_aspect == Fraction(4, 3)
    audio = write_wav(tmp_path / "a.wav", 0.12)
    res = sync_clip(video, audio, tmp_path / "out.mp4", with_sets(config, "output.codec=h264", "output.matte=false",
                                                             "output.audio_codec=aac"), networks=models)
    out = probe(res.output).video
    assert out is not None and out.color == tags and out.pix_fmt == "yuv420p" and out.frame_count == 3
    assert out.sample_aspect == Fraction(4, 3) and out.square_size == (round(out.width * 4 / 3), out.height)
    umask = os.umask(0)
    os.umask(umask)
    for path in (res.output, res.run_yaml):  # ordinary permissions, not the 0600 of a temporary file
        assert path is not None and path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_anamorphic_face_is_found_in_every_frame(tiny_env, tmp_path: Path):
    """Real face frames stored squeezed to 3/4 of their width with a 4:3 pixel aspect (HDV-style): dlib's HOG on the
    stored pixels misses some frames (checked), the face pass searches them as shown and finds the face in every
    frame, with detection on every frame (no tracking to bridge a miss)."""
    import cv2

    from lipsyncctl.faces.detect import create_detector

    faces = sample_frames(12, scale=0.75)
    h, w = faces[0].shape[:2]
    squeezed = [cv2.resize(f, (w * 3 // 4 // 2 * 2, h), interpolation=cv2.INTER_AREA) for f in faces]
    assert any(not create_detector("dlib").detect(f) for f in squeezed)
    config, models = tiny_env
    video = write_clip(tmp_path / "hdv.mp4", squeezed, Fraction(25), codec="libx264", sample_aspect=Fraction(4, 3))
    res = sync_clip(video, write_wav(tmp_path / "a.wav", 12 / 25), tmp_path / "out.mkv",
                    with_sets(config, "faces.detect_every=1", "faces.backend=dlib", "output.matte=false"),
                    networks=models)
    assert res.faces_found == 12 and res.no_face_frames == 0


@pytest.mark.parametrize(("fps", "tag", "start", "out", "expected"), [
    (Fraction(25), "10:00:00:00", 0.2, "out.mov", "10:00:00:05"),       # --start moves it by the frames skipped
    (NTSC, "00:00:59;28", 4 * 1001 / 30000, "out.mp4", "00:01:00;04"),  # drop frame counts as such (;00, ;01 skipped)
    (Fraction(25), "10:00:00:00", 0.0, "prores.mov", "10:00:00:00"),    # ProRes: the MOV muxer needs the stream's rate
    (Fraction(25), "10:00:00:00", 0.0, "out.avi", None),                # an AVI holds none
    (Fraction(25), "10:00:00:00", 0.0, "out.m4v", None),                # nor an M4V as libavformat writes it
])
def test_the_source_timecode_and_reel_are_carried(tiny_env, frames, tmp_path: Path, fps: Fraction, tag: str,
                                                  start: float, out: str, expected: str | None):
    """A single clip comes back with the source timecode of its first frame and the source's reel name, so the
    editor's NLE relinks the dub as it did the source (the timeline's renders do the same). A ProRes MOV lost its
    timecode track (the muxer counts it at the stream's frame rate, which a copied stream lacked)."""
    config, models = tiny_env
    video = write_clip(tmp_path / "tc.mov", frames[:8], fps, codec="libx264", tags={"timecode": tag, "reel_name": "A001"})
    assert (probe(video).timecode, probe(video).reel) == (tag, "A001")
    codec = (["output.audio_codec=pcm"] if out == "out.avi" else ["output.codec=h264", "output.audio_codec=aac"] if out == "out.m4v" else ["output.codec=prores_hq"] if out == "prores.mov"
             else ["output.codec=h264", "output.audio_codec=aac"])
    res = sync_clip(video, write_wav(tmp_path / "a.wav", 0.12), tmp_path / out,
                    with_sets(config, *codec, "output.matte=false"), networks=models, start=start)
    info = probe(res.output)
    assert info.timecode == expected
    if expected is not None:
        assert info.reel == ("A001" if out.endswith(".mov") else None)  # MP4's timecode track has no reel name
        assert info.video is not None and info.video.nominal_fps == fps
    # what the container cannot hold is said (the reel of an MP4, both in an AVI); it went without a word
    said = [w for w in res.warnings if "not carried: " in w and "source's" in w]
    assert said == ([] if out.endswith(".mov") else ["the source's reel name A001 is not carried: .mp4 cannot hold it "
                                                     "(.mov, .mkv can; an NLE relinks by them)"] if out == "out.mp4"
                    else [f"the source's start timecode {tag} and reel name A001 are not carried: {out[3:]} cannot hold "
                          "them (.mov, .mkv can; an NLE relinks by them)"]), said


@pytest.mark.parametrize(("codec", "ext", "params", "kept"), [
    ("h264", ".mkv", "tff=1", "tt"), ("prores_hq", ".mov", "bff=1", "bb"), ("h265", ".mkv", "tff=1", None)])
def test_an_interlaced_source_comes_back_interlaced(tiny_env, frames, tmp_path: Path, codec: str, ext: str,
                                                    params: str, kept: str | None):
    """A 1080i-style master (x264 interlaced): the output keeps its field order where the codec can (H.264, ProRes:
    through the mux, every frame coded interlaced) and the run says the face is rendered from whole frames; H.265 is
    written progressive and the run says how to deinterlace."""
    config, models = tiny_env
    import av

    video = tmp_path / "i.mp4"
    with av.open(str(video), "w") as c:  # interlaced-coded H.264
        s = c.add_stream("libx264", rate=25, options={"x264-params": params})
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for i, rgb in enumerate(frames[:3]):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode())
    order = probe(video).video.field_order  # type: ignore[union-attr]
    assert order == params[:1] * 2
    config = with_sets(config, f"output.codec={codec}", "output.matte=false")
    out = tmp_path / f"out{ext}"
    res = sync_clip(video, write_wav(tmp_path / "a.wav", 0.12), out, config, networks=models)
    said = [w for w in res.warnings if "interlaced" in w]
    assert len(said) == 1 and ("top" if order == "tt" else "bottom") + " field first" in said[0]
    assert "rendered from deinterlaced pictures" in said[0]
    assert ("keeps the field order" in said[0]) == (kept is not None)
    assert ("deinterlace it first" in said[0]) == (kept is None)
    assert probe(out).video.field_order in ((kept,) if kept else (None, "progressive"))  # type: ignore[union-attr]
    with av.open(str(out)) as c:
        assert [f.interlaced_frame for f in c.decode(video=0)] == [kept is not None] * 3


def _comb(images: list[np.ndarray]) -> float:
    """Mean difference between neighbouring rows: large where the two fields of a frame disagree."""
    return float(np.mean([np.abs(np.diff(i.astype(np.int16), axis=0)).mean() for i in images]))


@pytest.mark.parametrize(("mode", "pipelined", "pix_fmt", "shift"), [
    ("auto", "true", "yuv444p", 4), ("auto", "false", None, 4), ("off", "true", None, 1)])
def test_an_interlaced_face_is_rendered_from_deinterlaced_pictures(tiny_env, frames, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, mode: str,
                                                                   pipelined: str, pix_fmt: str | None, shift: int):
    """``sync.deinterlace`` auto (the default): the faces of an interlaced source are found and aligned on bwdif's
    progressive pictures (the model sees no combing), and pasted onto the source's own frames, both fields kept
    wherever the render changed nothing (an RGB output; a YUV one, spliced); ``off``: the combed frames as they are
    (with fields 4 px apart dlib finds the face in none of them: ``off`` is tried with 1 px)."""
    from lipsyncctl.faces.align import FaceAligner
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.media.writer import VideoWriter

    config, models = tiny_env
    video = tmp_path / "i.mkv"
    with VideoWriter(video, 25, codec="ffv1", pix_fmt="yuv444p", field_order="tt") as writer:  # lossless
        for rgb in frames[:4]:  # the bottom field further right than the top: motion between the fields
            woven = rgb.copy()
            woven[1::2] = np.roll(rgb[1::2], shift, axis=1)
            writer.write(woven)
    seen: list[np.ndarray] = []
    warp_crop = FaceAligner.warp_crop
    monkeypatch.setattr(FaceAligner, "warp_crop", lambda self, image, matrix, roi=True: (
        seen.append(image.copy()), warp_crop(self, image, matrix, roi))[1])
    sets = [f"sync.deinterlace={mode}", f"inference.pipelined={pipelined}", "faces.detect_every=1"]
    res = sync_clip(video, write_wav(tmp_path / "a.wav", 4 / 25), tmp_path / "out.mkv",
                    with_sets(config, *sets, *([f"output.pix_fmt={pix_fmt}"] if pix_fmt else [])), networks=models)
    assert res.frames == 4 and res.faces_found == 4
    source = decode_rgb(video)
    with IndexedReader(video, deinterlace=True) as reader:
        pictures = [reader.read([i])[i] for i in range(4)]
    assert _comb(pictures) < (0.7 if shift > 1 else 1.0) * _comb(source)
    expected = pictures if mode == "auto" else source
    assert len(seen) == 4 and all(np.array_equal(a, b) for a, b in zip(seen, expected, strict=True))
    assert probe(res.output).video.field_order == "tt"  # type: ignore[union-attr]
    _assert_outside_equal(res, source)
    said = [w for w in res.warnings if "interlaced" in w]
    assert len(said) == 1 and ("deinterlaced pictures" in said[0]) == (mode == "auto")


@pytest.mark.parametrize(("codec", "ext", "kept"), [("h265", ".mov", True), ("h264", ".mkv", True),
                                                    ("prores_hq", ".mov", False)])
def test_hdr10_metadata_is_carried_or_said(tiny_env, frames, tmp_path: Path, codec: str, ext: str, kept: bool):
    """A HDR10 master (10-bit HEVC, PQ, its mastering display and content light level): an H.264/H.265 output
    carries the metadata with the colour tags; a ProRes one keeps the tags and the run says the metadata is not
    written. A timeline's shot (a lossless intermediate, then the run's codec) speaks of the delivery's codec."""
    from lipsyncctl.media.writer import VideoWriter

    config, models = tiny_env
    hdr = ColorInfo("bt2020", "smpte2084", "bt2020nc", "tv",
                    "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)", "1000,400")
    video = tmp_path / "hdr.mkv"
    with VideoWriter(video, 25, codec="h265", pix_fmt="yuv420p10le", color=hdr, preset="ultrafast") as writer:
        for rgb in frames[:3]:
            writer.write(rgb)
    assert probe(video).video.color == hdr  # type: ignore[union-attr]
    config = with_sets(config, f"output.codec={codec}", "output.matte=false")
    audio = write_wav(tmp_path / "a.wav", 0.12)
    res = sync_clip(video, audio, tmp_path / f"out{ext}", config, networks=models)
    color = probe(res.output).video.color  # type: ignore[union-attr]
    assert (color.primaries, color.transfer, color.matrix) == ("bt2020", "smpte2084", "bt2020nc")
    assert color.hdr10 == kept and (not kept or (color.mastering, color.light_level) == (hdr.mastering, "1000,400"))
    said = [w for w in res.warnings if "HDR10" in w]
    assert len(said) == (0 if kept else 1) and (kept or "prores_hq is written with its colour tags" in said[0])
    raw = sync_clip(video, audio, tmp_path / "raw.mkv", with_sets(config, "output.codec=ffv1"), networks=models,
                    delivery=config.output)
    assert [w for w in raw.warnings if "HDR10" in w] == said
    if codec == "h264":  # an image sequence carries none, whatever output.codec says (h264 would)
        seq = sync_clip(video, audio, tmp_path / "seq" / "out.%04d.png", config, networks=models)
        said = [w for w in seq.warnings if "HDR10" in w]
        assert len(said) == 1 and "an image sequence is written without it" in said[0]


def test_a_192_khz_dub_is_said_and_resampled_for_aac(tiny_env, frames, tmp_path: Path):
    """AAC holds at most 96 kHz: the run says so up front and writes 96 kHz (it failed after the whole render,
    naming a hidden temporary file); the output's sound lasts the plan's exact samples."""
    config, models = tiny_env
    video = write_clip(tmp_path / "v.mkv", frames[:3], Fraction(25))
    audio = write_wav(tmp_path / "a192.wav", 0.12, rate=192000)
    res = sync_clip(video, audio, tmp_path / "out.mp4", with_sets(config, "output.codec=h264", "output.matte=false",
                                                             "output.audio_codec=aac"), networks=models)
    assert any("192000 Hz is more than AAC holds" in w and "96000 Hz" in w for w in res.warnings)
    (a,) = probe(res.output).audio
    assert a.sample_rate == 96000


def test_dnxhr_in_mxf_with_a_44_1_khz_dub(tiny_env, frames, tmp_path: Path):
    """An Avid delivery (DNxHR HQ in MXF): the dub (44.1 kHz here) is written as 24-bit PCM at the 48 kHz MXF holds,
    said up front, as long as the picture; AAC into MXF is refused before any work (exit 3). Before, every .mxf
    output failed at the mux, after the whole render, naming a hidden temporary file."""
    from lipsyncctl.errors import ConfigError

    config, models = tiny_env
    video = write_clip(tmp_path / "v.mkv", frames[:5], Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.2, rate=44100)
    config = with_sets(config, "output.codec=dnxhr_hq", "output.audio_codec=auto", "output.matte=false")
    res = sync_clip(video, audio, tmp_path / "out.mxf", config, networks=models)
    info = probe(res.output)
    assert info.format_name == "mxf" and info.video is not None and info.video.profile == "DNXHR HQ"
    (a,) = info.audio
    assert (a.codec, a.sample_rate) == ("pcm_s24le", 48000) and a.duration == pytest.approx(0.2, abs=1e-3)
    assert any("MXF holds 48000 Hz sound only" in w for w in res.warnings)
    with pytest.raises(ConfigError, match="AAC audio"):
        sync_clip(video, audio, tmp_path / "aac.mxf", with_sets(config, "output.audio_codec=aac"), networks=models)
    assert not (tmp_path / "aac.mxf").exists()
    # a rate an MXF cannot hold is said before the face pass (it failed at the first frame of the render)
    odd = write_clip(tmp_path / "v15.mkv", frames[:3], Fraction(15))
    with pytest.raises(MediaError, match="an MXF cannot hold 15 frames per second"):
        sync_clip(odd, audio, tmp_path / "odd.mxf", config, networks=models)
    assert not (tmp_path / "odd.mxf").exists()
    # a rate asked for (--fps 12) is the user's choice, not bad media: usage (it was exit 5)
    with pytest.raises(UsageError, match=r"sync.fps 12 \(--fps\): .*an MXF cannot hold 12 frames per second") as err:
        sync_clip(video, audio, tmp_path / "twelve.mxf", with_sets(config, "sync.fps=12"), networks=models)
    assert err.value.exit_code == 2 and not (tmp_path / "twelve.mxf").exists()


def test_fps_25_conform_from_2997(tiny_env, frames, tmp_path: Path):
    """``--fps 25`` (the official conform): frame j shows source frame floor(j * 29.97 / 25)."""
    config, models = tiny_env
    video = write_clip(tmp_path / "ntsc.mkv", frames[:10], NTSC)
    audio = write_wav(tmp_path / "a.wav", 0.3, rate=44100)
    res = sync_clip(video, audio, tmp_path / "out.mkv", with_sets(config, "sync.fps=25"), networks=models)
    n = math.ceil(0.3 * 25)  # 8
    assert res.frames == n and probe(res.output).video.fps == 25 and res.plan["source_fps"] == "30000/1001"
    rate, _, samples = audio_info(res.output)
    assert samples == round(n / 25 * rate)
    src = decode_rgb(video)
    _assert_outside_equal(res, [src[math.floor(j * NTSC / 25)] for j in range(n)])


def test_deepcache_option(tiny_env, frames, tmp_path: Path):
    """Caching with a full pass every step equals no caching; every 2nd step changes the face only."""
    config, models = tiny_env
    video = write_clip(tmp_path / "v.mkv", frames[:3], Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.12)
    base = with_sets(config, "inference.steps=3")
    off = sync_clip(video, audio, tmp_path / "off.mkv", base, networks=models)
    every = sync_clip(video, audio, tmp_path / "every.mkv",
                      with_sets(base, "inference.deepcache=true", "inference.deepcache_interval=1"), networks=models)
    cached = sync_clip(video, audio, tmp_path / "cached.mkv",
                       with_sets(base, "inference.deepcache=true", "inference.deepcache_interval=2"), networks=models)
    a, b, c = (np.stack(decode_rgb(r.output)) for r in (off, every, cached))
    assert np.array_equal(a, b)
    changed = np.stack(_changed(off))
    assert not np.array_equal(a, c) and np.array_equal(a[~changed], c[~changed])


class _InterruptAfterFirstWindow(progress.RecordingSink):
    """Raises KeyboardInterrupt (what Ctrl-C does) when the render has advanced once."""

    def __init__(self) -> None:
        super().__init__()
        self.render_task: int | None = None

    def start(self, task_id: int, description: str, total: float | None, parent: int | None) -> None:
        super().start(task_id, description, total, parent)
        if description == "render":
            self.render_task = task_id

    def advance(self, task_id: int, amount: float) -> None:
        super().advance(task_id, amount)
        if task_id == self.render_task:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_no_partial_output(tiny_env, frames, tmp_path: Path):
    config, models = tiny_env
    video = write_clip(tmp_path / "v.mkv", frames[:6], Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.24)
    out_dir = tmp_path / "out"
    sink = _InterruptAfterFirstWindow()
    with progress.use_sink(sink), pytest.raises(KeyboardInterrupt):
        sync_clip(video, audio, out_dir / "o.mkv", with_sets(config, "inference.window=2"), networks=models)
    assert sink.render_task is not None and any(e[0] == "advance" and e[1] == sink.render_task for e in sink.events)
    assert not out_dir.exists()  # no output, matte, run.yaml, hidden temporary folder, nor the folder it made


def test_cli_ctrl_c_exits_130_without_output(tiny_env, frames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]):
    from lipsyncctl.cli.main import main
    from lipsyncctl.pipeline.render import Renderer

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(Renderer, "generate", interrupted)  # the networks stage (calling thread)
    video = write_clip(tmp_path / "v.mkv", frames[:2], Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.08)
    out = tmp_path / "out" / "o.mp4"
    rc = main(["sync", "--video", str(video), "--audio", str(audio), "-o", str(out), "--preset", "tiny"])
    assert rc == 130, capsys.readouterr().err
    assert not out.parent.exists()  # the folder sync created for the output is removed too


def test_no_face_fails_before_loading_networks(tiny_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config, _ = tiny_env

    def must_not_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("networks loaded for a clip without a face")

    monkeypatch.setattr("lipsyncctl.pipeline.networks.load_networks", must_not_load)
    video = write_clip(tmp_path / "grey.mkv", [np.full((96, 128, 3), 90, np.uint8)] * 3, Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.12)
    with pytest.raises(NoFaceError):
        sync_clip(video, audio, tmp_path / "o.mkv", config)
    assert not (tmp_path / "o.mkv").exists()


def _face(track: int, opening: float, size: float) -> object:
    from lipsyncctl.faces.detect import Face

    lmk = np.zeros((68, 2))
    lmk[66, 1] = opening * size  # the inner-lip gap (points 62 and 66)
    return Face(np.array([0.0, 0.0, size, size]), 1.0, lmk, track_id=track)


def test_speaker_is_the_face_whose_mouth_moves_with_the_audio():
    from lipsyncctl.config import FaceOptions
    from lipsyncctl.pipeline.faces import FacePlan, choose_faces

    rng = np.random.default_rng(0)
    fps, n = Fraction(25), 50
    loud = rng.uniform(0.05, 1.0, n)  # loudness per frame
    audio = np.concatenate([a * np.sin(np.linspace(0, 40 * np.pi, 640)) for a in loud]).astype(np.float32)
    other = rng.uniform(0.05, 1.0, n)
    # track 1 (larger) moves its mouth at random; track 0 (smaller) with the audio
    per_frame = [[_face(0, 0.3 * loud[i], 80), _face(1, 0.3 * other[i], 120)] for i in range(n)]
    result = FacePlan([], np.zeros(0), "test")
    chosen = choose_faces(per_frame, FaceOptions(select="speaker"), fps, audio, result)
    assert result.selection == "speaker" and result.track_id == 0 and not result.warnings
    assert all(f.track_id == 0 for f in chosen)
    # no mouth landmarks to judge (106-point layout): the largest face, said out loud
    from dataclasses import replace

    no_mouth = [[replace(f, landmarks=np.zeros((106, 2))) for f in fs] for fs in per_frame]
    result = FacePlan([], np.zeros(0), "test")
    chosen = choose_faces(no_mouth, FaceOptions(select="speaker"), fps, audio, result)
    assert result.selection == "largest" and result.warnings and all(f.track_id == 1 for f in chosen)


@pytest.mark.parametrize("options", [{"select": "largest"}, {"select": "id", "track_id": 0},
                                     {"select": "point", "point": (10.0, 10.0)}, {"select": "speaker"}])
def test_recorded_selection_is_the_config_word(options: dict) -> None:
    """FacePlan.selection (SyncResult.face_select, run.yaml faces.select) says exactly faces.select's word."""
    from typing import get_args

    from lipsyncctl.config import FaceOptions, FaceSelect
    from lipsyncctl.pipeline.faces import FacePlan, choose_faces

    per_frame = [[_face(0, 0.2, 80), _face(1, 0.2, 120)] for _ in range(3)]  # track 1 is larger
    result = FacePlan([], np.zeros(0), "test")
    audio = np.zeros(3 * 640, np.float32)  # silence: nobody can be judged the speaker
    choose_faces(per_frame, FaceOptions(**options), Fraction(25), audio, result)
    assert result.selection in get_args(FaceSelect)
    expected = {"largest": ("largest", None), "id": ("id", 0), "point": ("point", 0),
                "speaker": ("largest", None)}[options["select"]]  # speaker undecided: the largest, warned
    assert (result.selection, result.track_id) == expected


def test_a_deeper_source_than_the_output_is_said_and_its_setting_keeps_the_bits(tiny_env, frames, tmp_path: Path):
    """A 10-bit ProRes master into FFV1 (8-bit RGB by default) lost 2 bits of the whole picture unsaid: said, and
    the setting it names writes the master's own samples (outside the face: exactly); a timeline's shot (a lossless
    intermediate, then the delivery's codec) speaks of the delivery."""
    import av

    from lipsyncctl.media.writer import VideoWriter

    config, models = tiny_env
    video = tmp_path / "master.mov"
    with VideoWriter(video, 25, codec="prores", pix_fmt="yuv422p10le") as writer:
        for rgb in frames[:3]:
            writer.write(rgb)
    audio = write_wav(tmp_path / "a.wav", 0.12)
    config = with_sets(config, "output.codec=ffv1", "output.matte=true")
    res = sync_clip(video, audio, tmp_path / "out.mkv", config, networks=models)
    said = [w for w in res.warnings if "low bits" in w]
    assert len(said) == 1 and said[0].startswith("the output is 8-bit (bgr0) and the source 10-bit (yuv422p10le)")
    assert "--set output.pix_fmt=yuv422p10le, which ffv1 codes, keeps them" in said[0]
    kept = sync_clip(video, audio, tmp_path / "kept.mkv", with_sets(config, "output.pix_fmt=yuv422p10le"),
                     networks=models)
    assert not [w for w in kept.warnings if "low bits" in w]

    def planes(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [f.to_ndarray() for f in c.decode(video=0)]

    for src, out, changed in zip(planes(video), planes(kept.output), _changed(kept), strict=True):
        # (the 8-bit matte rounds the feather's faintest weights to 0: a few pixels at its edge moved by < 1 level)
        near = np.zeros_like(changed)
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                near |= np.roll(changed, (dy, dx), axis=(0, 1))
        assert out.dtype == np.uint16 and near.mean() < 0.5
        assert np.array_equal(out[0][~near], src[0][~near])  # the master's own 10-bit luma outside the face
    shot = sync_clip(video, audio, tmp_path / "shot.mkv", config, networks=models,
                     delivery=with_sets(config, "output.codec=dnxhr_hq").output)
    assert [w for w in shot.warnings if "low bits" in w][0].startswith("the output is 8-bit (yuv422p)")
