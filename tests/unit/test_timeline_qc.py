"""Timeline QC with an installed evaluation SyncNet, work-file cleanup, and output safety.

A randomly initialised :class:`~lipsyncctl.nets.syncnet_eval.SyncNetEval` is saved as the official flat
state dict at the registry's ``syncnet-v2`` location in an isolated models dir, so the QC loads it through
the real loader and scores each shot before/after; ``--min-sync`` above the measured confidence fails
the shot (exit 1), below it passes. The report says the weights are not verified official ones. A run
leaves no dub cuts in ``OUT/.lipsyncctl/work``; an interrupted conform or report leaves the previous
outputs intact and no temporaries; an input in the way of an output is refused before any work.
One shot (20 frames + 2 handles each side) rendered once with the tiny preset; the rest reuses it.
Without ``sfd-face`` the scores are on the labelled approximate scale; with a random ``sfd-face`` installed
too (its detections replaced by a fixed box, the network is too slow on CPU, and the minimum track
lowered, as the official 50 frames would skip the 20-frame shot) they are on the official scale.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from tests.conftest import shared_path
from tests.timeline_media import clip, write_edit, write_sources

BASE = ["--preset", "tiny", "--steps", "1", "--handles", "2", "--set", "faces.detect_every=3"]


def install_random_syncnet(models: Path, seed: int = 0) -> Path:
    """A random SyncNetEval saved like ``syncnet_v2.model`` (flat state dict) where the registry wants it."""
    import torch

    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.nets.syncnet_eval import SyncNetEval

    entry = load_registry().get("syncnet-v2")
    path = entry.local_path(entry.files[0], models)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():  # the weights are reproducible; the process RNG is left as it was
        torch.manual_seed(seed)
        net = SyncNetEval()
    torch.save(net.state_dict(), path)
    return path


def _edit(folder: Path, name: str = "edit.otio", media: str = "cam_a.mkv") -> Path:
    # 20 frames: enough windows for LSE-C
    return write_edit(folder / name, [clip("A1", media, 4, 20, available=(0, 40))], name="qc")


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    """(exit code, the --json result, stderr)."""
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", *args])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out) if cap.out.strip() else {}, cap.err


@pytest.fixture(scope="module")
def qc_env(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("tlqc")
    models = root / "models"
    write_sources(root, shared_path("fixtures", "demo1_video.mp4"))
    edit = _edit(root)
    syncnet = install_random_syncnet(models)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNCCTL_MODELS", str(models))
        # -o is the edit's own folder: the outputs go to ROOT/de/, the edit is never touched
        args = ["--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
                "-o", str(root), *BASE]
        yield {"root": root, "edit": edit, "edit_bytes": edit.read_bytes(), "args": args, "syncnet": syncnet,
               "models": models}


@pytest.fixture(scope="module")
def first_run(qc_env):  # type: ignore[no-untyped-def]
    """The one render (with --conform); module-scoped, so stdout is captured here rather than by capsys."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--json", "-q", "sync", *qc_env["args"], "--conform"])
    return rc, json.loads(buf.getvalue())


