"""media.probe on cases a user walkthrough found: a one-file still of each image format (a JPEG's demuxer cannot be
rewound), demuxers that refuse to seek, truncated files, a MOV's named audio tracks, interlaced DV (its field order
in the frames only); and what ``score`` and the interlace warning make of them."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.errors import MediaError
from lipsyncctl.media.container import IMAGE_EXTS, frame_filter
from lipsyncctl.media.probe import is_default_handler, pick_audio_stream, probe
from tests import mediagen as mg


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe_cases")


def _ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


# --- one-file stills --------------------------------------------------------------------------------------------

#: extension -> (encoder, pixel format) of a still written by PyAV
STILLS = {".jpg": ("mjpeg", "yuvj420p"), ".jpeg": ("mjpeg", "yuvj444p"), ".png": ("png", "rgb24"),
          ".tif": ("tiff", "rgb24"), ".tiff": ("tiff", "rgb48le"), ".bmp": ("bmp", "bgr24"),
          ".webp": ("libwebp", "yuv420p"), ".dpx": ("dpx", "rgb48le"), ".exr": ("exr", "gbrpf32le")}


def _write_still(path: Path, encoder: str, pix_fmt: str, size: tuple[int, int] = (96, 64)) -> Path:
    """One picture in one file (FFmpeg's image2 muxer, as ``ffmpeg -i x -frames:v 1 still.jpg`` writes it). Noise,
    so that a JPEG is larger than FFmpeg's first probe read and is opened by the ``image2`` demuxer, as a photo is."""
    import av

    w, h = size
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="image2", options={"update": "1"}) as c:
        s = c.add_stream(encoder, rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        c.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)))
        c.mux(s.encode())
    return path


def test_the_stills_cover_every_image_extension() -> None:
    assert set(STILLS) == set(IMAGE_EXTS)


@pytest.mark.parametrize("ext", sorted(STILLS))
def test_a_one_file_still_probes_with_one_decodable_frame(gen: Path, ext: str) -> None:
    """Each still image format the tool takes, as one file: one frame, its size. A JPEG was refused ("no decodable
    frame"): FFmpeg's image2 demuxer takes ``seek(0)`` and then delivers nothing, so the file is opened again."""
    import av

    encoder, pix_fmt = STILLS[ext]
    if encoder not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {encoder} encoder")
    info = probe(_write_still(gen / f"still{ext}", encoder, pix_fmt))
    v = info.video
    assert v is not None and (v.frame_count, v.width, v.height) == (1, 96, 64)
    assert not info.audio and v.field_order is None
    if ext in (".jpg", ".jpeg"):
        assert info.format_name == "image2"  # the demuxer that cannot be rewound


def test_a_one_file_jpeg_is_read_as_a_clip_of_one_frame(gen: Path) -> None:
    """What sync and prep read after the probe: the one picture."""
    from lipsyncctl.media.reader import read_range

    path = _write_still(gen / "read.jpg", "mjpeg", "yuvj420p")
    frames = list(read_range(path, 0, 1))
    assert len(frames) == 1 and frames[0].shape == (64, 96, 3)


def test_a_demuxer_that_refuses_to_seek_is_read_from_a_new_open(gen: Path) -> None:
    """An FLV with sound and without a keyframe index (as FFmpeg writes it) cannot seek: ``seek(0)`` raised EPERM, and
    the probe failed with "cannot read (Operation not permitted)"."""
    import av

    path = mg.make_clip(gen / "c.flv", codec="flv", frames=10)
    with av.open(str(path)) as c, pytest.raises(av.error.FFmpegError):
        c.seek(0)
    info = probe(path)
    v = info.video
    assert v is not None and (v.codec, v.frame_count, v.fps) == ("flv", 10, 25)
    assert [(a.codec, a.sample_rate) for a in info.audio] == [("aac", 44100)]


