"""The timeline's shot executor keeps one set of networks per worker for each model set, device, dtype and
GPU tuning: shots that differ only in steps share them, a shot whose options ask for other tuning (a
range's ``inference.channels_last``) gets networks tuned that way, never another shot's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from lipsyncctl import config as cfg
from lipsyncctl.pipeline import networks as networks_mod
from lipsyncctl.timeline import shot_task
from lipsyncctl.timeline.shot_task import ShotTask, execute_shot


def _task(sets: list[str]) -> ShotTask:
    return ShotTask(key="k", language="de", segment_id="s", video="v.mov", fps="25", first=0, frames=10,
                    audio="a.wav", output="o.mov", config=cfg.resolve("tiny", sets))


def test_networks_are_shared_only_between_shots_tuned_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[dict[str, bool]] = []
    used: list[Any] = []

    def load(config: Any) -> Any:
        loaded.append(networks_mod.tuning_of(config.inference))
        return SimpleNamespace(tuning=loaded[-1], n=len(loaded))

    monkeypatch.setattr(networks_mod, "load_networks", load)
    monkeypatch.setattr(shot_task, "render_shot", lambda task, networks, device: used.append(networks) or "ok")
    cache: dict[str, Any] = {}
    for sets in (["inference.steps=2"], ["inference.steps=3"], ["inference.channels_last=true"],
                 ["inference.steps=4", "inference.channels_last=true"], []):
        assert execute_shot(_task(sets), cache, None) == "ok"
    assert loaded == [{}, {"channels_last": True}]
    assert [n.n for n in used] == [1, 1, 2, 2, 1]
    assert all(n.tuning == networks_mod.tuning_of(_task(s).config.inference) for n, s in zip(
        used, (["inference.steps=2"], [], ["inference.channels_last=true"], ["inference.channels_last=true"], []),
        strict=True))


def test_an_unexpected_error_fails_its_shot_not_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU out of memory (or any error that is not the library's own) in one shot: that shot is failed,
    with the error, and the run goes on with the others; Ctrl-C still stops the run."""
    from lipsyncctl.pipeline import clip
    from lipsyncctl.timeline.types import ShotStatus

    def oom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(clip, "sync_clip", oom)
    outcome = shot_task.render_shot(_task([]))
    assert outcome.status == ShotStatus.FAILED
    assert outcome.error == "internal error: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(clip, "sync_clip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shot_task.render_shot(_task([]))


def test_a_face_choice_matching_no_face_fails_its_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The edit's face choice (lipsync: {face: 7}) that names no face of the shot fails it (exit 1, to fix), as
    `sync --face 7` is exit 2; it was `no_face` (exit 0, "no usable face", the source picture delivered) though
    the shot's face was there. A shot with no face at all stays no_face."""
    from lipsyncctl.errors import FaceChoiceError, NoFaceError
    from lipsyncctl.pipeline import clip
    from lipsyncctl.timeline.types import ShotStatus

    for raised, status in ((FaceChoiceError("no face with track id 7 in this clip (tracks found: 0)"),
                            ShotStatus.FAILED), (NoFaceError("no usable face"), ShotStatus.NO_FACE)):
        def fail(*args: Any, exc: Exception = raised, **kwargs: Any) -> Any:
            raise exc

        monkeypatch.setattr(clip, "sync_clip", fail)
        outcome = shot_task.render_shot(_task([]))
        assert outcome.status == status, raised
    assert outcome.error == "no usable face"


def test_a_shots_messages_name_the_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Among many shots' notes (`faces: reused 3f...npz`, the active speaker), each says whose it is; warnings stay as
    they are (each text shown once per command), and the label ends with the shot."""
    from lipsyncctl import progress
    from lipsyncctl.pipeline import clip

    def noisy(*args: Any, **kwargs: Any) -> Any:
        progress.message("faces: reused 3f.npz")
        progress.warning("tiny preset: the output is NOT lip-synced")
        raise RuntimeError("stop here")

    monkeypatch.setattr(clip, "sync_clip", noisy)
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        shot_task.render_shot(_task([]))
        progress.message("after")
    said = [e[1] for e in sink.events if e[0] == "message"]
    assert said == ["de/s: faces: reused 3f.npz", "WARNING: tiny preset: the output is NOT lip-synced", "after"]