def test_sync_scores_before_after_in_report(qc_env, first_run) -> None:  # type: ignore[no-untyped-def]
    rc, res = first_run
    assert rc == 0, res
    assert res["counts"]["rendered"] == 1 and res["failed"] == []
    (shot,) = res["languages"]["de"]["shots"]
    assert shot["status"] == "done"
    for key in ("sync_before", "sync_after", "lse_d_before", "lse_d_after"):
        assert isinstance(shot[key], float), (key, shot)
    assert shot["sync_after"] > 0 and shot["lse_d_after"] > 0 and shot["lse_d_before"] > 0
    report = json.loads((qc_env["root"] / "de" / "current" / "report.json").read_text())
    assert report["sync_scores"] is True and report["ok"] is True
    (row,) = report["shots"]
    assert {k: row[k] for k in ("sync_before", "sync_after", "lse_d_before", "lse_d_after")} == \
        {k: shot[k] for k in ("sync_before", "sync_after", "lse_d_before", "lse_d_after")}
    # random weights: the report says plainly they are not verified official ones
    model = report["sync_model"]
    assert model["verified"] is False and model["verification"] == "unknown"
    assert Path(model["path"]) == qc_env["syncnet"] and len(model["sha256"]) == 64
    assert any("NOT verified" in w for w in report["warnings"])
    html = (qc_env["root"] / "de" / "current" / "report.html").read_text()
    assert 'id="sync-model" class="warn"' in html and "not verified official ones" in html
    # no sfd-face installed: the labelled approximate scale, said in the JSON, the warnings and the page
    assert report["sync_scale"] == "approximate (not official)"
    assert any("approximate (not official) scale" in w and "sfd-face" in w for w in report["warnings"])
    assert 'data-scale="approximate (not official)"' in html and "NOT the official" in html
    for key in ("sync_before", "sync_after", "lse_d_before", "lse_d_after"):
        assert f"{row[key]:.2f}" in html
    assert "sync distance (LSE-D)" in html
    # the input edit in the output folder is untouched
    assert qc_env["edit"].read_bytes() == qc_env["edit_bytes"]


def test_work_files_removed_after_the_run(qc_env, first_run) -> None:  # type: ignore[no-untyped-def]
    assert first_run[0] == 0
    meta = qc_env["root"] / ".lipsyncctl"
    assert not (meta / "work").exists(), sorted((meta / "work").rglob("*"))
    assert len(list((meta / "jobs").glob("*.json"))) == 1  # what resume needs stays
    assert not [p for p in (qc_env["root"] / "de").rglob(".*")]  # no temporaries beside the outputs


