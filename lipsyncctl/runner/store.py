"""Content keys and the resumable job store of a timeline run.

A segment's **content key** is the sha256 of everything its render depends on: the source media
(fingerprint: size, mtime and the sha256 of its first and last MiB, so an hour of ProRes is not read
twice), the rendered frame range and rate, the sha256 of its audio cut, the resolved configuration
(minus settings that do not change pixels: the device), the per-shot options and the model files
(fingerprints). Same key = same output, so a finished segment is reused.

The store is one small JSON record per finished key under ``OUT/.lipsyncctl/jobs/``, written
atomically *after* the segment's media was renamed into place: a run killed midway leaves no record
for the segment it was rendering, and the rerun renders exactly the unfinished ones. A record keeps its render's
size: a render emptied or cut short since (a delivered version links to it: a tool that rewrote that file in place)
is rendered again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from lipsyncctl import paths
from lipsyncctl.media.atomic import temp_path

_CHUNK = 1 << 20


def file_fingerprint(path: Path) -> str:
    """Cheap stable identity of a file: size + mtime + sha256 of its first and last MiB.

    Memoised on (path, size, mtime), so one source used by many shots and languages is read once; a
    changed file gets a new entry. A folder (diffusers-style VAE) hashes its files' fingerprints; an image sequence
    (``shot.%04d.exr``) the name, size and mtime of each of its frames and the fingerprints of its first and last
    (a thousand 4K frames are not read for a cache key).
    """
    from lipsyncctl.media.container import is_image_sequence, sequence_files

    if is_image_sequence(path) and not path.exists():
        files = sequence_files(path)
        h = hashlib.sha256()
        for p in files:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        for p in files[:1] + files[-1:]:
            h.update(file_fingerprint(p).encode())
        return h.hexdigest()
    if path.is_dir():  # not memoised: a file rewritten inside it does not change the folder's mtime
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode() + file_fingerprint(p).encode())
        return h.hexdigest()
    st = path.stat()
    return _file_fingerprint(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _file_fingerprint(path_str: str, size: int, mtime_ns: int) -> str:
    return _head_and_tail(path_str, size, hashlib.sha256(f"{size}:{mtime_ns}".encode()))


def content_record(path: Path) -> dict[str, Any]:
    """What tells later whether ``path`` still holds the same content (:func:`same_content`): its size, its mtime and
    the sha256 of its first and last MiB; for an image sequence or a folder, its :func:`file_fingerprint`."""
    if not path.is_file():
        return {"fingerprint": file_fingerprint(path)}
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _head_and_tail(str(path), st.st_size)}


def same_content(record: Any, path: Path) -> bool | None:
    """Whether ``path`` holds what :func:`content_record` recorded: the same size and mtime are taken as the same
    file without reading it; another mtime (a copy, a touch) reads its first and last MiB. None when it cannot be told
    (no record, an unreadable file)."""
    try:
        if not isinstance(record, dict):
            return None
        if "fingerprint" in record:
            return record["fingerprint"] == file_fingerprint(path)
        st = path.stat()
        if st.st_size != record.get("size"):
            return False
        return st.st_mtime_ns == record.get("mtime_ns") or record.get("sha256") == _head_and_tail(str(path), st.st_size)
    except OSError:
        return None


def _head_and_tail(path_str: str, size: int, h: Any = None) -> str:
    """The hex digest of ``h`` (a new sha256 by default) fed the file's first and last MiB."""
    h = hashlib.sha256() if h is None else h
    with open(path_str, "rb") as f:
        h.update(f.read(_CHUNK))
        if size > 2 * _CHUNK:
            f.seek(-_CHUNK, os.SEEK_END)
            h.update(f.read(_CHUNK))
    return h.hexdigest()


#: resolved-config keys that do not change the rendered pixels (``sync.deinterlace``: not of a progressive source; a
#: key of interlaced media counts it in a field of its own; ``sync.audio_stream``: a shot's dub is its own file;
#: ``sync.sequence_fps``: an image sequence's rate is the key's own ``fps``; ``output.first_number`` and
#: ``output.png_level``: a shot's render is a video file, never an image sequence)
_NEUTRAL = ("inference.device", "inference.vae_batch", "inference.pipelined", "inference.cuda_graphs",
            "sync.deinterlace", "sync.audio_stream", "sync.sequence_fps", "output.first_number", "output.png_level")


#: keys that change the pixels but came after content keys were first written: left out at their default, so what
#: was rendered before them is still found (a non-default value is in the key as any other)
ADDED_KEYS = {"inference.gpu_paste": False, "model.mask": paths.OFFICIAL_MASK}


def config_for_key(config: dict[str, Any]) -> dict[str, Any]:
    from lipsyncctl.config import drop_keys

    # job-level settings (name, timeline, prep, curate...) are in the key's own fields
    return drop_keys(json.loads(json.dumps(config)),
                     (*_NEUTRAL, "name", "description", "timeline", "prep", "curate"), ADDED_KEYS)


def content_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts`` (first 24 hex digits)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class JobStore:
    """Finished segments by content key, under ``root`` (``OUT/.lipsyncctl/jobs``). A record's ``output`` inside
    ``OUT`` (the folder above ``.lipsyncctl``) is stored relative to it and read back under the ``OUT`` the store
    was opened with: a rerun from another working folder, or naming OUT by another path (absolute, through a
    link), reuses what an earlier run finished (records of cwd-relative paths re-rendered every shot)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.base = self.root.parent.parent

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of ``key`` if it is finished and its output still exists at the size it was written (else None:
        a render emptied or cut short since, through a delivered version that links to it, is made again); its
        ``output`` a path as this store's ``OUT`` is named."""
        p = self._path(key)
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        out = rec.pop("output_in_out", None) and rec.get("output")
        if out:
            rec["output"] = str(self.base / out)
        elif rec.get("output"):  # an older record: the path as that run's working folder named it
            stored = Path(rec["output"])
            cached = self.base / ".lipsyncctl" / "renders" / stored.name  # (its render, named from another folder)
            rec["output"] = str(stored if stored.is_file() or not cached.is_file() else cached)
        size = rec.pop("output_size", None)
        if rec.get("output"):
            try:
                st = os.stat(rec["output"])
            except OSError:
                return None
            if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
                return None
        return rec

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        p = self._path(key)
        record = dict(record)
        if record.get("output"):
            out, base = os.path.abspath(record["output"]), os.path.abspath(self.base)
            inside = os.path.commonpath([out, base]) == base
            record["output"] = os.path.relpath(out, base) if inside else out
            if inside:
                record["output_in_out"] = True
            with contextlib.suppress(OSError):  # (what get() checks: the size it was written at)
                record["output_size"] = os.stat(out).st_size
        tmp = temp_path(p, keep_suffix=False)  # not *.json: keys() never sees it
        try:
            tmp.write_text(json.dumps({"key": key, **record}, indent=1, default=str), encoding="utf-8")
            tmp.replace(p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.is_dir() else []
