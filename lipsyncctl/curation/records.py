"""What the curation job knows about each source and each clip, stored one atomic JSON record each.

A record holds **measurements** (probe facts, shot cuts, spans, scores) per stage, each with the key of
what it was computed from; the **decision** (kept / rejected at a stage for a reason and value / failed
with an error) is derived from them and the thresholds (:mod:`lipsyncctl.curation.decide`), never stored
as the only truth. So a rerun skips every stage whose key is unchanged, and a changed threshold
re-decides without running a model.

Layout under ``DATA/.lipsyncctl/records/``: ``sources/<source id>.json`` and ``clips/<clip id>.json``,
written with a temporary name and renamed (a kill at any moment leaves the previous record or none).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Stage(StrEnum):
    """The curation stages in order (LATENTSYNC.md §4; the later ones come with their issues)."""

    PROBE = "probe"
    NORMALIZE = "normalize"
    SHOTS = "shots"
    SEGMENTS = "segments"


STAGES: tuple[Stage, ...] = tuple(Stage)


class Verdict(StrEnum):
    KEPT = "kept"
    REJECTED = "rejected"
    FAILED = "failed"
    UNDECIDED = "undecided"  # a dry run's source whose stages are to run first


@dataclass(frozen=True, slots=True)
class Decision:
    """``kept``; ``rejected`` at ``stage`` for ``reason`` (with the measured ``value``); or ``failed`` at
    ``stage`` with ``error`` (the item could not be processed: exit 1)."""

    verdict: Verdict
    stage: str | None = None          # a source stage (:class:`Stage`) or a clip stage's name
    reason: str | None = None
    value: Any = None
    error: str | None = None

    @classmethod
    def kept(cls) -> Decision:
        return _KEPT  # one object (frozen): a million sources and spans need no copy each

    @classmethod
    def rejected(cls, stage: str, reason: str, value: Any = None) -> Decision:
        return cls(Verdict.REJECTED, str(stage), reason, value)

    @classmethod
    def failed(cls, stage: str, error: str) -> Decision:
        return cls(Verdict.FAILED, str(stage), error=error)

    @classmethod
    def undecided(cls, stage: str, reason: str) -> Decision:
        """Not decided: a dry run found ``stage`` (and the later ones) to run, for ``reason``."""
        return cls(Verdict.UNDECIDED, str(stage), reason)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        """The decision :meth:`to_dict` wrote."""
        return cls(Verdict(d["verdict"]), d.get("stage"), d.get("reason"), d.get("value"), d.get("error"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"verdict": str(self.verdict)}
        if self.stage is not None:
            d["stage"] = str(self.stage)
        for k in ("reason", "value", "error"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


_KEPT = Decision(Verdict.KEPT)


@dataclass
class StageResult:
    """One stage's stored measurements, and the key of the inputs and settings they came from."""

    key: str
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None          # the stage could not run on this item (a failure, not a rejection)


