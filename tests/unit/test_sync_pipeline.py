"""End-to-end sync on CPU with the tiny preset: frame counts, rates, audio, exact untouched pixels.

Clips are short and low-resolution (real face frames from the bundled sample), 2 DDIM steps.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import progress
from lipsyncctl.errors import ConfigError, NoFaceError, UsageError
from lipsyncctl.pipeline.clip import probe_inputs, sync_clip
from tests.sync_media import (
    audio_info,
    decode_rgb,
    sample_frames,
    tiny_models,
    video_rate,
    with_sets,
    write_clip,
    write_wav,
)

NTSC = Fraction(30000, 1001)
FILM = Fraction(24000, 1001)


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory):
    """One tiny model set for the module (generated once, loaded through the real loaders)."""
    with tiny_models(tmp_path_factory.mktemp("models")) as env:
        yield env


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return sample_frames(12, scale=0.75)


def test_ntsc_pingpong_no_face_stretch_exact_pixels(tiny_env, frames, tmp_path: Path):
    """29.97 fps, frames 4-6 without a face, audio longer than the picture (pingpong), FFV1 + matte."""
    config, models = tiny_env
    src = [f.copy() for f in frames]
    for k in (4, 5, 6):
        src[k] = np.full_like(src[k], 90)  # a flat grey frame: no face
    video = write_clip(tmp_path / "ntsc.mkv", src, NTSC)
    audio = write_wav(tmp_path / "dub.wav", 0.6, rate=48000, channels=2)
    out = tmp_path / "out" / "synced.mkv"
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        res = sync_clip(video, audio, out, with_sets(config, "output.codec=ffv1", "output.matte=true"), networks=models)

    # frame count, rate, audio at its own rate/channels and as long as the picture
    expected_frames = int(np.ceil(0.6 * NTSC))  # 18
    assert res.frames == expected_frames
    got = decode_rgb(out)
    assert len(got) == expected_frames
    assert video_rate(out) == NTSC
    rate, channels, samples = audio_info(out)
    assert (rate, channels) == (48000, 2)
    assert abs(samples / rate - expected_frames / float(NTSC)) < 0.03  # AAC priming/frame padding

    # the tiny preset says loudly that it is not lip-synced
    assert any("NOT lip-synced" in w for w in res.warnings)
    assert any(e[0] == "message" and "NOT lip-synced" in e[1] for e in sink.events)

    decoded_src = decode_rgb(video)
    mattes = decode_rgb(res.matte)
    order = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11, 10, 9, 8, 7, 6]  # official ping-pong
    no_face = {4, 5, 6}
    assert res.no_face_frames == sum(o in no_face for o in order)
    changed_total = 0
    for i, o in enumerate(order):
        outside = mattes[i][..., 0] == 0
        assert np.array_equal(got[i][outside], decoded_src[o][outside]), f"frame {i}: pixels outside changed"
        if o in no_face:
            assert np.array_equal(got[i], decoded_src[o]), f"no-face frame {i} differs from the source"
        else:
            changed_total += int((~outside).sum())
    assert changed_total > 0  # faces were actually re-rendered
    # run.yaml beside the output, no temporary files left
    assert res.run_yaml is not None and res.run_yaml.is_file()
    assert "length_policy: pingpong" in res.run_yaml.read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["synced.mkv", "synced.matte.mkv", "synced.run.yaml"])


def test_film_rate_audio_shorter_cut_h264(tiny_env, frames, tmp_path: Path):
    """23.976 fps, audio shorter than the picture, policy cut, H.264/AAC in MP4 at 44.1 kHz mono."""
    config, models = tiny_env
    video = write_clip(tmp_path / "film.mkv", frames[:10], FILM)
    audio = write_wav(tmp_path / "short.wav", 0.25, rate=44100, channels=1)
    out = tmp_path / "film_out.mp4"
    res = sync_clip(video, audio, out, with_sets(config, "sync.length_policy=cut", "output.codec=h264"), networks=models)
    n = int(np.ceil(0.25 * FILM))  # 6
    assert res.frames == n and len(decode_rgb(out)) == n
    assert video_rate(out) == FILM
    rate, channels, samples = audio_info(out)
    assert (rate, channels) == (44100, 1)
    assert abs(samples / rate - n / float(FILM)) < 0.05
    assert res.no_face_frames == 0 and res.faces_found == n
    for stage in ("faces", "vae encode", "denoise", "vae decode", "paste", "encode"):
        assert res.stage_seconds[stage] > 0


def test_a_long_dub_cut_to_a_short_picture_encodes_only_the_windows_it_reads(tiny_env, frames, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch):
    """A 65 s dub cut to 4 frames: whisper encodes its first 30 s window only, and the output is the one made from
    all the dub's features, byte for byte (lossless FFV1)."""
    from lipsyncctl.audio import features as features_module

    config, models = tiny_env
    config = with_sets(config, "sync.length_policy=cut", "output.codec=ffv1")
    video = write_clip(tmp_path / "v.mkv", frames[:4], Fraction(25))
    audio = write_wav(tmp_path / "long.wav", 65.0)
    windows: list[int] = []
    hook = models.whisper.register_forward_pre_hook(lambda _m, args: windows.append(args[0].shape[0]))
    try:
        res = sync_clip(video, audio, tmp_path / "short.mkv", config, networks=models)
        assert res.frames == 4 and windows == [1]
        windows.clear()
        monkeypatch.setattr(features_module, "rows_for_frames", lambda *_a, **_k: 10**9)  # every row
        sync_clip(video, audio, tmp_path / "whole.mkv", config, networks=models)
        assert sum(windows) == 3
    finally:
        hook.remove()
    assert (tmp_path / "short.mkv").read_bytes() == (tmp_path / "whole.mkv").read_bytes()