def _first_packet_at(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return next(p.pos for p in c.demux(video=0) if p.size)


def test_truncated_files_are_still_reported(gen: Path) -> None:
    """A file cut short is a MediaError naming it (exit 5), as before: cut after its header, before its first
    frame's end, it has no decodable frame; cut half way, its header promises more than its packets hold; a PNG or
    JPEG cut in its header does not decode."""
    mkv = mg.make_clip(gen / "whole.mkv", frames=100)
    cases = {
        "header only": (mg.make_truncated(mkv, gen / "cut_header.mkv", (_first_packet_at(mkv) + 16) / mkv.stat().st_size),
                        r"no decodable frame \(truncated or empty\?\)|cannot be decoded"),
        "half": (mg.make_truncated(mkv, gen / "cut_half.mkv", 0.5), r"file is truncated \(media ends at"),
        "png": (mg.make_truncated(_write_still(gen / "whole.png", "png", "rgb24"), gen / "cut.png", 0.5),
                "cannot be decoded"),
        "jpg": (mg.make_truncated(_write_still(gen / "whole.jpg", "mjpeg", "yuvj420p"), gen / "cut.jpg", 0.02),
                "cannot be decoded"),
    }
    for what, (path, reason) in cases.items():
        with pytest.raises(MediaError, match=reason) as info:
            probe(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value), what
        assert info.value.exit_code == 5


# --- a MOV's named audio tracks ---------------------------------------------------------------------------------

def test_a_movs_track_names_say_which_audio_stream_is_which(gen: Path) -> None:
    """An editor's MOV names its tracks in ``handler_name`` ("M&E", "DE dialog"): the streams are listed with those
    names, as an MKV's titles are; a title (which FFmpeg reads back from a MOV as ``name``) wins; a muxer's default
    ("SoundHandler") names nothing. A MKV remuxed from the MOV keeps the names (as ``NAME``, ``HANDLER_NAME``)."""
    base = mg.make_clip(gen / "base.mp4", frames=5)
    mov = gen / "multi_audio.mov"
    _ffmpeg("-i", str(base), "-i", str(base), "-i", str(base), "-map", "0:v", "-map", "0:a", "-map", "1:a",
            "-map", "2:a", "-c", "copy", "-metadata:s:a:0", "handler_name=M&E", "-metadata:s:a:1",
            "handler_name=DE dialog", "-metadata:s:a:1", "language=ger", "-metadata:s:a:2", "title=DX stem",
            "-metadata:s:a:2", "handler_name=Other", str(mov))
    info = probe(mov)
    assert [(a.title, a.language) for a in info.audio] == [("M&E", None), ("DE dialog", "ger"), ("DX stem", None)]
    _, said = pick_audio_stream(mov, info, 1, "sync.audio_stream")
    assert said is not None and '0: 2 ch 44100 Hz aac, "M&E"; 1: 2 ch 44100 Hz aac, ger, "DE dialog"' in said
    assert "stream 1 is used" in said

    plain = gen / "plain.mov"  # ffmpeg's own handler names: SoundHandler, VideoHandler
    _ffmpeg("-i", str(base), "-i", str(base), "-map", "0:v", "-map", "0:a", "-map", "1:a", "-c", "copy", str(plain))
    assert [a.title for a in probe(plain).audio] == [None, None]

    mka = gen / "remux.mkv"
    _ffmpeg("-i", str(mov), "-map", "0", "-c", "copy", str(mka))
    assert [a.title for a in probe(mka).audio] == ["M&E", "DE dialog", "DX stem"]


@pytest.mark.parametrize(("name", "default"), [
    ("SoundHandler", True), ("VideoHandler", True), ("SoundHandle", True), ("Core Media Audio", True),
    ("Core Media Video", True), ("GPAC ISO Audio Handler", True), ("L-SMASH Audio Handler", True),
    ("Apple Sound Media Handler", True), ("Apple Alias Data Handler", True), ("DataHandler", True),
    ("Bento4 Sound Handler", True), ("MainConcept MP4 Sound Media Handler", True), ("TimeCodeHandler", True),
    ("GoPro AAC  ", True), ("ISO Media file produced by Google Inc. Created on: 01/01/2020.", True),
    ("M&E", False), ("DE dialog", False), ("Dialogue stem", False), ("Music", False), ("Commentary (EN)", False)])
def test_default_handler_names(name: str, default: bool) -> None:
    assert is_default_handler(name) is default


# --- score: a failing clip's path once --------------------------------------------------------------------------

def test_score_names_a_failing_clip_once(gen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A clip without sound among others: its reason is ``no audio stream ...`` beside its name, not the name
    twice (``clip.mp4: clip.mp4: no audio stream``), in the table, --json and the error line. A reason about
    another file (the --audio given) keeps that file's name."""
    import json

    from lipsyncctl.cli.main import main
    from tests.unit.test_timeline_qc import install_random_syncnet

    install_random_syncnet(tmp_path / "models")
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    silent = mg.make_clip(gen / "video_noaudio.mp4", frames=5, audio_rate=None)
    other = mg.make_clip(gen / "other_noaudio.mp4", frames=5, audio_rate=None)

    capsys.readouterr()
    rc = main(["--json", "-q", "score", str(silent), str(other)])
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert rc == 1 and [c["status"] for c in doc["clips"]] == ["failed", "failed"]
    assert [c["reason"] for c in doc["clips"]] == ["no audio stream (a video-only file?)"] * 2
    assert cap.err.count(str(silent)) == 1 and cap.err.count(str(other)) == 1
    assert f"{silent}: no audio stream" in cap.err

    rc = main(["--json", "-q", "score", str(silent), str(other), "--audio", str(silent)])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["clips"][1]["reason"] == f"{silent}: no audio stream (a video-only file?)"


# --- interlaced DV ----------------------------------------------------------------------------------------------

def _write_dv(path: Path, frames: list[np.ndarray], top_first: bool = False) -> Path:
    """PAL DV (720x576, 25 fps, 4:2:0) as a camera writes it: the container states no field order, the frames are
    flagged interlaced, bottom field first (``top_first``: flagged top field first, through FFmpeg's setfield)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("dvvideo", rate=25)
        s.width, s.height, s.pix_fmt = 720, 576, "yuv420p"
        fields = None
        for i, rgb in enumerate(frames):
            canvas = np.zeros((576, 720, 3), np.uint8)
            h, w = rgb.shape[:2]
            canvas[(576 - h) // 2:(576 - h) // 2 + h, (720 - w) // 2:(720 - w) // 2 + w] = rgb
            f = av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, 25)
            if top_first:
                fields = fields or frame_filter(f, "setfield", "mode=tff", Fraction(1, 25))
                fields.push(f)
                f = fields.pull()
            c.mux(s.encode(f))
        c.mux(s.encode())
    return path


@pytest.mark.parametrize("ext", [".dv", ".avi", ".mov"])
@pytest.mark.parametrize(("top_first", "order"), [(False, "bb"), (True, "tt")])
def test_dv_field_order_is_read_from_its_frames(gen: Path, ext: str, top_first: bool, order: str) -> None:
    """DV's container states no field order; its frames do (PAL DV: bottom field first). It was ``interlaced`` (no
    order), and every output was progressive."""
    import av

    rng = np.random.default_rng(1)
    path = _write_dv(gen / f"dv_{order}{ext}", [rng.integers(0, 256, (576, 720, 3), dtype=np.uint8)] * 2, top_first)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.field_order == 0  # "unknown": the frames alone say
    v = probe(path).video
    assert v is not None and v.codec == "dvvideo" and v.frame_count == 2
    assert (v.field_order, v.interlaced) == (order, True)
    assert v.fields == f"interlaced, {'top' if top_first else 'bottom'} field first"
    assert v.sample_aspect == Fraction(16, 15)


def test_a_progressive_tag_over_interlaced_frames_is_taken_at_its_word(gen: Path) -> None:
    """A MOV whose ``fiel`` box says progressive, over DV frames flagged interlaced bottom field first: the tag (PsF
    and fake-interlaced encodes are progressive pictures in fields; deinterlacing them would soften them)."""
    import av

    path = gen / "dv_tagged_progressive.mov"
    with av.open(str(path), "w") as c:
        s = c.add_stream("dvvideo", rate=25)
        s.width, s.height, s.pix_fmt = 720, 576, "yuv420p"
        s.codec_context.field_order = 1  # AV_FIELD_PROGRESSIVE
        c.mux(s.encode(av.VideoFrame(720, 576, "yuv420p")))
        c.mux(s.encode())
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.field_order == 1
    assert probe(path).video.field_order == "progressive"  # type: ignore[union-attr]


def test_the_interlace_warning_never_names_the_codec_it_writes_progressive_among_those_keeping_fields() -> None:
    """With an order, a codec that keeps fields keeps them; without one (``interlaced``: the frames said nothing
    readable) no codec can, and the warning said "prores_hq is written progressive here (h264, prores_hq, ... keep
    the fields)": it now says the order is not known."""
    from lipsyncctl import config as cfg
    from lipsyncctl.media.writer import OUTPUT_CODECS, keeps_fields
    from lipsyncctl.pipeline.output import interlace_warning

    for codec, spec in OUTPUT_CODECS.items():
        options = cfg.resolve("tiny", [f"output.codec={codec}"]).output
        for order in ("tt", "bb", "tb", "bt", "interlaced"):
            said = interlace_warning(options, "interlaced", order)
            progressive = f"{codec} is written progressive here"
            if keeps_fields(spec.codec, order):
                assert "keeps the field order" in said and progressive not in said
                continue
            assert progressive in said, (codec, order)
            kept = said.split(progressive, 1)[1]
            assert f" {codec}," not in kept and f" {codec} keep" not in kept and f"({codec}," not in kept
            if keeps_fields(spec.codec, "tt"):
                assert "field order is not known" in said, (codec, order)


