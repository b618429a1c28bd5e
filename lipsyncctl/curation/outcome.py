"""What a curate run returns: per source its outcome, and the dataset's tallies gathered a source at a time.

A run's spans are written to ``manifest.jsonl`` as they are decided (:meth:`CurateResult.spans` reads them back a
line at a time), its sources' outcomes go to a temporary file (:class:`Spool`; a million of them took ~0.8 GB as
objects) read back each time they are iterated, and the counts and warnings a dataset needs are added up in a
:class:`Tally`, whose only parts that grow with the dataset are the sources per folder where the split is per
source (~65 B a folder) and the split groups holding a kept span until one of them is in val. A dry run writes
nothing to DATA: its plan's spans are spooled too (in the system's temporary folder).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from lipsyncctl.audio import MODEL_FPS
from lipsyncctl.config import CurateOptions
from lipsyncctl.curation.decide import ClipSpan
from lipsyncctl.curation.records import Decision, Verdict

T = TypeVar("T")

#: a spool's bytes held in memory before it moves to a temporary file on disk (a small run makes no file)
SPOOL_MEMORY = 1 << 20
#: failed sources a result lists (``CurateResult.failed``; ``failures`` counts them all)
FAILED_LISTED = 100


#: the standing of a kept source none of whose spans is kept (:attr:`SourceOutcome.standing`)
NO_SPAN_KEPT = "no span kept"
#: the standing of a kept source whose record lacks source stages (an interrupted shard's, ``--until``): no spans yet
STAGES_LEFT = "stages left"


@dataclass(slots=True)
class SourceOutcome:
    id: str
    path: str
    decision: Decision
    computed: list[str] = field(default_factory=list)   # stages run this time (the others were reused)
    clips: int = 0
    kept: int = 0
    to_compute: list[str] | None = None  # a dry run: the stages a run would compute (``stage`` or ``stage:span``)
    failed_spans: int = 0
    stages_left: list[str] = field(default_factory=list)  # source stages its record lacks (said of a kept one only)

    @property
    def standing(self) -> str:
        """Its verdict; ``stages left`` for a kept source whose record lacks source stages (an interrupted run's or
        shard's, or one ``--until`` stopped: no spans yet), ``no span kept`` for a kept source whose every span was
        rejected or failed (either gives the dataset nothing: counted apart from the kept ones, listed among the
        sources not kept)."""
        if self.decision.verdict == Verdict.KEPT and self.stages_left and not self.clips:
            return STAGES_LEFT
        if self.decision.verdict == Verdict.KEPT and self.clips and not self.kept:
            return NO_SPAN_KEPT
        return str(self.decision.verdict)

    @property
    def failed(self) -> bool:
        """It could not be processed, or some of its spans could not be (a run's exit 1)."""
        return self.decision.verdict == Verdict.FAILED or self.failed_spans > 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "decision": self.decision.to_dict(), "standing": self.standing,
                "computed": self.computed, "clips": self.clips, "kept": self.kept, "failed_spans": self.failed_spans,
                **({"stages_left": self.stages_left} if self.standing == STAGES_LEFT else {}),
                **({"to_compute": self.to_compute} if self.to_compute is not None else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceOutcome:
        return cls(d["id"], d["path"], Decision.from_dict(d["decision"]), d["computed"], d["clips"], d["kept"],
                   d.get("to_compute"), d.get("failed_spans", 0), list(d.get("stages_left", [])))


class Spool(Generic[T]):
    """Items kept as JSON lines in a temporary file (in memory up to :data:`SPOOL_MEMORY`, then on disk in
    ``folder``, default the system's temporary folder; a file without a name, gone with the spool or the process)
    and read back, one at a time, each time it is iterated (two iterations may interleave). ``encode`` and
    ``decode`` turn an item into a JSON-able dict and back; a pickled spool carries its lines."""

    def __init__(self, encode: Callable[[T], dict[str, Any]], decode: Callable[[dict[str, Any]], T],
                 folder: Path | None = None) -> None:
        self._encode, self._decode, self._folder, self._count = encode, decode, folder, 0
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, mode="w+b",  # noqa: SIM115 (kept open)
                                                   dir=folder if folder is not None and folder.is_dir() else None)

    def append(self, item: T) -> None:
        self._file.seek(0, 2)
        self._file.write(json.dumps(self._encode(item), default=str).encode() + b"\n")
        self._count += 1

    def lines(self) -> Iterator[str]:
        """Each item's JSON text (without its newline), as written."""
        pos, rest = 0, b""
        while True:
            self._file.seek(pos)
            chunk = self._file.read(1 << 16)
            if not chunk:
                return
            pos += len(chunk)
            *whole, rest = (rest + chunk).split(b"\n")
            for line in whole:
                yield line.decode()

    def __iter__(self) -> Iterator[T]:
        for line in self.lines():
            yield self._decode(json.loads(line))

    def __len__(self) -> int:
        return self._count

    def __getstate__(self) -> dict[str, Any]:
        return {"encode": self._encode, "decode": self._decode, "lines": list(self.lines())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["encode"], state["decode"])  # type: ignore[misc]
        for line in state["lines"]:
            self._file.write(line.encode() + b"\n")
        self._count = len(state["lines"])


@dataclass
class Tally:
    """Sources and spans per verdict, rejections per ``stage/reason``, failures per stage, kept frames, kept
    spans some clip stage has not measured yet (``pending``), the sources per folder where the split is per source
    (:func:`~lipsyncctl.curation.views.split_warning`) and the split groups holding a kept span until one of them is
    in val (``kept_in_val``; then no longer kept): what the counts and warnings of a dataset need, added a source at a
    time (:meth:`add`) so no span is kept."""

    fps: int = MODEL_FPS
    sources: Counter[str] = field(default_factory=Counter)
    clips: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    kept_frames: int = 0
    pending: int = 0
    pending_stages: set[str] = field(default_factory=set)
    folders: Counter[int] = field(default_factory=Counter)  # sources per folder (by the hash of its name)
    kept_groups: set[str] = field(default_factory=set)
    kept_in_val: bool = False
    kept_in_train: bool = False
    tiny_measured: int = 0  # kept spans a clip stage measured with the tiny preset's random networks
    resolutions: Counter[int] = field(default_factory=Counter)  # kept spans by their aligned resolution

    def add(self, source: SourceOutcome, spans: Sequence[ClipSpan], *, group: str | None, split: str,
            folder: int | None = None) -> None:
        """One source's outcome and its spans; ``group`` and ``split``: its split group (None: not kept, there is no
        val split to miss) and side; ``folder``: its folder, where the split is per source."""
        for d in [source.decision, *(c.decision for c in spans)]:
            if d.verdict == Verdict.REJECTED:
                self.rejected[f"{d.stage}/{d.reason}"] += 1
            elif d.verdict == Verdict.FAILED:
                self.failed[str(d.stage)] += 1
        self.sources[source.standing] += 1
        if folder is not None:
            self.folders[folder] += 1
        for c in spans:
            self.clips[str(c.decision.verdict)] += 1
            if c.decision.verdict == Verdict.KEPT:
                self.kept_frames += c.frames
                self.kept_in_train = self.kept_in_train or split == "train"
                self.tiny_measured += "tiny" in (c.summary.get("sync_scale"), c.summary.get("quality_scale"))
                if isinstance(c.summary.get("resolution"), int):
                    self.resolutions[c.summary["resolution"]] += 1
                if self.kept_in_val or group is None:
                    pass
                elif split == "val":  # the "no kept span in val" warning cannot be said: the groups are let go
                    self.kept_in_val, self.kept_groups = True, set()
                else:
                    self.kept_groups.add(group)
                if c.summary.get("pending"):
                    self.pending += 1
                    self.pending_stages.update(c.summary["pending"])

    def counts(self) -> dict[str, Any]:
        return {"sources": dict(self.sources), "clips": dict(self.clips), "rejected": dict(sorted(self.rejected.items())),
                "failed": dict(sorted(self.failed.items())), "pending": self.pending,
                "kept_seconds": round(self.kept_frames / self.fps, 3)}


def _failure(source: SourceOutcome, spans: Sequence[ClipSpan]) -> str:
    """Where ``source`` (a failed one) failed, and why: its own decision's, or its first failed span's."""
    if source.decision.verdict == Verdict.FAILED:
        where, decision = source.path, source.decision
    else:
        span = next(c for c in spans if c.decision.verdict == Verdict.FAILED)
        where, decision = f"{source.path} span {span.first}-{span.stop}", span.decision
    return f"{where} at {decision.stage}: {decision.error}"


def spool_sources(folder: Path | None = None) -> Spool[SourceOutcome]:
    """A spool of source outcomes (on disk in ``folder`` past its memory share)."""
    return Spool(SourceOutcome.to_dict, SourceOutcome.from_dict, folder)


@dataclass
class CurateResult:
    """What ``curate`` did (``--json`` prints :meth:`to_dict`). ``sources`` and ``tally`` cover every record in
    DATA (all shards, earlier inputs), or the shard's own sources where ``views_written`` is false (another shard
    rebuilt the views); the spans are in DATA's manifest (:meth:`spans`). ``sources`` is read back from a temporary
    file each time it is iterated (:class:`Spool`). ``scope`` is the ids of the sources this run was given (its
    shard; None: all, as ``curate report``), whose failures set the exit code: ``failures`` counts them (sources
    that could not be processed, or some of whose spans could not be; rejections are normal outcomes) and
    ``failed`` lists the first :data:`FAILED_LISTED`. A dry run fails nothing (it lists a stored failure as a stage
    to retry); ``planned`` holds its spans (it writes no manifest), without their stages' outputs. Sources are
    added with :meth:`add`."""

    data: Path
    until: str
    shard: tuple[int, int]
    tally: Tally = field(default_factory=Tally)
    dry_run: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    scope: frozenset[str] | None = None
    views_written: bool = True  # False: a shard whose views another rebuilt (``sources`` and counts: this shard's)
    sources: Spool[SourceOutcome] = field(default_factory=spool_sources)
    planned: list[ClipSpan] | Spool[ClipSpan] = field(default_factory=list)
    failed: list[SourceOutcome] = field(default_factory=list)
    failures: int = 0
    first_error: str | None = None  # the first failure's place and error (``PATH``, or ``PATH span A-B``, at stage)
    forgotten: list[dict[str, Any]] | None = None  # ``curate forget``: the sources taken out (id, path, files)

    def add(self, source: SourceOutcome, spans: Sequence[ClipSpan], options: CurateOptions) -> str:
        """Count one source and its spans (its ``failed_spans`` set from them), keep its outcome (and a dry run's
        spans); returns its split (``train`` or ``val``)."""
        from lipsyncctl.curation import views

        source.failed_spans = sum(c.decision.verdict == Verdict.FAILED for c in spans)
        group = views.split_group(source.id, source.path, options)
        split = views.split_of(group, options)
        # (counted by its hash: a number, not the folder's name, a source)
        folder = hash(os.path.dirname(source.path)) if options.split_by == "source" and options.val_fraction else None
        self.tally.add(source, spans, group=group if options.val_fraction else None, split=split, folder=folder)
        self.sources.append(source)
        if self.dry_run:
            if isinstance(self.planned, list):
                self.planned = Spool(functools.partial(ClipSpan.to_dict, fps=self.fps), ClipSpan.from_dict)
            for c in spans:  # without their stages' outputs (~1.7 KB a span with them)
                self.planned.append(ClipSpan(c.source, c.first, c.stop, c.decision))
        elif source.failed and (self.scope is None or source.id in self.scope):
            self.failures += 1
            if self.first_error is None:
                self.first_error = _failure(source, spans)
            if len(self.failed) < FAILED_LISTED:
                self.failed.append(source)
        return split

    @property
    def fps(self) -> int:
        return self.tally.fps

    @property
    def manifest(self) -> Path:
        return self.data / "manifest.jsonl"

    @property
    def ok(self) -> bool:
        return not self.failures

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

    def to_dict(self, *, lazy: bool = False) -> dict[str, Any]:
        """The counts, every source's outcome and the warnings; the spans are the manifest's lines (its path is
        given), a dry run's plan is listed (``clips``). ``lazy``: the sources and the plan are iterators of their
        dicts, read as they are consumed (a writer that streams them, as ``--json`` does), not lists."""
        def each(items: Any, encode: Callable[[Any], dict[str, Any]]) -> Any:
            it = (encode(x) for x in items)
            return it if lazy else list(it)

        spans = ({"clips": each(self.planned, lambda c: c.to_dict(self.fps))} if self.dry_run
                 else {"manifest": str(self.manifest)})
        return {"data": str(self.data), "until": str(self.until), "shard": f"{self.shard[0]}/{self.shard[1]}",
                "dry_run": self.dry_run, "ok": self.ok, "seconds": round(self.seconds, 3),
                "counts": self.counts(), "failures": self.failures,
                "sources": each(self.sources, SourceOutcome.to_dict), **spans,
                "views_written": self.views_written, "warnings": list(self.warnings),
                **({"forgotten": self.forgotten} if self.forgotten is not None else {})}
