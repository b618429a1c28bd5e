"""Output frames built from the source's own stored pixels: what a render did not change stays the source's.

A render works on RGB images (``(H, W, 3)`` uint8, as the official pipeline does); encoding those whole
frames back to YUV would move every pixel of the picture: swscale's YUV -> RGB -> YUV round trip is not
exact (about one 8-bit level of luma on the talking-head fixture, every frame, face or not), and a 10- or
12-bit source would lose its low bits everywhere. :class:`Splicer` instead starts each output frame from the
decoder's frame (its planes copied into a fresh frame: no side data, no picture type carried over), converted
to the writer's pixel format without touching its range or matrix, turned upright as the render's image was,
and replaces only the pixels the render changed: the RGB box around them is converted back with the exact
inverse of the conversion that decoded it (the source frame's matrix and range, :meth:`Frame.image
<lipsyncctl.media.reader.Frame.image>`), a luma sample where its pixel changed, a chroma sample where any of
the pixels it covers did.

It applies when the writer stores planar YUV (:func:`splice_layout`: 4:2:0, 4:2:2, 4:4:4, 8 to 16 bits) and the
source is YUV (or grey); and when the writer stores RGB deeper than 8 bits (:func:`deep_rgb`: a 10-bit DPX, a 16-bit
PNG or TIFF): the source's values converted to it (an RGB plate's exactly: a 10-bit plate stays 10-bit outside the
face; a 10-bit YUV source at that depth, not through the render's 8 bits), the render's changed pixels put in. For
an 8-bit RGB output (FFV1 ``bgr0``, PNG: lossless RGB already), a palette source, or a quarter-turned source written
in a YUV format whose chroma is not subsampled alike both ways (4:2:2), :meth:`Splicer.frame` returns None and the
caller writes the RGB image as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl.media.container import SWS_THREADS
from lipsyncctl.media.probe import COLOR_CODES

if TYPE_CHECKING:
    from lipsyncctl.media.probe import ColorInfo
    from lipsyncctl.media.reader import Frame

#: pixels around the changed box that are converted too, so the chroma filter's edge never reaches a replaced
#: sample (swscale's RGB -> 4:2:0 chroma reads a few pixels on each side)
MARGIN = 8


@dataclass(frozen=True)
class Layout:
    """How a planar YUV pixel format stores a frame: sample type and each plane's subsampling (log2 x, log2 y)."""

    dtype: Any
    shifts: tuple[tuple[int, int], ...]

    @property
    def square(self) -> bool:
        """Every plane is subsampled alike in x and y (a quarter turn keeps the format)."""
        return all(sx == sy for sx, sy in self.shifts)

    @property
    def step(self) -> tuple[int, int]:
        """The pixel grid (x, y) on which a box of this format starts and ends (the coarsest subsampling)."""
        return 1 << max(sx for sx, _ in self.shifts), 1 << max(sy for _, sy in self.shifts)


