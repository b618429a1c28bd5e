"""media.probe on the shared HEVC fixture and on clips generated here (odd/variable rates, rotation,
ProRes/MJPEG/HEVC, image sequences, broken files)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from lipsyncctl.errors import MediaError
from lipsyncctl.media.probe import probe, snap_rate
from tests import mediagen as mg


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe")


def test_fixture_hevc(shared: Path) -> None:
    info = probe(shared / "fixtures" / "demo1_video.mp4")
    v = info.video
    assert v is not None
    assert (v.codec, v.width, v.height, v.pix_fmt) == ("hevc", 1080, 1920, "yuv420p")
    assert v.fps == Fraction(25) and isinstance(v.fps, Fraction)
    assert not v.is_vfr and v.frame_count == 250 and v.duration == pytest.approx(10.0)
    assert v.rotation == 0 and v.display_size == (1080, 1920)
    assert (v.color.primaries, v.color.transfer, v.color.matrix, v.color.range) == ("bt709",) * 3 + ("tv",)
    (a,) = info.audio
    assert (a.codec, a.sample_rate, a.channels) == ("aac", 44100, 2)
    assert a.duration == pytest.approx(10.0, abs=0.05)
    json.dumps(info.to_dict())  # JSON-friendly


@pytest.mark.parametrize(
    ("name", "fps", "frames", "kwargs"),
    [
        ("r23976.mp4", Fraction(24000, 1001), 24, {}),
        ("r2997.mkv", Fraction(30000, 1001), 30, {"time_base": Fraction(1, 1000)}),  # ms ticks: 33/34 ms
        ("r5994.mov", Fraction(60000, 1001), 30, {"audio_rate": 48000}),
        ("r50.mkv", Fraction(50), 20, {}),
    ],
)
def test_odd_rates_are_exact(gen: Path, name: str, fps: Fraction, frames: int, kwargs: dict) -> None:
    path = mg.make_clip(gen / name, fps=fps, frames=frames, **kwargs)
    v = probe(path).video
    assert v is not None
    assert v.fps == fps and v.nominal_fps == fps
    assert not v.is_vfr
    assert v.frame_count == frames
    assert v.duration == pytest.approx(float(frames / fps), abs=0.002)


def test_vfr_detected(gen: Path) -> None:
    times = mg.vfr_times(45, rate=30)
    v = probe(mg.make_clip(gen / "vfr.mp4", fps=30, times=times)).video
    assert v is not None and v.is_vfr
    assert v.frame_count == 45
    mean = 44 / (times[-1] - times[0])
    assert float(v.fps) == pytest.approx(mean, rel=0.01)  # the mean rate...
    assert v.nominal_fps in (Fraction(30), Fraction(30000, 1001))  # ...and the rate the camera aimed at


def test_a_cadence_of_two_spacings_is_read_at_the_shorter(gen: Path) -> None:
    """40 and 80 ms alternating (a 25 fps camera dropping every third frame): the nominal rate is 25, not the median
    spacing's 12.5, which dropped a source frame in three."""
    times = [i / 25 for i in range(45) if i % 3 != 1]
    v = probe(mg.make_clip(gen / "cadence.mp4", fps=25, times=times)).video
    assert v is not None and v.is_vfr and v.nominal_fps == 25
    assert float(v.fps) == pytest.approx((len(times) - 1) / times[-1], rel=0.01)  # the mean rate


def _nominal(deltas_s: list[float], tb: int = 90000) -> Fraction:
    """The nominal rate :func:`_rate_and_vfr` reads from frame spacings in seconds (a stream of no header rate)."""
    import types

    from lipsyncctl.media.probe import _rate_and_vfr

    stamps = [0]
    for d in deltas_s:
        stamps.append(stamps[-1] + round(d * tb))
    stream = types.SimpleNamespace(base_rate=None, average_rate=None, guessed_rate=None, time_base=Fraction(1, tb))
    return _rate_and_vfr(stamps, stream)[1]