def test_a_dv_source_comes_back_interlaced_bottom_field_first(gen: Path, tmp_path: Path) -> None:
    """End to end on the tiny preset: a PAL DV clip of a face, synced to ProRes HQ, comes back interlaced bottom
    field first (it came back progressive, with a warning that contradicted itself)."""
    import av

    from lipsyncctl.pipeline.clip import sync_clip
    from tests.sync_media import sample_frames, tiny_models, with_sets, write_wav

    # the bundled sample's face, the middle 576 rows of its 540x960 frames, widened to 720 (dlib found no face in
    # the whole frame made 576 high and padded: too small)
    frames = [np.pad(rgb[192:768], ((0, 0), (90, 90), (0, 0)), mode="edge") for rgb in sample_frames(3, scale=1.0)]
    video = _write_dv(gen / "face.dv", frames)
    with tiny_models(tmp_path / "models", "output.matte=false") as (config, models):
        out = tmp_path / "out.mov"
        res = sync_clip(video, write_wav(tmp_path / "a.wav", 0.12), out, with_sets(config, "output.codec=prores_hq"),
                        networks=models)
    said = [w for w in res.warnings if "interlaced" in w]
    assert len(said) == 1 and "bottom field first" in said[0] and "keeps the field order" in said[0]
    assert probe(out).video.field_order == "bb"  # type: ignore[union-attr]
    with av.open(str(out)) as c:
        assert [f.interlaced_frame for f in c.decode(video=0)] == [True] * 3