def test_an_image_sequence_is_synced_at_its_stated_rate(tiny_env, frames, tmp_path: Path):
    """A PNG sequence numbered from 1001 (``%04d``) at ``sync.sequence_fps=24``: its frames at 24 fps, the same
    output as the same pictures in a lossless 24 fps file (RGB FFV1); the sequence is left as it was."""
    from PIL import Image

    config, models = tiny_env
    config = with_sets(config, "sync.length_policy=cut", "output.codec=ffv1", "sync.sequence_fps=24")
    folder = tmp_path / "shot"
    folder.mkdir()
    for k, rgb in enumerate(frames[:6]):
        Image.fromarray(rgb).save(folder / f"shot.{1001 + k:04d}.png")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    audio = write_wav(tmp_path / "dub.wav", 1.0)
    res = sync_clip(folder / "shot.%04d.png", audio, tmp_path / "seq.mkv", config, networks=models)
    assert (res.frames, res.fps) == (6, 24) and video_rate(tmp_path / "seq.mkv") == 24
    clip = write_clip(tmp_path / "clip.mkv", frames[:6], Fraction(24), pix_fmt="bgr0")
    sync_clip(clip, audio, tmp_path / "clip_out.mkv", config, networks=models)
    assert all(np.array_equal(a, b) for a, b in zip(decode_rgb(tmp_path / "seq.mkv"),
                                                     decode_rgb(tmp_path / "clip_out.mkv"), strict=True))
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before
    with pytest.raises(ConfigError, match="states no rate"):
        with_sets(config, "sync.sequence_fps=source")

    # an image sequence out: the same pictures, numbered as the source's frames, with its matte; no sound
    out = tmp_path / "out" / "shot.%04d.png"
    res = sync_clip(folder / "shot.%04d.png", audio, out, with_sets(config, "output.matte=true"), networks=models)
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == [f"shot.{n}.png" for n in range(1001, 1007)] + [f"shot.matte.{n}.png" for n in range(1001, 1007)] \
        + ["shot.run.yaml"]
    assert all(np.array_equal(np.asarray(Image.open(out.parent / f"shot.{1001 + k}.png")), want)
               for k, want in enumerate(decode_rgb(tmp_path / "seq.mkv")))
    assert res.matte == out.parent / "shot.matte.%04d.png" and any("holds no sound" in w for w in res.warnings)
    assert res.to_dict()["files"] == [str(out.parent / "shot.1001.png"), str(out.parent / "shot.1006.png")]
    assert "output.codec ffv1 is not used: the image sequence is written as its extension's format (png, rgb24)" \
        in res.warnings
    # read back (score, a second pass) at the rate its run.yaml records, unless a rate is given
    assert probe_inputs(out, audio).info.video.fps == 24
    assert probe_inputs(out, audio, sequence_fps="30").info.video.fps == 30
    with pytest.raises(UsageError, match="exists"):
        sync_clip(folder / "shot.%04d.png", audio, out, config, networks=models)
    # replaced by a shorter take from frame 2: its numbers are the source's (1003, 1004); the longer take's other
    # frames and its matte are gone, nothing hidden is left
    sync_clip(folder / "shot.%04d.png", audio, out, config, networks=models, frames=(2, 4), overwrite=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["shot.1003.png", "shot.1004.png", "shot.run.yaml"]
    sync_clip(clip, audio, out, with_sets(config, "output.first_number=0"), networks=models, frames=(0, 1),
              overwrite=True)  # a video source, numbered as asked
    assert sorted(p.name for p in out.parent.iterdir()) == ["shot.0000.png", "shot.run.yaml"]


def test_an_image_sequence_s_auto_rate_is_the_one_its_run_yaml_records(tmp_path: Path) -> None:
    """``sequence_fps: auto``: the output rate a lipsyncctl run recorded for this very pattern (not for another
    format's pattern sharing its run.yaml), else 25; a rate given is taken as it is; a video file states its own."""
    from lipsyncctl.pipeline.output import sequence_rate

    shot = tmp_path / "shot.%04d.png"
    assert sequence_rate(shot, "auto") == 25 and sequence_rate(shot, "23.976") == Fraction(24000, 1001)
    record = tmp_path / "shot.run.yaml"
    record.write_text(f"output: {tmp_path / 'shot.%04d.png'}\nplan:\n  fps: 24000/1001\n", encoding="utf-8")
    assert sequence_rate(shot, "auto") == Fraction(24000, 1001) and sequence_rate(shot, "30") == 30
    assert sequence_rate(tmp_path / "shot.%04d.dpx", "auto") == 25  # the record is the PNGs'
    assert sequence_rate(tmp_path / "shot.mov", "auto") == 25
    for text in ("output: [unclosed", "output: shot.%04d.png\nplan:\n  fps: 0\n", "output: shot.%04d.png\n",
                 "just text", "output: shot.%04d.png\nplan:\n  fps: fast\n"):
        record.write_text(text, encoding="utf-8")
        assert sequence_rate(shot, "auto") == 25, text


@pytest.mark.parametrize(("ext", "fmt"), [("png", "rgb48be"), ("dpx", "gbrp10le")])
def test_a_deep_rgb_plate_keeps_its_depth_outside_the_face(tiny_env, frames, tmp_path: Path, ext: str,
                                                           fmt: str) -> None:
    """A 16-bit PNG (a 10-bit DPX) plate comes back in its own format, every pixel the render did not change the
    plate's own value, low bits included (they were cut to 8 bits, then scaled back, over the whole picture)."""
    import av

    config, models = tiny_env
    plate = tmp_path / f"plate.%04d.{ext}"
    with av.open(str(plate), "w", format="image2", container_options={"start_number": "1001"}) as c:
        stream = c.add_stream(ext, rate=24)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], fmt
        for k, rgb in enumerate(frames[:4]):
            deep = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt).to_ndarray() + k + 1
            for packet in stream.encode(av.VideoFrame.from_ndarray(deep, format=fmt)):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    out = tmp_path / "out" / f"shot.%04d.{ext}"
    sync_clip(plate, write_wav(tmp_path / "dub.wav", 1.0), out,
              with_sets(config, "sync.length_policy=cut", "sync.sequence_fps=24", "output.matte=true"), networks=models)

    def picture(path: Path) -> av.VideoFrame:
        with av.open(str(path)) as c:
            return next(c.decode(video=0))

    for n in range(1001, 1005):
        src, got = picture(tmp_path / f"plate.{n}.{ext}"), picture(out.parent / f"shot.{n}.{ext}")
        matte = picture(out.parent / f"shot.matte.{n}.{ext}").to_ndarray().max(axis=2)
        assert got.format.name == fmt
        same = (src.to_ndarray() == got.to_ndarray()).all(axis=2)
        assert same[matte == 0].all() and (~same).sum() > 100  # the face changed, nothing else did


