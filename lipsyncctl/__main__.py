"""``python -m lipsyncctl`` and the ``lipsyncctl`` console script: the CLI, started so that a Ctrl-C while it imports
(a second or so) ends it as any interrupt does, exit 130 and one line, not a traceback from inside an import."""

from __future__ import annotations

import signal
import sys


def entry() -> None:
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        from lipsyncctl.cli.main import run
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:  # held until the imports were done (raised inside one, it could leave a class half made)
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    run()


if __name__ == "__main__":
    entry()
