"""What the writer states about its pictures: the pixel aspect in every codec and container that can hold one, and
colour tags that name the matrix and range the pictures were converted with (an RGB source into YUV included)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipsyncctl.config import OutputOptions
from lipsyncctl.media.probe import ColorInfo, probe
from lipsyncctl.media.reader import VideoReader
from lipsyncctl.media.writer import VideoWriter, keeps_sample_aspect
from lipsyncctl.pipeline.output import open_writer

HDV = Fraction(4, 3)
#: ffmpeg matrix tag -> PyAV (swscale) colourspace: how a reader that follows the tags decodes
_READ_MATRIX = {"bt709": "itu709", "smpte170m": "smpte170m", "bt470bg": "itu601"}
#: flat 32x32 patches of known colours, 3 by 2: red, green, blue / grey, white, a skin-like orange
PATCHES = np.array([[(255, 0, 0), (0, 255, 0), (0, 0, 255)],
                    [(128, 128, 128), (235, 235, 235), (200, 120, 80)]], np.uint8)


def _patches() -> np.ndarray:
    """``(64, 96, 3)`` uint8 RGB: :data:`PATCHES`, each 32 pixels square."""
    return np.ascontiguousarray(PATCHES.repeat(32, axis=0).repeat(32, axis=1))


def _centres(image: np.ndarray) -> np.ndarray:
    """The 8x8 middle of each patch, ``(2, 3, 8, 8, 3)`` as int."""
    return np.stack([np.stack([image[32 * r + 12:32 * r + 20, 32 * c + 12:32 * c + 20] for c in range(3)])
                     for r in range(2)]).astype(int)


def _shown_width(path: Path) -> int:
    """The width the first frame of ``path`` is shown at: its own pixel aspect (FFV1 codes one in each frame, where
    neither the stream nor the codec context say it) applied by FFmpeg's ``scale``, evaluated per frame."""
    import av
    import av.filter

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        graph = av.filter.Graph()
        source = graph.add_buffer(template=stream)
        scale = graph.add("scale", "w=iw*sar:h=ih:eval=frame")
        source.link_to(scale)
        scale.link_to(graph.add("buffersink"))
        graph.configure()
        graph.push(frame)
        return int(graph.pull().width)


def _decoded(path: Path, color: ColorInfo) -> list[np.ndarray]:
    """The frames of ``path`` as RGB, read with the matrix and range ``color`` names."""
    import av

    with av.open(str(path)) as container:
        return [f.reformat(format="rgb24", src_colorspace=_READ_MATRIX[color.matrix or ""],
                           src_color_range="JPEG" if color.range == "pc" else "MPEG").to_ndarray()
                for f in container.decode(video=0)]


def _png_sequence(folder: Path, frames: int = 3) -> Path:
    """A PNG sequence of :func:`_patches` (FFmpeg's PNG reader tags it ``gbr``, full range)."""
    from tests.sync_media import write_clip

    folder.mkdir()
    return write_clip(folder / "shot.%04d.png", [_patches()] * frames, Fraction(25), codec="png", pix_fmt="rgb24")


# -- pixel aspect -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("codec", "name"), [
    ("h264", "a.mp4"), ("h264", "a.mkv"), ("h265", "a.mkv"), ("prores", "a.mov"), ("dnxhr", "a.mov"),
    ("h264", "a.%03d.png"), ("h264", "a.%03d.tif"), ("h264", "a.%03d.dpx"),
])
def test_the_pixel_aspect_is_stored_where_the_stream_says_it(tmp_path: Path, codec: str, name: str) -> None:
    """x264/x265 in their bitstream, ProRes and DNxHR in MOV's ``pasp`` box, PNG/TIFF/DPX in each image: what a
    probe of the file (the stream's or the codec context's aspect) reads back."""
    out = tmp_path / name
    with VideoWriter(out, Fraction(25), codec=codec, preset="ultrafast", sample_aspect=HDV) as writer:
        for _ in range(3):
            writer.write(np.full((128, 288, 3), 90, np.uint8))
    video = probe(out).video
    assert video is not None and video.sample_aspect == HDV and video.square_size == (384, 128)
    assert keeps_sample_aspect(codec, out)


