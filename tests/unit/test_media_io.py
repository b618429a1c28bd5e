"""Reader, CFR conformer, writer, atomic output, audio read/write, muxing and ffmpeg discovery."""

from __future__ import annotations

import os
import stat
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.errors import MediaError, MissingToolError, UsageError
from lipsyncctl.media import ffmpeg
from lipsyncctl.media.atomic import atomic_output
from lipsyncctl.media.audio import read_audio, write_wav
from lipsyncctl.media.mux import mux_audio
from lipsyncctl.media.probe import ColorInfo, probe
from lipsyncctl.media.reader import Frame, VideoReader, conform_cfr
from lipsyncctl.media.writer import VideoWriter
from tests import mediagen as mg

AAC_FRAME = 1024


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("io")


@pytest.fixture(scope="module")
def clip2997(gen: Path) -> Path:
    return mg.make_clip(gen / "c2997.mkv", fps=Fraction(30000, 1001), frames=30, time_base=Fraction(1, 1000))


# -- reader -------------------------------------------------------------------------------------

def test_reader_iterates_in_order(clip2997: Path) -> None:
    with VideoReader(clip2997) as reader:
        frames = list(reader)
    assert [f.index for f in frames] == list(range(30))
    assert [mg.read_index(f.image) for f in frames] == list(range(30))
    assert frames[0].image.shape == (64, 96, 3) and frames[0].image.dtype == np.uint8
    assert float(frames[15].time) == pytest.approx(15 * 1001 / 30000, abs=0.001)


def test_reader_seek(clip2997: Path) -> None:
    with VideoReader(clip2997) as reader:
        reader.seek(frame=17)
        first = next(iter(reader))
        assert (first.index, mg.read_index(first.image)) == (17, 17)
        reader.seek(time=0.5)  # frame 15 is at 0.5005 s (stored as 500 ms)
        first = next(iter(reader))
        assert mg.read_index(first.image) == 15 and first.index == 15


@pytest.mark.parametrize("rotation", [90, 270])
def test_reader_applies_rotation(gen: Path, rotation: int) -> None:
    path = mg.make_clip(gen / f"r{rotation}.mp4", rotation=rotation, frames=2)
    with VideoReader(path) as reader:
        img = next(iter(reader)).image
        assert reader.size == (96, 64)
    assert img.shape == (64, 96, 3) and mg.has_marker_top_left(img) and mg.read_index(img) == 0
    with VideoReader(path, apply_rotation=False) as reader:
        raw = next(iter(reader)).image
    assert raw.shape == (96, 64, 3) and not mg.has_marker_top_left(raw)


# -- conform ------------------------------------------------------------------------------------

def _frames(times: list[float]) -> list[Frame]:
    return [Frame(i, Fraction(t).limit_denominator(10**6), None) for i, t in enumerate(times)]


def test_conform_same_rate_is_identity() -> None:
    fps = Fraction(30000, 1001)
    src = _frames([round(i * 1001 / 30000, 3) for i in range(30)])  # ms-rounded stamps
    out = [f.index for _, f in conform_cfr(src, fps, count=30)]
    assert out == list(range(30))


def test_conform_2997_to_25_drops_evenly() -> None:
    src = _frames([i * 1001 / 30000 for i in range(300)])  # 10.01 s
    out = [f.index for _, f in conform_cfr(src, Fraction(25), count=250, tolerance=0)]
    assert len(out) == 250
    # Output k shows the last source frame at or before k/25 s.
    assert out == [int(np.floor((k / 25) * 30000 / 1001 + 1e-9)) for k in range(250)]
    assert len(set(out)) == 250  # frames are dropped, none repeated


def test_conform_vfr_repeats_and_start_offset() -> None:
    times = [0.0, 0.04, 0.2, 0.21, 0.22, 0.5]
    out = [f.index for _, f in conform_cfr(_frames(times), Fraction(10), count=8)]
    # slots 0.0 .1 .2 .3 .4 .5 .6 .7 -> last frame with t <= slot; held after the end
    assert out == [0, 1, 2, 4, 4, 5, 5, 5]
    late = [f.index for _, f in conform_cfr(_frames(times), Fraction(10), start=0.2, count=3)]
    assert late == [2, 4, 4]
    first_late = [f.index for _, f in conform_cfr(_frames([0.15, 0.3]), Fraction(10), count=3)]
    assert first_late == [0, 0, 0]  # slots before the first frame show it; 0.2 s is still frame 0
    assert [f.index for _, f in conform_cfr(_frames([0.15, 0.3]), Fraction(10))] == [0, 0, 0, 1]


# -- writer -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("codec", "ext", "size", "pix_fmt"),
    [("h264", ".mp4", (96, 64), "yuv420p"), ("h265", ".mp4", (96, 64), "yuv420p"),
     ("prores", ".mov", (96, 64), "yuv422p10le"), ("ffv1", ".mkv", (96, 64), "yuv420p"),
     ("dnxhr", ".mov", (256, 144), "yuv422p")],
)
def test_writer_codecs_exact_cfr(gen: Path, codec: str, ext: str, size: tuple[int, int], pix_fmt: str) -> None:
    fps = Fraction(30000, 1001)
    path = gen / f"w_{codec}{ext}"
    color = ColorInfo("bt709", "bt709", "bt709", "tv")
    with VideoWriter(path, fps, codec=codec, color=color, preset="ultrafast") as writer:
        for i in range(12):
            writer.write(mg.frame_image(i, *size))
    v = probe(path).video
    assert v is not None
    assert (v.fps, v.is_vfr, v.frame_count, v.pix_fmt) == (fps, False, 12, pix_fmt)
    assert (v.width, v.height) == size
    assert v.color == color
    with VideoReader(path) as reader:
        assert [mg.read_index(f.image) for f in reader] == list(range(12))
    assert sorted(p.name for p in gen.glob(f".w_{codec}*")) == []  # no temporary left


