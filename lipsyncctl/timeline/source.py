"""Reading an edit with OpenTimelineIO and finding its media on this machine.

Any format an installed OTIO adapter reads works: ``.otio``, ``.otioz``/``.otiod`` built in, CMX 3600
EDL (``otio-cmx3600-adapter``, extra ``edl``), FCP 7 XML (``otio-fcp-adapter``, extra ``fcp``).
Media paths are resolved, in order, through a ``--relink OLD=NEW`` prefix map, against the timeline's
folder (for a bundle: the bundle's root, where its ``media/`` are; see :mod:`~lipsyncctl.timeline.bundle`),
and against ``--media-root`` (by relative path, then by file name).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lipsyncctl.errors import MediaError, MissingToolError, UsageError

#: file suffix -> OTIO adapter name (for writing an output timeline in the input's format)
ADAPTERS_BY_SUFFIX: dict[str, str] = {
    ".otio": "otio_json", ".otioz": "otioz", ".otiod": "otiod", ".edl": "cmx_3600", ".xml": "fcp_xml",
}
#: adapter -> the pip package that provides it (for the error hint)
ADAPTER_PACKAGES: dict[str, str] = {"cmx_3600": "otio-cmx3600-adapter", "fcp_xml": "otio-fcp-adapter",
                                    "fcpx_xml": "otio-fcpx-xml-adapter"}


def installed_adapters() -> list[str]:
    import opentimelineio as otio

    return sorted(a.name for a in otio.plugins.ActiveManifest().adapters)


def adapter_for(path: Path) -> str | None:
    """The OTIO adapter that reads/writes ``path`` by its suffix (None = let OTIO decide)."""
    name = ADAPTERS_BY_SUFFIX.get(path.suffix.lower())
    if path.suffix.lower() == ".fcpxml":
        name = "fcpx_xml"
    return name


def read_timeline(path: str | Path, *, rate: float | None = None, extract_to: Path | None = None) -> Any:
    """Read ``path`` into an ``otio.schema.Timeline`` (a ``.otiod`` bundle is a folder).

    Args:
        rate: frame rate for formats that do not store one (EDL), e.g. ``23.976``; None = the adapter's
            default (24 for CMX 3600).
        extract_to: for an ``.otioz``, an existing empty folder to extract the bundle's media into
            (None: read only its timeline).

    Raises:
        MediaError: the file is missing or cannot be parsed.
        MissingToolError: no installed adapter reads this format.
    """
    import opentimelineio as otio

    path = Path(path)
    folder = path.suffix.lower() == ".otiod"
    found = (path / "content.otio").is_file() if folder else path.is_file()
    if not found:
        what = "OTIO bundle folder (with content.otio)" if folder else "timeline"
        raise MediaError(f"{what} not found: {path}", hint="check the path given to --timeline")
    adapter = adapter_for(path)
    if adapter is not None and adapter not in installed_adapters():
        pkg = ADAPTER_PACKAGES.get(adapter, f"an OTIO adapter for {path.suffix}")
        raise MissingToolError(f"{path}: no OpenTimelineIO adapter for {path.suffix} is installed",
                               hint=f"pip install {pkg} (or lipsyncctl[edl] / lipsyncctl[fcp])")
    kwargs: dict[str, Any] = {}
    if rate is not None and adapter == "cmx_3600":
        from lipsyncctl.timeline.timebase import exact_rate

        kwargs["rate"] = float(exact_rate(rate))  # 23.976 -> 24000/1001 (OTIO's timecode wants the exact rate)
    try:
        if adapter == "otioz" and extract_to is not None:
            from lipsyncctl.timeline.bundle import extract_otioz

            result = extract_otioz(path, extract_to)
        else:
            result = otio.adapters.read_from_file(str(path), adapter_name=adapter, **kwargs)
    except Exception as exc:  # noqa: BLE001 - adapters raise anything; report it as bad input media
        raise MediaError(f"{path}: cannot read the timeline ({type(exc).__name__}: {exc})",
                         hint="open it in your editor and re-export it") from exc
    if isinstance(result, otio.schema.SerializableCollection):
        timelines = list(result.find_children(descended_from_type=otio.schema.Timeline, shallow_search=True))
        if not timelines:
            raise MediaError(f"{path}: the file holds no timeline")
        result = timelines[0]
    if not isinstance(result, otio.schema.Timeline):
        raise MediaError(f"{path}: expected a timeline, found {type(result).__name__}")
    return result


@contextlib.contextmanager
def opened_timeline(path: Path, *, rate: float | None = None,
                    scratch: Path | None = None) -> Iterator[tuple[Any, Path]]:
    """Read the timeline ``path`` for a job; yields ``(timeline, base)``, ``base`` being the folder its
    relative media URLs resolve against: the file's folder, an ``.otiod``'s own folder, or the private
    folder an ``.otioz`` is extracted into (under ``scratch``, else the system temp folder), which is
    removed when the block exits.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".otioz":
        timeline = read_timeline(path, rate=rate)
        yield timeline, (path.resolve() if suffix == ".otiod" else path.resolve().parent)
        return
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=f".{path.stem}.otioz.") as tmp:
        base = Path(tmp).resolve()
        yield read_timeline(path, rate=rate, extract_to=base), base