@pytest.mark.parametrize(("codec", "name"), [("prores", "a.mov"), ("dnxhr", "a.mov"), ("h264", "a.mp4")])
def test_the_mux_and_the_timecode_stamp_keep_the_pixel_aspect(tmp_path: Path, codec: str, name: str) -> None:
    """The sound's mux (and a timecode's rewrite) copy the picture's packets: the aspect of MOV's ``pasp`` box comes
    along (a copied ProRes or DNxHR stream, whose bitstream holds none, came out square)."""
    from lipsyncctl.media.mux import mux_audio, stamp_timecode

    video = tmp_path / f"v{Path(name).suffix}"
    with VideoWriter(video, Fraction(25), codec=codec, preset="ultrafast", sample_aspect=HDV) as writer:
        for _ in range(3):
            writer.write(np.full((128, 288, 3), 90, np.uint8))
    out = mux_audio(video, np.zeros(1920, np.float32), tmp_path / name, rate=16000, codec="pcm" if codec != "h264"
                    else "aac", duration=Fraction(3, 25), pad=True)
    assert probe(out).video.sample_aspect == HDV  # type: ignore[union-attr]
    stamp_timecode(out, "01:00:00:00")
    assert probe(out).video.sample_aspect == HDV  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["a.mp4", "a.mov"])
def test_h265_stays_tagged_hvc1_through_the_mux_and_the_timecode_stamp(tmp_path: Path, name: str) -> None:
    """Apple's players and editors open H.265 in MP4/MOV only as ``hvc1``: the writer tags it so, and the copies of
    the sound's mux and a timecode's rewrite kept it (their template dropped it: hev1)."""
    import av

    from lipsyncctl.media.mux import mux_audio, stamp_timecode

    video = tmp_path / f"v{Path(name).suffix}"
    with VideoWriter(video, Fraction(25), codec="h265", preset="ultrafast") as writer:
        for _ in range(3):
            writer.write(np.full((64, 64, 3), 90, np.uint8))

    def tag(path: Path) -> str:
        with av.open(str(path)) as c:
            return str(c.streams.video[0].codec_tag)

    assert tag(video) == "hvc1"
    out = mux_audio(video, np.zeros(1920, np.float32), tmp_path / name, rate=16000, duration=Fraction(3, 25), pad=True)
    assert tag(out) == "hvc1"
    stamp_timecode(out, "01:00:00:00")
    assert tag(out) == "hvc1"
    # M4V's muxer takes no H.265: refused before any work (it was an internal error at the first frame)
    from lipsyncctl.errors import ConfigError
    from lipsyncctl.pipeline.output import check_output

    with pytest.raises(ConfigError, match="cannot be stored in a '.m4v' file"):
        check_output(tmp_path / "a.m4v", OutputOptions(codec="h265"))


