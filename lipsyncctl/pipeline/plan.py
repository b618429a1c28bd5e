"""Step 1 of the sync pipeline: decide how many frames to render and which source frame each one shows.

Everything here is pure arithmetic on exact fractions (no I/O, no torch), so it is cheap to unit-test.

Terms:
    source frames  the frames of the input clip inside ``--start/--end`` (``V`` of them, at ``source_fps``).
    picture frames the selection resampled to the output rate (``P``; ``P == V`` when the rate is kept).
    audio frames   output frames needed to cover the new audio: ``A = ceil(duration * fps)``.

Length policies (``sync.length_policy``), what happens when ``A != P``:

=============  ==============================  ==================================================
policy         audio longer than the picture   audio shorter than the picture
=============  ==============================  ==================================================
``pingpong``   picture plays forward, then     picture cut to the audio (official LatentSync:
(default)      backward, ... (official           ``loop_video`` truncates before alignment)
               ``loop_video``: turn frames
               repeat)
``loop``       picture restarts from frame 0   picture cut to the audio
``freeze``     last frame held                 picture cut to the audio
``cut``        audio cut to the picture        picture cut to the audio (shortest wins)
``silence``    audio cut to the picture        audio padded with silence (picture kept whole)
=============  ==============================  ==================================================

The output audio always lasts exactly ``num_frames / fps`` (trimmed, or padded with silence by less
than one frame for the first three policies), so picture and sound end together.

Official difference: LatentSync renders ``floor(L / 2) + 2`` frames for ``L`` whisper feature frames
(two frames, 80 ms, more than the audio, and the mux leaves them without sound); we render
``ceil(duration * fps)`` frames, which equals the official count minus those two trailing frames
at 25 fps.

Frame-rate conform (``sync.fps`` set to a number, e.g. ``25`` to reproduce the official ``ffmpeg -r 25``):
output frame ``j`` (time ``j / fps``) shows source frame ``floor(j * source_fps / fps)`` (drop or repeat,
like ffmpeg's output-side ``-r``), and ``P = round(V * fps / source_fps)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from lipsyncctl.errors import MediaError, UsageError
from lipsyncctl.media.rates import frame_on_screen, frames_before

LengthPolicy = Literal["loop", "pingpong", "cut", "freeze", "silence"]
LENGTH_POLICIES: tuple[str, ...] = ("pingpong", "loop", "cut", "freeze", "silence")


@dataclass(frozen=True)
class ClipPlan:
    """The frame plan of one clip. Build it with :func:`plan_clip`.

    Attributes:
        fps: output frame rate (the source rate unless conformed).
        source_fps: the input's frame rate.
        first_frame: index of the first selected source frame (``--start``).
        source_frames: ``V``, selected source frames.
        picture_frames: ``P``, the selection at the output rate.
        audio_frames: ``A``, output frames the audio needs (``ceil(seconds * fps)``).
        num_frames: frames the output will have.
        policy: the length policy used.
        audio_samples: samples of the new audio (at ``audio_rate``).
        audio_rate: sample rate of the new audio, Hz.
    """

    fps: Fraction
    source_fps: Fraction
    first_frame: int
    source_frames: int
    picture_frames: int
    audio_frames: int
    num_frames: int
    policy: str
    audio_samples: int
    audio_rate: int

    @property
    def duration(self) -> float:
        """Output duration in seconds (``num_frames / fps``)."""
        return float(self.num_frames / self.fps)

    @property
    def audio_seconds(self) -> float:
        return self.audio_samples / self.audio_rate

    def output_samples(self, rate: int) -> int:
        """Samples the muxed audio must have at ``rate`` Hz to last exactly :attr:`duration`."""
        return int(round(Fraction(self.num_frames) * rate / self.fps))

    def picture_index(self, i: int) -> int:
        """Index ``0 .. P-1`` into the picture (at the output rate) shown by output frame ``i``."""
        if not 0 <= i < self.num_frames:
            raise IndexError(f"output frame {i} out of range 0..{self.num_frames - 1}")
        p = self.picture_frames
        if i < p:
            return i
        if self.policy == "pingpong":
            k = i % (2 * p)
            return k if k < p else 2 * p - 1 - k
        if self.policy == "loop":
            return i % p
        return p - 1  # freeze (cut and silence never run past the picture)

    def source_index(self, i: int) -> int:
        """Absolute source frame index (in the input file) shown by output frame ``i``."""
        p = self.picture_index(i)
        if self.fps != self.source_fps:
            p = min(math.floor(p * self.source_fps / self.fps), self.source_frames - 1)
        return self.first_frame + p

    def shown_source_frames(self) -> int:
        """Selected source frames from the first up to the last one the output shows: all of them, or fewer
        when a shorter dub cuts the output (``cut``) before the picture ends."""
        return self.source_index(min(self.num_frames, self.picture_frames) - 1) - self.first_frame + 1

    def source_indices(self, start: int, stop: int) -> list[int]:
        """:meth:`source_index` of output frames ``start .. stop-1``."""
        return [self.source_index(i) for i in range(start, stop)]

    def windows(self, size: int) -> Iterator[tuple[int, int]]:
        """Consecutive ``(start, stop)`` ranges of output frames, ``size`` frames each (last may be short)."""
        if size < 1:
            raise ValueError("window size must be >= 1")
        for start in range(0, self.num_frames, size):
            yield start, min(start + size, self.num_frames)

    def to_dict(self) -> dict[str, object]:
        return {
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "source_fps": f"{self.source_fps.numerator}/{self.source_fps.denominator}",
            "first_frame": self.first_frame,
            "source_frames": self.source_frames,
            "picture_frames": self.picture_frames,
            "audio_frames": self.audio_frames,
            "num_frames": self.num_frames,
            "policy": self.policy,
            "audio_seconds": round(self.audio_seconds, 6),
            "duration": round(self.duration, 6),
        }


def select_range(
    total_frames: int, fps: Fraction, start: float | None = None, end: float | None = None
) -> tuple[int, int]:
    """Source frames ``[first, stop)`` for ``--start``/``--end`` in seconds: from the frame on screen at ``start`` (as
    ``prep --start``) up to the last one on screen before ``end`` (:func:`~lipsyncctl.media.rates.frame_on_screen`,
    :func:`~lipsyncctl.media.rates.frames_before`: a time on a frame's boundary, within a millisecond, is that
    frame's start).

    Raises:
        UsageError: empty selection (start at or past the end of the clip, or ``end <= start``): the
            arguments are wrong, not the media (exit 2, like ``sync --segments`` ranges that leave the picture);
            a negative time (the CLI's bounds refuse it; a caller of the library gets the same).
    """
    for name, value in (("--start", start), ("--end", end)):
        if value is not None and value < 0:
            raise UsageError(f"{name} {value:g}: a time before the clip's first frame",
                             hint="give seconds from the clip's start, 0 or more")
    first = 0 if start is None else frame_on_screen(start, fps)
    stop = total_frames if end is None else frames_before(end, fps)
    first = max(0, min(first, total_frames))
    stop = max(0, min(stop, total_frames))
    if stop <= first:
        raise UsageError(
            f"--start/--end select no frames (clip has {total_frames} frames at {float(fps):.3f} fps: "
            f"start={start}, end={end})",
            hint="give times in seconds inside the clip, with end after start",
        )
    return first, stop


def select_frames(total_frames: int, first: int, stop: int) -> tuple[int, int]:
    """Source frames ``[first, stop)`` given exactly (an edit's source range), checked against the clip.

    Raises:
        UsageError: an empty or negative range (the caller's arguments, not the media).
        MediaError: a range that reaches past the clip's ``total_frames``.
    """
    if not 0 <= first < stop:
        raise UsageError(f"frame range [{first}, {stop}) is empty or negative",
                         hint="give the first frame and the frame after the last, first < stop")
    if stop > total_frames:
        raise MediaError(f"frame range [{first}, {stop}) reaches past the clip's {total_frames} frames",
                         hint="check the edit's source range against the media (wrong file or frame rate?)")
    return first, stop


def end_clamp_warning(total_frames: int, fps: Fraction, end: float | None) -> str | None:
    """The warning for an ``--end`` past the clip, which :func:`select_range` clamps; None when inside."""
    if end is None or frames_before(end, fps) <= total_frames:
        return None
    duration = float(total_frames / Fraction(fps))
    return (f"--end {end:g} s is past the end of the clip: clamped to the clip's duration "
            f"({duration:.3f} s, {total_frames} frame{'s' * (total_frames != 1)})")


#: what each length policy does with the picture when the audio is longer / shorter (module docstring)
_LONGER = {"pingpong": "the picture plays forward then backward to fill it", "loop": "the picture restarts",
           "freeze": "the last frame is held", "cut": "the audio is cut to the picture",
           "silence": "the audio is cut to the picture"}
_SHORTER = {"pingpong": "the picture is cut to the audio", "loop": "the picture is cut to the audio",
            "freeze": "the picture is cut to the audio", "cut": "the picture is cut to the audio",
            "silence": "the audio is padded with silence"}


def length_mismatch_warning(plan: ClipPlan, start: float | None = None, end: float | None = None) -> str | None:
    """The warning when the audio and the selected picture (``--start``/``--end``, else the whole clip) differ
    by more than one frame: what the length policy does about it and how long the output is. None when
    they agree (an audio a fraction of a frame longer, as AAC padding makes it, is agreement)."""
    audio, picture = plan.audio_frames, plan.picture_frames
    if abs(audio - picture) <= 1:
        return None
    given = "/".join(name for name, value in (("--start", start), ("--end", end)) if value is not None)
    selection = f"the picture selected by {given}" if given else "the clip"
    what = (_LONGER if audio > picture else _SHORTER)[plan.policy]
    return (f"the audio ({plan.audio_seconds:.3f} s) is {'longer' if audio > picture else 'shorter'} than "
            f"{selection} ({float(picture / plan.fps):.3f} s, {picture} frame{'s' * (picture != 1)}): {what} (length policy "
            f"{plan.policy}); the output has {plan.num_frames} frame{'s' if plan.num_frames != 1 else ''} "
            f"({plan.duration:.3f} s)")


def picture_samples(frames: int, fps: Fraction, rate: int) -> int:
    """Whole samples at ``rate`` that ``frames`` frames at ``fps`` last: a sound cut to these gives the same frame count
    (``ceil(samples * fps / rate) == frames``)."""
    return math.floor(Fraction(frames) / Fraction(fps) * rate)


def plan_clip(
    source_frames: int,
    source_fps: Fraction,
    audio_samples: int,
    audio_rate: int,
    policy: str = "pingpong",
    fps: Fraction | None = None,
    first_frame: int = 0,
) -> ClipPlan:
    """Plan the output of one clip.

    Args:
        source_frames: selected source frames ``V`` (after ``--start/--end``).
        source_fps: the input's exact frame rate.
        audio_samples: length of the new audio in samples at ``audio_rate``.
        audio_rate: its sample rate in Hz.
        policy: a length policy (module docstring).
        fps: output rate; None keeps ``source_fps``.
        first_frame: index of the first selected source frame.

    Raises:
        MediaError: no picture or no audio.
        ValueError: unknown policy.
    """
    if policy not in LENGTH_POLICIES:
        raise ValueError(f"unknown length policy {policy!r} (one of {', '.join(LENGTH_POLICIES)})")
    source_fps = Fraction(source_fps)
    out_fps = source_fps if fps is None else Fraction(fps)
    if source_frames <= 0:
        raise MediaError("the video has no frames in the selected range")
    if audio_samples <= 0 or audio_rate <= 0:
        raise MediaError("the audio is empty")
    if out_fps == source_fps:
        picture = source_frames
    else:
        picture = max(1, round(source_frames * out_fps / source_fps))
    audio_frames = math.ceil(Fraction(audio_samples) * out_fps / audio_rate)
    if policy in ("pingpong", "loop", "freeze"):
        n = audio_frames
    elif policy == "cut":
        n = min(audio_frames, picture)
    else:  # silence
        n = picture
    return ClipPlan(
        fps=out_fps,
        source_fps=source_fps,
        first_frame=first_frame,
        source_frames=source_frames,
        picture_frames=picture,
        audio_frames=audio_frames,
        num_frames=n,
        policy=policy,
        audio_samples=audio_samples,
        audio_rate=audio_rate,
    )