def test_writer_keeps_nothing_on_error_and_never_overwrites_input(gen: Path, clip2997: Path) -> None:
    out = gen / "broken.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, Fraction(25)) as writer:
        writer.write(mg.frame_image(0))
        raise RuntimeError("boom")
    assert not out.exists() and not list(gen.glob(".broken*"))
    with pytest.raises(UsageError, match="overwrite an input"):  # a usage error (exit 2), not bad media
        VideoWriter(clip2997, Fraction(25), inputs=[clip2997])
    with pytest.raises(MediaError, match="odd"), VideoWriter(gen / "odd.mp4", Fraction(25)) as writer:
        writer.write(np.zeros((63, 96, 3), np.uint8))
    assert not (gen / "odd.mp4").exists()


def test_atomic_output_removes_temp_on_keyboard_interrupt(tmp_path: Path) -> None:
    target = tmp_path / "x.mp4"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp != target
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1



@pytest.mark.parametrize(("code", "words"), [(28, "No space left on device ("), (5, "Input/output error")])
def test_atomic_output_write_failure_names_the_output(tmp_path: Path, code: int, words: str) -> None:
    """Issue 14.4: an OSError that means the destination cannot take the output (disk full, I/O error) is a
    WriteError (exit 1) naming the output, not the hidden temporary file; nothing is left."""
    from lipsyncctl.errors import WriteError

    target = tmp_path / "sub" / "report.json"
    with pytest.raises(WriteError) as err, atomic_output(target) as tmp:
        tmp.write_bytes(b"x" * 3000)
        raise OSError(code, os.strerror(code), str(tmp))
    assert err.value.exit_code == 1 and str(err.value).startswith(f"{target}: cannot write it: {words}")
    assert ".part" not in str(err.value) and err.value.written == 3000 and err.value.errno == code
    if code == 28:
        assert "free there; 2.9 KiB had been written when it failed)" in str(err.value) and "free some space" in err.value.hint
    assert list(target.parent.iterdir()) == []
    with pytest.raises(ValueError), atomic_output(target) as tmp:  # other errors pass unchanged
        raise ValueError("boom")

# -- audio --------------------------------------------------------------------------------------

def test_read_audio_resamples_any_input(gen: Path, shared: Path) -> None:
    fixture = shared / "fixtures" / "demo1_video.mp4"
    mono = read_audio(fixture, 16000, 1)
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert abs(len(mono) - 10.008 * 16000) <= AAC_FRAME
    native = read_audio(fixture, None, None)
    assert native.shape[1] == 2 and abs(len(native) - 441353) <= AAC_FRAME
    cut = read_audio(fixture, 16000, 1, start=2.0, duration=1.5)
    assert len(cut) == 24000
    np.testing.assert_allclose(cut, mono[32000:56000], atol=0.02)  # aligned to the same instant
    wav = mg.make_wav(gen / "s48.wav", 0.5, rate=48000, channels=2)
    up = read_audio(wav, 44100, 2)
    assert up.shape == (22050, 2)
    # channel 1 is twice the frequency of channel 0: zero crossings double
    crossings = [(np.diff(np.sign(up[100:-100, c])) != 0).sum() for c in range(2)]
    assert crossings[1] == pytest.approx(2 * crossings[0], rel=0.05)



def _m4a(path: Path, seconds: float, rate: int) -> Path:
    """An AAC .m4a of exactly ``seconds`` (a tone) written by PyAV: its last frame is padded to 1024 samples."""
    import av

    x = mg.tone(seconds, rate, 1)[:, 0]
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate, layout="mono")
        for i in range(0, len(x), 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, i:i + 4096]), format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, i
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return path


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_aac_m4a_length_is_exact(gen: Path, rate: int) -> None:
    """Issue 14.5: a 2.000 s m4a dub decoded to 2.005333 s at 48 kHz (the encoder's end padding) and planned
    51 frames at 25 fps; the edit list's length is used, so it is 2.000 s, 50 frames."""
    from lipsyncctl.media.audio import audio_length
    from lipsyncctl.pipeline.plan import plan_clip

    m4a = _m4a(gen / f"two_{rate}.m4a", 2.0, rate)
    assert audio_length(m4a) == (2 * rate, rate)
    assert len(read_audio(m4a, None, None)) == 2 * rate and len(read_audio(m4a, 16000, 1)) == 32000
    assert len(read_audio(m4a, None, None, start=1.5)) == rate // 2
    plan = plan_clip(100, Fraction(25), *audio_length(m4a))
    assert plan.num_frames == 50 and plan.audio_seconds == 2.0
    video = mg.make_clip(gen / f"v{rate}.mp4", frames=75, audio_rate=None)  # 3 s of picture
    muxed = mux_audio(video, m4a, gen / f"muxed_{rate}.mp4")
    assert audio_length(muxed)[0] == 2 * rate  # the padding is not carried into an output either

@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("ext", [".mp4", ".mov"])
def test_aac_in_mp4_and_mov_lasts_frames_over_fps_at_ntsc_rates(gen: Path, rate: int, ext: str) -> None:
    """83 frames at 59.94 fps: the sound decoded 61034 samples at 44.1 kHz (32 short of frames / fps) and 66480 at 48
    kHz (14 long), the edit lists counted in milliseconds; in the sound's rate they are exact, also once the file is
    rewritten with a timecode (a timeline's shot)."""
    from lipsyncctl.media.audio import audio_length
    from lipsyncctl.media.mux import stamp_timecode

    ntsc = Fraction(60000, 1001)
    video = mg.make_clip(gen / "ntsc5994.mp4", frames=83, fps=ntsc, audio_rate=None)
    out = mux_audio(video, mg.tone(1.5, rate, 2), gen / f"ntsc_{rate}{ext}", rate=rate,
                    duration=Fraction(83) / ntsc, pad=True)
    exact = round(Fraction(83) / ntsc * rate)
    assert audio_length(out) == (exact, rate)
    assert audio_length(stamp_timecode(out, "01:00:00;00")) == (exact, rate)
    import av

    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 83


