"""Media and edits generated at test time for the timeline tests: short, downscaled copies of the shared
fixture clip (camera A) and a mirrored later stretch of it (camera B), a tone, and OTIO timelines."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

FILM = Fraction(24000, 1001)
SIZE = (360, 640)  # (w, h): the smallest size at which dlib finds the fixture's face reliably


def fixture_frames(video: Path, first: int, count: int, mirror: bool = False) -> list[np.ndarray]:
    """``count`` RGB frames of ``video`` from ``first``, resized to :data:`SIZE`."""
    import av
    import cv2

    out = []
    with av.open(str(video)) as c:
        c.streams.video[0].thread_type = "AUTO"
        for i, frame in enumerate(c.decode(video=0)):
            if i < first:
                continue
            rgb = cv2.resize(frame.to_ndarray(format="rgb24"), SIZE, interpolation=cv2.INTER_AREA)
            out.append(rgb[:, ::-1].copy() if mirror else rgb)
            if len(out) == count:
                break
    return out


def rt(frames: int, fps: Fraction = FILM):  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    return otio.opentime.RationalTime(frames, float(fps))


def tr(start: int, duration: int, fps: Fraction = FILM):  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    return otio.opentime.TimeRange(rt(start, fps), rt(duration, fps))


def clip(name: str, url: str | None, start: int, duration: int, *, available: tuple[int, int] | None = None,
         fps: Fraction = FILM, **metadata):  # type: ignore[no-untyped-def]
    """An OTIO clip of ``duration`` frames from source frame ``start`` (in the media's timecode)."""
    import opentimelineio as otio

    ref = (otio.schema.ExternalReference(target_url=url, available_range=tr(*available, fps) if available else None)
           if url is not None else otio.schema.MissingReference())
    return otio.schema.Clip(name=name, media_reference=ref, source_range=tr(start, duration, fps),
                            metadata=metadata or None)
