"""``python -m lipsyncctl`` and the ``lipsyncctl`` console script: the CLI, started so that a Ctrl-C or SIGTERM while it
imports (a second or so) ends it as any interrupt does (exit 130, one line, or one JSON document with ``--json``), not
with a traceback from inside an import. A signal the caller ignores (``&`` from a script ignores SIGINT) or handles
itself is left to it."""

from __future__ import annotations

import signal


def entry() -> None:
    caught: list[int] = []
    held = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    held = {sig: h for sig, h in held.items() if h in (signal.default_int_handler, signal.SIG_DFL)}
    for sig in held:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        from lipsyncctl.cli.main import run
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
    run(interrupted=bool(caught))  # (held until the imports were done: raised inside one, a class was half made)


if __name__ == "__main__":
    entry()