def test_the_nominal_rate_of_variable_rate_cadences() -> None:
    """Jitter around one rate reads that rate (the median spacing); dropped frames read the camera's rate (the
    shortest usual spacing, not the median's 12.5 fps of 40/80 ms); a cadence that is neither (soft 3:2 pulldown)
    its mean rate. A rule of the shortest spacings alone read jittery 30 fps footage at 31-42 fps."""
    import numpy as np

    rng = np.random.default_rng(5)
    for sd, want in ((0.005, {Fraction(30), Fraction(30000, 1001)}), (0.008, {Fraction(30), Fraction(30000, 1001)})):
        jitter = list(np.clip(1 / 30 + rng.normal(0, sd, 600), 0.004, None))
        assert _nominal(jitter) in want, sd
    assert _nominal([1 / 25, 2 / 25] * 300) == 25  # a 25 fps camera dropping every third frame
    assert _nominal([1001 / 30000, 1001 / 20000] * 300) == Fraction(24000, 1001)  # soft pulldown: 23.976 content
    drops = [1 / 30 * (2 if k % 10 == 0 else 1) for k in range(600)]  # one frame in ten dropped
    assert _nominal(drops) == 30
    assert _nominal(list(np.clip(1001 / 30000 + rng.normal(0, 0.003, 600), 0.004, None))) == Fraction(30000, 1001)
    # near-duplicate frames a tick apart (a third of the spacings) are no rate: they read 90000 fps, and a 2 s clip
    # was planned as 180,000 frames
    assert _nominal([1 / 25, 1 / 25, 1 / 90000] * 200) == 25
    # ...and left out of the mean rate of a cadence; a high-speed capture's spacings are all that short: its rate
    assert _nominal([1001 / 30000, 1001 / 20000, 1 / 90000] * 200) == Fraction(24000, 1001)
    assert _nominal(list(1 / 480 + rng.normal(0, 0.0002, 600))) == pytest.approx(480, rel=0.02)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_tag(gen: Path, rotation: int) -> None:
    v = probe(mg.make_clip(gen / f"rot{rotation}.mp4", rotation=rotation, size=(96, 64), frames=3)).video
    assert v is not None and v.rotation == rotation
    stored = (64, 96) if rotation % 180 else (96, 64)
    assert (v.width, v.height) == stored
    assert v.display_size == (96, 64)


@pytest.mark.parametrize(("params", "order", "words"), [
    ("tff=1", "tt", "interlaced, top field first"), ("bff=1", "bb", "interlaced, bottom field first"),
    (None, "progressive", "progressive")])
def test_field_order(gen: Path, params: str | None, order: str, words: str) -> None:
    """1080i/SD broadcast masters: the field order a run warns about (sync, prep)."""
    path = mg.make_clip(gen / f"fields_{order}.mp4", frames=4, options={"x264-params": params} if params else None)
    v = probe(path).video
    assert v is not None and (v.field_order, v.interlaced, v.fields) == (order, order != "progressive", words)


#: an HDR10 grade's static metadata, as x265 and ffmpeg's -master_display write it (P3-D65 display, 1000 nits)
MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"


@pytest.mark.parametrize(("encoder", "params"), [
    ("libx265", f"master-display={MASTERING}:max-cll=1000,400:log-level=error"),
    ("libx264", f"mastering-display={MASTERING}:cll=1000,400")])
def test_hdr10_static_metadata(gen: Path, encoder: str, params: str) -> None:
    """A HDR10 master's mastering display and content light level (its SEI, as an encoder other than ours wrote it)
    are read in x265's notation, the numbers as written; a file without them has none."""
    import av
    import numpy as np

    path = gen / f"hdr_{encoder}.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream(encoder, rate=25, options={f"{encoder[3:]}-params": params})
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p10le"
        for i in range(2):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 60 * i, np.uint8), format="rgb24")
            f = f.reformat(format="yuv420p10le")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode())
    color = probe(path).video.color  # type: ignore[union-attr]
    assert (color.mastering, color.light_level, color.hdr10) == (MASTERING, "1000,400", True)
    plain = probe(mg.make_clip(gen / "sdr.mp4", frames=2)).video.color  # type: ignore[union-attr]
    assert (plain.mastering, plain.light_level, plain.hdr10) == (None, None, False)


def test_codecs_and_containers(gen: Path) -> None:
    prores = probe(mg.make_clip(gen / "p.mov", codec="prores_ks", pix_fmt="yuv422p10le", audio_codec="pcm_s16le",
                                frames=5, audio_rate=48000))
    assert prores.video is not None and prores.video.codec == "prores" and prores.video.pix_fmt == "yuv422p10le"
    assert (prores.audio[0].codec, prores.audio[0].sample_rate) == ("pcm_s16le", 48000)
    mjpeg = probe(mg.make_clip(gen / "m.avi", codec="mjpeg", pix_fmt="yuvj420p", frames=5, audio_rate=None))
    assert mjpeg.video is not None and mjpeg.video.codec == "mjpeg" and mjpeg.video.frame_count == 5
    assert not mjpeg.has_audio and mjpeg.video.color.range == "pc"
    hevc = probe(mg.make_clip(gen / "h.mp4", codec="libx265", frames=5, options={"x265-params": "log-level=error"}))
    assert hevc.video is not None and hevc.video.codec == "hevc" and hevc.video.fps == 25


def test_mpeg_ts_frames_are_counted(gen: Path) -> None:
    """MPEG-TS (broadcast .ts, camcorder .mts/.m2ts) has a duration but no frame count in its headers, and
    its index entries fill in only as a decoder seeks: the packets are counted (it read 1 frame before)."""
    info = probe(mg.make_clip(gen / "broadcast.ts", frames=50))
    assert info.video is not None and info.video.frame_count == 50
    assert info.video.duration == pytest.approx(2.0) and info.video.start_time > 0  # TS starts late


