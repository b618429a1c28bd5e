"""Timecode and reel names written into renders and the conform (a MOV/MP4 ``tmcd`` track, MXF and Matroska
tags, read back through libavformat), and what the relinked timelines say about them: the renders' reels,
their timecode as the available range, URLs in the input's form, the dub on an audio track."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.errors import MediaError
from lipsyncctl.media.mux import mux_audio, stamp_timecode
from tests.sync_media import decode_rgb, write_clip


def timecode_tracks(path: Path) -> tuple[str | None, list[dict[str, str]]]:
    """``(timecode tag, [metadata of each tmcd data stream])`` of ``path``, as ffprobe would list them."""
    import av

    with av.open(str(path)) as c:
        tags = [dict(c.metadata)] + [dict(s.metadata) for s in c.streams]
        tmcd = [dict(s.metadata) for s in c.streams
                if s.type == "data" and dict(s.metadata).get("handler_name") == "TimeCodeHandler"]
    found = next((v for t in tags for k, v in t.items() if k.lower() == "timecode"), None)
    return found, tmcd


def _clip(path: Path, codec: str = "libx264", n: int = 8) -> Path:
    frames = [np.full((64, 64, 3), 20 * i, np.uint8) for i in range(n)]
    return write_clip(path, frames, Fraction(24000, 1001), codec=codec)


@pytest.mark.parametrize(("ext", "codec", "track"), [(".mov", "libx264", True), (".mp4", "libx264", True),
                                                     (".mkv", "ffv1", False), (".mxf", "mpeg2video", False)])
def test_stamp_timecode_writes_a_timecode_track_and_keeps_the_picture(tmp_path: Path, ext: str, codec: str,
                                                                      track: bool) -> None:
    src = _clip(tmp_path / f"a{ext}", codec)
    before = decode_rgb(src)
    stamp_timecode(src, "01:00:10:05", reel="LSABC123")
    found, tmcd = timecode_tracks(src)
    assert found == "01:00:10:05"
    assert bool(tmcd) == track  # MOV and MP4 get a tmcd track, as ffmpeg -timecode makes it
    if ext == ".mov":
        assert tmcd[0]["reel_name"] == "LSABC123"
    assert all(np.array_equal(a, b) for a, b in zip(before, decode_rgb(src), strict=True))
    assert [p.name for p in tmp_path.iterdir()] == [src.name]  # written aside, renamed: nothing left


def test_stamp_timecode_refuses_what_cannot_hold_one(tmp_path: Path) -> None:
    src = _clip(tmp_path / "a.avi", "ffv1")
    with pytest.raises(MediaError, match="holds no timecode"):
        stamp_timecode(src, "01:00:00:00")
    mov = _clip(tmp_path / "b.mov")
    with pytest.raises(MediaError, match="expected HH:MM:SS:FF"):
        stamp_timecode(mov, "1:00:00")
    assert timecode_tracks(mov) == (None, [])  # untouched


def test_mux_audio_with_a_timecode(tmp_path: Path) -> None:
    video = _clip(tmp_path / "v.mp4")
    tone = np.zeros((48000 // 3, 2), np.float32)
    out = mux_audio(video, tone, tmp_path / "out.mp4", rate=48000, timecode="00:59:58:00")
    assert timecode_tracks(out)[0] == "00:59:58:00" and timecode_tracks(out)[1]
    plain = mux_audio(video, tone, tmp_path / "plain.mp4", rate=48000)
    assert timecode_tracks(plain) == (None, [])


@pytest.mark.parametrize(("codec", "ext", "pix_fmt", "audio"), [
    ("prores_ks", ".mov", "yuv422p10le", "pcm_s24le"), ("libx264", ".mov", "yuv420p", "aac"),
    ("libx264", ".mp4", "yuv420p", "aac"),
])
def test_auto_audio_is_24_bit_pcm_beside_prores(tmp_path: Path, codec: str, ext: str, pix_fmt: str,
                                                audio: str) -> None:
    """A ProRes master keeps a 24-bit dub as 24-bit PCM (output.audio_codec=auto, the default)."""
    import av

    from lipsyncctl import config as cfg
    from lipsyncctl.media.audio import read_audio

    assert cfg.OutputOptions().audio_codec == "auto"
    video = write_clip(tmp_path / f"v{ext}", [np.full((64, 64, 3), 9, np.uint8)] * 6, Fraction(25), codec=codec,
                       pix_fmt=pix_fmt)
    steps = (np.arange(4800, dtype=np.float64) % 512 - 256) / 2**23  # values only 24 bits hold
    out = mux_audio(video, steps.astype(np.float32), tmp_path / f"out{ext}", rate=48000, codec="auto")
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == audio
    if audio == "pcm_s24le":
        back = read_audio(out, 48000, 1)
        assert np.array_equal(np.round(back[: len(steps)].astype(np.float64) * 2**23), np.round(steps * 2**23))
