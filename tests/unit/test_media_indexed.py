"""Media-layer pieces the sync pipeline streams through: indexed reading on a CFR grid (seeks, VFR, past
the end), bit-exact RGB in FFV1 with RGB colour tags, audio padded with silence when muxing, exact sample
counts."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.media.audio import audio_length
from lipsyncctl.media.mux import mux_audio
from lipsyncctl.media.probe import ColorInfo, probe
from lipsyncctl.media.reader import IndexedReader, VideoReader, conform_cfr, index_runs
from lipsyncctl.media.writer import VideoWriter
from tests import mediagen as mg

NTSC = Fraction(30000, 1001)


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("indexed")


@pytest.fixture(scope="module")
def clip(gen: Path) -> Path:
    # keyframe every 10 frames, so reading back or far ahead needs a real seek
    return mg.make_clip(gen / "c.mp4", fps=NTSC, frames=60, audio_rate=None, options={"g": "10"})


def test_index_runs_split_on_gaps() -> None:
    assert index_runs([5, 3, 4, 40, 41, 3]) == [(3, 5), (40, 41)]
    assert index_runs([0, 30], max_gap=30) == [(0, 30)]
    assert index_runs([]) == []


def test_indexed_reader_forward_back_and_past_the_end(clip: Path) -> None:
    with IndexedReader(clip) as reader:
        assert reader.fps == NTSC and reader.size == (96, 64)
        got = [(i, mg.read_index(img)) for i, img in reader.range(0, 16)]
        assert got == [(i, i) for i in range(16)]
        # continue, re-read the last frame, go back (seek), jump ahead (seek)
        assert [mg.read_index(img) for _, img in reader.range(16, 20)] == [16, 17, 18, 19]
        assert [mg.read_index(img) for _, img in reader.range(19, 21)] == [19, 20]
        assert [mg.read_index(img) for _, img in reader.range(3, 6)] == [3, 4, 5]
        assert [mg.read_index(img) for _, img in reader.range(55, 58)] == [55, 56, 57]
        # past the end the last frame is held, so the count is always stop - first
        tail = list(reader.range(58, 64))
        assert [i for i, _ in tail] == list(range(58, 64))
        assert [mg.read_index(img) for _, img in tail] == [58, 59, 59, 59, 59, 59]
        # a ping-pong window in any order, repeats allowed
        frames = reader.read([59, 58, 57, 57, 58, 12, 11])
        assert {i: mg.read_index(img) for i, img in frames.items()} == {59: 59, 58: 58, 57: 57, 12: 12, 11: 11}


def test_seeks_in_mpeg_ts_never_skip_to_the_next_keyframe(gen: Path) -> None:
    """MPEG-TS has no index: FFmpeg's seek lands on the keyframe *after* the target (a 2 s GOP here). The
    reader notices (the first decoded frame is past the landing time) and seeks further back, so a seek,
    indexed reads and prep's --start show the frame asked for, not a frozen keyframe."""
    from lipsyncctl.config import PrepOptions
    from lipsyncctl.preparation import prep

    ts = mg.make_clip(gen / "broadcast.ts", fps=25, frames=150, audio_rate=48000, options={"g": "50"})
    for index in (25, 60, 82, 149, 3):
        with VideoReader(ts) as reader:
            reader.seek(frame=index)
            first = next(iter(reader))
        assert (first.index, mg.read_index(first.image)) == (index, index)
    with IndexedReader(ts) as reader:
        got = reader.read([82, 83, 30, 120, 5])
    assert {k: mg.read_index(v) for k, v in got.items()} == {82: 82, 83: 83, 30: 30, 120: 120, 5: 5}
    item = prep([ts], gen / "prep_ts", PrepOptions(encoder_preset="ultrafast", fps="source"), start=1.0,
                duration=1.0).items[0]
    assert item.status == "done", item.reason
    with VideoReader(item.output) as reader:
        assert [mg.read_index(f.image) for f in reader] == list(range(25, 50))


def test_indexed_reader_vfr_matches_conform(gen: Path) -> None:
    times = mg.vfr_times(40, rate=30.0, seed=3)
    path = mg.make_clip(gen / "vfr.mp4", fps=30, times=times, audio_rate=None, options={"g": "8"})
    info = probe(path)
    assert info.video is not None and info.video.is_vfr
    grid = info.video.nominal_fps  # about 30 (snapped to a standard rate)
    with VideoReader(path, info=info) as vr:
        expected = [mg.read_index(f.image) for _, f in conform_cfr(vr, grid)]
    with IndexedReader(path, info=info) as reader:
        forward = [mg.read_index(img) for _, img in reader.range(0, len(expected))]
        assert forward == expected
        assert len(set(forward)) < len(forward)  # late frames are held (repeated)
        # seeking back into the middle lands on the frame on screen then
        assert [mg.read_index(img) for _, img in reader.range(25, 30)] == expected[25:30]