def test_a_dub_cut_short_is_bad_media_not_a_shorter_dub(gen: Path, tmp_path: Path) -> None:
    """A WAV or FLAC whose copy was cut off decoded what was there, in silence: the clip was rendered to the shorter
    sound, exit 0. Its header says how long it is: exit 5 naming both lengths. A WAV written to a pipe (no size stated)
    and whole files read as before."""
    import av

    wav = write_wav(tmp_path / "whole.wav", mg.tone(2.0, 16000, 1)[:, 0], 16000)
    flac = tmp_path / "whole.flac"
    with av.open(str(wav)) as src, av.open(str(flac), "w") as dst:
        out = dst.add_stream("flac", rate=16000, layout="mono")
        for frame in src.decode(audio=0):
            frame.pts = None
            for packet in out.encode(frame):
                dst.mux(packet)
        for packet in out.encode(None):
            dst.mux(packet)
    for whole in (wav, flac):
        assert len(read_audio(whole, None, None)) == 32000
        cut = tmp_path / f"cut{whole.suffix}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
        with pytest.raises(MediaError, match=r"cut\.\w+: the file is cut short: its sound ends at \d\.\d+ s, its "
                                             r"header says 2\.000 s") as err:
            read_audio(cut, None, None)
        assert err.value.exit_code == 5 and "copy or export the file again" in err.value.hint
    piped = bytearray(wav.read_bytes())
    at = piped.index(b"data") + 4
    piped[at:at + 4] = b"\xff\xff\xff\xff"  # what a writer that cannot seek back states
    (tmp_path / "piped.wav").write_bytes(piped)
    assert len(read_audio(tmp_path / "piped.wav", None, None)) == 32000


def test_read_audio_without_audio_stream(gen: Path) -> None:
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(mg.make_clip(gen / "silent.mp4", audio_rate=None, frames=3), 16000, 1)


def test_write_wav_roundtrip(tmp_path: Path) -> None:
    x = mg.tone(0.25, 16000, 1)[:, 0]
    path = write_wav(tmp_path / "t.wav", x, 16000)
    y = read_audio(path, 16000, 1)
    assert len(y) == len(x)
    np.testing.assert_allclose(y, x, atol=1e-4)


# -- mux ----------------------------------------------------------------------------------------

def test_mux_array_and_file(gen: Path) -> None:
    video = mg.make_clip(gen / "v.mp4", frames=25, audio_rate=None)
    out = mux_audio(video, mg.tone(1.0, 16000, 1)[:, 0], gen / "muxed.mp4", rate=16000)
    info = probe(out)
    assert info.video is not None and info.video.frame_count == 25 and info.video.codec == "h264"
    (a,) = info.audio
    assert (a.codec, a.sample_rate, a.channels) == ("aac", 16000, 1)
    assert a.duration == pytest.approx(1.0, abs=AAC_FRAME / 16000)
    # a file's audio keeps its own rate and channels
    wav = mg.make_wav(gen / "w48.wav", 1.0, rate=48000, channels=2)
    out2 = mux_audio(video, wav, gen / "muxed.mov", codec="pcm")
    (b,) = probe(out2).audio
    assert (b.codec, b.sample_rate, b.channels) == ("pcm_s16le", 48000, 2)
    assert b.duration == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(MediaError, match="PCM"):
        mux_audio(video, wav, gen / "pcm.mp4", codec="pcm")
    with pytest.raises(UsageError, match="overwrite"):  # an input is never an output: usage error (exit 2)
        mux_audio(video, wav, video)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_an_mxf_gets_48_khz_pcm_and_its_edit_rate(gen: Path, rate: int) -> None:
    """DNxHR in MXF (OP1a): FFmpeg's MXF writer takes its edit rate from the copied stream's frame rate (it refused
    the copy: "Unsupported frame rate 0/0") and holds PCM at 48 kHz only (any other rate failed, "Operation not
    permitted"): a 44.1 kHz dub is resampled to 48 kHz, its length kept; AAC is refused by name."""
    video = gen / f"dnxhr_{rate}.mxf"
    with VideoWriter(video, 25, codec="dnxhr") as writer:
        for i in range(10):
            writer.write(mg.frame_image(i, 256, 144))
    wav = mg.make_wav(gen / f"w{rate}.wav", 0.4, rate=rate, channels=2)
    out = mux_audio(video, wav, gen / f"muxed_{rate}.mxf", codec="pcm24", timecode="10:00:00:00")
    info = probe(out)
    assert info.format_name == "mxf" and info.video is not None and info.video.frame_count == 10
    assert (info.video.nominal_fps, info.timecode) == (25, "10:00:00:00")
    (a,) = info.audio
    assert (a.codec, a.sample_rate, a.channels) == ("pcm_s24le", 48000, 2)
    assert a.duration == pytest.approx(0.4, abs=1e-3)
    with pytest.raises(MediaError, match="MXF holds PCM audio only"):
        mux_audio(video, wav, gen / "aac.mxf", codec="aac")