def parse_relink(items: list[str] | None) -> dict[str, str]:
    """``["/old/root=/new/root", ...]`` -> prefix map (longest prefix wins when applied)."""
    out: dict[str, str] = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise UsageError(f"--relink {item!r}: expected OLD=NEW", hint="e.g. --relink /Volumes/edit=/mnt/edit")
        out[old] = new
    return out


@dataclass
class MediaResolver:
    """Turns a media reference's ``target_url`` into an existing local path (or None).

    Attributes:
        base: the timeline file's folder (relative URLs are resolved against it).
        media_root: an extra folder searched by relative path, then by file name.
        relink: ``{old_prefix: new_prefix}`` applied to the URL's path first.
    """

    base: Path
    media_root: Path | None = None
    relink: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def url_path(url: str) -> str:
        """``file:///a/b%20c.mov`` -> ``/a/b c.mov``; plain paths pass through."""
        if url.startswith("file:"):
            parsed = urlparse(url)
            return unquote(parsed.path)
        return url

    def candidates(self, url: str) -> list[Path]:
        raw = self.url_path(url)
        for old in sorted(self.relink, key=len, reverse=True):
            if raw.startswith(old):
                raw = self.relink[old] + raw[len(old):]
                break
        p = Path(os.path.expanduser(raw))
        cands = [p] if p.is_absolute() else [self.base / p]
        if self.media_root is not None:
            rel = Path(*p.parts[1:]) if p.is_absolute() else p
            cands += [self.media_root / rel, self.media_root / p.name]
        return cands

    def resolve(self, url: str) -> Path | None:
        """The first candidate that exists, or None."""
        if not url:
            return None
        for cand in self.candidates(url):
            if cand.is_file():
                return cand.resolve()
        return None


@dataclass(frozen=True)
class MediaFacts:
    """What the planner needs of one source file (probed once per file)."""

    path: Path
    fps: Any  # Fraction
    frames: int
    width: int
    height: int
    start_timecode: str | None  # the file's own timecode tag, e.g. "01:00:00:00"


def probe_media(path: Path) -> MediaFacts:
    """Probe one video file (PyAV) for its exact rate, frame count, size and timecode tag."""
    from lipsyncctl.media.probe import probe

    info = probe(path)
    if info.video is None:
        raise MediaError(f"{path}: no video stream")
    return MediaFacts(path=path, fps=info.video.nominal_fps, frames=info.video.frame_count,
                      width=info.video.width, height=info.video.height, start_timecode=_timecode_tag(path))


def _timecode_tag(path: Path) -> str | None:
    """The ``timecode`` tag of the container or its first video/data stream (MOV/MXF carry one)."""
    import av

    try:
        with av.open(str(path)) as c:
            tags = [dict(c.metadata)] + [dict(s.metadata) for s in c.streams]
    except (av.error.FFmpegError, OSError):
        return None
    for t in tags:
        for k, v in t.items():
            if k.lower() == "timecode" and v:  # MKV stores TIMECODE, MOV timecode
                return str(v)
    return None
