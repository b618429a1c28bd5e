"""What the timeline job refuses to call success: its checks fail closed (issue 13.7).

- **Nothing to do is not success.** An edit none of whose clips can be rendered (every clip's media
  missing, unreadable or the wrong file; every clip disabled, ``lipsync: false`` or time-warped; or no
  clip at all) is bad input, :class:`~lipsyncctl.errors.MediaError` (exit 5), raised after planning and
  before anything else. A resumed run whose every shot is reused from the job store has shots: success.
- **A gate that cannot be evaluated fails**, unless ``timeline.unchecked_gates: warn``
  (``--unchecked-gates warn``): ``timeline.min_sync`` without the evaluation SyncNet is a missing model
  (exit 4) before any render (a dry run lists it in ``missing_models``); a lip-synced shot whose sync
  could not be measured (shorter than the official 50-frame track, no face in the crops...) counts as
  under ``min_sync`` (exit 1).
- **Mismatches warn**: a dub that does not cover the whole edit names the shots that get silence.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from fractions import Fraction
from typing import TYPE_CHECKING

from lipsyncctl.errors import MediaError, MissingModelError
from lipsyncctl.timeline.types import ShotStatus

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.timeline.dub import DubTrack
    from lipsyncctl.timeline.segments import Segment, SkippedItem, TimelinePlan
    from lipsyncctl.timeline.types import ShotResult

#: skip reasons that another path to the media can fix (hint: --media-root / --relink)
_MEDIA_KINDS = ("missing media", "unreadable media", "wrong media", "source range outside the media",
                "unsupported media reference")
_SHOWN = 3  # skipped clips named in the error


def require_shots(plan: TimelinePlan) -> None:
    """Raise when ``plan`` has no segment to render.

    Raises:
        MediaError: (exit 5) naming how many clips were skipped, why, and the first few of them.
    """
    if plan.segments:
        return
    if not plan.skipped:
        raise MediaError(f"the edit {plan.name!r} has no clips on its video tracks: nothing to lip-sync",
                         hint="check that this is the edit you meant (the picture must be on a video track)")
    kinds = Counter(_kind(k) for k in plan.skipped)
    summary = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    names = "; ".join(f"{k.name or '(unnamed)'}: {k.reason}" for k in plan.skipped[:_SHOWN])
    more = f"; and {len(plan.skipped) - _SHOWN} more" if len(plan.skipped) > _SHOWN else ""
    if any(kind in _MEDIA_KINDS for kind in kinds):
        hint = ("find the media: --media-root DIR (the folder the files are in now) or --relink OLD=NEW "
                "(replace a path prefix of the edit's media paths)")
    else:
        hint = "enable the clips in the edit, or remove their `lipsync: false`"
    raise MediaError(f"nothing to lip-sync: all {len(plan.skipped)} clip(s) of the edit were skipped "
                     f"({summary}): {names}{more}", hint=hint)


def _kind(item: SkippedItem) -> str:
    """``"missing media: x.mov"`` -> ``"missing media"``; ``"wrong media? ..."`` -> ``"wrong media"``."""
    if item.reason.startswith("source range"):
        return "source range outside the media"
    if item.reason.startswith("lipsync: false"):
        return "lipsync: false"
    return re.split(r"[:(?]", item.reason, maxsplit=1)[0].strip() or "other"


def check_sync_gate(config: Config, *, plan_only: bool) -> tuple[list[dict[str, str]], list[str]]:
    """``timeline.min_sync`` needs the evaluation SyncNet: check it is installed before anything renders.

    Returns:
        ``(missing, warnings)``: for a dry run (``plan_only``) the missing model as a ``missing_models``
        entry (``{"model", "role", "error", "fetch"}``); with ``unchecked_gates: warn`` a warning instead.

    Raises:
        MissingModelError: (exit 4) not installed, on a real run with ``unchecked_gates: fail``.
    """
    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.scoring.evaluator import EVAL_MODEL

    tl = config.timeline
    if tl.min_sync is None:
        return [], []
    try:
        load_registry().resolve(EVAL_MODEL)
    except MissingModelError as exc:
        fetch = f"lipsyncctl models fetch {EVAL_MODEL}"
        if tl.unchecked_gates == "warn":
            return [], [f"--min-sync {tl.min_sync:g} will not be checked: {EVAL_MODEL} is not installed "
                        f"(timeline.unchecked_gates=warn; `{fetch}` to check it)"]
        if plan_only:
            return [{"model": EVAL_MODEL, "role": "evaluation, for --min-sync", "error": exc.message,
                     "fetch": fetch}], []
        raise MissingModelError(
            f"--min-sync {tl.min_sync:g} needs the evaluation SyncNet {EVAL_MODEL!r}, which is not installed "
            f"({exc.message})",
            hint=f"run `{fetch}` on a machine that is online, or pass --unchecked-gates warn "
                 "(timeline.unchecked_gates=warn) to render without the check") from None
    return [], []


def apply_min_sync(rows: list[ShotResult], min_sync: float | None, mode: str, scored: bool,
                   scale: str | None) -> list[str]:
    """Mark the lip-synced rows under ``min_sync`` (LSE-C on ``scale``) ``under_min_sync``; a row whose sync
    was not measured too, unless ``mode`` (``timeline.unchecked_gates``) is ``warn``. Returns the
    language's warnings (``scored``: whether the evaluation SyncNet ran at all)."""
    if min_sync is None:
        return []
    warnings = []
    if not scored:
        warnings.append(f"timeline.min_sync={min_sync:g} not checked: the evaluation SyncNet is not installed"
                        + ("" if mode == "warn" else "; every lip-synced shot counts as under it"))
    for r in rows:
        if r.status != ShotStatus.DONE:
            continue
        if r.sync_after is None and mode == "warn":
            r.warnings.append(f"--min-sync {min_sync:g} not checked: the sync confidence was not measured "
                              "(timeline.unchecked_gates=warn)")
        elif r.sync_after is None:
            r.status = ShotStatus.UNDER_MIN_SYNC
            r.warnings.append(f"the sync confidence was not measured, so --min-sync {min_sync:g} cannot be "
                              "checked: counted as under it (--unchecked-gates warn lets it pass)")
        elif r.sync_after < min_sync:
            r.status = ShotStatus.UNDER_MIN_SYNC
            r.warnings.append(f"sync confidence {r.sync_after:.2f} ({scale} scale) is under --min-sync {min_sync}")
    return warnings