def test_a_dropped_frame_in_a_one_tick_per_frame_time_base_is_variable_rate(gen: Path) -> None:
    """AVI keeps 1/fps time bases: a gap of 2 ticks is a dropped frame. It was taken for jitter, and the clip
    for a constant 24.5 fps (prep --fps source then wrote 24.5 fps and dropped another frame)."""
    times = [i / 25 for i in range(50) if i != 25]
    v = probe(mg.make_clip(gen / "drop.avi", times=times, time_base=Fraction(1, 25), codec="mjpeg",
                           pix_fmt="yuvj420p", audio_rate=None)).video
    assert v is not None and v.is_vfr and v.nominal_fps == 25


def test_image_sequence(gen: Path) -> None:
    pattern = mg.make_image_sequence(gen / "seq", frames=7)
    info = probe(pattern, sequence_fps=Fraction(24000, 1001))
    assert info.is_image_sequence and info.video is not None
    assert info.video.frame_count == 7 and info.video.fps == Fraction(24000, 1001)
    assert (info.video.width, info.video.height) == (96, 64)
    # a missing number: FFmpeg's reader stops there, and the frames after it came back as the last one held
    holed = sorted(Path(pattern).parent.iterdir())
    holed[3].unlink()
    with pytest.raises(MediaError, match=r"1 frame missing from the image sequence .* \(the first: ") as info_:
        probe(pattern)
    assert "renumber" in info_.value.hint


def test_audio_only(gen: Path) -> None:
    info = probe(mg.make_wav(gen / "a.wav", 0.5, rate=48000, channels=2))
    assert info.video is None
    assert (info.audio[0].sample_rate, info.audio[0].channels) == (48000, 2)
    assert info.duration == pytest.approx(0.5, abs=1e-3)


def _broken(gen: Path) -> dict[str, Path]:
    good_mp4 = mg.make_clip(gen / "good.mp4", frames=50)
    good_mkv = mg.make_clip(gen / "good.mkv", frames=100)
    faststart = gen / "faststart.mp4"
    _remux(good_mp4, faststart, {"movflags": "faststart"})
    text = gen / "notes.mp4"
    text.write_text("not a video\n" * 50)
    return {
        "empty": mg.make_empty(gen / "empty.mp4"),
        "garbage": mg.make_garbage(gen / "garbage.mov"),
        "text": text,
        "truncated mp4 (moov at end)": mg.make_truncated(good_mp4, gen / "t1.mp4", 0.5),
        "truncated mp4 (faststart)": mg.make_truncated(faststart, gen / "t2.mp4", 0.6),
        "truncated mkv": mg.make_truncated(good_mkv, gen / "t3.mkv", 0.5),
        "missing": gen / "missing.mp4",
    }


def _remux(src: Path, dst: Path, options: dict[str, str]) -> None:
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", options=options) as o:
        outs = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.dts is not None:
                p.stream = outs[p.stream.index]
                o.mux(p)


def test_broken_files_raise_media_error_naming_the_file(gen: Path) -> None:
    for what, path in _broken(gen).items():
        with pytest.raises(MediaError) as info:
            probe(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message, what
        assert info.value.exit_code == 5


def test_snap_rate() -> None:
    assert snap_rate(Fraction(2997, 100)) == Fraction(30000, 1001)
    assert snap_rate(Fraction(25)) == 25
    assert snap_rate(Fraction(123, 10)) == Fraction(123, 10)


@pytest.mark.parametrize(("rate", "expected"), [
    (23.976, Fraction(24000, 1001)), (24000 / 1001, Fraction(24000, 1001)), (23.98, Fraction(24000, 1001)),
    (24.0, Fraction(24)), (29.97, Fraction(30000, 1001)), (47.952, Fraction(48000, 1001)),
    (59.94, Fraction(60000, 1001)), (100.0, Fraction(100)), (12.5, Fraction(25, 2)),
    (1 / 3, Fraction(1, 3)),
])
def test_one_rate_table_for_media_and_timelines(rate: float, expected: Fraction) -> None:
    """Probing, typed rates and OTIO's float rates on a timeline snap through the same function."""
    from lipsyncctl.media import probe as probe_module
    from lipsyncctl.media import rates
    from lipsyncctl.media import timecode as timebase

    assert probe_module.STANDARD_RATES is rates.STANDARD_RATES and probe_module.snap_rate is rates.snap_rate
    assert rates.snap_rate(rate) == expected
    assert timebase.exact_rate(rate) == expected
    assert timebase.exact_rate(Fraction(2997, 100)) == Fraction(2997, 100)  # a Fraction is taken as exact
