"""CMX 3600 EDL text where OTIO's adapter reads or writes it otherwise than NLEs: the event and ``M2`` grammar, the
speeds an EDL's events state that OTIO's reader lost (:func:`keep_motion_effects`, for
:func:`lipsyncctl.timeline.source.read_timeline`), and a relinked EDL as an EDL states it (:func:`edl_speeds`:
speed-changed events and their ``M2`` lines; :func:`edl_counting`: the edit's timecode count and its ``FCM`` line;
:func:`lipsyncctl.timeline.outputs.write_timelines` applies them)."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

from lipsyncctl.media import timecode as tb

#: An event line: number, reel, channels, transition (and its duration), source in/out, record in/out.
EDL_EVENT = re.compile(r"^(\d+)\s+(\S+)\s+(\S+)\s+(\S+)(?:\s+\d+)?\s+(\S{11})\s+(\S{11})\s+(\S{11})\s+(\S{11})\s*$")
#: ``M2   REEL   SPEED   SOURCE-IN`` (speed in frames a second; negative: reverse; 0: a still); OTIO's writer puts
#: the clip's name, which may hold spaces, where the reel goes.
EDL_M2 = re.compile(r"^M2\s+(.+?)\s+(-?[0-9.]+)\s+(\S{11})\s*$")


def m2_speed(m2: re.Match[str], rate: Fraction) -> Fraction:
    """An :data:`EDL_M2` line's speed: its frames-per-second field over the edit's rate, to the hundredth
    (``029.97`` at 29.97 is 1x, ``-25.0`` at 25 is reverse).

    Raises:
        ValueError: the field is not a number.
    """
    return (Fraction(m2.group(2)) / rate).limit_denominator(100)
_FREEZE = re.compile(r"^\*\s*FREEZE FRAME", re.IGNORECASE)


def keep_motion_effects(timeline: Any, text: str, rate: Fraction) -> None:
    """Give each clip the speed its event's ``M2`` line (or ``* FREEZE FRAME``) states where OTIO's reader lost it.

    The reader takes a motion effect only from an event whose source duration differs from its record duration
    (the source out written at the effect's speed); editors that write the source out as at normal speed (the
    record duration) and state the speed in the ``M2`` line alone get a clip at normal speed, which would be
    rendered and relinked in place of the edit's 2x or reversed shot. Such a clip (found by reel, source in and
    record in) gets the ``LinearTimeWarp`` (or ``FreezeFrame``) the reader gives the other form, so it is planned
    as the edit plays it (``segments._time_warp``)."""
    import opentimelineio as otio

    fps = float(rate)

    def frames(tc: str) -> int:
        return tb.timecode_frames(tc, rate)

    stated: dict[tuple[str, int, int], Fraction | None] = {}  # (reel, source in, record in) -> speed; None: a still
    event: list[re.Match[str]] = []
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        line = raw.strip()
        if (m := EDL_EVENT.match(line)) is not None:
            event = [e for e in event if e.group(1) == m.group(1)] + [m]  # a dissolve's two lines are one event
            continue
        if line[:1].isdigit():  # an event this reading does not parse: its M2 is not given to the one before
            event = []
            continue
        motion, freeze = EDL_M2.match(line), _FREEZE.match(line)
        if not event or (motion is None and freeze is None):
            continue
        try:
            if motion is not None:  # the line of this event with the M2's reel, else its last line; where a dissolve's
                # two sides are one reel, the one at the M2's source in, else the side its next comment names (* TO:
                # the incoming clip), else the outgoing clip's (OTIO's writer states that one at the clip's own in)
                reel, src = motion.group(1), frames(motion.group(3))
                speed = m2_speed(motion, rate)
                same = [e for e in event if e.group(2) == reel] or event[-1:]
                incoming = i + 1 < len(lines) and lines[i + 1].strip().upper().startswith("* TO")
                ev = next((e for e in same if frames(e.group(5)) == src), same[-1] if incoming else same[0])
            else:
                ev, speed = event[-1], None
            reel = None if ev.group(2) == "AX" else ev.group(2)  # as the reader keeps it: AX is no reel
            stated[(reel, frames(ev.group(5)), frames(ev.group(7)))] = speed
        except (ValueError, ZeroDivisionError):  # a timecode or speed OTIO's reader does not read: no clip to find
            continue
    if not stated:
        return
    start = round(timeline.global_start_time.value) if timeline.global_start_time is not None else 0
    for clip in timeline.find_clips():
        if clip.source_range is None or any(isinstance(e, otio.schema.FreezeFrame) for e in clip.effects):
            continue
        reel = (clip.metadata.get("cmx_3600") or {}).get("reel")
        key = (reel, round(clip.source_range.start_time.rescaled_to(fps).value),
               start + round(clip.range_in_parent().start_time.rescaled_to(fps).value))
        if key not in stated:
            continue
        speed = stated[key]
        warps = [e for e in clip.effects if isinstance(e, otio.schema.LinearTimeWarp)]
        if warps:  # the reader's own: its speed, the M2's frames over the exact NTSC rate (048.0 at 23.976: 2.002x,
            if speed is not None and len(warps) == 1:  # a frame off every ~500), is the stated one (2x)
                warps[0].time_scalar = float(speed)
            continue
        if speed is None:
            clip.effects.append(otio.schema.FreezeFrame())
        elif speed != 1:
            clip.effects.append(otio.schema.LinearTimeWarp(time_scalar=float(speed)))


_EDL_TIMECODE = re.compile(r"\b\d{2}:\d{2}:\d{2}[:;]\d{2}\b")


def edl_speeds(text: str, timeline: Any) -> str:
    """An EDL written by OTIO's CMX 3600 writer, its speed-changed events as an EDL states them. That writer
    wrote a ``LinearTimeWarp`` event's source out as the record duration *divided* by the speed (a 2x shot of 10
    frames: 5 source frames, a reverse one an out point before its in point), named the clip, not the reel, on
    its ``M2`` line, and wrote a dissolve's ``M2`` lines (the outgoing clip's, then the incoming one's) under
    its two event lines, its cut line at the outgoing clip's divided out point. Each source out becomes the in
    point plus the record duration times the speed's size, up to a whole frame (the form OTIO's reader and NLEs
    read back as that speed; the span holds every frame the event shows); an ``M2`` line names the reel and source
    in of its event line (a dissolve's ``FROM`` side: the cut line, which starts where the outgoing event now ends)
    and states the speed in frames a second as NLEs write it (``050.0``, ``-025.0``). A reverse is written forward by :func:`~lipsyncctl.timeline.outputs._for_adapter` (the writer raised on a
    source out before 00:00:00:00), its clip's name marked (:data:`REVERSE`), and turned back here. An event line
    that does not parse is left as written, its ``M2`` lines too."""
    rate = tb.exact_rate((timeline.global_start_time or timeline.duration()).rate)
    lines = text.splitlines()
    block: list[tuple[int, re.Match[str]]] = []  # this event's lines (a dissolve: its cut line and its D line)
    moved: tuple[str, str, str] | None = None  # the last rewritten line: reel, source out as written, as it is now
    for i, line in enumerate(lines):
        if line.strip()[:1].isdigit() and EDL_EVENT.match(line.strip()) is None:
            block, moved = [], None  # its M2 lines are not the event's before
            continue
        if (event := EDL_EVENT.match(line.strip())) is not None:
            block = [*block, (i, event)] if block and block[0][1].group(1) == event.group(1) else [(i, event)]
            if (moved is not None and event.group(2) == moved[0] and event.group(5) == event.group(6) == moved[1]
                    and event.group(7) == event.group(8)):  # a dissolve's cut line, at the outgoing clip's out
                lines[i] = _with_source(line, event, moved[2], moved[2])
                block[-1] = (i, EDL_EVENT.match(lines[i].strip()))
            continue
        m2 = EDL_M2.match(line.strip())
        if m2 is None or not block:
            continue
        incoming = i + 1 < len(lines) and lines[i + 1].startswith("* TO")
        at, event = block[-1] if incoming else block[0]
        try:
            speed = m2_speed(m2, rate)
            first = tb.timecode_frames(event.group(5), rate)
            frames = tb.timecode_frames(event.group(8), rate) - tb.timecode_frames(event.group(7), rate)
        except ValueError:  # nothing the writer makes; left as written
            continue
        if m2.group(1).endswith(REVERSE):
            speed = -abs(speed)
        stop = tb.timecode(first + (1 if speed == 0 else math.ceil(frames * abs(speed))), rate, ";" in event.group(5))
        lines[at] = _with_source(lines[at], event, event.group(5), stop)
        block = [(j, EDL_EVENT.match(lines[j].strip()) if j == at else e) for j, e in block]
        moved = (event.group(2), event.group(6), stop)
        lines[i] = f"M2   {event.group(2):<8} {m2_speed_text(speed * rate):>6}                {event.group(5)}"
    lines = [line.replace(REVERSE, "") for line in lines]
    lines = [line for line in lines if not _NO_NAME.match(line)]  # a nameless clip's, named by the mark alone
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


#: the mark :func:`~lipsyncctl.timeline.outputs._for_adapter` puts on the name of a clip it gives OTIO's CMX writer forward for a reverse (the
#: writer writes the name on the clip's ``M2`` line): :func:`edl_speeds` makes that speed negative, then drops it
REVERSE = "~reverse~"
_NO_NAME = re.compile(r"^\* (FROM|TO) CLIP NAME:\s*$")


def _with_source(line: str, event: re.Match[str], src_in: str, src_out: str) -> str:
    """The event line ``line`` (matched as ``event``) with the source in and out given."""
    body = line.strip()
    head = line[: len(line) - len(line.lstrip())]
    return head + body[: event.start(5)] + f"{src_in} {src_out}" + body[event.end(6):]


def m2_speed_text(fps: Fraction) -> str:
    """An ``M2`` line's speed, in frames a second as NLEs write it: three digits and a tenth (``050.0``, ``-025.0``,
    ``000.0``), a hundredth where a tenth is not the speed (``059.94``: 2x at 29.97)."""
    digits = 1 if abs(fps * 10 - round(fps * 10)) * 100 < 1 else 2
    return ("-" if fps < 0 else "") + f"{float(abs(fps)):0{4 + digits}.{digits}f}"


def edl_counting(text: str, timeline: Any) -> str:
    """An EDL written by OTIO's CMX 3600 writer, counting its timecodes as the edit does. At 29.97/59.94 that
    writer always writes drop frame (``;``) and no ``FCM`` line: a non-drop edit's ``01:00:00:00`` came back
    as ``01:00:03;18`` (the same frame, other digits). The timecodes are rewritten in the edit's count
    (:func:`~lipsyncctl.timeline.source.is_drop_frame_timeline`); other rates' are left as written. Every EDL gets
    its ``FCM`` line (an input's ``FCM: NON-DROP FRAME`` was dropped at 23.976: some conform tools want one)."""
    from lipsyncctl.timeline.source import is_drop_frame_timeline

    rate = tb.exact_rate((timeline.global_start_time or timeline.duration()).rate)
    drop = rate in tb.DROP_FRAME_RATES and is_drop_frame_timeline(timeline, rate)

    def recount(m: re.Match[str]) -> str:
        return tb.timecode(tb.timecode_frames(m.group(0), rate), rate, drop)

    lines = text.splitlines()
    if rate in tb.DROP_FRAME_RATES:
        lines = [line if line.startswith("*") else _EDL_TIMECODE.sub(recount, line) for line in lines]
    fcm = f"FCM: {'DROP FRAME' if drop else 'NON-DROP FRAME'}"
    lines = [line for line in lines if not line.upper().startswith("FCM")]
    at = 1 if lines and lines[0].upper().startswith("TITLE") else 0
    return "\n".join([*lines[:at], fcm, *lines[at:]]) + "\n"