@dataclass
class SourceRecord:
    """One raw input file and what the per-source stages measured."""

    id: str
    path: str
    fingerprint: str
    stages: dict[str, StageResult] = field(default_factory=dict)

    def result(self, stage: Stage) -> StageResult | None:
        return self.stages.get(str(stage))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "fingerprint": self.fingerprint,
                "stages": {k: asdict(v) for k, v in self.stages.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceRecord:
        return cls(d["id"], d["path"], d["fingerprint"],
                   {k: StageResult(**v) for k, v in d.get("stages", {}).items()})


def source_id(path: Path, relative: str | Path) -> str:
    """A stable, readable id for a source: its sanitised stem plus 8 hex digits of its path relative to
    the folder it was found in (``relative``; VoxCeleb2-style trees repeat the same basenames everywhere,
    so the basename alone would collide)."""
    rel = Path(relative).as_posix()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_")[:48] or "source"
    # (the name's own bytes: a name that is not UTF-8, read with surrogates, is still one source)
    return f"{stem}-{hashlib.sha256(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def stage_key(*parts: Any) -> str:
    """sha256 (24 hex digits) of the canonical JSON of ``parts``: what a stage's result depends on."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


#: where curate writes its files in DATA: the folder's name, and how deep a file is below it (``audio/<id>.wav``,
#: ``aligned/<source>/<clip>.mp4``, ``features/<xx>/<key>.safetensors``; a clip stage's own files go to
#: ``<stage folder>/<source>/<clip>``, :meth:`ClipContext.output`: list a new one here)
DATA_LAYOUT = {"audio": 1, "aligned": 2, "synced": 2, "features": 2}
#: the folders of DATA_LAYOUT that hold a folder per source
SOURCE_FOLDERS = ("aligned", "synced")


def in_data(path: str, data: str) -> str:
    """``path``, a file curate wrote in a DATA folder (:data:`DATA_LAYOUT`), as the same file of ``data``: a
    moved or copied DATA's records name the folder they were written in. Other paths are returned as they are."""
    if not path.startswith(os.sep) or path.startswith(data + os.sep):
        return path
    parts = path.split(os.sep)
    for name, depth in DATA_LAYOUT.items():
        at = len(parts) - 1 - depth  # where the folder's name would be
        if at >= 1 and parts[at] == name:
            return os.path.join(data, *parts[at:])
    return path


class RecordStore:
    """Records by id under ``root/<kind>/<id>.json``, each written atomically. Loaded from a curated folder's store
    (:meth:`of`), the paths its stages wrote in DATA name the files of the folder it is now (:func:`in_data`): a
    moved DATA recomputed every stage of every source ("its audio file is gone"), a copy checked the original's."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.data = os.path.abspath(self.root.parent.parent) \
            if self.root.name == "records" and self.root.parent.name == ".lipsyncctl" else None

    @classmethod
    def of(cls, data: str | Path) -> RecordStore:
        """The records of the curated folder ``data`` (``DATA/.lipsyncctl/records``)."""
        return cls(Path(data) / ".lipsyncctl" / "records")

    @classmethod
    def held_by(cls, folder: str | Path) -> bool:
        """Whether ``folder`` is a dataset curate made (it holds curate's records folder: one stat)."""
        return cls.of(folder).root.is_dir()

    def _file(self, kind: str, rid: str) -> str:
        """A record's file name, as a string: a path object interns its parts, and a rebuild reads a million."""
        return os.path.join(self.root, kind, f"{rid}.json")

    def _path(self, kind: str, rid: str) -> Path:
        return Path(self._file(kind, rid))

    def load(self, kind: str, rid: str) -> dict[str, Any] | None:
        try:
            with open(self._file(kind, rid), encoding="utf-8") as f:
                record = json.loads(f.read())
        except (OSError, ValueError):
            return None  # missing, or left half-written by an older tool: recomputed
        stages = record.get("stages") if self.data is not None and isinstance(record, dict) else None
        for result in stages.values() if isinstance(stages, dict) else ():
            if isinstance(result, dict) and isinstance(result.get("data"), dict):
                result["data"] = {k: self._here(v) for k, v in result["data"].items()}
        return record

    def _here(self, value: Any) -> Any:
        """A stage's value with its DATA paths as this folder's (:func:`in_data`)."""
        assert self.data is not None
        if isinstance(value, str):
            return in_data(value, self.data)
        if isinstance(value, list):
            return [self._here(v) for v in value]
        return value

    def save(self, kind: str, rid: str, record: dict[str, Any]) -> None:
        from lipsyncctl.media.atomic import temp_path

        p = self._path(kind, rid)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(p, keep_suffix=False)
        try:
            tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
            tmp.replace(p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def exists(self, kind: str, rid: str) -> bool:
        return self._path(kind, rid).exists()

    def delete(self, kind: str, rid: str) -> None:
        self._path(kind, rid).unlink(missing_ok=True)

    def ids(self, kind: str) -> list[str]:
        """The ids of ``kind``'s records, sorted; the folder is read a name at a time (a glob made a path object of
        every file at once: ~0.5 KB a record at a million)."""
        return sorted(self.each_id(kind))

    def any(self, kind: str) -> bool:
        """Some record of ``kind`` is stored."""
        return next(self.each_id(kind), None) is not None

    def each_id(self, kind: str) -> Iterator[str]:
        """The ids of ``kind``'s records in the folder's order, a name at a time (nothing held: a scan of every
        record that needs no order)."""
        try:
            with os.scandir(os.path.join(self.root, kind)) as entries:
                yield from (e.name[:-5] for e in entries if e.name.endswith(".json"))
        except (FileNotFoundError, NotADirectoryError):
            return

    def clip_records(self, source: str) -> dict[str, ClipRecord]:
        """The clip records of one source, by clip id (those left half-written are missing)."""
        kind = f"clips/{source}"
        raws = (self.load(kind, rid) for rid in self.ids(kind))
        return {raw["id"]: ClipRecord.from_dict(raw) for raw in raws if raw is not None}


@dataclass
class ClipRecord:
    """One span of a source and what the clip stages measured on it."""

    id: str
    source: str
    first: int
    stop: int
    stages: dict[str, StageResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "first": self.first, "stop": self.stop,
                "stages": {k: asdict(v) for k, v in self.stages.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipRecord:
        return cls(d["id"], d["source"], d["first"], d["stop"],
                   {k: StageResult(**v) for k, v in d.get("stages", {}).items()})
