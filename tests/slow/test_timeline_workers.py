"""Local worker processes on the timeline (``--jobs 2``, ~40 s on 2 cores): opt-in with ``-m slow``."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsyncctl.timeline.job import run_timeline
from lipsyncctl.timeline.types import TimelineJob
from tests.conftest import shared_path
from tests.unit.test_timeline_backends import edit, tiny_config

pytestmark = pytest.mark.slow


def test_local_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    job = TimelineJob(timeline=edit(tmp_path), output=tmp_path / "out",
                      audio=[("de", shared_path("fixtures", "demo1_audio.wav"))], jobs=2)
    res = run_timeline(job, tiny_config())
    assert res.counts()["rendered"] == 2 and not res.failed
    assert all(s.output is not None and Path(s.output).is_file() for s in res.languages["de"].shots)