@pytest.mark.parametrize("name", ["a.mkv", "a.avi"])
def test_ffv1_codes_the_pixel_aspect_in_each_frame(tmp_path: Path, name: str) -> None:
    """FFV1 takes the aspect from each frame, not from the codec context (which Matroska cannot store either): the
    decoded frames are shown 4:3 wider, bit-exact RGB and an interlaced order kept alongside."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (128, 288, 3), dtype=np.uint8) for _ in range(3)]
    out = tmp_path / name
    with VideoWriter(out, Fraction(25), codec="ffv1", pix_fmt="bgr0", sample_aspect=HDV, field_order="tt") as writer:
        for image in images:
            writer.write(image)
    assert _shown_width(out) == 384
    with VideoReader(out) as reader:
        assert all(np.array_equal(f.image, image) for f, image in zip(reader, images, strict=True))
    video = probe(out).video
    assert video is not None and video.field_order == "tt"


def test_square_pixels_store_no_aspect_and_the_lost_ones_are_named(tmp_path: Path) -> None:
    out = tmp_path / "square.mkv"
    with VideoWriter(out, Fraction(25), codec="ffv1", sample_aspect=Fraction(1)) as writer:
        writer.write(np.full((64, 96, 3), 90, np.uint8))
    assert _shown_width(out) == 96
    assert [keeps_sample_aspect(codec, name) for codec, name in [
        ("prores", "a.mkv"), ("dnxhr", "a.mxf"), ("prores", "a.mov"), ("ffv1", "a.mkv"), ("h265", "a.mkv"),
        ("h264", "a.%04d.png")]] == [False, False, True, True, True, True]


# -- colour tags ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("codec", "name", "pix_fmt"), [
    ("h264", "out.mp4", "yuv420p"), ("h265", "out.mkv", "yuv420p"), ("prores_hq", "out.mov", "yuv422p10le"),
])
@pytest.mark.parametrize("path", ["sync", "prep"])
def test_an_rgb_source_into_yuv_is_tagged_with_the_matrix_it_was_converted_with(
        tmp_path: Path, codec: str, name: str, pix_fmt: str, path: str) -> None:
    """A PNG sequence (tagged ``gbr``, full range) into a YUV codec: BT.709, limited range (``yuv420p``, not
    ``yuvj420p``), never ``gbr`` (which H.264 forbids in 4:2:0); read back with those tags, each colour patch comes
    back within a few code values. ``sync`` writes the render's RGB arrays through :func:`open_writer`, ``prep``
    the decoder's frames through :class:`VideoWriter`."""
    source = _png_sequence(tmp_path / "seq")
    info = probe(source).video
    assert info is not None and info.color.matrix == "gbr" and info.color.range == "pc"
    out = tmp_path / name
    if path == "sync":
        options = OutputOptions(codec=codec, encoder_preset="ultrafast", crf=8)  # the colours, not the codec's loss
        with open_writer(out, Fraction(25), options, color=info.color, source_pix_fmt=info.pix_fmt) as writer, \
                VideoReader(source) as reader:
            for frame in reader:
                writer.write(frame.image)
    else:
        writer_codec = {"prores_hq": "prores"}.get(codec, codec)
        with VideoWriter(out, Fraction(25), codec=writer_codec, preset="ultrafast", crf=8, pix_fmt=pix_fmt,
                         color=info.color) as writer, VideoReader(source) as reader:
            for frame in reader:
                writer.write(frame.av_frame)
    video = probe(out).video
    assert video is not None and video.pix_fmt == pix_fmt
    assert (video.color.matrix, video.color.range) == ("bt709", "tv")
    back = _decoded(out, video.color)
    assert len(back) == 3
    for image in back:
        assert np.abs(_centres(image) - _centres(_patches())).max() <= 3


@pytest.mark.parametrize("color", [
    ColorInfo("smpte170m", "smpte170m", "smpte170m", "tv"),  # SD
    ColorInfo("bt709", "bt709", "bt709", "pc"),  # full range (yuvj), as a phone records
])
def test_a_yuv_source_keeps_its_own_tags_and_is_converted_with_them(tmp_path: Path, color: ColorInfo) -> None:
    """A YUV source's tags are written as they are, and RGB pictures of it (a quarter-turned 4:2:2 source is written
    from RGB) are converted with its matrix and range: read with them, the patches come back."""
    out = tmp_path / "out.mp4"
    with VideoWriter(out, Fraction(25), codec="h264", preset="ultrafast", crf=8, color=color) as writer:
        for _ in range(3):
            writer.write(_patches())
    video = probe(out).video
    assert video is not None and video.color == color
    for image in _decoded(out, color):
        assert np.abs(_centres(image) - _centres(_patches())).max() <= 3


def test_yuv_frames_keep_their_values_and_tags(tmp_path: Path) -> None:
    """Frames passed as YUV (``prep``, the splice) are not converted again: the tags are the source's, the decoded
    samples the written ones (lossless FFV1)."""
    import av

    color = ColorInfo("bt470bg", "bt709", "bt470bg", "tv")
    rng = np.random.default_rng(2)
    planes = [rng.integers(16, 236, (64, 96), dtype=np.uint8), rng.integers(16, 241, (32, 48), dtype=np.uint8),
              rng.integers(16, 241, (32, 48), dtype=np.uint8)]
    frame: Any = av.VideoFrame(96, 64, "yuv420p")
    for plane, values in zip(frame.planes, planes, strict=True):
        np.frombuffer(plane, np.uint8).reshape(plane.height, -1)[:, :plane.width] = values
    out = tmp_path / "yuv.mkv"
    with VideoWriter(out, Fraction(25), codec="ffv1", color=color) as writer:
        writer.write(frame)
    video = probe(out).video
    assert video is not None and video.color == color and video.pix_fmt == "yuv420p"
    with av.open(str(out)) as container:
        back = next(container.decode(video=0))
        for plane, values in zip(back.planes, planes, strict=True):
            assert np.array_equal(np.frombuffer(plane, np.uint8).reshape(plane.height, -1)[:, :plane.width], values)