def test_a_10_bit_yuv_source_is_converted_to_a_deep_rgb_output_at_its_depth(tiny_env, frames, tmp_path: Path) -> None:
    """A 10-bit 4:2:0 clip into a 10-bit DPX sequence: outside the face, the source converted to 10-bit RGB as a
    whole (not its 8-bit picture scaled back), through packed RGB as the render's picture was (a planar RGB target
    upsamples the chroma otherwise: up to 19 levels off at colour edges, a seam at the face)."""
    import av

    config, models = tiny_env
    clip = write_clip(tmp_path / "clip.mkv", frames[:3], Fraction(24), pix_fmt="yuv420p10le")
    out = tmp_path / "out" / "shot.%04d.dpx"
    sync_clip(clip, write_wav(tmp_path / "dub.wav", 1.0), out,
              with_sets(config, "sync.length_policy=cut", "output.matte=true"), networks=models)
    with av.open(str(clip)) as c:
        want = [f.reformat(format="rgb48le").reformat(format="gbrp10le").to_ndarray() for f in c.decode(video=0)]
        c.seek(0)
        eight = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    for k, expected in enumerate(want):
        with av.open(str(out.parent / f"shot.{k + 1:04d}.dpx")) as c, \
                av.open(str(out.parent / f"shot.matte.{k + 1:04d}.dpx")) as m:
            got, matte = next(c.decode(video=0)).to_ndarray(), next(m.decode(video=0)).to_ndarray().max(axis=2)
        same = (got == expected).all(axis=2)
        assert same[matte == 0].all() and (expected % 4 != 0).any()  # low bits the 8-bit picture does not have
        # as the render's 8-bit picture, to swscale's rounding there (3.75 levels; planar RGB's own upsampling: 8.25)
        assert np.abs(got.astype(int) / 4 - eight[k])[matte == 0].max() <= 4


