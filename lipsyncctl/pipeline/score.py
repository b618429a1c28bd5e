"""``lipsyncctl score``: how well the mouth of a clip matches a sound track (LSE-C / LSE-D, the measure of
LatentSync's evaluation), for any clip: a sync's output against its own sound, or a source picture against a
new dub (the score before a sync).

Each clip is read on its nominal-rate grid (the frames ``sync`` reads; an interlaced one as progressive pictures
with ``sync.deinterlace: auto``), twice and never held (memory flat in the clip's length); its sound (the clip's
own, or ``audio``) is read at 16 kHz mono over the same span, a long one into an unnamed file in the system's
temporary folder, mapped and read as the measure reaches it. The measurement is
:class:`~lipsyncctl.scoring.meter.SyncMeter`'s: the official scale when ``sfd-face`` is installed, else the
labelled approximate scale. A clip under ``min_sync`` (LSE-C on that scale), or not measured when ``min_sync`` is
given (the gate cannot be passed), does not pass; a clip that cannot be read, or that ``start`` is past the end of,
fails, and the others are still scored.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import progress
from lipsyncctl.errors import LipsyncError, MediaError, UsageError

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.scoring.meter import SyncMeter

#: a clip's outcome: measured (and over min_sync, if given), under min_sync, not measured (``reason`` says why),
#: failed (could not be read: ``reason``/``hint``)
STATUSES = ("ok", "under_min_sync", "unmeasured", "failed")


@dataclass
class ClipScore:
    """One clip's scores: ``lse_c`` (confidence, higher = better in sync), ``lse_d`` (distance, lower = better),
    ``offset`` (25 fps frames the sound is early by, as the official evaluation reports it), ``tracks`` (per face
    track, official scale), over ``frames`` frames from ``first_frame`` at ``fps``."""

    video: Path
    audio: Path
    status: str
    first_frame: int = 0
    frames: int = 0
    fps: str = ""
    lse_c: float | None = None
    lse_d: float | None = None
    offset: int | None = None
    tracks: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    hint: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: LipsyncError | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"video": str(self.video), "audio": str(self.audio), "status": self.status,
                "first_frame": self.first_frame, "frames": self.frames, "fps": self.fps, "lse_c": self.lse_c,
                "lse_d": self.lse_d, "offset": self.offset, "tracks": self.tracks, "reason": self.reason,
                "hint": self.hint, "seconds": round(self.seconds, 3), "warnings": self.warnings}


@dataclass
class ScoreResult:
    """Every clip's :class:`ClipScore` in the order given, the scale they are on and the SyncNet's provenance."""

    clips: list[ClipScore]
    scale: str
    model: dict[str, Any]
    min_sync: float | None = None

    @property
    def failed(self) -> list[ClipScore]:
        """The clips that did not pass: unreadable, under ``min_sync``, or unmeasured under a ``min_sync``."""
        return [c for c in self.clips if c.status in ("failed", "under_min_sync")
                or (c.status == "unmeasured" and self.min_sync is not None)]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "min_sync": self.min_sync, "model": self.model,
                "counts": {s: sum(c.status == s for c in self.clips) for s in STATUSES},
                "clips": [c.to_dict() for c in self.clips]}


def score_clips(videos: Sequence[Path], config: Config, *, audio: Path | None = None, start: float | None = None,
                end: float | None = None, min_sync: float | None = None) -> ScoreResult:
    """Score each of ``videos`` against ``audio`` (None: each clip's own sound) over ``start``..``end`` seconds.

    Raises:
        MediaError: ``audio``, or the one clip given, that is not there (before any work); of several clips, one that
            is not there fails alone (a batch's QC over its outputs, one of which a failed row never wrote).
        MissingModelError: the evaluation SyncNet is not installed (before any clip is read).
    """
    from lipsyncctl.runner.devices import resolve_device
    from lipsyncctl.scoring.meter import close_meter, open_meter

    for path in ([audio] if audio is not None else []) + (list(videos) if len(videos) == 1 else []):
        _check_there(path, is_clip=path in videos)  # (of several clips, one not there fails alone: _score_one)
    meter = open_meter(resolve_device(config.inference.device), config.faces.backend)
    clips: list[ClipScore] = []
    try:
        for video in videos:
            progress.message(f"scoring {video}")
            clips.append(_score_one(meter, video, audio or video, config, start, end, min_sync))
    except KeyboardInterrupt:  # the clips scored so far are the result's (hours of QC over long clips)
        from lipsyncctl.errors import Interrupted

        so_far = ScoreResult(clips, meter.scale, meter.syncnet.to_dict(), min_sync).to_dict()
        raise Interrupted(f"interrupted after {len(clips)} of {len(videos)} clip(s) scored",
                          hint="rerun it for the clips not scored (--json lists those scored)", partial=so_far) from None
    finally:
        close_meter(meter, config.faces.backend)
    return ScoreResult(clips, meter.scale, meter.syncnet.to_dict(), min_sync)


def _check_there(path: Path, *, is_clip: bool) -> None:
    """Raise :class:`MediaError` when ``path`` is a folder or not there (a clip's image-sequence pattern: when no image
    matches it)."""
    from lipsyncctl.media.container import check_readable, is_image_sequence

    if path.is_dir():
        raise MediaError(f"{path}: a folder, not a clip", hint=f"give its clips, e.g. {path / '*.mp4'}")
    if is_clip and is_image_sequence(path) and not path.exists():  # a pattern: at sync.sequence_fps
        check_readable(path)  # no image matches it: MediaError
    elif not path.is_file():
        raise MediaError(f"{path}: file not found", hint="check the path")


def _score_one(meter: SyncMeter, video: Path, audio: Path, config: Config, start: float | None, end: float | None,
               min_sync: float | None) -> ClipScore:
    """One clip's :class:`ClipScore`; a clip that cannot be read is a ``failed`` one (the error kept)."""
    from lipsyncctl.audio import MODEL_AUDIO_RATE
    from lipsyncctl.media.audio import read_audio
    from lipsyncctl.media.reader import read_range
    from lipsyncctl.pipeline.clip import grid_frames, probe_inputs
    from lipsyncctl.pipeline.plan import select_range

    t0 = time.perf_counter()
    try:
        _check_there(video, is_clip=True)
        # a picture with frames, a sound (the dub of a multi-stream file): as sync asks of its inputs
        own = {"no_sound_hint": "measure it against a sound with --audio DUB"} if audio == video else {}
        inputs = probe_inputs(video, audio, config.sync.audio_stream, config.sync.sequence_fps, **own)
        vinfo = inputs.info.video
        fps = vinfo.nominal_fps
        first, stop = select_range(grid_frames(vinfo), fps, start, end)
        n = stop - first
        # the sound that plays with frame ``first`` on (the dub's timeline as sync takes it: Inputs.origin)
        sound = read_audio(audio, MODEL_AUDIO_RATE, 1, start=float(inputs.origin + first / fps), duration=float(n / fps),
                           stream_index=inputs.dub.index, folder=tempfile.gettempdir())  # a film's: mapped
        frames = functools.partial(read_range, video, first, n, deinterlace=config.sync.deinterlace == "auto")
        result = meter.score(frames, sound, fps, count=n)
    except (MediaError, UsageError) as exc:  # unreadable, or --start past this clip's end: this clip alone
        return ClipScore(video, audio, "failed", reason=_reason(exc, video), hint=exc.hint, error=exc,
                         seconds=time.perf_counter() - t0)
    score = ClipScore(video, audio, "ok", first, n, f"{fps.numerator}/{fps.denominator}", seconds=time.perf_counter() - t0,
                      warnings=[inputs.several] if inputs.several else [])
    if len(sound) < round(n / fps * MODEL_AUDIO_RATE) - 160:  # the measure stops with the shorter (official): said, not hidden
        score.warnings.append(f"the sound ({len(sound) / MODEL_AUDIO_RATE:.2f} s from the span's start) is shorter than the "
                              f"picture ({float(n / fps):.2f} s): measured over the sound's length only")
    if not result.measured:
        score.status, score.reason = "unmeasured", f"not measured on the {result.scale} scale: {result.reason}"
        return score
    score.lse_c, score.lse_d = round(float(result.lse_c), 4), round(float(result.lse_d), 4)  # type: ignore[arg-type]
    score.offset, score.tracks = result.offset, [t.to_dict() for t in result.tracks]
    if min_sync is not None and score.lse_c < min_sync:
        score.status = "under_min_sync"
        score.reason = f"sync confidence {score.lse_c:.2f} ({result.scale} scale) is under --min-sync {min_sync:g}"
    return score


def _reason(exc: LipsyncError, video: Path) -> str:
    """Why ``video`` failed, without the clip's name that the error's message begins with (a clip's ``reason`` is
    shown beside the clip: ``video_noaudio.mp4: no audio stream``, not the name twice). A message about another file
    (the ``audio`` given) keeps that file's name."""
    return exc.message.removeprefix(f"{video}: ") or exc.message