def test_an_mpeg_ts_sound_lasts_what_it_decodes_to_not_ffmpegs_estimate(tmp_path: Path) -> None:
    """FFmpeg estimates an MPEG-TS stream's duration from timestamps (MP2: 2.052 s for 2.088 s of sound): the probe
    takes the packets' span, which ``prep`` compares with the picture (it warned "audio 0.144 s shorter than the
    picture: padded" of a TS whose sound was whole)."""
    import av

    from lipsyncctl.media.audio import audio_length
    from tests.sync_media import burst_sound, sample_frames, write_sound

    ts = write_sound(tmp_path / "a.ts", "mpegts", "mp2", burst_sound(2.0), audio_at=1.4,
                      frames=sample_frames(50, scale=0.25))
    with av.open(str(ts)) as c:
        header = float(c.streams.audio[0].duration * c.streams.audio[0].time_base)
    samples, rate = audio_length(ts)
    sound = probe(ts).audio[0]
    assert abs(header - samples / rate) > 0.02  # the estimate is off: what the test is about
    assert sound.duration == pytest.approx(samples / rate, abs=0.001) and sound.start_time > 1
    alone = write_sound(tmp_path / "b.ts", "mpegts", "mp2", burst_sound(2.0), audio_at=1.4)  # a dub: sound only
    samples, rate = audio_length(alone)
    assert probe(alone).audio[0].duration == pytest.approx(samples / rate, abs=0.001)


