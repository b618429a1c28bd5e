"""Write-then-rename, so a crash or Ctrl-C never leaves a half-written output under the real name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from lipsyncctl.errors import MediaError


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name the same file (resolving links; False if either is missing)."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_not_input(path: str | Path, inputs: Iterable[str | Path]) -> None:
    """Raise :class:`MediaError` if ``path`` is one of ``inputs`` (we never overwrite an input)."""
    for src in inputs:
        if same_file(path, src):
            raise MediaError(f"{path}: refusing to overwrite an input file",
                             hint="choose a different output path or directory (-o)")


@contextlib.contextmanager
def atomic_output(path: str | Path, *, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name is hidden (``.name.XXXX.part.ext``) and keeps the extension, so PyAV and
    ffmpeg still pick the container from it. On any exception — KeyboardInterrupt included — the
    temporary file is removed and the exception propagates; an existing ``path`` is left as it was.
    ``inputs`` are files that must never be overwritten (raises :class:`MediaError` before writing).
    """
    path = Path(path)
    check_not_input(path, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise MediaError(f"{path}: nothing was written")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