@cache
def splice_layout(pix_fmt: str) -> Layout | None:
    """The :class:`Layout` of ``pix_fmt`` when it is planar YUV with one component per plane and no alpha
    (``yuv420p``, ``yuv422p10le``, ``yuvj420p``, ``yuv444p12le``...), else None."""
    import av

    try:
        fmt = av.VideoFormat(pix_fmt, 64, 64)
    except (ValueError, TypeError):
        return None
    comps = fmt.components
    if (fmt.is_rgb or len(comps) != 3 or len({c.plane for c in comps}) != 3 or any(c.is_alpha for c in comps)
            or pix_fmt.endswith("be") or pix_fmt.startswith(("pal", "bayer", "xyz"))):
        return None
    bits = {c.bits for c in comps}
    if len(bits) != 1 or not 8 <= bits.pop() <= 16:
        return None
    dtype = np.uint8 if comps[0].bits == 8 else np.dtype("<u2")
    shifts = tuple(((64 // c.width).bit_length() - 1, (64 // c.height).bit_length() - 1)
                   for c in sorted(comps, key=lambda c: c.plane))
    return Layout(dtype, shifts)


#: integer RGB of 9 to 16 bits, no alpha, in layouts PyAV converts to arrays: planar ``gbrp10le``..., packed
#: ``rgb48``/``bgr48`` (not float, not the 10-bit packed ``x2rgb10``, not ``msb`` layouts)
_DEEP_RGB = re.compile(r"^(gbrp(9|10|12|14|16)|rgb48|bgr48)(le|be)$")


def deep_rgb(pix_fmt: str) -> bool:
    """``pix_fmt`` stores integer RGB deeper than 8 bits that the splice handles (``gbrp10le``, ``rgb48be``...)."""
    return _DEEP_RGB.match(pix_fmt) is not None


#: decoder formats whose values no splice keeps (palette, raw sensor, XYZ, 1-bit): written from the render's image
_NOT_SPLICED = ("pal", "bayer", "xyz", "monob", "monow")


def keeps_samples(pix_fmt: str, source_pix_fmt: str, *, turned: bool = False) -> bool:
    """Whether frames written in ``pix_fmt`` keep the samples of a ``source_pix_fmt`` source where the render left the
    picture alone (the gate of :meth:`Splicer.frame`): deep integer RGB from any integer source, or planar YUV from a
    YUV or grey one (``turned``, a source turned by its rotation tag: only into a format subsampled alike both ways).
    Else the frames are written from the render's 8-bit RGB image."""
    if source_pix_fmt.startswith(_NOT_SPLICED):
        return False
    if deep_rgb(pix_fmt):
        return True
    layout = splice_layout(pix_fmt)
    return layout is not None and _source_ok(source_pix_fmt) and not (turned and not layout.square)


def _source_ok(pix_fmt: str) -> bool:
    """A decoder format whose values the splice may keep: YUV or grey (RGB and palette sources are exact in the
    render's RGB image already)."""
    from lipsyncctl.media.writer import is_rgb

    return not is_rgb(pix_fmt) and not pix_fmt.startswith(_NOT_SPLICED)


def _range(frame: Any) -> str:
    """The range the decoder's frame was read with (``JPEG`` for the ``yuvj`` formats and full-range tags)."""
    return "JPEG" if frame.format.name.startswith("yuvj") or int(frame.color_range) == 2 else "MPEG"


def planes_of(frame: Any, layout: Layout) -> list[np.ndarray]:
    """The planes of ``frame`` (in ``layout``'s format) as writable arrays (copies, line padding dropped)."""
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, layout.dtype).reshape(plane.height, -1)
        out.append(rows[:, :plane.width].copy())
    return out


def frame_of(planes: list[np.ndarray], pix_fmt: str, like: Any) -> Any:
    """A fresh ``av.VideoFrame`` of ``pix_fmt`` holding ``planes``, tagged with ``like``'s matrix and range."""
    import av

    height, width = planes[0].shape
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, values in zip(frame.planes, planes, strict=True):
        rows = np.frombuffer(plane, values.dtype).reshape(plane.height, -1)
        rows[:, :plane.width] = values
    frame.colorspace = like.colorspace
    frame.color_range = like.color_range
    return frame


class Splicer:
    """Output frames in ``pix_fmt`` (the writer's) from source frames and the render's RGB images.

    ``frame(source)``: the source frame itself (upright, in ``pix_fmt``); ``frame(source, before, after)``: the
    same with the pixels where ``after`` (the render's image) differs from ``before`` (the source's image,
    :meth:`Frame.source_image <lipsyncctl.media.reader.Frame.source_image>`) replaced. None where the
    splice does not apply (module doc): write ``after`` as RGB then.
    """

    def __init__(self, pix_fmt: str, color: ColorInfo | None = None) -> None:
        self.pix_fmt = pix_fmt
        self.layout = splice_layout(pix_fmt)
        self.rgb = deep_rgb(pix_fmt)
        #: with it, only source frames of this matrix and range are spliced (a file that mixes sources, the
        #: timeline's conform, tags them all as its first; another's frames go through RGB and its conversion)
        self.color = color

    @property
    def active(self) -> bool:
        """The writer's format can be spliced at all (else every :meth:`frame` is None)."""
        return self.layout is not None or self.rgb

    def frame(self, source: Frame, before: np.ndarray | None = None, after: np.ndarray | None = None,
              within: tuple[int, int, int, int] | None = None) -> Any:
        """``within``: a box ``(x0, y0, x1, y1)`` of the image outside which ``after`` is known to equal ``before``
        (the paste-back's, :meth:`~lipsyncctl.faces.align.FaceAligner.paste_bounds`): only it is compared."""
        src = source.source  # the decoder's frame (a deinterlaced read keeps it): its fields stay as stored
        turns = (int(source.rotation) // 90) % 4 if source.apply_rotation else 0
        if not keeps_samples(self.pix_fmt, src.format.name, turned=bool(turns)):
            return None
        if self.rgb:
            return self._rgb_frame(source, before, after, within)
        layout = self.layout
        assert layout is not None  # (keeps_samples: a YUV writer's layout)
        rng = _range(src)
        if self.color is not None and (
                int(src.colorspace) != COLOR_CODES["matrix"].get(self.color.matrix or "", 2)
                or rng != ("JPEG" if self.color.range == "pc" else "MPEG")):
            return None
        conv = src if src.format.name == self.pix_fmt else src.reformat(
            format=self.pix_fmt, src_color_range=rng, dst_color_range=rng, threads=SWS_THREADS)
        planes = planes_of(conv, layout)
        if turns:
            planes = [np.ascontiguousarray(np.rot90(p, turns)) for p in planes]
        if before is not None and after is not None:
            self._replace(planes, src, rng, before, after, within)
        return frame_of(planes, self.pix_fmt, src)

    def _rgb_frame(self, source: Frame, before: np.ndarray | None, after: np.ndarray | None,
                   within: tuple[int, int, int, int] | None) -> Any:
        """:meth:`frame` into a deep RGB format (:func:`deep_rgb`): the source's values converted to it (RGB to RGB:
        exact; YUV: as the render's image was converted, at the writer's depth instead of 8 bits), the pixels where
        ``after`` differs from ``before`` the render's (8-bit values at the writer's depth)."""
        import av

        from lipsyncctl.media.writer import is_rgb

        src = source.source
        turns = (int(source.rotation) // 90) % 4 if source.apply_rotation else 0
        conv = src
        if not is_rgb(src.format.name):  # YUV: to packed RGB as the render's image was made (its chroma upsampling;
            conv = src.reformat(format="rgb48le", threads=SWS_THREADS)  # a planar RGB target filters it otherwise)
        if conv.format.name != self.pix_fmt:
            conv = conv.reformat(format=self.pix_fmt, threads=SWS_THREADS)
        values = conv.to_ndarray()
        values = np.ascontiguousarray(np.rot90(values, turns)) if turns else values.copy()
        if before is not None and after is not None:
            height, width = before.shape[:2]
            x0, y0, x1, y1 = within if within is not None else (0, 0, width, height)
            changed = (before[y0:y1, x0:x1] != after[y0:y1, x0:x1]).any(axis=2)
            if changed.any():
                box = av.VideoFrame.from_ndarray(np.ascontiguousarray(after[y0:y1, x0:x1]), format="rgb24")
                deep = box.reformat(format=self.pix_fmt, threads=SWS_THREADS).to_ndarray()
                values[y0:y1, x0:x1][changed] = deep[changed]
        return av.VideoFrame.from_ndarray(values, format=self.pix_fmt)

    def _replace(self, planes: list[np.ndarray], src: Any, rng: str, before: np.ndarray, after: np.ndarray,
                 within: tuple[int, int, int, int] | None = None) -> None:
        """Put the changed pixels of ``after`` into ``planes`` (upright, the writer's format)."""
        import av

        layout = self.layout
        assert layout is not None
        height, width = before.shape[:2]
        wx0, wy0, wx1, wy1 = within if within is not None else (0, 0, width, height)
        # (h, w, 3) over the box; reduced by rows first (numpy is slow along a 3-wide last axis)
        differ = before[wy0:wy1, wx0:wx1] != after[wy0:wy1, wx0:wx1]
        rows = np.flatnonzero(differ.reshape(differ.shape[0], -1).any(axis=1))
        if not len(rows):
            return
        band = differ[rows[0]:rows[-1] + 1]
        band = band[..., 0] | band[..., 1] | band[..., 2]  # the pixels that changed, in the box's columns
        r0, r1 = wy0 + int(rows[0]), wy0 + int(rows[-1]) + 1
        cols = np.flatnonzero(band.any(axis=0))
        c0, c1 = wx0 + int(cols[0]), wx0 + int(cols[-1]) + 1
        band = band[:, c0 - wx0:c1 - wx0]  # (r1 - r0, c1 - c0)
        gx, gy = layout.step
        y0, x0 = max(0, r0 - MARGIN) // gy * gy, max(0, c0 - MARGIN) // gx * gx
        y1, x1 = min(height, -(-(r1 + MARGIN) // gy) * gy), min(width, -(-(c1 + MARGIN) // gx) * gx)
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        mask[r0 - y0:r1 - y0, c0 - x0:c1 - x0] = band
        box = av.VideoFrame.from_ndarray(np.ascontiguousarray(after[y0:y1, x0:x1]), format="rgb24")
        # The inverse of the decode (Frame.image: the source frame's own matrix and range).
        spec = int(src.colorspace)
        yuv = box.reformat(format=self.pix_fmt, dst_colorspace=spec if spec != 2 else None, dst_color_range=rng,
                           threads=SWS_THREADS)
        for plane, new, (sx, sy) in zip(planes, planes_of(yuv, layout), layout.shifts, strict=True):
            h, w = new.shape
            m = mask
            if sx or sy:  # a chroma sample changes where any pixel it covers did
                m = np.pad(m, ((0, max(0, h * (1 << sy) - m.shape[0])), (0, max(0, w * (1 << sx) - m.shape[1]))))
                cover = np.zeros((h, w), dtype=bool)
                for dy in range(1 << sy):
                    for dx in range(1 << sx):
                        cover |= m[dy::1 << sy, dx::1 << sx][:h, :w]
                m = cover
            view = plane[y0 >> sy:(y0 >> sy) + h, x0 >> sx:(x0 >> sx) + w]
            view[m] = new[m]
