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

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import UsageError
from lipsyncctl.media.atomic import check_writable, same_file
from lipsyncctl.media.container import MEDIA_EXTS

if TYPE_CHECKING:
    from lipsyncctl.timeline.source import MediaResolver
    from lipsyncctl.timeline.types import ShotState, TimelineJob

def input_files(job: TimelineJob, timeline: Any, resolver: MediaResolver) -> list[Path]:
    """The timeline file, the media of every clip that resolves to a local file (each file of an image
    sequence), and the ``--audio`` files."""
    import opentimelineio as otio

    from lipsyncctl.media.container import sequence_files
    from lipsyncctl.timeline.segments import sequence_url

    out = [Path(job.timeline)] + [Path(p) for _, p in job.audio]
    for clip in timeline.find_clips():
        for ref in clip.media_references().values():
            if isinstance(ref, otio.schema.ImageSequenceReference):
                path = resolver.resolve(sequence_url(ref), sequence=True)
                out.extend(sequence_files(path) if path is not None else [])
                continue
            url = getattr(ref, "target_url", None)
            path = resolver.resolve(url) if url else None
            if path is not None:
                out.append(path)
    return out


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
        check_writable(output / ".lipsyncctl")  # the nearest existing folder at or above OUT
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
    """
    existing = [p for p in inputs if p.exists()]
    for src in existing:  # an .otiod input is a folder: nothing of the run goes inside it
        if src.is_dir() and job.output.resolve().is_relative_to(src.resolve()):
            raise UsageError(f"-o {job.output}: inside the input bundle {src}; refusing to write into an input",
                             hint="choose an output folder outside the bundle")
    for out in output_files(job, languages, shots):
        for src in existing:
            if same_file(out, src):
                raise UsageError(f"{out}: refusing to overwrite an input of this run ({src})",
                                 hint="choose another output folder (-o) or move the input out of it")
