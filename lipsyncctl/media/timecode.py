"""Exact media time and timecode: rates as :class:`~fractions.Fraction`, times as whole frames (OTIO, EDL, SMPTE).

OTIO stores rates as floats (``23.976`` or ``23.976023976...``); an edit at 23.976 or 29.97 is really
``24000/1001`` or ``30000/1001``. :func:`exact_rate` snaps a float rate to the standard rate it stands
for (the one table of :mod:`lipsyncctl.media.rates`), so a time ``value`` at rate ``r`` is exactly
``value / exact_rate(r)`` seconds, and frame counts never drift over an hour-long timeline starting at
01:00:00:00.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

from lipsyncctl.media.rates import DROP_FRAME_RATES, snap_rate


def exact_rate(rate: float | Fraction) -> Fraction:
    """``23.976`` -> ``24000/1001`` (:func:`~lipsyncctl.media.rates.snap_rate`); a Fraction is already exact."""
    return rate if isinstance(rate, Fraction) else snap_rate(rate)


def fraction_str(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def seconds(rt: Any) -> Fraction:
    """An OTIO ``RationalTime`` as exact seconds."""
    return Fraction(rt.value).limit_denominator(10**9) / exact_rate(rt.rate)


def to_frames(rt: Any, fps: Fraction) -> int:
    """An OTIO ``RationalTime`` as a whole frame count at ``fps`` (rounded to the nearest frame)."""
    return round(seconds(rt) * fps)


def rational(frames: int, fps: Fraction) -> Any:
    """Whole frames at ``fps`` as an OTIO ``RationalTime`` (rate stored as a float, as OTIO does)."""
    import opentimelineio as otio

    return otio.opentime.RationalTime(frames, float(fps))


def time_range(start: int, duration: int, fps: Fraction) -> Any:
    import opentimelineio as otio

    return otio.opentime.TimeRange(rational(start, fps), rational(duration, fps))




def timecode_frames(text: str, fps: Fraction) -> int:
    """A timecode as a frame count at ``fps``: ``HH:MM:SS:FF`` (or ``.`` before the frames) non-drop,
    ``HH:MM:SS;FF`` drop-frame (:data:`DROP_FRAME_RATES` only), as OpenTimelineIO reads them. Raises
    ValueError when it does not parse at that rate."""
    import opentimelineio as otio

    return to_frames(otio.opentime.from_timecode(text.replace(".", ":"), float(fps)), fps)


def is_drop_frame(text: str | None, fps: Fraction) -> bool:
    """Whether a timecode (a file's tag, an EDL's) counts drop frame: a ``;`` (or ``,``) before its frames, at a
    rate that has drop frame."""
    return bool(text) and fps in DROP_FRAME_RATES and any(sep in text[-4:] for sep in ";,")  # type: ignore[index]


def dropped_per_minute(fps: Fraction) -> int:
    """Frame labels drop-frame timecode skips at each minute but every tenth: 2 at 29.97, 4 at 59.94."""
    return 2 * math.ceil(fps) // 30


def check_drop_label(text: str, fps: Fraction) -> None:
    """A timecode a person typed: a drop-frame one must name a frame (:func:`drop_frame_label_exists`).

    Raises:
        ValueError: it names a label drop frame skips (``01:01:00;00`` at 29.97), saying which are skipped.
    """
    if is_drop_frame(text, fps) and not drop_frame_label_exists(text, fps):
        skipped = ", ".join(f"{k:02d}" for k in range(dropped_per_minute(fps)))
        raise ValueError(f"no such drop-frame timecode (frames {skipped} are skipped at each minute but every tenth)")


def drop_frame_label_exists(text: str, fps: Fraction) -> bool:
    """Whether the drop-frame timecode ``HH:MM:SS;FF`` names a frame: not one of the labels skipped at a minute that
    is no tenth (``01:01:00;00``, ``;01``)."""
    minutes, seconds, frames = (int(p) for p in re.split(r"[:;,.]", text)[1:4])
    return not (seconds == 0 and minutes % 10 and frames < dropped_per_minute(fps))


def tag_frames(start_timecode: str | None, fps: Fraction) -> int:
    """A file's timecode tag (``HH:MM:SS:FF``) as a frame count at ``fps``; 0 without one or when it does not
    parse."""
    if not start_timecode:
        return 0
    try:
        return timecode_frames(start_timecode, fps)
    except ValueError:
        return 0


def timecode(frames: int, fps: Fraction, drop: bool = False) -> str:
    """SMPTE timecode of a frame count at ``fps``: non-drop frame ``HH:MM:SS:FF``, or with ``drop`` at 29.97 and
    59.94 (:data:`DROP_FRAME_RATES`) drop frame ``HH:MM:SS;FF``, as an NLE shows a drop-frame timeline (the
    same frame: ``01:00:00;00`` is frame 107892 at 29.97, which non-drop counts as ``00:59:56:12``). A count below 0
    (a handle before a source's first timecode) wraps past midnight, as SMPTE timecode does: -2 is ``23:59:59:23``
    at 25."""
    if frames < 0:
        nominal = math.ceil(fps)
        dropped = dropped_per_minute(fps) * (1440 - 144) if drop and fps in DROP_FRAME_RATES else 0  # a day's skipped
        frames %= nominal * 86400 - dropped
    if drop and fps in DROP_FRAME_RATES:
        import opentimelineio as otio

        return otio.opentime.to_timecode(otio.opentime.RationalTime(frames, float(fps)), float(fps), True)
    nominal = math.ceil(fps)
    ff = frames % nominal
    total = frames // nominal
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}:{ff:02d}"


def start_timecode(tag: str | None, source_fps: Fraction, first_frame: int, fps: Fraction) -> str | None:
    """The timecode of an output that starts at source frame ``first_frame`` (of a file tagged ``tag``, counted at
    ``source_fps``) and runs at ``fps``: the tag plus the frames skipped, converted to ``fps`` (drop frame where the
    tag is and ``fps`` has it). None without a tag, or for one that does not parse at ``source_fps``."""
    if tag is None:
        return None
    try:
        start = timecode_frames(tag, source_fps) + first_frame
    except ValueError:
        return None
    frames = start if fps == source_fps else round(Fraction(start) * fps / source_fps)
    return timecode(frames, fps, is_drop_frame(tag, fps))


def samples_at(frames: int, fps: Fraction, rate: int) -> int:
    """The first audio sample (at ``rate`` Hz) of frame ``frames``: ``floor(frames * rate / fps)``.

    Flooring both ends of a range makes consecutive segments tile the audio without a gap or overlap,
    and a segment of ``n`` frames gets ``floor``-exact samples whose length rounds up to ``n`` frames.
    """
    return math.floor(Fraction(frames) * rate / fps)
