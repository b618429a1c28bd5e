"""OpenTimelineIO file bundles: ``.otioz`` (a zip) and ``.otiod`` (a folder), read with their media and
written with the renders.

Layout (OTIO 0.18's ``otioz``/``otiod`` adapters): ``content.otio`` at the root, the media under
``media/`` with unique file names, referenced by URLs relative to the bundle root (``media/cam_a.mkv``);
an ``.otioz`` also holds ``version.txt`` (``1.0.0``) and stores the media uncompressed.

Reading: an ``.otiod`` is read in place (its media resolve against the folder). An ``.otioz`` is
extracted by OTIO's reader into a private folder that the caller removes when the job ends; the
extracted files get the modification time stored in the zip, so a media file's fingerprint (and the
segment content keys, :mod:`~lipsyncctl.runner.store`) are the same on every run and a rerun resumes.

Writing (:func:`write_bundle`): the output bundle is self-contained, like the input: every media
reference of every clip that resolves on this machine (the rendered shots that are now active, the
original media kept as ``DEFAULT_MEDIA`` alternates, the media of clips that were not lip-synced, audio
clips) is copied under ``media/`` and relinked there. OTIO's own writers cannot be used: they relink
only a clip's active reference (the alternates would point outside the bundle, for an ``.otioz`` input
into a folder that no longer exists) and refuse to write over an existing path. References that do not
resolve (media missing in the input too) are kept as they were. The bundle is written under a temporary
name beside its final path and renamed into place (a folder: the previous output folder is swapped out
and removed after), so a failure never leaves a half-written bundle and never touches the input.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import MediaError

if TYPE_CHECKING:
    from lipsyncctl.timeline.source import MediaResolver

BUNDLE_SUFFIXES = (".otioz", ".otiod")
CONTENT = "content.otio"
MEDIA_DIR = "media"
VERSION_FILE, VERSION = "version.txt", "1.0.0"


def is_bundle(path: str | Path) -> bool:
    """True for an ``.otioz`` or ``.otiod`` path (by suffix)."""
    return Path(path).suffix.lower() in BUNDLE_SUFFIXES


def extract_otioz(path: Path, into: Path) -> Any:
    """Read the ``.otioz`` ``path`` with OTIO's adapter, extracting it into the existing empty folder
    ``into``; returns what the adapter read. Extracted files keep the zip's modification times."""
    import opentimelineio as otio

    result = otio.adapters.read_from_file(str(path), adapter_name="otioz", extract_to_directory=str(into))
    inside = into.resolve()
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            target = into / info.filename
            # a member named ../x or /x was extracted inside (zipfile cleans its name), not at the raw name: a
            # file that name reaches outside the folder is not touched
            if not info.is_dir() and target.is_file() and not target.is_symlink() and \
                    target.resolve().is_relative_to(inside):
                stamp = time.mktime((*info.date_time, 0, 0, -1))
                os.utime(target, (stamp, stamp))
    return result


def embedded_timeline(timeline: Any, resolver: MediaResolver) -> tuple[Any, dict[Path, str]]:
    """A copy of ``timeline`` whose resolvable media references (all of each clip's references) point at
    ``media/<name>``, and ``{local file: name}`` of the files to embed (names unique in the bundle)."""
    import opentimelineio as otio

    out = timeline.deepcopy()
    files: dict[Path, str] = {}
    taken: set[str] = set()
    for clip in out.find_clips():
        for ref in clip.media_references().values():  # live objects: editing them edits the clip
            url = getattr(ref, "target_url", None)
            src = resolver.resolve(url) if url else None
            if src is None:
                continue
            if src not in files:
                files[src] = _unique_name(src.name, taken)
            ref.target_url = otio.url_utils.url_from_filepath(f"{MEDIA_DIR}/{files[src]}")
    return out, files


def write_bundle(timeline: Any, path: Path, resolver: MediaResolver, *, inputs: Iterable[Path] = ()) -> Path:
    """Write ``timeline`` as the self-contained bundle ``path`` (``.otioz`` or ``.otiod``, by suffix).

    Args:
        resolver: finds the local file of each media reference (relative URLs of the input timeline
            resolve as in the job).
        inputs: files and folders that must never be overwritten (the input bundle among them).

    Raises:
        MediaError: ``path`` is an input, or an existing ``path`` is not a bundle this job wrote.
    """
    import opentimelineio as otio

    from lipsyncctl.media.atomic import atomic_output, check_not_input, temp_prefix

    path = Path(path)
    inputs = list(inputs)
    check_not_input(path, inputs)
    content, files = embedded_timeline(timeline, resolver)
    text = otio.adapters.write_to_string(content, adapter_name="otio_json")
    if path.suffix.lower() == ".otioz":
        with atomic_output(path, inputs=inputs) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            zf.writestr(VERSION_FILE, VERSION, compress_type=zipfile.ZIP_DEFLATED)
            zf.writestr(CONTENT, text, compress_type=zipfile.ZIP_DEFLATED)
            for src, name in files.items():  # media stored, not deflated (as OTIO does)
                zf.write(src, f"{MEDIA_DIR}/{name}", compress_type=zipfile.ZIP_STORED)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path), suffix=f".part{path.suffix}"))
    try:
        (tmp / CONTENT).write_text(text, encoding="utf-8")
        (tmp / MEDIA_DIR).mkdir()
        for src, name in files.items():
            shutil.copy2(src, tmp / MEDIA_DIR / name)
        _replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``stem_2.ext``, ``stem_3.ext``... if a file of that name is already in the bundle."""
    stem, suffix = os.path.splitext(name)
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{stem}_{k}{suffix}"
    taken.add(out)
    return out


def _replace_folder(new: Path, path: Path) -> None:
    """Rename the finished folder ``new`` to ``path``. An existing ``path`` must be a bundle folder (one
    this job wrote before): it is renamed aside first, and removed only once ``new`` is in place."""
    if not path.exists():
        os.replace(new, path)
        return
    if not path.is_dir() or not (path / CONTENT).is_file():
        raise MediaError(f"{path}: exists and is not an OTIO bundle folder; not replacing it",
                         hint="move it away or choose another output folder (-o)")
    from lipsyncctl.media.atomic import temp_prefix

    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path), suffix=f".old{path.suffix}"))
    os.replace(path, old)  # an empty folder is replaced by the rename
    try:
        os.replace(new, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
