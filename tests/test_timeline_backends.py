"""Timeline workers beyond this process: local worker processes (``--jobs 2``, ~40 s on 2 cores: opt-in
with ``-m slow``) and Ray on a local CPU instance (~15 s; skipped without the ``ray`` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsyncctl import config as cfg
from lipsyncctl.timeline.job import TimelineJob, run_timeline
from tests.conftest import shared_path
from tests.timeline_media import clip, rt, write_sources


def _edit(tmp_path: Path) -> Path:
    import opentimelineio as otio

    write_sources(tmp_path, shared_path("fixtures", "demo1_video.mp4"))
    tl = otio.schema.Timeline(name="two", global_start_time=rt(86400))
    v = otio.schema.Track(name="V1")
    v.extend([clip("A1", "cam_a.mkv", 4, 8, available=(0, 40)), clip("B1", "cam_b.mkv", 86408, 8, available=(86400, 30))])
    tl.tracks.append(v)
    path = tmp_path / "two.otio"
    otio.adapters.write_to_file(tl, str(path))
    return path


def _config() -> cfg.Config:
    return cfg.resolve("tiny", ["inference.steps=1", "timeline.handles=1", "faces.detect_every=3"])


@pytest.mark.slow
def test_local_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    job = TimelineJob(timeline=_edit(tmp_path), output=tmp_path / "out",
                      audio=[("de", shared_path("fixtures", "demo1_audio.wav"))], jobs=2)
    res = run_timeline(job, _config())
    assert res.counts()["rendered"] == 2 and not res.failed
    assert all(Path(s["output"]).is_file() for s in res.languages["de"]["shots"])


def test_ray_backend_on_a_local_cpu_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        job = TimelineJob(timeline=_edit(tmp_path), output=tmp_path / "out",
                          audio=[("de", shared_path("fixtures", "demo1_audio.wav"))], backend="ray")
        res = run_timeline(job, _config())
    finally:
        ray.shutdown()
    assert res.counts()["rendered"] == 2 and not res.failed
    shots = res.languages["de"]["shots"]
    assert [s["rendered_frames"] for s in shots] == [10, 10]
    assert all(Path(s["output"]).is_file() for s in shots)
