"""One exception family for the whole library; the CLI maps each class to an exit code (:data:`EXIT_STATUS`: the
codes and their meanings, which the man pages print; the README's table says more of each).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

#: every exit code and what it means, in order
EXIT_STATUS: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "failed: a job or some items of a batch failed; an output could not be written (disk full, quota, I/O)"),
    (2, "usage: bad command-line arguments; an output that would overwrite an input"),
    (3, "bad configuration or preset (unknown key, value out of range)"),
    (4, "missing model (or one that does not load), package or device (a failed doctor check; --min-sync without "
        "syncnet-v2)"),
    (5, "bad input media (missing, unreadable, corrupt, no usable stream, no shot in an edit)"),
    (6, "busy: another run is writing to the same output folder (sync --timeline, curate, train, prune) or the "
        "same sync -o file; --wait waits"),
    (130, "interrupted (Ctrl-C, SIGTERM); finished outputs are kept, partial ones removed"),
)

#: set by ``train --gpus/--nproc N`` for its ranks: a rank writes the error it stops with to this file (the
#: first rank only), and the launching process reports it once, with the rank's exit code
RANK_ERROR_FILE_ENV = "LIPSYNCCTL_ERROR_FILE"


class LipsyncError(Exception):
    """Base class. ``message`` says what failed and where; ``hint`` says what to do about it."""

    exit_code: int = 1
    default_hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class JobFailedError(LipsyncError):
    """A job ran but did not succeed (e.g. some items of a batch failed)."""

    exit_code = 1


class WriteError(LipsyncError):
    """An output could not be written: the disk or quota is full, the file too large, an I/O error, a
    read-only file system. The message names the output (never a temporary name) and, when space ran
    out, the free space there and about how much the output needs (:func:`lipsyncctl.media.atomic.write_error`).

    Attributes:
        path: the output.
        errno: the operating system's error number (``errno.ENOSPC``...).
        written: bytes written when it failed (the temporary file is removed).
        needed: about how many bytes the output needs in all (None: not known).
        free: bytes free on its file system after the failure (None: not known).
    """

    exit_code = 1
    default_hint = "free some space there (or choose another -o) and rerun; finished outputs are kept"

    def __init__(self, message: str, hint: str | None = None, *, path: str = "", errno: int = 0,
                 written: int = 0, needed: int | None = None, free: int | None = None) -> None:
        super().__init__(message, hint)
        self.path, self.errno, self.written, self.needed, self.free = path, errno, written, needed, free


class UsageError(LipsyncError):
    exit_code = 2
    default_hint = "see --help"


class OutputExistsError(UsageError):
    """An output is there already and replacing it was not asked for (exit 2). A batch's row meets it when another
    run of the list made the output while this one loaded its networks: that row is skipped, not failed."""


class TakenError(UsageError):
    """An output that another run put in place while this one worked (exit 2, as an output there at the start):
    that run's take is left as it is (:func:`lipsyncctl.media.atomic.move_new`)."""


class ConfigError(LipsyncError):
    """Bad preset, bad ``--set`` override or invalid resolved configuration."""

    exit_code = 3
    default_hint = "run `lipsyncctl presets list` and `lipsyncctl presets show NAME`"


class RegistryError(ConfigError):
    """The model registry (``models/registry.yaml``) or a models folder's ``local.yaml`` is malformed."""

    default_hint = "fix the entry named (the format is described at the top of models/registry.yaml)"


class ArchConfigError(ConfigError):
    """An architecture config (a UNet, SyncNet, VAE, VideoMAE or scheduler config, from a file or a checkpoint's
    header) is malformed or unknown."""

    default_hint = ("fix the config named (`lipsyncctl models info FILE` names the official config a checkpoint's "
                    "tensors match)")


class EditOptionError(ConfigError):
    """A clip's ``lipsync`` metadata or marker in an edit, or a ``--segments`` range's options, is malformed."""

    default_hint = ("fix the lipsync options in the edit (README: sync --timeline, a clip's `lipsync` metadata or "
                    "markers)")