def dub_coverage_warning(dub: DubTrack, plan: TimelinePlan) -> str | None:
    """A warning when ``dub`` does not cover the whole edit (it ends early or starts late by a frame or
    more), or a shot's ``audio_offset`` moves its window past the dub's ends, naming the language, both
    lengths and the shots that get silence; None when every shot has sound."""
    from lipsyncctl.timeline.dub import offset_samples

    fps = plan.fps
    length = Fraction(dub.samples.shape[1], dub.rate)
    first = math.floor(dub.start * fps)          # the first record frame with dub sound
    end = math.ceil((dub.start + length) * fps)  # the record frame after the last one

    def window(seg: Segment) -> tuple[Fraction, Fraction]:
        """The record frames where ``seg``'s picture has dub sound (its picture at t plays the dub at
        t - audio_offset, so an offset moves the window by it)."""
        shift = Fraction(offset_samples(seg, dub.rate), dub.rate) * fps
        return first + shift, end + shift

    def silent(seg: Segment) -> bool:
        lo, hi = window(seg)
        return seg.record_start + seg.record_frames <= lo or seg.record_start >= hi

    def partly(seg: Segment) -> bool:
        lo, hi = window(seg)
        return not silent(seg) and (seg.record_start < lo or seg.record_start + seg.record_frames > hi)

    silent_ids = [s.id for s in plan.segments if silent(s)]
    partly_ids = [s.id for s in plan.segments if partly(s)]
    if first <= 0 and end >= plan.duration and not silent_ids and not partly_ids:
        return None

    def tc(frame: int) -> str:
        return plan.timecode(min(max(frame, 0), plan.duration))

    def at(frame: int, time: Fraction, which: str) -> str:  # where the dub's sound starts or ends, even outside the
        # edit: its exact time, and its first (or last) frame's timecode (an offset of 0.5 s at 23.976 is in frame
        # 11, which starts at 0.459 s: that time was said as the offset's)
        if frame < 0 and plan.global_start + frame < 0:
            return f"{float(-time):.3f} s before the edit's start"
        where = (" (after the edit's end)" if frame > plan.duration
                 else " (before the edit's start)" if frame < 0 else "")
        return f"{float(time):.3f} s ({which} frame {plan.timecode(frame)}){where}"

    parts = []
    if first > 0:
        parts.append(f"it starts at {at(first, dub.start, 'first')}")
    if end < plan.duration:
        parts.append(f"it ends at {at(end - 1, dub.start + length, 'last')}")
    if not parts:
        parts.append("an audio_offset moves a shot's window past its ends")
    shots = "; ".join(([f"silent shots: {', '.join(silent_ids)}"] if silent_ids else [])
                      + ([f"partly silent: {', '.join(partly_ids)}"] if partly_ids else [])) or "no shot is affected"
    return (f"dub {dub.language} ({float(length):.3f} s) does not cover the edit ({tc(0)}-{tc(plan.duration)}, "
            f"{float(plan.duration / fps):.3f} s): {', '.join(parts)}; {shots}")
