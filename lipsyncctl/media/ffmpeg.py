"""Find the ffmpeg binary and ask it what it can do.

Media work happens in-process with PyAV; the binary is only needed by tools that shell out (the prep
benchmark, scenedetect's splitter, moviepy) and is reported by ``doctor``. Resolution order:

1. ``$LIPSYNCCTL_FFMPEG`` (must point at an executable file),
2. ``ffmpeg`` on ``PATH``,
3. the static binary bundled with ``imageio-ffmpeg``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lipsyncctl.errors import MissingToolError
from lipsyncctl.media.mux import AUDIO_CODECS
from lipsyncctl.media.writer import CODECS, encoders

#: The encoders the default outputs need (``prep`` and ``sync`` write H.264 with AAC sound).
REQUIRED_ENCODERS: tuple[str, ...] = (CODECS["h264"].encoder, AUDIO_CODECS["aac"][0])
#: The other codecs' encoders (H.265, ProRes, DNxHR, FFV1): only outputs that name them need them.
OPTIONAL_ENCODERS: tuple[str, ...] = tuple(e for e in encoders() if e not in REQUIRED_ENCODERS)
#: Encoders ``doctor`` reports, the required ones first.
WANTED_ENCODERS: tuple[str, ...] = REQUIRED_ENCODERS + OPTIONAL_ENCODERS


@dataclass(frozen=True)
class FFmpegInfo:
    """What :func:`ffmpeg_info` found: the binary, where the choice came from, version and encoders."""

    path: Path
    source: str  # "LIPSYNCCTL_FFMPEG" | "PATH" | "imageio-ffmpeg"
    version: str
    encoders: dict[str, bool] = field(default_factory=dict)


def find_ffmpeg() -> tuple[Path, str]:
    """Return ``(path, source)`` of the ffmpeg binary to use, or raise :class:`MissingToolError`."""
    env = os.environ.get("LIPSYNCCTL_FFMPEG")
    if env:
        path = Path(env).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path, "LIPSYNCCTL_FFMPEG"
        raise MissingToolError(
            f"LIPSYNCCTL_FFMPEG={env} is not an executable file",
            hint="point LIPSYNCCTL_FFMPEG at an ffmpeg binary, or unset it to use PATH / imageio-ffmpeg",
        )
    on_path = shutil.which("ffmpeg")
    if on_path:
        return Path(on_path), "PATH"
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()), "imageio-ffmpeg"
    except (ImportError, RuntimeError) as exc:
        raise MissingToolError(
            f"ffmpeg not found (not in LIPSYNCCTL_FFMPEG, PATH or imageio-ffmpeg: {exc})",
            hint="install ffmpeg, or set LIPSYNCCTL_FFMPEG to its path (imageio-ffmpeg provides one)",
        ) from exc


def ffmpeg_exe() -> Path:
    """The ffmpeg binary path (see :func:`find_ffmpeg`)."""
    return find_ffmpeg()[0]


def _run_text(exe: Path, *args: str) -> str:
    try:
        proc = subprocess.run(
            [str(exe), "-hide_banner", *args], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise MissingToolError(f"cannot run ffmpeg at {exe}: {exc}",
                               hint="install ffmpeg, or set LIPSYNCCTL_FFMPEG to its path") from exc
    return proc.stdout + proc.stderr


@functools.lru_cache(maxsize=8)
def _encoders_of(exe: str) -> frozenset[str]:
    text = _run_text(Path(exe), "-encoders")
    names = set()
    for line in text.splitlines():
        # " V....D libx264              libx264 H.264 / AVC ..."
        m = re.match(r"^\s*[VAS][A-Z.]{5}\s+(\S+)", line)
        if m:
            names.add(m.group(1))
    return frozenset(names)


def list_encoders(exe: Path | None = None, wanted: tuple[str, ...] = WANTED_ENCODERS) -> dict[str, bool]:
    """Which of ``wanted`` encoders the binary has, e.g. ``{"libx264": True, "prores_ks": False}``."""
    names = _encoders_of(str(exe or ffmpeg_exe()))
    return {name: name in names for name in wanted}


def ffmpeg_version(exe: Path | None = None) -> str:
    """The version string of the binary (``"n9.0.2"``, ``"5.1.9-0+deb12u1"``), or ``"unknown"``."""
    text = _run_text(exe or ffmpeg_exe(), "-version")
    m = re.search(r"ffmpeg version (\S+)", text)
    return m.group(1) if m else "unknown"


def ffmpeg_info() -> FFmpegInfo:
    """Everything ``doctor`` shows about ffmpeg. Raises :class:`MissingToolError` when none is found."""
    path, source = find_ffmpeg()
    return FFmpegInfo(path=path, source=source, version=ffmpeg_version(path), encoders=list_encoders(path))


def pyav_codecs(wanted: tuple[str, ...], mode: str) -> dict[str, bool]:
    """Which of ``wanted`` the in-process PyAV build has, as encoders (``mode="w"``) or decoders (``"r"``)."""
    import av

    found = {}
    for name in wanted:
        try:
            av.codec.Codec(name, mode)
            found[name] = True
        except (ValueError, av.error.FFmpegError):
            found[name] = False
    return found


def pyav_encoders(wanted: tuple[str, ...] = WANTED_ENCODERS) -> dict[str, bool]:
    """Which encoders the in-process PyAV build has (what ``prep`` actually uses)."""
    return pyav_codecs(wanted, "w")