# --- what an output does not carry ----------------------------------------------------------------------------------

def test_streams_besides_the_picture_and_sound_are_named_and_said(gen: Path) -> None:
    """Subtitles, a second picture and a data stream are listed (``MediaInfo.others``) and the sync/prep warning
    names them; the timecode track is not one (its timecode is carried)."""
    from lipsyncctl.pipeline.output import dropped_streams_warning

    base = mg.make_clip(gen / "others_base.mp4", frames=10, audio_rate=16000)
    (gen / "s.srt").write_text("1\n00:00:00,000 --> 00:00:00,300\nHallo\n")
    subs = gen / "subs.mp4"
    _ffmpeg("-i", str(base), "-i", str(gen / "s.srt"), "-map", "0", "-map", "1", "-c", "copy", "-c:s", "mov_text",
            "-metadata:s:s:0", "language=ger", "-timecode", "01:00:00:00", str(subs))
    two = gen / "two.mp4"
    _ffmpeg("-i", str(base), "-map", "0:v", "-map", "0:v", "-map", "0:a", "-c", "copy", str(two))
    info = probe(subs)
    assert info.others == ("subtitles (mov_text, ger)",) and info.timecode == "01:00:00:00"
    assert probe(two).others == ("video (h264)",)
    assert probe(base).others == () and dropped_streams_warning(()) is None
    said = dropped_streams_warning(info.others)
    assert said is not None and "subtitles (mov_text, ger)" in said and "not carried" in said


def test_alpha_a_lost_aspect_and_a_clipped_float_dub_are_said() -> None:
    from lipsyncctl.config import OutputOptions
    from lipsyncctl.pipeline.output import alpha_warning, aspect_warning, level_warning

    assert "alpha" in (alpha_warning("yuva444p12le") or "") and "opaque" in (alpha_warning("rgba") or "")
    assert alpha_warning("yuv420p") is None and alpha_warning(None) is None
    hdv = Fraction(4, 3)
    prores = OutputOptions(codec="prores_hq")
    assert "plays square" in (aspect_warning(Path("o.mkv"), prores, hdv) or "")
    assert aspect_warning(Path("o.mov"), prores, hdv) is None and aspect_warning(Path("o.mkv"), prores, Fraction(1)) is None
    assert "+6.0 dBFS" in (level_warning("pcm_f32le", np.array([0.5, -2.0], np.float32)) or "")
    # an integer or compressed source cannot be above full scale; a resampled full-scale file may overshoot a little
    assert level_warning("pcm_s16le", np.array([2.0])) is None
    assert level_warning("pcm_f32le", np.array([1.03])) is None
    # a silent dub (the wrong file or stream, most likely): said, with the stream option where the file has several
    assert "digital silence" in (level_warning("pcm_s16le", np.zeros(1600, np.float32)) or "")
    quiet = level_warning("aac", np.full(1600, 10 ** (-70 / 20), np.float32), several=True) or ""
    assert "peak -70 dBFS" in quiet and "sync.audio_stream" in quiet
    assert level_warning("aac", np.zeros(1600, np.float32), silent=False) is None  # a timeline shot without dialogue
    assert level_warning("aac", np.full(1600, 0.01, np.float32)) is None  # -40 dBFS: quiet, not silent


