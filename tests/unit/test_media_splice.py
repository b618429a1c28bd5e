"""Output frames from the source's stored pixels (lipsyncctl.media.splice): what a render did not change is the
source's, sample for sample, in the source's own bit depth; a sync of a 10-bit clip keeps it."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.media.reader import VideoReader
from lipsyncctl.media.splice import Splicer, planes_of, splice_layout
from tests import mediagen as mg
from tests.sync_media import decode_rgb, sample_frames, tiny_models, with_sets, write_clip, write_wav


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    return sample_frames(3, scale=0.4)  # 216x384 real face frames


def _source(folder: Path, faces: list[np.ndarray], pix_fmt: str, **kw) -> Path:  # type: ignore[no-untyped-def]
    """A lossless FFV1 clip in ``pix_fmt`` (x264 for the full-range yuvj420p, which FFV1 does not take)."""
    if pix_fmt.startswith("yuvj"):
        return write_clip(folder / f"{pix_fmt}.mp4", faces, Fraction(25), codec="libx264", pix_fmt=pix_fmt, **kw)
    return write_clip(folder / f"{pix_fmt}.mkv", faces, Fraction(25), pix_fmt=pix_fmt, **kw)


def _first(path: Path):  # type: ignore[no-untyped-def]
    with VideoReader(path) as reader:
        frame = next(iter(reader))
        return frame, frame.image


def _planes(frame) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    layout = splice_layout(frame.format.name)
    assert layout is not None
    return planes_of(frame, layout)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le", "yuv444p", "yuvj420p", "yuv420p10le"])
def test_an_unchanged_frame_is_the_source_sample_for_sample(tmp_path: Path, faces, pix_fmt: str) -> None:
    """Written back unchanged (or with an image equal to the source's), a frame keeps every stored sample; the
    RGB round trip it replaces moved them (the defect this fixes: checked, so the test means something)."""
    src, image = _first(_source(tmp_path, faces, pix_fmt))
    splicer = Splicer(pix_fmt)
    assert splicer.active
    want = _planes(src.av_frame)
    for out in (splicer.frame(src), splicer.frame(src, image, image.copy())):
        assert out.format.name == pix_fmt and (out.width, out.height) == (src.av_frame.width, src.av_frame.height)
        assert all(np.array_equal(a, b) for a, b in zip(_planes(out), want, strict=True))
        assert int(out.colorspace) == int(src.av_frame.colorspace)
        assert int(out.color_range) == int(src.av_frame.color_range)
    if pix_fmt in ("yuv420p", "yuv422p10le"):  # subsampled or deeper than the RGB image: not exact that way
        rgb_path = _planes(av_rgb(image, pix_fmt, src.av_frame))
        assert any(not np.array_equal(a, b) for a, b in zip(rgb_path, want, strict=True))


def av_rgb(image: np.ndarray, pix_fmt: str, like):  # type: ignore[no-untyped-def]
    """The RGB path: the image converted back with the source's own matrix and range."""
    import av

    rng = "JPEG" if pix_fmt.startswith("yuvj") or int(like.color_range) == 2 else "MPEG"
    spec = int(like.colorspace)
    return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
        format=pix_fmt, dst_colorspace=spec if spec != 2 else None, dst_color_range=rng)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le", "yuv444p"])
