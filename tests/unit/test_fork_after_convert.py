"""PyAV keeps the SwsContext of VideoFrame.reformat / to_ndarray: per thread from 18.1.1 (per frame in 18.1.0). One
that ran sliced (threads > 1) owns a thread pool that a fork does not copy, and the fork child's next conversion with
it waits for that pool forever (the DataLoader workers of a run after a 0-worker run in the same process hung on
18.1.1). Every conversion of ours runs one thread (SWS_THREADS), so a forked child converts as well."""
from __future__ import annotations

import os
import signal
import time

import av
import numpy as np
import pytest

from lipsyncctl.media.reader import to_rgb24


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_converts_after_the_parent_did() -> None:
    rng = np.random.default_rng(0)
    frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (720, 640), np.uint8), format="yuv420p")
    want = to_rgb24(frame)  # the parent converts first (as a 0-worker run, or the decode check, does)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if np.array_equal(to_rgb24(frame), want) else 3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's conversion hung (a thread-local SwsContext with slice threads, from the parent)")
