"""``python -m lipsyncctl.cli.launcher torch|accelerate ARGS...``: torch's elastic launcher or
``accelerate launch`` with ARGS, ending with the failing rank's exit status instead of a launcher traceback.

Each rank is ``lipsyncctl train``, which already said what went wrong (one ``error:`` line, or the error file
the launching process reads: :data:`lipsyncctl.errors.RANK_ERROR_FILE_ENV`); the launchers then raise
their own exception (``ChildFailedError``, ``CalledProcessError``) and Python prints its traceback over it.
"""

from __future__ import annotations

import subprocess
import sys


def _failed_rank_status(exc: BaseException) -> int | None:
    """The exit status for a launcher's "a rank failed" or "stopped by a signal" exception, None for any other."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if isinstance(exc, SignalException):  # stopped (SIGTERM from the launching process): its ranks were stopped
        return 128 + int(exc.sigval)
    if isinstance(exc, ChildFailedError):
        _, first = exc.get_first_failure()
        return int(first.exitcode) if first.exitcode and first.exitcode > 0 else 1
    if isinstance(exc, subprocess.CalledProcessError):
        return int(exc.returncode) if exc.returncode > 0 else 1
    return None


def _quiet_notices() -> None:
    """The elastic agent's warnings (a stop's "Received 15 death signal, shutting down workers" and "Sending process
    N closing signal SIGTERM", a line a rank) are not said: an interrupt is said once, as every command says it, and
    a rank's error by the launching process. Its errors are. ``LOGLEVEL=WARNING`` (torch's variable) shows them."""
    import logging
    import os

    given = os.environ.get("LOGLEVEL")
    os.environ["LOGLEVEL"] = given or "ERROR"  # the level of the agent's loggers, made as their modules load
    try:
        import torch.distributed.run  # noqa: F401
    finally:
        if given is None:
            del os.environ["LOGLEVEL"]  # (the ranks' own logging stays theirs)
    logging.getLogger("torch.distributed.elastic").setLevel(given or "ERROR")  # and of its plain loggers


def main(argv: list[str]) -> int:
    kind, args = argv[0], argv[1:]
    _quiet_notices()
    try:
        if kind == "torch":
            from torch.distributed.run import main as run

            run(args)
        elif kind == "accelerate":
            from accelerate.commands.launch import main as run

            sys.argv = ["accelerate launch", *args]
            run()
        else:
            raise SystemExit(f"unknown launcher {kind!r}")
    except Exception as exc:  # noqa: BLE001 - the ranks' failures end quietly with their status
        status = _failed_rank_status(exc)
        if status is None:
            raise
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