def test_only_the_changed_pixels_move(tmp_path: Path, faces, pix_fmt: str) -> None:
    """A changed patch: luma changes exactly there, chroma only in the samples that cover it; the patch decodes
    to the render's pixels within the format's rounding and subsampling."""
    src, image = _first(_source(tmp_path, faces, pix_fmt, bt709=True))
    after = image.copy()
    y0, y1, x0, x1 = 101, 171, 63, 150  # odd edges: chroma samples half inside
    patch = after[y0:y1, x0:x1].astype(np.int16)
    after[y0:y1, x0:x1] = np.clip(patch[..., [2, 0, 1]] + 30, 0, 255).astype(np.uint8)  # a colour change too
    out = Splicer(pix_fmt).frame(src, image, after)
    want, got = _planes(src.av_frame), _planes(out)
    changed = np.any(after != image, axis=2)
    layout = splice_layout(pix_fmt)
    assert layout is not None
    for plane, (new, old, (sx, sy)) in enumerate(zip(got, want, layout.shifts, strict=True)):
        covers = changed.reshape(changed.shape[0] >> sy, 1 << sy, changed.shape[1] >> sx, 1 << sx).any(axis=(1, 3))
        assert np.array_equal(new[~covers], old[~covers]), f"plane {plane}: a sample outside the patch moved"
        assert (new[covers] != old[covers]).mean() > 0.5, f"plane {plane}: the patch was not written"
    back = out.to_ndarray(format="rgb24").astype(int)
    inner = (slice(y0 + 2, y1 - 2), slice(x0 + 2, x1 - 2))
    err = np.abs(back[inner] - after[inner])
    assert err.mean() < 2.5 and err.max() <= 12


def test_a_box_around_the_change_gives_the_same_frame(tmp_path: Path, faces) -> None:
    """``within`` (the paste-back's bounds) only limits where the images are compared: any box holding the change,
    odd edges included, gives the very frame of the whole comparison; the paste-back's own bounds hold every pixel
    its restore changed."""
    import torch

    from lipsyncctl.faces.align import FaceAligner

    src, image = _first(_source(tmp_path, faces, "yuv420p"))
    after = image.copy()
    after[101:171, 63:150] = 255 - after[101:171, 63:150]
    whole = _planes(Splicer("yuv420p").frame(src, image, after))
    for box in ((63, 101, 150, 171), (10, 57, 201, 203), (0, 0, image.shape[1], image.shape[0])):
        assert all(np.array_equal(a, b) for a, b in zip(_planes(Splicer("yuv420p").frame(src, image, after, within=box)),
                                                        whole, strict=True)), box
    aligner = FaceAligner(256)
    matrix = np.array([[1.1, 0.05, -40.0], [-0.05, 1.1, -60.0]], np.float32)  # a face about 230 px wide, tilted
    pasted = aligner.restore(image, torch.full((3, 256, 256), 0.7), matrix)
    x0, y0, x1, y1 = aligner.paste_bounds(image.shape[:2], matrix)
    changed = np.argwhere(np.any(pasted != image, axis=2))
    assert len(changed) > 1000
    assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1 and changed[:, 1].min() >= x0 and changed[:, 1].max() < x1


def test_another_output_format_keeps_range_and_values(tmp_path: Path, faces) -> None:
    """A full-range (yuvj420p) source written as yuv420p keeps its values (no squeeze into the limited range: the
    file keeps the source's full-range tag); an 8-bit source written as 10-bit 4:2:2 (ProRes) keeps its luma
    exactly, scaled by 4."""
    src, _ = _first(_source(tmp_path, faces, "yuvj420p"))
    out = Splicer("yuv420p").frame(src)
    assert np.array_equal(_planes(out)[0], _planes(src.av_frame)[0])
    assert np.array_equal(_planes(out)[1], _planes(src.av_frame)[1])
    src8, _ = _first(_source(tmp_path, faces, "yuv420p"))
    out10 = Splicer("yuv422p10le").frame(src8)
    assert np.array_equal(_planes(out10)[0].astype(int) >> 2, _planes(src8.av_frame)[0].astype(int))


def test_a_rotated_source_is_turned_upright(tmp_path: Path) -> None:
    """A phone clip (90 degree tag): the frame is built upright, as the render's image is; 4:2:2 cannot be turned
    a quarter without resampling its chroma, so the render writes RGB there (None)."""
    path = mg.make_clip(tmp_path / "r90.mp4", rotation=90, frames=1, size=(96, 64), audio_rate=None)
    src, image = _first(path)
    assert image.shape[:2] == (64, 96) and (src.av_frame.width, src.av_frame.height) == (64, 96)  # stored turned
    out = Splicer("yuv420p").frame(src)
    assert (out.width, out.height) == (96, 64)
    assert np.array_equal(_planes(out)[0], np.rot90(_planes(src.av_frame)[0], 1))
    assert np.abs(out.to_ndarray(format="rgb24").astype(int) - image).mean() < 2
    assert Splicer("yuv422p").frame(src) is None


