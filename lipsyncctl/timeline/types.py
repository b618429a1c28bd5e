"""The timeline job's types: what to do (:class:`TimelineJob`), each shot's state while the job runs
(:class:`ShotState`, :class:`ShotOutcome`, :class:`ShotStatus`), and what it did (:class:`TimelineResult`
with one :class:`LanguageResult` per dub, one :class:`ShotResult` per shot).

``to_dict()`` of the results is the ``--json`` output and the shots of ``report.json``: plain JSON types,
statuses as their string values. A :class:`ShotOutcome` crosses process boundaries (worker pool, Ray) and
is stored as JSON in the job store (:meth:`ShotOutcome.to_dict` / :meth:`ShotOutcome.from_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lipsyncctl.timeline.ranges import SegmentsFile
    from lipsyncctl.timeline.segments import Segment, TimelinePlan
    from lipsyncctl.timeline.shot_task import ShotTask


class ShotStatus(StrEnum):
    """Where a shot of one language stands. Whether it was rendered by this run or reused from an earlier
    one is not a status: see :attr:`ShotState.reused` / :attr:`ShotState.rendered`."""

    DONE = "done"                      # lip-synced (rendered now or reused)
    NO_FACE = "no_face"                # rendered: no usable face in any frame (the source is kept)
    NO_DIALOGUE = "no_dialogue"        # ``non_dialogue=passthrough`` and no speech: left alone
    FAILED = "failed"                  # the render failed (the error says why)
    UNDER_MIN_SYNC = "under_min_sync"  # done, but its sync confidence is under ``timeline.min_sync`` (QC)
    PENDING = "pending"                # not settled: to render by this run or another shard

    @property
    def is_failure(self) -> bool:
        """Counts as a failure for the exit code."""
        return self in (ShotStatus.FAILED, ShotStatus.UNDER_MIN_SYNC)



@dataclass
class ShotOutcome:
    """What became of one shot's render (or why it has none). Picklable; JSON through :meth:`to_dict`."""

    status: ShotStatus
    key: str
    language: str | None = None
    segment: str | None = None
    output: str | None = None          # the rendered file (None unless done)
    frames: int | None = None          # rendered frames (handles included)
    faces_found: int | None = None
    no_face_frames: int | None = None
    seconds: float | None = None       # render time in its worker
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ShotOutcome:
        """From a job-store record (unknown keys, such as older records' extras, are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        return cls(**{**values, "status": ShotStatus(record["status"]),
                      "warnings": list(record.get("warnings") or [])})


@dataclass
class TimelineJob:
    """What to do (the CLI fills it from its flags; see ``lipsyncctl sync --help``)."""

    timeline: Path
    output: Path
    audio: list[tuple[str, Path]] = field(default_factory=list)
    audio_tracks: list[tuple[str, str]] = field(default_factory=list)
    audio_offset: str | None = None
    media_root: Path | None = None
    relink: dict[str, str] = field(default_factory=dict)
    edl_rate: float | None = None
    jobs: int = 1
    gpus: list[str] = field(default_factory=list)
    shard: tuple[int, int] = (0, 1)
    backend: str = "local"
    dry_run: bool = False
    wait: bool = False            # another run holds OUT: wait for it instead of refusing (exit 6)
    conform_me: Path | None = None  # M&E mixed under the dub in the conform (starts at the first frame)
    split_scenes: bool = False    # ``timeline`` is a flat master: cut it into shots first (:mod:`~.scenes`)
    segments: SegmentsFile | None = None  # --segments: per-range options (:mod:`~.ranges`)


@dataclass
class ShotState:
    """One (segment, language) while the job runs: its task (if it needs rendering) and outcome (once
    settled)."""

    segment: Segment
    language: str
    fps: Fraction                 # the timeline's rate
    key: str
    output: Path
    speech: list[tuple[int, int]]  # render-local frame ranges with speech
    speech_coverage: float        # share of the visible frames with speech
    task: ShotTask | None = None
    outcome: ShotOutcome | None = None
    reused: bool = False
    rendered: bool = False

    @property
    def status(self) -> ShotStatus:
        return self.outcome.status if self.outcome is not None else ShotStatus.PENDING


@dataclass
class ShotResult:
    """One shot of a language in the result and the QC report (record/source positions in frames)."""

    id: str
    name: str
    status: ShotStatus
    reused: bool
    rendered: bool
    key: str
    output: str | None
    record_in: str                # timecode
    record_out: str
    record_start: int
    frames: int                   # visible (record) frames
    rendered_frames: int          # with handles
    source_start: int
    handles: list[int]
    face_coverage: float | None
    no_face_frames: int | None
    speech_coverage: float
    warnings: list[str]
    error: str | None
    to_render: bool
    sync_before: float | None = None   # LSE-C of the source picture with the dub
    sync_after: float | None = None    # LSE-C of the render
    lse_d_before: float | None = None
    lse_d_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        keys = ("id", "name", "status", "reused", "rendered", "key", "output", "record_in", "record_out",
                "record_start", "frames", "rendered_frames", "source_start", "handles", "face_coverage",
                "no_face_frames", "speech_coverage", "sync_before", "sync_after", "lse_d_before", "lse_d_after",
                "warnings", "error", "to_render")
        out = {k: getattr(self, k) for k in keys}
        out["status"], out["handles"], out["warnings"] = self.status.value, list(self.handles), list(self.warnings)
        return out


@dataclass
class LanguageCounts:
    """Shot counts of one language (``to_render``: this shard's shots still to render)."""

    shots: int = 0
    rendered: int = 0
    reused: int = 0
    failed: int = 0
    no_face: int = 0
    no_dialogue: int = 0
    pending: int = 0
    to_render: int = 0
    done: int = 0
    skipped: int = 0
    under_min_sync: int | None = None  # once the QC ran (the language is finished)

    def to_dict(self) -> dict[str, int]:
        out = asdict(self)
        if self.under_min_sync is None:
            del out["under_min_sync"]
        return out


@dataclass
class LanguageResult:
    """One dub's shots and, once every shot is settled, its outputs (paths as strings)."""

    dub: str
    counts: LanguageCounts
    shots: list[ShotResult]
    timelines: list[str] = field(default_factory=list)
    report: str | None = None
    report_html: str | None = None
    conform: str | None = None
    warnings: list[str] | None = None  # this language's own warnings, once its outputs are written
    version: str | None = None         # the delivery these outputs are in ("v001"), once written
    folder: str | None = None          # its folder, OUT/<lang>/<version>
    not_delivered: str | None = None   # why a settled language has no version (every render failed)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dub": self.dub, "counts": self.counts.to_dict(),
                               "shots": [s.to_dict() for s in self.shots], "timelines": list(self.timelines),
                               "report": self.report, "report_html": self.report_html, "conform": self.conform,
                               "version": self.version, "folder": self.folder}
        if self.warnings is not None:
            out["warnings"] = list(self.warnings)
        if self.not_delivered is not None:
            out["not_delivered"] = self.not_delivered
        return out


