"""Opening inputs with PyAV, with every failure turned into a one-line :class:`MediaError`.

Image sequences are addressed with an ffmpeg ``image2`` pattern such as ``shots/a/%04d.png``; their
frame rate is not stored in the files, so it comes from the caller (default 25).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from lipsyncctl.errors import MediaError

#: The still-image formats read as pictures and as sequences (the tests read each one); a sequence's pattern may name
#: any extension but a sound's or a record's (:data:`NOT_PICTURES`: :func:`is_image_sequence`).
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".exr", ".dpx", ".webp"})
#: Extensions ``prep`` picks up when walking a directory.
MEDIA_EXTS = frozenset(
    {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mxf", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg", ".wmv",
     ".flv", ".3gp", ".mj2", ".y4m"}
)
DEFAULT_SEQUENCE_FPS = Fraction(25)
#: swscale threads of every conversion that makes a file's pixels (``VideoFrame.reformat(threads=...)``). PyAV >= 17
#: slices a conversion over all CPUs by default, and FFmpeg 8.1's sliced conversions into 10-bit formats are not
#: deterministic: a few samples at slice edges come out wrong (by up to 124 of 1023), differently on every call, so
#: ProRes written from the same frames differed run to run. One thread is exact and takes a few ms at 1080p.
#: It is also what keeps a fork safe: PyAV >= 18.1.1 keeps one SwsContext per thread (18.1.0: per frame), and one that
#: ran sliced owns a thread pool a fork does not copy, so the child's next conversion waits for it forever (the
#: DataLoader workers forked after a 0-worker run in the same process hung). Every conversion of ours passes this.
SWS_THREADS = 1

_PATTERN = re.compile(r"%0?(\d*)d")


#: extensions of files that are never pictures of a sequence (a video, a sound, the records beside an output): a name
#: of these holding ``%03d`` is that file's (``shot%03d.mp4``, its ``shot%03d.prep.json``), not an image2 pattern
NOT_PICTURES = MEDIA_EXTS | {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".json", ".yaml", ".yml",
                             ".txt", ".npz", ".npy"}


def is_image_sequence(path: str | Path) -> bool:
    """True for an ffmpeg ``image2`` pattern (``%04d`` / ``%d`` in the file name), unless the name is a video's, a
    sound's or a record's (:data:`NOT_PICTURES`) or a file of that very name exists (then it is that file)."""
    return names_a_sequence(path) and Path(path).suffix.lower() not in NOT_PICTURES


def names_a_sequence(path: str | Path) -> bool:
    """Whether the name holds an ``image2`` pattern (``%04d``) and is no existing file, whatever its extension (an
    output ``plate.%04d.mp4`` asks for a sequence in a format not written)."""
    return bool(_PATTERN.search(Path(path).name)) and not os.path.isfile(path)


def sequence_files(pattern: str | Path) -> list[Path]:
    """The files an ``image2`` pattern matches, sorted by frame number."""
    return [p for _, p in sequence_entries(pattern)]


def sequence_file(pattern: str | Path, number: int) -> Path:
    """The file of frame ``number`` of an ``image2`` pattern (``shot.%04d.png``, 1001 -> ``shot.1001.png``)."""
    pattern = Path(pattern)
    return pattern.with_name(_PATTERN.sub(lambda m: f"{number:0{m.group(1) or 1}d}", pattern.name, count=1))


#: what may stand between a sequence's name and its frame number (``shot.%04d``, ``shot_%04d``, ``shot %04d``)
_SEPARATOR = "[._ -]"


def sequence_tagged(pattern: str | Path, tag: str) -> Path:
    """An image sequence's pattern with ``tag`` before its frame number, after the same separator: ``shot.%04d.png``,
    ``matte`` -> ``shot.matte.%04d.png``, ``shot %04d.tif`` -> ``shot matte %04d.tif`` (a pattern of its own, whose
    names are not the first one's)."""
    pattern = Path(pattern)

    def tagged(m: re.Match[str]) -> str:
        return f"{m.group(1) or ''}{tag}{m.group(1) or '.'}{m.group(2)}"

    return pattern.with_name(re.sub(f"({_SEPARATOR})?({_PATTERN.pattern})", tagged, pattern.name, count=1))


def sequence_stem(pattern: str | Path) -> str:
    """A file's stem without an image sequence's frame number and the separator before it: ``shot.%04d.png`` ->
    ``shot``, ``shot %04d.tif`` -> ``shot``, ``%04d.png`` -> ``""`` (``out.mp4`` -> ``out``)."""
    return re.sub(f"{_SEPARATOR}?" + _PATTERN.pattern, "", Path(pattern).stem, count=1)


def exists(path: str | Path) -> bool:
    """Whether ``path`` is there: for an image sequence's pattern, whether any file matches it."""
    return bool(sequence_files(path)) if is_image_sequence(path) else Path(path).exists()


def sequence_gap(pattern: str | Path, numbers: list[int] | None = None) -> str | None:
    """What is missing between the first and last file of the image sequence ``pattern`` (FFmpeg's reader stops at
    the first missing number, so the frames after it would be read as the last one held), or None. ``numbers``:
    its :func:`sequence_numbers` where the caller has them (the folder is not listed again)."""
    numbers = sequence_numbers(pattern) if numbers is None else numbers
    missing = numbers[-1] - numbers[0] + 1 - len(numbers) if numbers else 0
    if not missing:
        return None
    hole = next(n + 1 for n, m in zip(numbers, numbers[1:], strict=False) if m != n + 1)
    return (f"{missing} frame{'s' * (missing > 1)} missing from the image sequence {Path(pattern).name} "
            f"(the first: {hole})")


def sequence_numbers(pattern: str | Path) -> list[int]:
    """The frame numbers of the files an ``image2`` pattern matches, sorted (frame 0 of a reader is the first)."""
    return [n for n, _ in sequence_entries(pattern)]


def sequence_entries(pattern: str | Path) -> list[tuple[int, Path]]:
    """``(number, file)`` of each file an ``image2`` pattern matches, sorted by number: the names FFmpeg gives those
    numbers (``%04d``: ``0007``, ``1001``, ``10000``, not ``00007``; ``%d``: no leading zero), so a sequence past
    9999 is whole and ``shot.%d.png`` is not ``shot.0001.png``."""
    pattern = Path(pattern)
    width = _PATTERN.search(pattern.name)
    assert width is not None
    glob_name = glob.escape(pattern.name[: width.start()]) + "*" + glob.escape(pattern.name[width.end():])
    found = []
    for name in glob.glob(glob.escape(str(pattern.parent)) + "/" + glob_name):
        if (number := sequence_number(pattern, name)) is not None:
            found.append((number, Path(name)))
    return sorted(found)


def sequence_number(pattern: str | Path, file: str | Path) -> int | None:
    """The frame number of ``file``'s name when it is one the ``image2`` pattern's names (as FFmpeg names frames:
    :func:`sequence_entries`), else None. Names only: the folders are the caller's to compare."""
    matcher = _frame_names(Path(pattern).name)
    if matcher is None:
        return None
    regex, pad = matcher
    m = regex.fullmatch(Path(file).name)
    if m is None or str(int(m.group(1))).zfill(pad) != m.group(1):
        return None
    return int(m.group(1))


@functools.lru_cache(maxsize=64)
def _frame_names(name: str) -> tuple[re.Pattern[str], int] | None:
    """The regex of an ``image2`` pattern's file names (its number captured) and its zero padding; None when
    ``name`` is no pattern. Compiled once per pattern (a sequence's every file is matched against it)."""
    width = _PATTERN.search(name)
    if width is None:
        return None
    return re.compile(re.escape(name[: width.start()]) + "([0-9]+)" + re.escape(name[width.end():])), int(width.group(1) or 0)


def ffmpeg_reason(exc: BaseException) -> str:
    """A short reason from a PyAV/ffmpeg exception, without the file name it repeats."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '")[0].strip() or type(exc).__name__


def check_readable(path: str | Path) -> Path:
    """Raise :class:`MediaError` for a missing, non-file or empty input; return it as a Path."""
    path = Path(path)
    if is_image_sequence(path):
        if not sequence_files(path):
            raise MediaError(f"{path}: no image matches this sequence pattern")
        return path
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    return path


def open_input(path: str | Path, *, sequence_fps: Fraction = DEFAULT_SEQUENCE_FPS) -> Any:
    """Open ``path`` for reading with PyAV and return the ``av.container.InputContainer``.

    Raises :class:`MediaError` (exit code 5) naming the file when it is missing, empty or not media.
    """
    import av

    path = check_readable(path)
    kwargs: dict[str, Any] = {}
    if is_image_sequence(path):
        number = sequence_entries(path)[0][0]
        kwargs = {
            "format": "image2",
            "options": {"framerate": f"{sequence_fps.numerator}/{sequence_fps.denominator}",
                        "start_number": str(number)},
        }
    try:
        return av.open(str(path), "r", **kwargs)
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable media file ({ffmpeg_reason(exc)})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path}: cannot open ({exc})") from exc


@contextlib.contextmanager
def opened(path: str | Path, *, sequence_fps: Fraction = DEFAULT_SEQUENCE_FPS) -> Iterator[Any]:
    """``with opened(path) as container:`` — :func:`open_input` that always closes."""
    container = open_input(path, sequence_fps=sequence_fps)
    try:
        yield container
    finally:
        container.close()


def video_stream(container: Any, path: str | Path) -> Any:
    """The main video stream (attached pictures such as cover art are skipped), or MediaError."""
    for stream in container.streams.video:
        if not (stream.disposition & 0x400):  # AV_DISPOSITION_ATTACHED_PIC
            return stream
    raise MediaError(f"{path}: no video stream")


def frame_filter(frame: Any, name: str, args: str, time_base: Fraction) -> Any:
    """A configured FFmpeg filter graph ``buffer -> name=args -> buffersink`` for frames like ``frame`` (its size
    and pixel format); ``push`` frames, ``pull`` the results (PyAV raises ``BlockingIOError`` while the filter
    waits for more, ``EOFError`` once flushed with ``push(None)``)."""
    import av.filter

    graph = av.filter.Graph()
    source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name, time_base=time_base)
    step = graph.add(name, args)
    source.link_to(step)
    step.link_to(graph.add("buffersink"))
    graph.configure()
    return graph
