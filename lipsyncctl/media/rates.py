"""Standard frame rates, and snapping a rate someone wrote down or measured to the one it stands for.

One table for the whole package: media probing (a measured 29.97 fps stream), rates typed by a person
(``--fps 23.976``), OTIO's float rates on a timeline (``23.976023976...``) and the rates an EDL's
timecode can count at all snap through :func:`snap_rate`. NTSC rates are exact fractions
(``30000/1001``): a rate written as ``29.97`` is 0.003 % off the real one, which is a frame in about
nine hours, so it must not be used as is.
"""

from __future__ import annotations

import math
from fractions import Fraction

#: Rates video is shot, cut and delivered at (NTSC rates as exact fractions), slowest first.
STANDARD_RATES: tuple[Fraction, ...] = (
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
    Fraction(48000, 1001), Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60), Fraction(90),
    Fraction(100), Fraction(120000, 1001), Fraction(120), Fraction(240),
)
#: Rates an MXF holds (FFmpeg's MXF writer, SMPTE content-package rates): the standard ones up to 120, and 72, 96.
MXF_RATES: frozenset[Fraction] = frozenset({*(r for r in STANDARD_RATES if r <= 120), Fraction(72), Fraction(96)})
#: The rates whose timecodes may count drop frame (``HH:MM:SS;FF``): the NTSC 29.97 and 59.94 (SMPTE ST 12-1).
DROP_FRAME_RATES: tuple[Fraction, ...] = (Fraction(30000, 1001), Fraction(60000, 1001))
#: Relative distance within which a rate snaps to a standard one. 0.1 % takes ``23.98`` and ``29.97``
#: to the NTSC rates, while 24 and 24000/1001 (0.1 % apart) each stay themselves: the nearest one wins.
SNAP_TOLERANCE = 0.001


def snap_rate(rate: Fraction | float, tolerance: float = SNAP_TOLERANCE) -> Fraction:
    """``rate`` as the nearest of :data:`STANDARD_RATES` when within ``tolerance`` (relative), else as
    a fraction with a denominator of at most 1001 (``12.5`` -> ``25/2``). Non-positive rates pass through.

    Example: ``snap_rate(29.97) == Fraction(30000, 1001)``, ``snap_rate(23.976023976) == Fraction(24000, 1001)``.
    """
    exact = rate if isinstance(rate, Fraction) else Fraction(rate)
    if exact <= 0:
        return exact
    best = min(STANDARD_RATES, key=lambda r: abs(float(r) - float(exact)) / float(r))
    if abs(float(best) - float(exact)) / float(best) <= tolerance:
        return best
    return exact if exact.denominator <= 1001 else exact.limit_denominator(1001)


def parse_rate(text: str | int | float | Fraction) -> Fraction:
    """A frame rate given by a person: ``"25"`` and ``"30000/1001"`` exactly, a decimal such as
    ``"29.97"`` or ``"23.976"`` as the standard rate it names (30000/1001, 24000/1001), as everywhere
    else in video.

    Raises:
        ValueError: ``text`` is not a number or a fraction.
    """
    rate = Fraction(str(text))
    return snap_rate(rate) if rate.denominator != 1 else rate


def time_tolerance(fps: Fraction | int) -> Fraction:
    """How far a frame's time may stand past a time and still count as at it: 1 ms (timestamps stored in a
    millisecond time base: 29.97 fps is 33, 33, 34 ms apart), less than a quarter frame at any rate."""
    return min(Fraction(1, 1000), 1 / (4 * Fraction(fps)))


def frame_on_screen(seconds: float | Fraction, fps: Fraction | int) -> int:
    """The frame of a constant-rate picture on screen at ``seconds`` (``--start``): the last one starting at or
    before it, within :func:`time_tolerance` (``1.0`` s at 30000/1001 is frame 30, which starts at 1.001 s)."""
    return math.floor((exact(seconds) + time_tolerance(fps)) * Fraction(fps))


def frames_before(seconds: float | Fraction, fps: Fraction | int) -> int:
    """How many frames of a constant-rate picture start before ``seconds`` (``--end``; the same tolerance)."""
    return max(0, math.ceil((exact(seconds) - time_tolerance(fps)) * Fraction(fps)))


def exact(value: float | int | str | Fraction) -> Fraction:
    """A number a person typed or a float field holds (seconds ``0.19``, a start time, a rate ``29.97``) as
    the fraction meant, not the binary float's expansion: the nearest with a denominator up to a million."""
    return value if isinstance(value, Fraction) else Fraction(value).limit_denominator(10**6)