def test_rgb_outputs_and_sources_are_not_spliced(tmp_path: Path, faces) -> None:
    """FFV1's RGB output (bgr0) is lossless RGB already: nothing to splice; an RGB source's image is exact."""
    assert not Splicer("bgr0").active and Splicer("bgr0").frame(_first(_source(tmp_path, faces, "yuv420p"))[0]) is None
    assert Splicer("rgb24").layout is None and splice_layout("yuva420p") is None and splice_layout("nv12") is None
    src, image = _first(_source(tmp_path, faces, "bgr0"))
    assert Splicer("yuv420p").frame(src, image, image) is None


def test_a_sync_of_a_10_bit_clip_keeps_every_sample_outside_the_face(tmp_path: Path) -> None:
    """End to end: a 10-bit 4:2:2 source (lossless FFV1 in and out, so only the render can move a sample) comes back
    with every luma sample outside the matte and every chroma sample away from it equal to the source's, in 10
    bits (the RGB path it replaces moved them all, test_an_unchanged_frame_is_the_source_sample_for_sample); the face
    itself was re-rendered."""
    import av
    import cv2

    from lipsyncctl.pipeline.clip import sync_clip

    frames = sample_frames(6, scale=0.6)
    video = write_clip(tmp_path / "src.mkv", frames, Fraction(25), pix_fmt="yuv422p10le", bt709=True)
    audio = write_wav(tmp_path / "a.wav", 0.24)
    with tiny_models(tmp_path / "models", "output.codec=ffv1", "output.pix_fmt=yuv422p10le", "output.matte=true",
                     "output.audio_codec=pcm") as (config, models):
        res = sync_clip(video, audio, tmp_path / "out.mkv", with_sets(config), networks=models)

    with av.open(str(video)) as a, av.open(str(res.output)) as b:
        pairs = list(zip(a.decode(video=0), b.decode(video=0), strict=True))
    mattes = decode_rgb(res.matte)
    assert len(pairs) == len(mattes) == 6
    for i, ((src, out), matte) in enumerate(zip(pairs, mattes, strict=True)):
        assert out.format.name == "yuv422p10le"
        want, got = _planes(src), _planes(out)
        # The matte is written as the output is (10-bit 4:2:2 here), so its faintest edge (1 or 2 of 255) may come
        # back as 0: one pixel around it counts as changed.
        changed = cv2.dilate((matte[..., 0] > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert 0 < changed.mean() < 0.3, f"frame {i}: no face re-rendered"
        assert np.array_equal(got[0][~changed], want[0][~changed]), f"frame {i}: luma outside the face moved"
        near = np.zeros_like(changed)
        near[:, :-1] |= changed[:, 1:]
        near |= changed
        cover = near[:, ::2]
        for c in (1, 2):
            assert np.array_equal(got[c][~cover], want[c][~cover]), f"frame {i}: chroma outside the face moved"
        assert not np.array_equal(got[0][changed], want[0][changed])


def test_a_splicer_for_one_colour_leaves_other_sources_to_rgb(tmp_path: Path, faces) -> None:
    """The conform tags its file as its first shot; a source of another matrix or range is not spliced (its values
    would be read with the wrong matrix), it goes through RGB and the writer's conversion."""
    from lipsyncctl.media.probe import ColorInfo, probe

    path = _source(tmp_path, faces, "yuv420p", bt709=True)
    tags = probe(path).video.color  # type: ignore[union-attr]
    assert (tags.matrix, tags.range) == ("bt709", "tv")
    src, _ = _first(path)
    assert Splicer("yuv420p", color=tags).frame(src) is not None
    assert Splicer("yuv420p", color=ColorInfo("bt709", "bt709", "smpte170m", "tv")).frame(src) is None
    assert Splicer("yuv420p", color=ColorInfo("bt709", "bt709", "bt709", "pc")).frame(src) is None