def test_a_dub_whose_channels_cancel_in_the_mono_mix_is_said_so(tmp_path: Path) -> None:
    """One channel polarity-inverted: the file plays at full level, the mono mix the model hears is silence. It was
    called "silent (digital silence): check that it is the right file", which it is."""
    from lipsyncctl.media.audio import loudest_channel, read_audio, write_wav
    from lipsyncctl.pipeline.output import level_warning

    tone = 0.5 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000).astype(np.float32)
    dub = write_wav(tmp_path / "inverted.wav", np.stack([tone, -tone], axis=1), 16000)
    mono = read_audio(dub, 16000, 1)
    said = level_warning("pcm_s16le", mono, channel_peak=lambda: loudest_channel(dub)) or ""
    assert "the dub's channels cancel in the mono mix the model hears" in said and "-6 dBFS" in said, said
    assert "pan=mono|c0=c0" in said
    silent = write_wav(tmp_path / "silent.wav", np.zeros((1600, 2), np.float32), 16000)
    assert "digital silence" in (level_warning("pcm_s16le", read_audio(silent, 16000, 1),
                                               channel_peak=lambda: loudest_channel(silent)) or "")


def test_a_source_deeper_than_the_output_is_said_with_the_way_to_keep_its_bits() -> None:
    from lipsyncctl import config as cfg
    from lipsyncctl.pipeline.output import depth_warning

    def said(codec: str, source: str, *sets: str) -> str | None:
        return depth_warning(cfg.resolve("tiny", [f"output.codec={codec}", *sets]).output, source)

    ffv1 = said("ffv1", "yuv422p10le")  # FFV1 is written as 8-bit RGB: a 10-bit master lost 2 bits, unsaid
    assert ffv1 is not None and ffv1.startswith("the output is 8-bit (bgr0) and the source 10-bit (yuv422p10le)")
    assert "--set output.pix_fmt=yuv422p10le, which ffv1 codes" in ffv1
    assert said("ffv1", "yuv422p10le", "output.pix_fmt=yuv422p10le") is None
    dnxhr = said("dnxhr_hq", "yuv422p10le")
    assert dnxhr is not None and "8-bit (yuv422p)" in dnxhr
    assert "(--codec prores_hq or --codec prores_4444 keeps them)" in dnxhr
    # as deep, but written from the render's 8-bit picture (the splice keeps no RGB source's samples in YUV, nor a
    # quarter-turned 4:2:0 one's in 4:2:2): said too
    plate = said("prores_hq", "gbrp10le")
    assert plate is not None and plate.startswith("the output (yuv422p10le) is written from the render's 8-bit picture")
    assert "(--codec ffv1 --set output.pix_fmt=gbrp10le keeps them)" in plate
    phone = depth_warning(cfg.resolve("tiny", ["output.codec=prores_hq"]).output, "yuv420p10le", turned=True)
    assert phone is not None and "(yuv420p10le, turned)" in phone and "--codec prores_4444" in phone
    assert depth_warning(cfg.resolve("tiny").output, "yuv420p10le", turned=True) is None  # H.264 4:2:0 keeps it
    assert said("prores_hq", "yuv422p10le") is None
    twelve = said("prores_4444", "yuv444p12le")  # ProRes codes 10 bits: FFV1 keeps 12
    assert twelve is not None and "(--codec ffv1 --set output.pix_fmt=yuv444p12le keeps them)" in twelve
    assert said("h264", "yuv420p10le") is None  # x264 keeps the source's 10 bits
    assert said("h264", "yuv420p") is None and said("ffv1", "rgb24") is None and said("ffv1", None) is None


def test_inputs_without_a_picture_or_a_sound_get_hints_every_command_can_follow(tmp_path: Path) -> None:
    # probe_inputs serves sync, score, a batch's rows and train's validation clip: a hint naming sync's --video
    # sent `score dub.wav` to an option it does not have
    from lipsyncctl.pipeline.clip import probe_inputs

    wav, video = Path(__file__).parents[2] / "lipsyncctl" / "data" / "sample_dub.wav", mg.make_clip(tmp_path / "mute.mp4", audio_rate=None, frames=3)
    for args, said in (((wav, wav), "no video stream"), ((video, video), "no audio stream")):
        with pytest.raises(MediaError, match=said) as err:
            probe_inputs(*args)
        assert err.value.hint and "--" not in err.value.hint, err.value.hint
