"""The QC report as a tool to judge lip sync (issue 13.8): mouth strips before/after, LSE or why not
measured, links to the render and the source, the run's preset / models / version, review flags, and no
green OK for a run that is not lip-synced.

One 10-frame shot of the fixture (with 2-frame handles) rendered once with the tiny preset (random
networks: the run must be flagged as not lip-synced); no evaluation SyncNet is installed, so every score
is "not measured" with its reason. The pure parts (frame sampling, flags, verdict, links) are checked on
plain data.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.cli.main import main
from lipsyncctl.timeline import qc
from lipsyncctl.timeline.report import relative_href
from tests.conftest import shared_path
from tests.timeline_media import clip, write_edit, write_sources

BASE = ["--preset", "tiny", "--steps", "1", "--handles", "2", "--set", "faces.detect_every=4"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("qcreport")
    write_sources(root / "media dir", shared_path("fixtures", "demo1_video.mp4"))  # a space: links are encoded
    edit = write_edit(root / "edit.otio", [clip("A1", "media dir/cam_a.mkv", 4, 10, available=(0, 40))], name="qc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNCCTL_MODELS", str(root / "models"))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["--json", "-q", "sync", "--timeline", str(edit), "--audio",
                       f"de={shared_path('fixtures', 'demo1_audio.wav')}", "-o", str(root / "out"), *BASE])
    res = json.loads(buf.getvalue())
    assert rc == 0, res
    info = res["languages"]["de"]
    report = json.loads(Path(info["report"]).read_text())
    return {"res": res, "info": info, "report": report, "html": Path(info["report_html"]).read_text(),
            "folder": Path(info["report"]).parent}


def _strips(page: str) -> list[np.ndarray]:
    import cv2

    out = []
    for b64 in re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page):
        jpeg = np.frombuffer(base64.b64decode(b64), dtype=np.uint8)
        out.append(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))
    return out


def test_report_carries_preset_models_and_version(tiny_run) -> None:  # type: ignore[no-untyped-def]
    from lipsyncctl import __version__

    report, page = tiny_run["report"], tiny_run["html"]
    assert report["preset"] == "tiny" and report["lipsyncctl"] == __version__
    assert [m["role"] for m in report["models"]] == ["unet", "whisper", "vae"]
    assert all(m["name"] == "tiny" and re.fullmatch(r"[0-9a-f]{64}", m["fingerprint"]) for m in report["models"])
    assert report["models"][0]["config"] == "tiny"
    assert '<code id="preset">tiny</code>' in page and f'<span id="lipsyncctl-version">{__version__}</span>' in page
    assert all(m["fingerprint"][:16] in page for m in report["models"])


def test_tiny_run_is_flagged_and_never_ok(tiny_run) -> None:  # type: ignore[no-untyped-def]
    report, page = tiny_run["report"], tiny_run["html"]
    assert report["lip_synced"] is False and "NOT lip-synced" in report["not_lip_synced"]
    assert report["verdict"] == "not lip-synced"
    (shot,) = report["shots"]
    assert shot["id"] in report["review"]
    assert any(f.startswith("not lip-synced") for f in shot["review"])
    # no SyncNet installed: not measured, with the reason, flagged too
    assert shot["sync_after"] is None and "syncnet-v2" in shot["sync_note"]
    assert any(f.startswith("sync not measured") for f in shot["review"])
    assert 'data-verdict="not lip-synced"' in page and ">NOT LIP-SYNCED<" in page and 'id="not-lip-synced"' in page
    assert ">OK<" not in page and 'class="ok"' not in page and "done (not lip-synced)" in page
    assert "background:#1b7f3b" not in page  # no green badge anywhere
    assert 'title="the evaluation SyncNet (syncnet-v2) is not installed' in page and "not measured" in page


def test_links_open_the_render_and_the_source(tiny_run) -> None:  # type: ignore[no-untyped-def]
    (shot,) = tiny_run["report"]["shots"]
    folder = tiny_run["folder"]
    render = folder / urllib.parse.unquote(shot["render_href"])
    source = folder / urllib.parse.unquote(shot["source_href"])
    assert render.is_file() and render.resolve() == Path(shot["output"]).resolve()
    assert source.is_file() and source.resolve() == Path(shot["source"]).resolve()
    assert "%20" in shot["source_href"] and not shot["render_href"].startswith(("/", "file:"))
    for href in (shot["render_href"], shot["source_href"]):
        assert f'href="{href}"' in tiny_run["html"]


def test_mouth_strips_have_the_size_and_differ(tiny_run) -> None:  # type: ignore[no-untyped-def]
    (shot,) = tiny_run["report"]["shots"]
    strip = shot["mouth_strip"]
    n = qc.STRIP_FRAMES
    width = n * qc.CROP + (n - 1) * qc.GUTTER
    assert strip["found"] == n and len(strip["frames"]) == n and strip["size"] == [width, qc.CROP]
    assert strip["rendered"] and strip["detector"] and strip["note"] is None
    before, after = _strips(tiny_run["html"])
    assert before.shape == after.shape == (qc.CROP, width, 3)
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 2  # the mouth was re-rendered (randomly)
    assert before.std() > 10  # a picture, not a black fill


def test_report_images_decode_in_headless_chromium(tiny_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed")
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           Path(tiny_run["info"]["report_html"]).as_uri()],
                          capture_output=True, text=True, timeout=60)
    assert 'data-images="2"' in proc.stdout and 'data-images-ok="2"' in proc.stdout, proc.stderr[-2000:]


def test_sample_frames_prefers_speech() -> None:
    assert qc.sample_frames(20) == [2, 6, 10, 14, 18]
    assert qc.sample_frames(3) == [0, 1, 2]
    assert qc.sample_frames(20, [(10, 30)]) == [11, 13, 15, 17, 19]  # only frames with speech
    assert qc.sample_frames(20, [(10, 12)]) == [2, 6, 10, 14, 18]    # too few: the whole shot


def _shot(**values):  # type: ignore[no-untyped-def]
    return {"id": "s1", "status": "done", "sync_before": 1.0, "sync_after": 6.0, "face_coverage": 1.0,
            "mouth_strip": {"frames": [0, 1, 2], "found": 3, "detector": "dlib"}, **values}


def test_review_flags_and_verdict() -> None:
    official = {"lip_synced": True, "scale": "official", "min_sync": None}
    assert qc.review_flags(_shot(), **official) == []
    report = {"ok": True, "lip_synced": True, "shots": [{**_shot(), "review": []}]}
    assert qc.verdict(report) == "ok"
    assert qc.review_flags(_shot(sync_after=2.5), **official) == [
        "LSE-C 2.50 is under 3 (the official data filter's threshold)"]
    # the approximate scale is not compared with the official threshold, --min-sync is
    assert qc.review_flags(_shot(sync_after=2.5), lip_synced=True, scale="approximate (not official)",
                           min_sync=None) == []
    assert "under 4 (--min-sync)" in qc.review_flags(_shot(sync_after=3.5), **{**official, "min_sync": 4.0})[0]
    assert "no better than the source" in qc.review_flags(_shot(sync_before=7.0), **official)[0]
    low = qc.review_flags(_shot(face_coverage=0.5, mouth_strip={"frames": [0, 1], "found": 1, "detector": "dlib"}),
                          **official)
    assert len(low) == 2 and all(f.startswith("low face confidence") for f in low)
    assert qc.review_flags(_shot(status="failed", error="boom"), **official) == ["failed: boom"]
    assert qc.review_flags(_shot(status="no_dialogue"), **official) == []
    report["shots"][0]["review"] = ["x"]
    assert qc.verdict(report) == "review"
    assert qc.verdict({**report, "lip_synced": False}) == "not lip-synced"
    assert qc.verdict({**report, "ok": False, "lip_synced": False}) == "failed"
    # a clip whose media is missing is black in the conform: the language is to review (it was "ok"), by its name
    clean = {**report, "shots": [{**_shot(), "review": []}]}
    holes = [{"name": "sh020", "reason": "missing media: gone.mp4", "conform": "black"},
             {"name": "bars", "reason": "generator (SMPTEBars)", "conform": "black"},
             {"name": "sh040", "reason": "lipsync: false", "conform": "source"}]
    assert qc.media_holes({**clean, "skipped": holes}) == ["sh020"]
    assert qc.verdict({**clean, "skipped": holes}) == "review" and qc.verdict({**clean, "skipped": holes[1:]}) == "ok"


def test_relative_href(tmp_path: Path) -> None:
    page = tmp_path / "out" / "de" / "v001"
    assert relative_href(page / "shots" / "a b#1.mp4", page) == "shots/a%20b%231.mp4"
    assert relative_href(tmp_path / "media" / "cam.mkv", page) == "../../../media/cam.mkv"


class _TwoFaces:
    """A stand-in detector: two fixed faces (box only, no landmarks) in every frame; the left one is larger."""

    name = "fixed"

    def detect(self, frame):  # type: ignore[no-untyped-def]
        from lipsyncctl.faces.detect import Face

        return [Face(np.array([10.0, 10.0, 110.0, 130.0]), 0.9, np.zeros((0, 2))),
                Face(np.array([150.0, 40.0, 230.0, 140.0]), 0.7, np.zeros((0, 2)))]


def test_mouth_strip_follows_the_face_the_render_changed(tmp_path: Path) -> None:
    from fractions import Fraction

    from tests.sync_media import write_clip

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (160, 240, 3), dtype=np.uint8) for _ in range(12)]
    changed = []
    for f in frames:  # the render changes the smaller face's mouth only (its square: x 166..214, y 94..142)
        g = f.copy()
        g[100:135, 175:205] = 255 - g[100:135, 175:205]
        changed.append(g)
    src = write_clip(tmp_path / "src.mkv", frames, Fraction(25))
    out = write_clip(tmp_path / "out.mkv", [frames[0], *changed], Fraction(25))  # one head-handle frame
    strips = qc.mouth_strips(src, 0, out, 1, [1, 5, 9], _TwoFaces(), size=48)  # type: ignore[arg-type]
    assert strips.found == 3 and strips.face_score == 0.7 and strips.detector == "fixed"
    assert strips.before.shape == strips.after.shape == (48, 3 * 48 + 2 * qc.GUTTER, 3)
    diff = np.abs(strips.before.astype(int) - strips.after.astype(int))
    assert diff.mean() > 40  # the crops are around the changed mouth
    # no face at all: whole frames at the strip's height, and a note saying so
    none = qc.mouth_strips(src, 0, None, 0, [0, 6], None, size=40)
    assert none.after is None and none.found == 0 and "no face" in (none.note or "")
    assert none.before.shape == (40, 2 * 60 + qc.GUTTER, 3)


def test_an_interlaced_shot_is_judged_on_progressive_pictures(tmp_path: Path) -> None:
    """A shot of an interlaced master whose fields are 4 px apart (a face in motion): dlib finds no face in the
    combed frames, so the QC found none (whole frames shown, and the sync scores read the same pictures); with
    ``sync.deinterlace`` auto (what the render saw) it reads bwdif's pictures and finds the face in each."""
    from lipsyncctl.faces.detect import create_detector
    from tests.curate_media import write_talking_clip
    from tests.sync_media import sample_frames

    combed = []
    for rgb in sample_frames(10, scale=0.6):
        woven = rgb.copy()
        woven[1::2] = np.roll(rgb[1::2], 4, axis=1)
        combed.append(woven)
    src = write_talking_clip(tmp_path / "i.mp4", combed, x264_params="tff=1")
    detector = create_detector("dlib")
    whole = qc.mouth_strips(src, 0, src, 0, [1, 5, 8], detector, size=48)
    found = qc.mouth_strips(src, 0, src, 0, [1, 5, 8], detector, size=48, deinterlace=True)
    assert (whole.found, found.found) == (0, 3)
    assert "no face" in (whole.note or "") and found.note is None