def test_ffv1_bgr0_is_bit_exact_rgb_with_rgb_tags(gen: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(3)]
    out = gen / "exact.mkv"
    color = ColorInfo("bt709", "bt709", "bt709", "tv")
    with VideoWriter(out, Fraction(25), codec="ffv1", pix_fmt="bgr0", color=color) as writer:
        for f in frames:
            writer.write(f)
    with IndexedReader(out) as reader:
        back = [img for _, img in reader.range(0, 3)]
    assert all(np.array_equal(a, b) for a, b in zip(frames, back, strict=True))
    v = probe(out).video
    assert v is not None and v.pix_fmt == "bgr0"
    assert (v.color.primaries, v.color.transfer, v.color.matrix, v.color.range) == ("bt709", "bt709", "gbr", "pc")


def test_mux_pads_audio_with_silence_and_audio_length(gen: Path) -> None:
    video = mg.make_clip(gen / "v25.mkv", fps=25, frames=25, audio_rate=None)
    wav = mg.make_wav(gen / "short.wav", 0.6, rate=48000, channels=2)
    assert audio_length(wav) == (28800, 48000)
    out = mux_audio(video, wav, gen / "padded.mkv", codec="pcm", duration=1.0, pad=True)
    samples, rate = audio_length(out)
    assert (rate, samples) == (48000, 48000)
    with VideoReader(out):  # still a valid file with the copied picture
        pass
    (a,) = probe(out).audio
    assert a.channels == 2
    # without pad the audio is only cut, never lengthened
    cut = mux_audio(video, wav, gen / "cut.mkv", codec="pcm", duration=1.0)
    assert audio_length(cut)[0] == 28800


def test_a_deinterlaced_read_gives_each_frame_one_picture_and_keeps_the_stored_frame(gen: Path, clip: Path) -> None:
    """``IndexedReader(deinterlace=True)``: each image is bwdif's progressive picture of its frame, the same
    whether the frame was reached in sequence, after a seek forward or after a seek back (a picture depends on its
    frame and the frames beside it, and a read starts a second before its frame); ``Frame.source`` and
    ``source_image()`` are the decoder's frame, both fields as stored. A progressive read has no second picture."""
    path = gen / "fields.mkv"
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    with VideoWriter(path, 25, codec="h264", preset="ultrafast", pix_fmt="yuv420p", field_order="tt",
                     options={"g": "10"}) as writer:  # a keyframe every 10 frames: reads seek
        for i in range(60):  # a textured picture moving right, the bottom field 3 px ahead of the top
            image = np.roll(base, 2 * i, axis=1)
            image[1::2] = np.roll(image[1::2], 3, axis=1)
            writer.write(image)
    with IndexedReader(path, deinterlace=True) as reader:
        in_order = {i: (rgb, frame) for i, rgb, frame in reader.pictures(0, 60)}
    with IndexedReader(path) as plain:
        stored = dict(plain.range(0, 60))
    for i, (rgb, frame) in in_order.items():
        assert frame.stored is not None and np.array_equal(frame.source_image(), stored[i])
        assert not np.array_equal(rgb, stored[i])
    comb = [float(np.abs(np.diff(img.astype(np.int16), axis=0)).mean()) for img in (in_order[30][0], stored[30])]
    assert comb[0] < 0.8 * comb[1]
    with IndexedReader(path, deinterlace=True) as reader:
        for wanted in ([41, 42], [57], [12, 13, 14], [0, 1], [59]):  # forward seeks, back, the first, the last
            got = reader.read_sources(wanted)
            for i in wanted:
                assert np.array_equal(got[i][0], in_order[i][0]), i
                assert np.array_equal(got[i][1].source_image(), stored[i]), i
    for plain in (IndexedReader(path), IndexedReader(clip, deinterlace=True)):  # a progressive source: as it is
        with plain:
            _, rgb, frame = next(plain.pictures(5, 6))
            assert not plain.deinterlaced
            assert frame.stored is None and frame.source is frame.av_frame and frame.source_image(rgb) is rgb