def test_streamed_audio_equals_the_whole_read(gen: Path) -> None:
    """iter_audio's chunks (a decoder frame each) join to read_audio's samples, from a start, cut to a duration or
    padded; spool_audio maps the same samples from an unnamed file; write_wav and mux_audio take the chunks
    and write what the array gives, byte for byte."""
    from lipsyncctl.media.audio import iter_audio, reblock, spool_audio

    src = mg.make_clip(gen / "speech.mkv", frames=50, audio_rate=44100, audio_channels=2)  # 2 s of AAC
    whole = read_audio(src, 16000, 2, start=0.3, duration=1.2)
    chunks = list(iter_audio(src, 16000, 2, start=0.3, duration=1.2))
    assert len(chunks) > 10 and max(len(c) for c in chunks) <= 2048 and all(c.shape[1] == 2 for c in chunks)
    assert np.array_equal(np.concatenate(chunks), whole) and len(whole) == 19200
    padded = np.concatenate(list(iter_audio(src, 16000, 1, start=1.5, duration=1.0, pad=True)))
    assert padded.shape == (16000, 1) and padded[9000:].any() == False and padded[:7000].any()  # noqa: E712
    assert [len(b) for b in reblock(chunks, 5000)] == [5000, 5000, 5000, 4200]
    assert np.array_equal(np.concatenate(list(reblock(chunks, 5000))), whole)

    mapped, rate = spool_audio(src, folder=gen / "spool")
    assert isinstance(mapped, np.memmap) and rate == 44100 and not any((gen / "spool").iterdir())  # no name
    assert np.array_equal(mapped, read_audio(src, 44100, 2))

    a = write_wav(gen / "whole.wav", whole, 16000)
    b = write_wav(gen / "chunks.wav", iter_audio(src, 16000, 2, start=0.3, duration=1.2), 16000)
    assert a.read_bytes() == b.read_bytes()
    video = mg.make_clip(gen / "v2.mkv", frames=30, audio_rate=None)
    m1 = mux_audio(video, whole, gen / "m1.mkv", rate=16000)
    m2 = mux_audio(video, np.array_split(whole, 7), gen / "m2.mkv", rate=16000)
    assert m1.read_bytes() == m2.read_bytes()


def test_streamed_audio_memory_does_not_grow_with_its_length(gen: Path) -> None:
    """A minute of 48 kHz stereo (23 MB as float32) written to WAV and muxed from iter_audio's chunks, and
    spooled to disk: Python-side allocations peak far below the sound's size."""
    import tracemalloc

    from lipsyncctl.media.audio import iter_audio, spool_audio

    wav = write_wav(gen / "minute.wav", (mg.tone(2.0, 48000, 2) for _ in range(30)), 48000)
    video = mg.make_clip(gen / "v3.mkv", frames=25, audio_rate=None)
    size = 60 * 48000 * 2 * 4
    tracemalloc.start()
    try:
        write_wav(gen / "copy.wav", iter_audio(wav, 48000, 2), 48000)
        mux_audio(video, iter_audio(wav, 48000, 2), gen / "long.mkv", rate=48000, codec="pcm")
        mapped, _ = spool_audio(wav, folder=gen)
        assert mapped.shape == (60 * 48000, 2)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        read_audio(wav, 48000, 2)  # the measure sees numpy's buffers: reading it whole costs its size
        whole_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size / 10 < size <= whole_peak, f"{peak / 1e6:.1f} MB for {size / 1e6:.0f} MB of sound"


def test_mux_resamples_what_the_encoder_cannot_hold_and_cuts_at_an_exact_sample(gen: Path) -> None:
    """AAC holds at most 96 kHz: a 192 kHz dub is encoded at 96 kHz (PCM keeps it); a Fraction duration cuts at
    round(duration * rate) exactly (a float's rounding was one sample off at some rates and lengths)."""
    from lipsyncctl.media.audio import audio_length
    from lipsyncctl.media.mux import encodable_rate

    assert (encodable_rate("aac", 192000), encodable_rate("aac", 48000), encodable_rate("aac", 37800)) == \
        (96000, 48000, 44100)
    assert encodable_rate("pcm_s24le", 192000) == 192000
    video = mg.make_clip(gen / "v4.mkv", frames=5, audio_rate=None)
    hi = mux_audio(video, mg.tone(0.2, 192000, 2), gen / "hi.mp4", rate=192000)
    (a,) = probe(hi).audio
    assert a.sample_rate == 96000 and a.duration == pytest.approx(0.2, abs=AAC_FRAME / 96000 + 1e-3)
    assert probe(mux_audio(video, mg.tone(0.2, 192000, 2), gen / "hi.mkv", rate=192000, codec="pcm24")
                 ).audio[0].sample_rate == 192000
    ntsc = Fraction(30000, 1001)
    exact = Fraction(2100) / ntsc  # 70.07 s: 2100 * 22050 / ntsc is a tie, rounded to even
    out = mux_audio(video, np.zeros(100, np.float32), gen / "exact.mkv", rate=22050, codec="pcm",
                    duration=exact, pad=True)
    assert audio_length(out) == (round(exact * 22050), 22050) != (int(round(float(exact) * 22050)), 22050)


# -- ffmpeg discovery ---------------------------------------------------------------------------

