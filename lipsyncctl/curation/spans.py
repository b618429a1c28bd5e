"""Frame spans of the curation job: shots cut into training segments (pure arithmetic, no I/O).

Spans are ``(first, stop)`` frame indices on the source's 25 fps grid, ``stop`` exclusive.

The official pipeline cuts each shot with ``ffmpeg -c:v copy -segment_time 5 -f segment``: a stream copy
can only cut at key frames, so its pieces are "5 s or more, up to the next key frame" and the last piece
is whatever is left (often under 2 s, which then always fails the sync stage). :func:`exact_segments`
cuts frame-exactly instead: greedy pieces of ``seg`` frames and the remainder merged into the last one, so
every piece of a shot at least ``seg`` long is between ``seg`` and ``2 * seg - 1`` frames.
:func:`official_segments` reproduces the key-frame lengths for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

Span = tuple[int, int]


def exact_segments(shot: Span, seg: int) -> list[Span]:
    """``shot`` cut into pieces of ``seg`` frames, the remainder merged into the last piece.

    A shot shorter than ``seg`` is one piece (the caller decides whether it is long enough). For
    ``n = stop - first >= seg`` there are ``n // seg`` pieces; all but the last are ``seg`` long and the
    last is ``seg + n % seg`` (< ``2 * seg``).
    """
    first, stop = shot
    if seg < 1:
        raise ValueError(f"segment length must be >= 1 frame, got {seg}")
    n = stop - first
    if n <= 0:
        return []
    k = max(1, n // seg)
    bounds = [first + i * seg for i in range(k)] + [stop]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def official_segments(shot: Span, seg: int, keyframes: Sequence[int]) -> list[Span]:
    """The pieces ffmpeg's segment muxer makes of ``shot`` with a stream copy (``-segment_time``): after
    ``n`` cuts, the next cut is at the first key frame at least ``(n + 1) * seg`` frames after the shot's
    start (timestamps reset per shot file); the last piece takes what is left.

    ``keyframes``: grid indices of the key frames (those strictly inside the shot are used).
    """
    first, stop = shot
    out: list[Span] = []
    start, cuts = first, 0
    for key in sorted(k for k in set(keyframes) if first < k < stop):
        if key - first >= (cuts + 1) * seg:
            out.append((start, key))
            start, cuts = key, cuts + 1
    if start < stop:
        out.append((start, stop))
    return out


def shot_spans(cuts: Sequence[int], frames: int) -> list[Span]:
    """Shots of a clip of ``frames`` frames from the frame indices where a new shot starts (a clip
    without a cut is one shot: PySceneDetect's ``start_in_scene=True``)."""
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < frames), frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
