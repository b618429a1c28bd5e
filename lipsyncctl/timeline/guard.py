"""Never overwrite an input: the files a timeline run will write, checked against the files it reads,
before anything is rendered or written.

Inputs are the timeline file (an ``.otiod`` bundle is a folder: the output folder may not lie inside it),
every media file its clips reference (video and audio tracks, as resolved on this machine) and the
``--audio`` files. Outputs are what :mod:`~lipsyncctl.timeline.job`
writes: the renders and work files under ``OUT/.lipsyncctl`` and each language's ``current`` pointer
(its deliveries go to new folders, :mod:`~lipsyncctl.timeline.delivery`).
The writers themselves also go through :func:`lipsyncctl.media.atomic.atomic_output` (temporary name,
then rename), so a failure never leaves a half-written file under a real name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import UsageError
from lipsyncctl.media.atomic import check_writable
from lipsyncctl.media.container import MEDIA_EXTS

if TYPE_CHECKING:
    from lipsyncctl.timeline.source import MediaResolver
    from lipsyncctl.timeline.types import ShotState, TimelineJob

def input_files(job: TimelineJob, timeline: Any, resolver: MediaResolver) -> list[Path]:
    """The timeline file, the media of every clip that resolves to a local file (an image sequence as its pattern,
    which :func:`check_outputs` and :func:`~lipsyncctl.media.atomic.check_not_input` read as its files), and the
    ``--audio`` files, each once."""
    import opentimelineio as otio

    from lipsyncctl.timeline.segments import sequence_url

    out = [Path(job.timeline)] + [Path(p) for _, p in job.audio]
    for clip in timeline.find_clips():
        for ref in clip.media_references().values():
            if isinstance(ref, otio.schema.ImageSequenceReference):
                path = resolver.resolve(sequence_url(ref), sequence=True)
            else:
                url = getattr(ref, "target_url", None)
                path = resolver.resolve(url) if url else None
            if path is not None:
                out.append(path)
    return list(dict.fromkeys(out))


def output_files(job: TimelineJob, languages: Iterable[str], shots: Iterable[ShotState]) -> Iterator[Path]:
    """Every file the run may write under ``job.output`` outside its new deliveries (see the layout in
    :mod:`~lipsyncctl.timeline.job`). A delivery goes to a new folder (``OUT/<lang>/vNNN``), so of each
    language only its ``current``/``LATEST`` pointer can be in the way."""
    from lipsyncctl.timeline.delivery import CURRENT, LATEST

    for lang in languages:
        yield from (job.output / lang / CURRENT, job.output / lang / LATEST)
    for s in shots:
        yield s.output
        if s.task is not None:
            yield from (Path(p) for p in (s.task.audio, s.task.model_audio) if p)


def check_output_folder(output: Path, *, dry_run: bool = False) -> list[str]:
    """The first check of a run, before anything is read or written: ``-o`` must be a folder that can
    be written (or created). Returns warnings (a dry run only warns about an unwritable ``-o``).

    Raises:
        UsageError: ``-o`` is an existing file, or a missing path named like a media file (``out.mp4``:
            with ``--timeline``, ``-o`` is a folder).
        OSError: ``-o`` (or the nearest existing folder above it) cannot be written; the message names
            ``-o`` (exit 1, like every unwritable destination).
    """
    hint = "give a folder, e.g. -o out/ (it is created if missing)"
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output}: with --timeline the output is a folder, and this is a file", hint=hint)
    if not output.exists() and output.suffix.lower() in MEDIA_EXTS:
        raise UsageError(f"-o {output}: with --timeline the output is a folder (one per language inside), "
                         "not a media file", hint=f"{hint}; each language is delivered under OUT/LANG/vNNN/")
    try:
        check_writable(output / ".lipsyncctl", probe=not dry_run, name=output)  # the nearest existing folder at or above OUT
    except OSError as exc:
        if not dry_run:
            raise OSError(exc.errno, f"-o {output}: {exc.strerror}", exc.filename) from None
        return [f"-o {output}: {exc.strerror} ({exc.filename}); a run would fail there"]
    return []


def check_outputs(job: TimelineJob, inputs: Iterable[Path], languages: Iterable[str],
                  shots: Iterable[ShotState]) -> None:
    """Raise before any work when an output would overwrite an input.

    Raises:
        UsageError: an output path is one of ``inputs`` (names both), or ``-o`` is inside an input folder
            (refusing to overwrite an input is a usage error, like in every command: exit 2).

    Each input is looked at once (its path and its file's identity, so a link to it counts): the frames of an image
    sequence are thousands of inputs, against every output of the run.
    """
    from lipsyncctl.media.container import is_image_sequence, sequence_files

    by_path: dict[Path, Path] = {}
    by_file: dict[tuple[int, int], Path] = {}
    files = (file for src in dict.fromkeys(inputs) for file in (sequence_files(src) if is_image_sequence(src) else [src]))
    for src in files:
        try:
            st = src.stat()
        except OSError:  # not there: nothing to overwrite
            continue
        if src.is_dir() and job.output.resolve().is_relative_to(src.resolve()):  # an .otiod input: nothing goes in
            raise UsageError(f"-o {job.output}: inside the input bundle {src}; refusing to write into an input",
                             hint="choose an output folder outside the bundle")
        by_path.setdefault(src.resolve(), src)
        by_file.setdefault((st.st_dev, st.st_ino), src)
    for out in output_files(job, languages, shots):
        src = by_path.get(out.resolve())
        if src is None:
            with contextlib.suppress(OSError):
                st = out.stat()
                src = by_file.get((st.st_dev, st.st_ino))
        if src is not None:
            raise UsageError(f"{out}: refusing to overwrite an input of this run ({src})",
                             hint="choose another output folder (-o) or move the input out of it")