def _fake_ffmpeg(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "ffmpeg"
    exe.write_text("#!/bin/sh\necho 'ffmpeg version 9.9-fake'\necho ' V....D libx264  fake'\n"
                   "echo ' A....D aac  fake'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_find_ffmpeg_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_ffmpeg(tmp_path / "bin")
    monkeypatch.setenv("LIPSYNCCTL_FFMPEG", str(fake))
    assert ffmpeg.find_ffmpeg() == (fake, "LIPSYNCCTL_FFMPEG")
    assert ffmpeg.ffmpeg_version(fake) == "9.9-fake"
    assert ffmpeg.list_encoders(fake) == {"libx264": True, "aac": True, "libx265": False, "prores_ks": False,
                                          "dnxhd": False, "ffv1": False}
    monkeypatch.setenv("LIPSYNCCTL_FFMPEG", str(tmp_path / "nope"))
    with pytest.raises(MissingToolError):
        ffmpeg.find_ffmpeg()
    monkeypatch.delenv("LIPSYNCCTL_FFMPEG")
    monkeypatch.setenv("PATH", str(fake.parent))
    assert ffmpeg.find_ffmpeg() == (fake, "PATH")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    path, source = ffmpeg.find_ffmpeg()
    assert source == "imageio-ffmpeg" and os.access(path, os.X_OK)


def test_bundled_ffmpeg_encoders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIPSYNCCTL_FFMPEG", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    info = ffmpeg.ffmpeg_info()
    assert info.source == "imageio-ffmpeg"
    assert info.encoders["libx264"] and info.encoders["aac"]
    assert ffmpeg.pyav_encoders()["libx264"]


def test_the_same_frames_give_the_same_prores_bytes(tmp_path: Path) -> None:
    """8-bit RGB into 10-bit ProRes: swscale's sliced conversion (PyAV >= 17 slices over every CPU) put a few wrong
    samples at slice edges, differently on every call, at this size; one thread (SWS_THREADS) is exact."""
    import hashlib

    from tests.sync_media import sample_frames

    frames = sample_frames(3, scale=0.4)  # 216x384, a size that showed it
    digests = set()
    for i in range(5):
        path = tmp_path / f"p{i}.mov"
        with VideoWriter(path, 25, codec="prores", threads=4) as writer:
            for frame in frames:
                writer.write(frame)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1


@pytest.mark.parametrize(("codec", "ext", "order", "kept"), [
    ("h264", ".mp4", "tt", "tt"), ("h264", ".mov", "bb", "bb"), ("h264", ".mkv", "tt", "tt"),
    ("prores", ".mov", "tt", "tt"), ("prores", ".mov", "bb", "bb"), ("prores", ".mkv", "bb", "bb"),
    ("prores", ".mov", "tb", "tb"), ("prores", ".mov", "bt", "bt"),
    ("ffv1", ".mkv", "bb", "bb"),
    ("h265", ".mp4", "tt", None), ("dnxhr", ".mov", "tt", None), ("h264", ".mp4", "interlaced", None),
    ("h264", ".mp4", "progressive", None)])
def test_an_interlaced_order_is_written_where_the_codec_can(gen: Path, codec: str, ext: str, order: str,
                                                           kept: str | None) -> None:
    """A 1080i master comes back interlaced in its field order (the container's tag and every frame coded so); H.265
    and DNxHR stay progressive, as does an order the source does not say."""
    import av

    from lipsyncctl.media.writer import keeps_fields

    size = (256, 144)
    path = gen / f"f_{codec}_{order}{ext}"
    with VideoWriter(path, 25, codec=codec, preset="ultrafast", field_order=order) as writer:
        for i in range(6):
            writer.write(mg.frame_image(i, *size))
    assert writer.field_order == kept and keeps_fields(codec, order) == (kept is not None)
    v = probe(path).video
    assert v is not None and v.field_order in ((kept,) if kept else (None, "progressive"))
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert [f.interlaced_frame for f in frames] == [kept is not None] * 6
    assert [mg.read_index(f.to_ndarray(format="rgb24")) for f in frames] == list(range(6))
    if codec == "prores":  # the bitstream's own frame header: 1 top field first, 2 bottom field first
        with av.open(str(path)) as c:
            header = bytes(next(c.demux(video=0)))
        assert header[4:8] == b"icpf" and (header[20] >> 2) & 3 == {"tt": 1, "bb": 2, "tb": 2, "bt": 1}[order]
        # the words a run says: the field shown first (tb: top coded first, bottom shown first, as FFmpeg flags it)
        shown = {"tt": "top", "bb": "bottom", "tb": "bottom", "bt": "top"}[order]
        assert v.fields.startswith(f"interlaced, {shown} field first")


def test_flagged_fields_keep_every_sample_and_merge_with_x264_parameters(gen: Path) -> None:
    """Flagging the fields (FFmpeg's setfield) changes no pixel: FFV1 gives back the very frames; a user's own
    x264-params are kept beside the field order."""
    frames = [mg.frame_image(i, 96, 64) for i in range(4)]
    path = gen / "fields.mkv"
    with VideoWriter(path, 25, codec="ffv1", pix_fmt="bgr0", field_order="tt") as writer:
        for f in frames:
            writer.write(f)
    with VideoReader(path) as reader:
        assert all(np.array_equal(a.image, b) for a, b in zip(reader, frames, strict=True))
    writer = VideoWriter(gen / "x.mp4", 25, field_order="bb", options={"x264-params": "keyint=5"})
    assert writer._options["x264-params"] == "keyint=5:bff=1"
    writer.abort()


HDR10 = ColorInfo("bt2020", "smpte2084", "bt2020nc", "tv",
                  "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)", "1000,400")


@pytest.mark.parametrize(("codec", "ext", "options", "kept"), [
    ("h264", ".mp4", None, True), ("h265", ".mkv", None, True), ("h265", ".mov", {"x265-params": "aq-mode=1"}, True),
    ("prores", ".mov", None, False), ("ffv1", ".mkv", None, False)])
def test_hdr10_metadata_is_written_where_the_codec_can(gen: Path, codec: str, ext: str,
                                                       options: dict[str, str] | None, kept: bool) -> None:
    """A HDR10 source's mastering display and content light level come back in an H.264/H.265 output (their SEI,
    beside any parameters of the caller's own), with its colour tags; ProRes and FFV1 keep the tags only (their
    metadata would be MOV/MKV boxes, made from stream side data PyAV cannot set)."""
    from lipsyncctl.media.writer import keeps_hdr10

    path = gen / f"hdr10_{codec}{ext}"
    pix_fmt = "yuv420p10le" if codec in ("h264", "h265") else None
    with VideoWriter(path, 25, codec=codec, pix_fmt=pix_fmt, color=HDR10, preset="ultrafast", options=options) as w:
        for i in range(3):
            w.write(np.full((64, 64, 3), 60 * i, np.uint8))
    color = probe(path).video.color  # type: ignore[union-attr]
    assert keeps_hdr10(codec) == kept
    assert (color.primaries, color.transfer) == ("bt2020", "smpte2084")
    assert (color.mastering, color.light_level) == ((HDR10.mastering, HDR10.light_level) if kept else (None, None))


def test_the_mxf_rate_table_is_the_muxers(gen: Path) -> None:
    """Every rate of MXF_RATES is written by FFmpeg's MXF writer; one outside it (12, 15, 240 fps failed at the first
    frame, "Invalid argument") is refused when the writer is made, before any file exists."""
    from lipsyncctl.media.rates import MXF_RATES, STANDARD_RATES

    for fps in sorted(MXF_RATES):
        path = gen / f"rate_{fps.numerator}_{fps.denominator}.mxf"
        with VideoWriter(path, fps, codec="dnxhr") as writer:
            writer.write(mg.frame_image(0, 256, 144))
        assert probe(path).video.nominal_fps == fps  # type: ignore[union-attr]
    assert set(STANDARD_RATES) - MXF_RATES == {Fraction(240)}
    for fps in (Fraction(15), Fraction(240)):
        with pytest.raises(MediaError, match="an MXF cannot hold"):
            VideoWriter(gen / "odd.mxf", fps, codec="dnxhr")
    assert not list(gen.glob("*odd*"))


def test_a_long_sound_read_with_a_folder_is_mapped_from_it(gen: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_audio with a folder holds up to SPILL_SAMPLES samples in memory and moves a longer sound, as it is
    decoded, into an unnamed file there, mapped: the same samples (a span, mono or stereo), nothing left in the
    folder, and Python-side allocations far below the sound's size (a film's dub for sync, a film for score)."""
    import tracemalloc

    from lipsyncctl.media import audio as audio_module
    from lipsyncctl.media.audio import gather_samples, read_audio_and_length

    src = mg.make_clip(gen / "speech.mkv", frames=50, audio_rate=44100, audio_channels=2)
    spool = gen / "spool"
    short = read_audio(src, 16000, 1, folder=spool)  # under SPILL_SAMPLES: in memory as before
    assert not isinstance(short, np.memmap) and np.array_equal(short, read_audio(src, 16000, 1))
    monkeypatch.setattr(audio_module, "SPILL_SAMPLES", 3000)
    for channels, kw in ((1, {}), (2, {"start": 0.3, "duration": 1.2})):
        mapped = read_audio(src, 16000, channels, folder=spool, **kw)
        assert isinstance(mapped, np.memmap)
        assert np.array_equal(mapped, read_audio(src, 16000, channels, **kw)) and not any(spool.iterdir())
        assert mapped.ndim == (1 if channels == 1 else 2) and not mapped.flags.writeable
    samples, native, rate = read_audio_and_length(src, 16000, 1, folder=spool)
    assert (native, rate) == audio_module.audio_length(src) and np.array_equal(samples, short)
    assert gather_samples(iter([]), keep=0).shape == (0, 1)

    wav = write_wav(gen / "minute.wav", (mg.tone(2.0, 16000, 1) for _ in range(30)), 16000)
    monkeypatch.setattr(audio_module, "SPILL_SAMPLES", 16000)
    tracemalloc.start()
    try:
        long = read_audio(wav, 16000, 1, folder=spool)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = 60 * 16000 * 4
    assert len(long) == 60 * 16000 and peak < size / 5, f"{peak / 1e6:.1f} MB for {size / 1e6:.1f} MB of sound"


def test_a_full_disk_under_a_scratch_file_is_a_write_error(gen: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No room for a long sound's unnamed file: a WriteError (exit 1) naming the folder and the free space, not an
    OSError; scratch_samples reserves its room first (a mapping written on a full disk would crash with SIGBUS)."""
    import errno
    import os

    from lipsyncctl.errors import WriteError
    from lipsyncctl.media import audio as audio_module
    from lipsyncctl.media.audio import gather_samples, scratch_samples

    class Full:
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def tell(self) -> int:
            return 8192

        def close(self) -> None:
            pass

    chunks = [np.zeros((1000, 1), np.float32)] * 3
    monkeypatch.setattr(audio_module, "_unnamed_file", lambda folder: Full())
    with pytest.raises(WriteError, match=f"{gen}: cannot write a scratch file of a long sound .*No space left.* "
                                         r"free there; 8.0 KiB had been written") as info:
        gather_samples(iter(chunks), folder=gen, keep=1500)
    assert info.value.exit_code == 1 and "or write the output elsewhere" in info.value.hint
    monkeypatch.undo()

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(WriteError, match=r"it needs about 3.7 MiB") as info:
        scratch_samples(480000, 2, folder=None)
    assert "TMPDIR" in info.value.hint
    monkeypatch.undo()
    mix = scratch_samples(1000, 2, folder=gen / "scratch")
    assert mix.shape == (1000, 2) and not mix.any() and not any((gen / "scratch").iterdir())


@pytest.mark.parametrize("ext", ["png", "tif", "dpx"])
def test_an_image_sequence_is_written_frame_for_frame_and_reads_back(tmp_path: Path, ext: str) -> None:
    """``shot.%04d.EXT`` is one image a frame from ``start_number``, moved into place only when complete (a hidden
    folder meanwhile, with no ``%`` in its name: FFmpeg reads one anywhere in the path as the frame's place); 8-bit
    RGB comes back exactly (DPX: 10-bit RGB, the 8-bit values scaled and back). TIFF read back is the check of a
    TIFF input too (its side data crashed the probe)."""
    from lipsyncctl.media.container import sequence_files
    from lipsyncctl.media.reader import read_range

    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (20, 14, 3), dtype=np.uint8) for _ in range(3)]
    out = tmp_path / f"shot.%04d.{ext}"
    with VideoWriter(out, Fraction(24), start_number=1001) as writer:
        for k, rgb in enumerate(frames):
            writer.write(rgb)
            assert not sequence_files(out) and (k == 0 or len(list(tmp_path.iterdir())) == 1)
    assert [p.name for p in sequence_files(out)] == [f"shot.{n}.{ext}" for n in (1001, 1002, 1003)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"shot.{n}.{ext}" for n in (1001, 1002, 1003)]
    assert all(np.array_equal(a, b) for a, b in zip(read_range(out, 0, 3, Fraction(24)), frames, strict=True))