def test_floating_point_pictures_are_said_to_be_read_as_display_values(tmp_path: Path) -> None:
    """An EXR sequence probes as floating point (gbrpf32le): sync says its pictures are read as 0-1 display values
    (clipped, no colour transform); integer pictures say nothing."""
    import av

    from lipsyncctl.media.probe import probe
    from lipsyncctl.pipeline.output import float_picture_warning

    with av.open(str(tmp_path / "plate.%04d.exr"), "w", format="image2") as c:
        s = c.add_stream("exr", rate=25)
        s.width, s.height, s.pix_fmt = 16, 16, "gbrpf32le"
        for k in range(2):
            rgb = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 60 * k, np.uint8), format="rgb24")
            for packet in s.encode(rgb.reformat(format="gbrpf32le")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    pix_fmt = probe(tmp_path / "plate.%04d.exr").video.pix_fmt  # type: ignore[union-attr]
    said = float_picture_warning(pix_fmt)
    assert pix_fmt == "gbrpf32le" and said is not None and "display values in 0-1" in said
    assert float_picture_warning("yuv420p10le") is None and float_picture_warning("rgb48le") is None


def test_silence_policy_keeps_picture_and_pads_audio(tiny_env, frames, tmp_path: Path):
    config, models = tiny_env
    video = write_clip(tmp_path / "v.mkv", frames[:8], Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.12, rate=16000)
    out = tmp_path / "o.mkv"
    res = sync_clip(video, audio, out, with_sets(config, "sync.length_policy=silence", "output.codec=ffv1",
                                            "output.audio_codec=pcm"), networks=models)
    assert res.frames == 8 and len(decode_rgb(out)) == 8
    rate, _, samples = audio_info(out)
    assert samples == 8 * 16000 // 25  # padded with silence to the picture, PCM is exact


def test_a_dub_shorter_than_the_features_minimum_gives_its_one_frame(tiny_env, frames, tmp_path: Path):
    """A 0.01 s dub (160 samples: less than the STFT's reflect padding) is one output frame, its audio padded to
    the features' minimum: it failed as an internal error (a traceback's last line, exit 1)."""
    config, models = tiny_env
    video = write_clip(tmp_path / "v.mkv", frames[:4], Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.01, rate=16000)
    out = tmp_path / "o.mkv"
    res = sync_clip(video, audio, out, with_sets(config, "output.codec=ffv1", "output.audio_codec=pcm"),
                    networks=models)
    assert res.frames == 1 and len(decode_rgb(out)) == 1 and res.faces_found == 1
    assert audio_info(out)[2] == 16000 // 25  # the muxed audio lasts the one frame


def test_the_mouth_mask_is_the_models_own(tiny_env, frames, tmp_path: Path):
    """``model.mask``: the mask a UNet was trained with (train's ``data.mask``). An all-white mask regenerates
    nothing: the face comes back as it was but for the warp there and back, where the official mask's mouth is the
    (random) tiny model's; a mask that is not there or not an image stops before any work (exit 4)."""
    import cv2

    from lipsyncctl.errors import MissingModelError

    config, models = tiny_env
    video = write_clip(tmp_path / "v.mkv", frames[:6], Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.24, rate=16000)
    white = tmp_path / "keep_all.png"
    cv2.imwrite(str(white), np.full((256, 256, 3), 255, np.uint8))
    source = np.stack(decode_rgb(video)).astype(np.int16)
    diffs = {}
    for name, mask in (("official", "mask.png"), ("white", str(white))):
        out = tmp_path / f"{name}.mkv"
        sync_clip(video, audio, out, with_sets(config, "output.codec=ffv1", f"model.mask={mask}"), networks=models)
        diffs[name] = float(np.abs(np.stack(decode_rgb(out)).astype(np.int16) - source).mean())
    assert diffs["white"] < diffs["official"] / 4, diffs
    # a timeline's render keys hold a mask of one's own by its content (edited in place: rendered again); the
    # official one's keys are those of before
    from lipsyncctl.timeline.job import _model_fingerprints

    assert "mask" not in _model_fingerprints(config)[0]
    own = with_sets(config, f"model.mask={white}")
    first = _model_fingerprints(own)[0]["mask"]
    cv2.imwrite(str(white), np.full((256, 256, 3), 254, np.uint8))
    assert _model_fingerprints(own)[0]["mask"] != first
    (tmp_path / "not_an_image.png").write_text("no")
    for bad in ("nosuch_mask.png", str(tmp_path / "not_an_image.png")):
        with pytest.raises(MissingModelError, match="mouth mask"):
            sync_clip(video, audio, tmp_path / "x.mkv", with_sets(config, f"model.mask={bad}"))
        assert not (tmp_path / "x.mkv").exists()


def test_no_face_anywhere_is_an_error_without_output(tiny_env, tmp_path: Path):
    config, models = tiny_env
    grey = [np.full((128, 96, 3), 100, np.uint8)] * 4
    video = write_clip(tmp_path / "grey.mkv", grey, Fraction(25))
    audio = write_wav(tmp_path / "a.wav", 0.2)
    out = tmp_path / "out.mkv"
    with pytest.raises(NoFaceError):
        sync_clip(video, audio, out, config, networks=models)
    assert list(tmp_path.iterdir()) == [video, audio] or sorted(tmp_path.iterdir()) == sorted([video, audio])