#: the totals of :meth:`TimelineResult.counts`
TOTALS = ("rendered", "reused", "failed", "no_face", "no_dialogue", "pending", "to_render")


@dataclass
class TimelineResult:
    """What the job did (``--json`` prints :meth:`to_dict`)."""

    plan: TimelinePlan
    languages: dict[str, LanguageResult]
    shard: tuple[int, int]
    dry_run: bool
    warnings: list[str]
    work: dict[str, int] = field(default_factory=dict)
    #: dry run only: models that are not installed (``model``, ``role``, ``error``, ``fetch``: the command)
    missing_models: list[dict[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """``lang/shot`` of every failed shot (or under ``timeline.min_sync``)."""
        return [f"{lang}/{s.id}" for lang, d in self.languages.items() for s in d.shots if s.status.is_failure]

    def failure(self, min_sync: float | None) -> tuple[str, str]:
        """``(message, hint)`` of a run with failed shots (exit 1): what happened to them (under ``min_sync``
        only where that happened), and the reports written, or why a language has none (every render failed: no
        version was delivered) with the first error."""
        shots = [(lang, s) for lang, d in self.languages.items() for s in d.shots if s.status.is_failure]
        failed = [s for _, s in shots if s.status == ShotStatus.FAILED]
        parts = [f"{len(failed)} shot(s) failed"] if failed else []
        if under := len(shots) - len(failed):
            parts.append(f"{under} {'are' if failed else 'shot(s)'} under --min-sync {min_sync:g} or not measured")
        names = ", ".join(f"{lang}/{s.id}" for lang, s in shots[:8]) + (", ..." if len(shots) > 8 else "")
        reports = [d.report_html for d in self.languages.values() if d.report_html]
        hints = [f"see {', '.join(reports)}"] if reports else []
        hints += [f"{lang}: {d.not_delivered}" for lang, d in self.languages.items() if d.not_delivered]
        if failed and failed[0].error:
            hints.append(f"first error: {failed[0].error.splitlines()[0]}")
        return f"{' and '.join(parts)}: {names}", "; ".join(hints)

    def counts(self) -> dict[str, int]:
        return {k: sum(getattr(d.counts, k) for d in self.languages.values()) for k in TOTALS}

    def all_warnings(self) -> list[str]:
        """The run's warnings, then each language's own (``de: ...``: a clip the relinked timeline could not point
        at its render, QC notes), as the CLI says them and ``--json``'s ``warnings`` lists them."""
        return [*self.warnings, *(f"{lang}: {w}" for lang, d in self.languages.items() for w in d.warnings or ())]

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "dry_run": self.dry_run,
                "shard": f"{self.shard[0]}/{self.shard[1]}", "counts": self.counts(), "work": dict(self.work),
                "failed": self.failed, "languages": {k: v.to_dict() for k, v in self.languages.items()},
                "warnings": self.all_warnings(), "missing_models": [dict(m) for m in self.missing_models]}