def test_a_failed_image_sequence_leaves_nothing_and_a_bad_format_is_refused(tmp_path: Path) -> None:
    from lipsyncctl import config as cfg
    from lipsyncctl.pipeline.output import check_output

    (tmp_path / "shot.0001.png").write_bytes(b"an older take")
    with pytest.raises(KeyboardInterrupt), VideoWriter(tmp_path / "shot.%04d.png", Fraction(25)) as writer:
        writer.write(np.zeros((8, 8, 3), np.uint8))
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["shot.0001.png"]
    assert (tmp_path / "shot.0001.png").read_bytes() == b"an older take"
    options = cfg.resolve("tiny").output
    for name, said in (("plate.%04d.exr", "scene-linear"), ("plate.%04d.jpg", "lossy"), ("plate.%04d.mp4", "")):
        with pytest.raises(UsageError, match=f"not written as .*{said}") as info:
            check_output(tmp_path / name, options)
        assert ".png, .tif, .tiff, .dpx" in info.value.hint
    check_output(tmp_path / "plate.%04d.dpx", options)  # h264 is the video codec: an image sequence is its format's


def test_an_output_without_a_video_extension_is_a_usage_error(tmp_path: Path) -> None:
    """``-o newdir/`` (a folder meant: Path drops the slash), ``-o out`` or ``-o x.txt``: the name is wrong (2), not
    the configuration (3, kept for a codec its container cannot hold)."""
    from lipsyncctl import config as cfg
    from lipsyncctl.errors import ConfigError
    from lipsyncctl.pipeline.output import check_output

    options = cfg.resolve("tiny").output
    with pytest.raises(UsageError, match="newdir: no file extension") as info:
        check_output(tmp_path / "newdir", options)
    assert f"{tmp_path / 'newdir.mp4'} or {tmp_path / 'newdir' / 'out.mp4'}" in info.value.hint
    with pytest.raises(UsageError, match="'.txt' is not a video file extension written") as info:
        check_output(tmp_path / "x.txt", options)
    assert ".mov, .mp4" in info.value.hint and "'shot.%04d.png'" in info.value.hint
    with pytest.raises(ConfigError, match="h264 cannot be stored in a '.mxf' file"):
        check_output(tmp_path / "x.mxf", options)