class MissingModelError(LipsyncError):
    exit_code = 4
    default_hint = (
        "run `lipsyncctl models list`, then `lipsyncctl models fetch NAME` on a machine that is online"
    )


class MissingToolError(LipsyncError):
    """Something a setting or an input needs that this installation lacks: an optional package (peft, Ray, an OTIO
    adapter; one that cannot read a file right, as FCPXML at a fractional rate), CUDA for ``inference.cuda_graphs``,
    or the ffmpeg binary doctor and the benchmarks run. Each raise gives its own hint."""

    exit_code = 4
    default_hint = "run `lipsyncctl doctor` to see what is missing"


class DeviceError(LipsyncError):
    exit_code = 4
    default_hint = "run `lipsyncctl doctor`; use --device cpu to run without a GPU"


class CheckpointError(LipsyncError):
    """A checkpoint file exists but does not match the expected model (keys, shapes, container)."""

    exit_code = 4
    default_hint = "run `lipsyncctl models verify` to check the installed files"


class MediaError(LipsyncError):
    """An input file is missing, unreadable, corrupt, or lacks the stream we need."""

    exit_code = 5
    default_hint = ("check the path, or that the file plays (in a player, or `ffmpeg -i FILE` with the ffmpeg "
                    "`lipsyncctl doctor` names); re-export it from your editor if not")


class DecodeError(MediaError):
    """A video stream stopped decoding part-way: ``frame`` is the number of the source frame that failed
    (the frames before it decoded)."""

    def __init__(self, message: str, *, frame: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.frame = frame


class NoFaceError(MediaError):
    default_hint = "use --face-at X,Y or a different clip; frames without a face are passed through"


class FaceChoiceError(NoFaceError):
    """``--face ID`` / ``--face-at X,Y`` (``faces.select`` ``id``/``point``) match no face of the clip: a wrong
    argument (exit 2), not bad media; the message names the tracks there are."""

    exit_code = 2
    default_hint = "choose one of the tracks found (--face ID), or --face-at X,Y inside one of their boxes"


class BusyError(LipsyncError):
    """Another run holds the output folder's lock (:mod:`lipsyncctl.runner.lock`): one run per folder."""

    exit_code = 6
    default_hint = ("wait for that run to finish, or pass --wait to start when it does; "
                    "shards of one job (--shard I/N) may share a folder")


class Interrupted(LipsyncError):
    """Ctrl-C or SIGTERM, said by a job that knows how far it got: ``partial`` is its result so far (a batch's
    items and counts), which ``--json`` reports beside the error."""

    exit_code = 130
    default_hint = "rerun the same command to resume; finished outputs are kept, partial ones were removed"

    def __init__(self, message: str, hint: str | None = None, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message, hint)
        self.partial = partial


def error_for_code(code: int, message: str, hint: str | None = None) -> LipsyncError:
    """An error of the class with exit code ``code`` (another process's error, read back: a training rank's),
    :class:`JobFailedError` for a code no class has."""
    for cls in (UsageError, ConfigError, MissingModelError, MediaError, BusyError, Interrupted):
        if cls.exit_code == code:
            return cls(message, hint)
    return JobFailedError(message, hint)


def report_rank_error(message: str, hint: str | None, code: int) -> bool:
    """In a launched rank (:data:`RANK_ERROR_FILE_ENV` set): store its error for the launching process, which
    reports it once for the group (the first rank's to fail; the others' are dropped). False elsewhere."""
    path = os.environ.get(RANK_ERROR_FILE_ENV)
    if not path:
        return False
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"message": message, "hint": hint, "exit_code": code,
                       "rank": int(os.environ.get("RANK", "0"))}, fh)
    return True


def rank_error(path: Path) -> LipsyncError:
    """The error :func:`report_rank_error` stored, as the library error of its exit code."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        message, code = str(doc["message"]), int(doc["exit_code"])
    except (OSError, ValueError, KeyError, TypeError):
        return JobFailedError(f"a training process failed (its error file {path} is unreadable)")
    return error_for_code(code, f"rank {doc.get('rank', 0)}: {message}", doc.get("hint"))
