"""What a curate run returns: per source its outcome, and the dataset's tallies gathered a source at a time.

A run's spans are not held (a million of them took ~1.6 GB as objects): they are written to
``manifest.jsonl`` as they are decided and counted in a :class:`Tally`; :meth:`CurateResult.spans` reads
them back from the manifest, one line at a time. A dry run writes nothing, so its result holds its plan's
spans (of the sources given to it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsyncctl.curation.decide import ClipSpan
from lipsyncctl.curation.records import Decision, Verdict


@dataclass(slots=True)
class SourceOutcome:
    id: str
    path: str
    decision: Decision
    computed: list[str] = field(default_factory=list)   # stages run this time (the others were reused)
    clips: int = 0
    kept: int = 0
    to_compute: list[str] | None = None  # a dry run: the stages a run would compute (``stage`` or ``stage:span``)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "decision": self.decision.to_dict(), "computed": self.computed,
                "clips": self.clips, "kept": self.kept,
                **({"to_compute": self.to_compute} if self.to_compute is not None else {})}


@dataclass
class Tally:
    """Sources and spans per verdict, rejections per ``stage/reason``, failures per stage, kept frames, kept
    spans some clip stage has not measured yet (``pending``) and the split groups holding a kept span: what the
    counts and warnings of a dataset need, added a source at a time (:meth:`add`) so no span is kept."""

    fps: int = 25
    sources: Counter[str] = field(default_factory=Counter)
    clips: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    kept_frames: int = 0
    pending: int = 0
    pending_stages: set[str] = field(default_factory=set)
    broken: set[str] = field(default_factory=set)      # sources with a failed span
    kept_groups: set[str] = field(default_factory=set)  # split groups (views.split_group) with a kept span

    def add(self, source: SourceOutcome, spans: Sequence[ClipSpan], group: str) -> None:
        """One source's outcome and its spans; ``group``: its split group."""
        for d in [source.decision, *(c.decision for c in spans)]:
            if d.verdict == Verdict.REJECTED:
                self.rejected[f"{d.stage}/{d.reason}"] += 1
            elif d.verdict == Verdict.FAILED:
                self.failed[str(d.stage)] += 1
        self.sources[str(source.decision.verdict)] += 1
        for c in spans:
            self.clips[str(c.decision.verdict)] += 1
            if c.decision.verdict == Verdict.FAILED:
                self.broken.add(c.source)
            elif c.decision.verdict == Verdict.KEPT:
                self.kept_frames += c.frames
                self.kept_groups.add(group)
                if c.summary.get("pending"):
                    self.pending += 1
                    self.pending_stages.update(c.summary["pending"])

    def counts(self) -> dict[str, Any]:
        return {"sources": dict(self.sources), "clips": dict(self.clips), "rejected": dict(sorted(self.rejected.items())),
                "failed": dict(sorted(self.failed.items())), "pending": self.pending,
                "kept_seconds": round(self.kept_frames / self.fps, 3)}


@dataclass
class CurateResult:
    """What ``curate`` did (``--json`` prints :meth:`to_dict`). ``failed``: sources that could not be
    processed, or some of whose spans could not be (exit 1); rejections are normal outcomes. ``sources`` and
    ``tally`` cover every record in DATA (all shards, earlier inputs), or the shard's own sources where
    ``views_written`` is false (another shard rebuilt the views); the spans are in DATA's manifest (:meth:`spans`).
    ``scope`` is the ids of the sources this run was given (its shard; None: all, as ``curate report``), whose
    failures set the exit code. ``planned``: a dry run's spans (it writes no manifest), without their stages'
    outputs."""

    data: Path
    sources: list[SourceOutcome]
    tally: Tally
    until: str
    shard: tuple[int, int]
    dry_run: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    scope: frozenset[str] | None = None
    planned: list[ClipSpan] = field(default_factory=list)
    views_written: bool = True  # False: a shard whose views another rebuilt (``sources`` and counts: this shard's)

    @property
    def fps(self) -> int:
        return self.tally.fps

    @property
    def manifest(self) -> Path:
        return self.data / "manifest.jsonl"

    @property
    def failed(self) -> list[SourceOutcome]:
        if self.dry_run:  # a dry run fails nothing: it lists a stored failure as a stage to retry
            return []
        return [s for s in self.sources if (self.scope is None or s.id in self.scope)
                and (s.decision.verdict == Verdict.FAILED or s.id in self.tally.broken)]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, Any]:
        """Sources and spans per verdict, rejections per ``stage/reason``, failures per stage, kept spans
        not measured by every clip stage yet (``pending``), kept seconds."""
        return self.tally.counts()

    def spans(self) -> Iterator[ClipSpan]:
        """Every span of DATA with its decision and its clip stages' outputs (``summary``), in the manifest's order
        (by source id, then frame: by span id), read from ``manifest.jsonl`` a line at a time (as the last rebuild
        wrote it: a later run rewrites it); a dry run's are its plan, without the outputs."""
        if self.dry_run:
            yield from self.planned
            return
        with self.manifest.open(encoding="utf-8") as f:
            for text in f:
                yield ClipSpan.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """The counts, every source's outcome and the warnings; the spans are the manifest's lines (its path is
        given), a dry run's plan is listed (``clips``)."""
        spans = ({"clips": [c.to_dict(self.fps) for c in self.planned]} if self.dry_run
                 else {"manifest": str(self.manifest)})
        return {"data": str(self.data), "until": str(self.until), "shard": f"{self.shard[0]}/{self.shard[1]}",
                "dry_run": self.dry_run, "ok": self.ok, "seconds": round(self.seconds, 3),
                "counts": self.counts(), "sources": [s.to_dict() for s in self.sources], **spans,
                "views_written": self.views_written, "warnings": list(self.warnings)}