def test_an_image_sequence_output_that_names_an_inputs_files_is_refused(tmp_path: Path) -> None:
    from lipsyncctl.media.atomic import check_not_input

    for n in (1001, 1002):
        (tmp_path / f"shot.{n}.png").write_bytes(b"plate")
    for output in ("shot.%04d.png", "shot.%d.png"):
        with pytest.raises(UsageError, match="refusing to overwrite an input"):
            check_not_input(tmp_path / output, [tmp_path / "shot.%04d.png"])
    with pytest.raises(UsageError):
        check_not_input(tmp_path / "shot.%d.png", [tmp_path / "shot.1002.png"])
    check_not_input(tmp_path / "out.%04d.png", [tmp_path / "shot.%04d.png"])
    check_not_input(tmp_path / "out.mov", [tmp_path / "shot.%04d.png"])
    with pytest.raises(UsageError):  # a file output that is a frame of an input sequence (found by name, no listing)
        check_not_input(tmp_path / "sub" / ".." / "shot.1001.png", [tmp_path / "shot.%04d.png"])
    check_not_input(tmp_path / "shot.1003.png", [tmp_path / "shot.%04d.png"])  # no such frame: nothing overwritten


def test_an_image_sequence_runs_past_9999_and_a_plain_number_is_not_a_padded_one(tmp_path: Path) -> None:
    """``%04d`` numbers past 9999 have five digits (FFmpeg's names: they were left in the hidden folder and lost);
    ``shot.%d.png`` is not ``shot.0001.png``, so replacing a ``%d`` take never removes a padded sequence's files."""
    from lipsyncctl.media.atomic import replace_sequence
    from lipsyncctl.media.container import sequence_numbers

    out = tmp_path / "a" / "shot.%04d.png"
    with VideoWriter(out, Fraction(25), start_number=9998) as writer:
        for _ in range(4):
            writer.write(np.zeros((8, 8, 3), np.uint8))
    assert sorted(p.name for p in out.parent.iterdir()) == [f"shot.{n}.png" for n in (10000, 10001, 9998, 9999)]
    assert sequence_numbers(out) == [9998, 9999, 10000, 10001]
    padded = [tmp_path / "b" / f"shot.000{n}.png" for n in (1, 2)]
    padded[0].parent.mkdir()
    for p in padded:
        p.write_bytes(b"another take")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "shot.1.png").write_bytes(b"new")
    replace_sequence(tmp_path / "new" / "shot.%d.png", tmp_path / "b" / "shot.%d.png")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["shot.0001.png", "shot.0002.png", "shot.1.png"]


def test_the_deep_rgb_formats_and_what_an_image_sequence_is_written_in() -> None:
    """Deep RGB (more than 8 bits, integer, no alpha) is what the splice keeps; an image sequence is written in a deep
    plate's own format where its encoder takes it, else that format's 16-bit RGB; 8-bit sources as the format's own
    (a PNG into DPX stays 10-bit)."""
    from lipsyncctl.media.splice import deep_rgb
    from lipsyncctl.media.writer import sequence_pix_fmt

    assert [deep_rgb(f) for f in ("gbrp10le", "gbrp12be", "rgb48be", "bgr48le", "gbrp", "bgr0", "rgb24", "x2rgb10le",
                                   "gbrpf16le", "gbrap16le", "gbrp10msble")] == [True] * 4 + [False] * 7
    table = {src: [sequence_pix_fmt(f"x.%04d.{ext}", src) for ext in ("png", "tif", "dpx")]
             for src in ("rgb24", "rgb48be", "gbrp12le", "yuv422p10le", None)}
    assert table == {"rgb24": ["rgb24", "rgb24", "gbrp10le"], "rgb48be": ["rgb48be", "rgb48le", "rgb48be"],
                     "gbrp12le": ["rgb48be", "rgb48le", "gbrp12le"], "yuv422p10le": ["rgb48be", "rgb48le", "gbrp10le"],
                     None: ["rgb24", "rgb24", "gbrp10le"]}