def test_min_sync_threshold_sets_the_exit_code(qc_env, first_run, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    after = first_run[1]["languages"]["de"]["shots"][0]["sync_after"]
    high = min(round(after + 1.0, 2), 20.0)
    assert high > after
    rc, res, _ = _run([*qc_env["args"], "--min-sync", str(high)], capsys)
    assert rc == 1
    assert res["counts"]["rendered"] == 0 and res["counts"]["reused"] == 1  # only the QC ran again
    (shot,) = res["languages"]["de"]["shots"]
    assert res["failed"] == [f"de/{shot['id']}"] and shot["status"] == "under_min_sync"
    assert shot["sync_after"] == after and any("--min-sync" in w for w in shot["warnings"])
    report = json.loads((qc_env["root"] / "de" / "current" / "report.json").read_text())
    assert report["ok"] is False and report["min_sync"] == high and report["summary"]["under_min_sync"] == 1
    html = (qc_env["root"] / "de" / "current" / "report.html").read_text()
    assert '<tr data-status="under_min_sync">' in html and "NEEDS ATTENTION" in html

    rc, res, _ = _run([*qc_env["args"], "--min-sync", str(after / 2)], capsys)
    assert rc == 0 and res["failed"] == [] and res["languages"]["de"]["shots"][0]["status"] == "done"
    assert json.loads((qc_env["root"] / "de" / "current" / "report.json").read_text())["ok"] is True


def test_interrupted_conform_and_report_keep_the_previous_outputs(qc_env, first_run, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from lipsyncctl.timeline import outputs, report

    assert first_run[0] == 0
    folder = Path(first_run[1]["languages"]["de"]["folder"])  # the first run's version, with its conform
    conform = folder / "edit.conform.mp4"
    before = {p: p.read_bytes() for p in (conform, folder / "report.html", folder / "report.json")}
    versions = sorted(p.name for p in folder.parent.iterdir())
    real_frames = outputs._segment_frames

    def frames_then_ctrl_c(*args, **kwargs):  # type: ignore[no-untyped-def]
        for i, rgb in enumerate(real_frames(*args, **kwargs)):
            if i == 5:
                raise KeyboardInterrupt
            yield rgb

    monkeypatch.setattr(outputs, "_segment_frames", frames_then_ctrl_c)
    rc, _, err = _run([*qc_env["args"], "--conform"], capsys)
    assert rc == 130
    for path, data in before.items():  # the conform was interrupted: the earlier outputs stay as they were
        assert path.read_bytes() == data, path
    assert sorted(p.name for p in folder.parent.iterdir()) == versions  # no new version, no temporaries
    assert not [p.name for p in folder.parent.rglob(".*")]  # no temporary files or folders left behind
    monkeypatch.setattr(outputs, "_segment_frames", real_frames)

    def broken_html(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "render_html", broken_html)
    rc, _, err = _run(qc_env["args"], capsys)
    assert rc == 130
    assert (folder / "report.html").read_bytes() == before[folder / "report.html"]
    assert sorted(p.name for p in folder.parent.iterdir()) == versions
    assert not [p.name for p in folder.parent.rglob(".*")]
    assert not (qc_env["root"] / ".lipsyncctl" / "work").exists()


def test_refuses_to_overwrite_the_input_timeline(qc_env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    media = (qc_env["root"] / "cam_a.mkv").as_uri()
    edit = _edit(out / "de", media=media)  # where the de deliveries go: they go to new folders beside it
    data = edit.read_bytes()
    rc, _, err = _run(["--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
                       "-o", str(out), *BASE, "--dry-run"], capsys)
    assert rc == 0 and edit.read_bytes() == data
    # the dub where the language's `current` pointer goes
    dub = out / "de" / "current"
    dub.write_bytes(shared_path("fixtures", "demo1_audio.wav").read_bytes())
    for extra in (["--dry-run"], []):
        rc, _, err = _run(["--timeline", str(edit), "--audio", f"de={dub}", "-o", str(out), *BASE, *extra], capsys)
        assert rc == 2 and "refusing to overwrite an input" in err  # a usage error, like every command
        assert edit.read_bytes() == data
    assert sorted(p.name for p in out.rglob("*")) == ["current", "de", "edit.otio"]  # nothing rendered or written
    # -o naming the edit itself (a file, not a folder)
    rc, _, err = _run(["--timeline", str(edit), "--audio", dub, "-o", str(edit), *BASE], capsys)
    assert rc == 2 and "is a file" in err and edit.read_bytes() == data, err


def test_sync_model_verification_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from lipsyncctl.checkpoints import registry
    from lipsyncctl.checkpoints.registry import LocalState
    from lipsyncctl.scoring.evaluator import load_eval_syncnet

    models = tmp_path / "models"
    assert load_eval_syncnet(models_dir=models) is None  # not installed: no scores, no error
    path = install_random_syncnet(models, seed=1)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    got = load_eval_syncnet(models_dir=models)
    assert got is not None and got.sha256 == digest and got.verification == "unknown" and not got.verified
    assert sum(p.numel() for p in got.model.parameters()) > 1_000_000  # the real network, loaded
    # a hash recorded on this machine (fetch / verify --record): matches, still not an official hash
    state = LocalState.load(models)
    state.record("syncnet-v2", "auxiliary/syncnet_v2.model", digest, path.stat().st_size, "hub:test")
    state.save()
    got = load_eval_syncnet(models_dir=models)
    assert got is not None and got.verification == "recorded" and not got.verified and "hub:test" in got.note()
    # recorded by `models verify --record` (a copy put there by hand): the note said it was installed from the
    # registry's source
    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.checkpoints.verify import verify_model

    (models / "local.yaml").unlink()
    verify_model(load_registry().get("syncnet-v2"), models_dir=models, load=False, record=True)
    got = load_eval_syncnet(models_dir=models)
    assert got is not None and got.verification == "recorded"
    assert "installed from a copy in place (`models verify --record`)" in got.note()
    state = LocalState.load(models)
    # the file changed since: not the weights that were recorded
    state.record("syncnet-v2", "auxiliary/syncnet_v2.model", "0" * 64, 1, "hub:test")
    state.save()
    got = load_eval_syncnet(models_dir=models)
    assert got is not None and got.verification == "mismatch" and "NOT the official" in got.note()
    # a registry hash that matches: the only case called verified
    monkeypatch.setattr(registry, "expected_sha256", lambda entry, f, state: (digest, "registry"))
    got = load_eval_syncnet(models_dir=models)
    assert got is not None and got.verified and got.to_dict()["verified"] is True


def install_random_sfd_face(models: Path, seed: int = 0) -> Path:
    """A random S3FD saved like ``sfd_face.pth`` (official names, flat) where the registry wants it."""
    import torch

    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.checkpoints.sfd import save_official
    from lipsyncctl.nets.s3fd import S3FD

    entry = load_registry().get("sfd-face")
    path = entry.local_path(entry.files[0], models)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        save_official(S3FD(), path)
    return path


def test_official_scale_with_sfd_face_installed(qc_env, first_run, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import functools

    import numpy as np

    from lipsyncctl.faces.detect_sfd import SfdFaceDetector
    from lipsyncctl.scoring import facetrack, official

    assert first_run[0] == 0
    calls: list[tuple[int, ...]] = []

    def fixed_face(self, rgb):  # type: ignore[no-untyped-def]
        calls.append(rgb.shape)
        return np.array([[80.0, 150.0, 280.0, 350.0, 0.99]])  # 200 px, inside the 360x640 (w x h) frame

    monkeypatch.setattr(SfdFaceDetector, "detect_faces", fixed_face)
    sfd = install_random_sfd_face(qc_env["models"])
    # a shorter minimum track (wiring only; the official 50 would skip this 20-frame shot, see
    # tests/unit/test_sync_official.py): the shot is scored on the official scale and gated by it
    monkeypatch.setattr(official, "shot_tracks", functools.partial(facetrack.shot_tracks, min_track=10))
    try:
        rc, res, err = _run([*qc_env["args"], "--min-sync", "20"], capsys)
        assert rc == 1 and res["counts"]["reused"] == 1, err
        (shot,) = res["languages"]["de"]["shots"]
        assert shot["status"] == "under_min_sync"
        assert isinstance(shot["sync_after"], float) and isinstance(shot["lse_d_before"], float)
        assert any("(official scale) is under --min-sync 20" in w for w in shot["warnings"])
        report = json.loads((qc_env["root"] / "de" / "current" / "report.json").read_text())
        assert report["sync_scale"] == "official" and report["shots"][0]["sync_after"] == shot["sync_after"]
        assert not any("approximate" in w for w in report["warnings"])
        html = (qc_env["root"] / "de" / "current" / "report.html").read_text()
        assert 'data-scale="official"' in html and "Scale: official" in html
        assert calls and calls[0] == (640, 360, 3)  # the detector saw whole frames
    finally:
        sfd.unlink()


def test_unmeasured_shot_fails_min_sync_unless_opted_out(qc_env, first_run, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A shot whose sync could not be measured (here: every score says "too short") under --min-sync: the gate
    cannot be evaluated, so the shot fails (exit 1), unless --unchecked-gates warn (exit 0, said per shot)."""
    from lipsyncctl.scoring import meter
    from lipsyncctl.scoring.official import SCALE_APPROXIMATE, SyncScores

    assert first_run[0] == 0
    monkeypatch.setattr(meter, "approximate_sync", lambda *a, **k: SyncScores(SCALE_APPROXIMATE, reason="too short"))
    rc, res, _ = _run([*qc_env["args"], "--min-sync", "0.1"], capsys)
    assert rc == 1 and res["counts"]["rendered"] == 0
    (shot,) = res["languages"]["de"]["shots"]
    assert shot["status"] == "under_min_sync" and shot["sync_after"] is None and res["failed"] == [f"de/{shot['id']}"]
    assert any("not measured" in w and "--unchecked-gates warn" in w for w in shot["warnings"])
    rc, res, _ = _run([*qc_env["args"], "--min-sync", "0.1", "--unchecked-gates", "warn"], capsys)
    assert rc == 0 and res["failed"] == []
    (shot,) = res["languages"]["de"]["shots"]
    assert shot["status"] == "done" and any("--min-sync 0.1 not checked" in w for w in shot["warnings"])