def test_an_image_sequence_whose_name_holds_glob_characters_is_found(tmp_path: Path) -> None:
    from lipsyncctl.media.container import sequence_numbers

    for n in (1, 2):
        (tmp_path / f"shot[v2]*.{n:04d}.png").write_bytes(b"x")
    assert sequence_numbers(tmp_path / "shot[v2]*.%04d.png") == [1, 2]


def test_an_image_sequence_output_of_an_interlaced_source_is_said_to_be_progressive() -> None:
    from lipsyncctl import config as cfg
    from lipsyncctl.pipeline.output import interlace_warning

    options = cfg.resolve("tiny").output  # h264, which keeps the fields in a video file
    assert "keeps the field order" in interlace_warning(options, "interlaced (top field first)", "tt")
    said = interlace_warning(options, "interlaced (top field first)", "tt", sequence=True)
    assert "an image sequence stores no field order" in said and "keeps the field order" not in said


def test_a_png_sequence_is_written_at_the_png_level_asked(tmp_path: Path) -> None:
    """``output.png_level``: the zlib level of a PNG image sequence (0 stores, 9 smallest): the same pixels at every
    level, the files smaller as the level rises (FFmpeg's own default, 6 through PyAV, is several times slower than 4
    on camera footage for files about 9% smaller)."""
    from PIL import Image

    from lipsyncctl.config import OutputOptions
    from lipsyncctl.pipeline.output import open_writer

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128]
    ramp = (100 + 60 * np.sin(x / 7.0) * np.cos(y / 11.0)).astype(np.uint8)[..., None].repeat(3, axis=2)
    picture = ramp + rng.integers(0, 4, ramp.shape, dtype=np.uint8)  # a fine grain on a smooth picture
    sizes, pixels = {}, {}
    for level in (0, 1, 4, 9):
        out = tmp_path / str(level) / "shot.%04d.png"
        with open_writer(out, Fraction(24), OutputOptions(png_level=level)) as writer:
            writer.write(picture)
        written = out.parent / "shot.0001.png"
        sizes[level], pixels[level] = written.stat().st_size, np.asarray(Image.open(written).convert("RGB"))
    assert all(np.array_equal(p, picture) for p in pixels.values())
    assert sizes[0] > sizes[1] > sizes[4] and sizes[1] > sizes[9], sizes
    assert sizes[0] >= picture.size  # stored


def test_the_space_an_output_needs_is_not_extrapolated_from_its_key_frame(tmp_path: Path) -> None:
    """A disk that fills within the first packets (a key frame, several times a later one): the estimate goes by the
    frames given to the encoder, not tenfold by the packets stored; from a second of packets on, by those; from the
    picture's own size once it is whole (the mux ran out)."""
    from lipsyncctl.errors import WriteError
    from lipsyncctl.media.atomic import space_needed

    exc = WriteError("full", written=160_000)
    assert space_needed(exc, None, (1, 30), 30) == 2 * 160_000  # was 2 * 160_000 * 30
    assert space_needed(exc, None, (50, 93), 300, copies=1) == 160_000 * 300 // 50
    picture = tmp_path / "video.mp4"
    picture.write_bytes(b"x" * 244_000)
    assert space_needed(exc, picture, (30, 30), 30) == 2 * 244_000


@pytest.mark.parametrize(("pattern", "stem", "matte"), [
    ("shot.%04d.png", "shot", "shot.matte.%04d.png"),
    ("shot %04d.tif", "shot", "shot matte %04d.tif"),  # was "shot " (shot .run.yaml) and "shot matte.%04d.tif"
    ("shot_%04d.dpx", "shot", "shot_matte_%04d.dpx"),
    ("%04d.png", "", "matte.%04d.png"),
    ("a.b-%d.png", "a.b", "a.b-matte-%d.png"),
])
def test_an_image_sequence_s_record_and_matte_keep_its_separator(pattern: str, stem: str, matte: str) -> None:
    from lipsyncctl.media.container import sequence_stem, sequence_tagged
    from lipsyncctl.pipeline.output import matte_path, run_yaml_path

    assert sequence_stem(pattern) == stem and sequence_tagged(pattern, "matte") == Path(matte)
    assert matte_path(Path(pattern)) == Path(matte)
    assert run_yaml_path(Path(pattern)) == Path(f"{stem}.run.yaml" if stem else "run.yaml")


@pytest.mark.parametrize("fmt", ["yuv422p10le", "yuv420p10le", "yuv444p10le", "yuv422p12le"])
def test_a_deep_frame_reads_as_its_8_bit_picture_not_two_levels_dark(fmt: str) -> None:
    """swscale's direct conversion of 10/12-bit 4:2:2 and 4:2:0 to 8-bit RGB read about two levels dark (every pixel:
    the networks' input, and the whole picture of an output written back from RGB, a quarter-turned iPhone ProRes
    clip); through 16-bit 4:4:4 it is unbiased, exact where the chroma subsampling keeps a pixel."""
    import av

    from lipsyncctl.media.reader import to_rgb24
    from tests.conftest import SHARED

    with av.open(str(SHARED / "fixtures" / "demo1_video.mp4")) as c:
        frame = next(c.decode(video=0))
    rgb = frame.to_ndarray(format="rgb24")
    assert np.array_equal(to_rgb24(frame), rgb)  # 8-bit: as swscale converts it
    deep = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt, dst_colorspace="itu709",
                                                                     dst_color_range="MPEG")
    deep.colorspace, deep.color_range = 1, 1
    back = to_rgb24(deep).astype(int)
    assert abs((back - rgb).mean()) < 0.05 and (back == rgb).mean() > 0.85
