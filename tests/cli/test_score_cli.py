"""`lipsyncctl score`: LSE-C / LSE-D of clips through the same measurement as the timeline QC.

A random evaluation SyncNet (the official flat state dict, loaded through the strict loader) is installed in an
isolated models dir: its numbers mean nothing, so the tests check the wiring (the scores equal the measurement
of the same frames and sound made directly), the gate, the scales and every failure's exit code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from tests.conftest import shared_path
from tests.unit.test_timeline_qc import install_random_sfd_face, install_random_syncnet

CLIP = Path(__file__).resolve().parents[2] / "lipsyncctl" / "data" / "sample.mp4"  # 4 s, 25 fps, a real face
DUB = CLIP.with_name("sample_dub.wav")


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    """(exit code, the --json document, stderr)."""
    capsys.readouterr()
    rc = main(["--json", "-q", "score", *args])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out) if cap.out.strip() else {}, cap.err


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("score") / "models"
    install_random_syncnet(folder)
    return folder


@pytest.fixture()
def installed(models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(models))
    return models


def test_without_the_evaluation_syncnet_exit_4_before_any_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "none"))
    rc, doc, err = _run([str(CLIP)], capsys)
    assert rc == 4 and doc["ok"] is False and "syncnet-v2" in doc["error"]["message"]
    assert "models fetch syncnet-v2" in doc["error"]["hint"] and "Traceback" not in err
    # a reversed range is the arguments' fault, said before a model is looked for (exit 4 told to fetch one)
    rc, doc, _ = _run([str(CLIP), "--start", "1", "--end", "0.5"], capsys)
    assert rc == 2 and doc["error"]["message"] == "--end 0.5 is not after --start 1"
    rc, doc, _ = _run([str(CLIP), "--end", "0"], capsys)  # --start not given: 0
    assert rc == 2 and doc["error"]["message"] == "--end 0 is not after --start 0"


def test_scores_equal_the_qc_measurement_of_the_same_frames(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The clip against the dub over 1-3 s: the approximate scale (no sfd-face), the numbers of the timeline QC's
    meter on the same frames and sound, the SyncNet's provenance said; the clip's own sound is the default."""
    import functools
    from fractions import Fraction

    from lipsyncctl.faces.detect import create_detector
    from lipsyncctl.media.audio import read_audio
    from lipsyncctl.media.reader import read_range
    from lipsyncctl.scoring.evaluator import load_eval_syncnet
    from lipsyncctl.scoring.meter import SyncMeter

    rc, doc, err = _run([str(CLIP), "--audio", str(DUB), "--start", "1", "--end", "3"], capsys)
    assert rc == 0 and doc["ok"] is True, err
    assert doc["scale"] == "approximate (not official)" and doc["model"]["verified"] is False
    (clip,) = doc["clips"]
    assert clip["status"] == "ok" and clip["first_frame"] == 25 and clip["frames"] == 50 and clip["fps"] == "25/1"
    meter = SyncMeter(load_eval_syncnet(), None, create_detector("auto"))
    frames = functools.partial(read_range, CLIP, 25, 50)
    direct = meter.score(frames, read_audio(DUB, 16000, 1, start=1.0, duration=2.0), Fraction(25), count=50)
    assert clip["lse_c"] == round(direct.lse_c, 4) and clip["lse_d"] == round(direct.lse_d, 4)
    assert clip["offset"] == direct.offset and len(clip["tracks"]) == 1

    rc, own, _ = _run([str(CLIP), "--start", "1", "--end", "3"], capsys)  # its own sound: another measurement
    assert rc == 0 and own["clips"][0]["audio"] == str(CLIP) and own["clips"][0]["lse_d"] != clip["lse_d"]
    # the table on stdout, the weights' note on stderr (a script captured a prose line after the table), -q: none
    capsys.readouterr()
    assert main(["score", str(CLIP), "--start", "1", "--end", "2"]) == 0
    out, err = capsys.readouterr()
    assert "NOT verified" not in out and "NOT verified" in err and "LSE-C" in out
    assert main(["-q", "score", str(CLIP), "--start", "1", "--end", "2"]) == 0
    assert "NOT verified" not in capsys.readouterr().err


def test_a_long_sound_is_read_from_disk_with_the_same_scores(installed: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Past SPILL_SAMPLES the span's 16 kHz sound goes to an unnamed file in the temporary folder, and the MFCC is
    read a block at a time as the windows reach it (a film is scored without its sound in memory): the same
    scores as with the sound in memory."""
    import tempfile

    from lipsyncctl.audio import mfcc as mfcc_mod
    from lipsyncctl.media import audio as audio_mod

    rc, memory, _ = _run([str(CLIP), "--audio", str(DUB), "--end", "2"], capsys)
    assert rc == 0
    spilled: list[object] = []
    real = audio_mod.gather_samples

    def recorded(chunks, **kwargs):  # type: ignore[no-untyped-def]
        out = real(chunks, **kwargs)
        spilled.append((kwargs.get("folder"), type(out).__name__))
        return out

    monkeypatch.setattr(audio_mod, "SPILL_SAMPLES", 4000)
    monkeypatch.setattr(audio_mod, "gather_samples", recorded)
    monkeypatch.setattr(mfcc_mod, "BLOCK_FRAMES", 60)
    rc, disk, _ = _run([str(CLIP), "--audio", str(DUB), "--end", "2"], capsys)
    assert rc == 0 and spilled == [(tempfile.gettempdir(), "memmap")]
    assert abs(disk["clips"][0]["lse_c"] - memory["clips"][0]["lse_c"]) < 1e-3
    assert disk["clips"][0]["offset"] == memory["clips"][0]["offset"]


def test_min_sync_gate_and_unmeasured_clips(installed: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from lipsyncctl.scoring import meter
    from lipsyncctl.scoring.official import SCALE_APPROXIMATE, SyncScores

    args = [str(CLIP), "--audio", str(DUB), "--end", "2"]
    rc, doc, err = _run([*args, "--min-sync", "20"], capsys)  # over any confidence: under the gate
    assert rc == 1 and doc["ok"] is False and doc["counts"]["under_min_sync"] == 1
    assert "is under --min-sync 20" in doc["clips"][0]["reason"] and "1 of 1 clip(s) did not pass" in err
    rc, doc, _ = _run([*args, "--min-sync", "0"], capsys)
    assert rc == 0 and doc["clips"][0]["status"] == "ok"
    rc, _, err = _run([*args, "--min-sync", "21"], capsys)  # the schema's bound of timeline.min_sync
    assert rc == 2 and "--min-sync" in err

    # fewer windows than the offset search reaches (±15): most offsets paired only the silence past both ends,
    # and the approximate scale said "ok" with LSE-C 0.0 at 10 frames; not measured now, saying why
    rc, doc, _ = _run([str(CLIP), "--audio", str(DUB), "--start", "1", "--end", "1.4"], capsys)
    assert rc == 0 and doc["clips"][0]["status"] == "unmeasured" and doc["clips"][0]["lse_c"] is None
    assert doc["clips"][0]["reason"].endswith("too short: 10 frames at 25 fps, where the offset search (±15 frames) "
                                              "needs 14 (0.56 s)")
    rc, doc, _ = _run([str(CLIP), "--audio", str(DUB), "--start", "1", "--end", "1.52"], capsys)
    assert doc["clips"][0]["status"] == "unmeasured"  # (13 frames)
    rc, doc, _ = _run([str(CLIP), "--audio", str(DUB), "--start", "1", "--end", "1.56"], capsys)
    assert doc["clips"][0]["status"] == "ok"  # (14 frames: 9 windows, 17 of the 31 offsets pair real sound)

    monkeypatch.setattr(meter, "approximate_sync", lambda *a, **k: SyncScores(SCALE_APPROXIMATE, reason="too short"))
    rc, doc, _ = _run(args, capsys)  # not measured: said, not a failure without a gate
    assert rc == 0 and doc["clips"][0]["status"] == "unmeasured" and "too short" in doc["clips"][0]["reason"]
    assert doc["clips"][0]["lse_c"] is None
    rc, doc, _ = _run([*args, "--min-sync", "1"], capsys)  # the gate cannot be passed
    assert rc == 1 and doc["ok"] is False


def test_bad_clips(installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing sound, or the one clip given missing: exit 5 before any work. One unreadable clip: its own exit code
    (5); among others it fails alone (exit 1) and the others are scored, and so does a missing one. A clip without sound and no --audio: said, with the hint."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(CLIP.read_bytes()[:4000])
    silent = tmp_path / "silent.mp4"
    from tests.sync_media import sample_frames, write_clip

    write_clip(silent, iter(sample_frames(10)), 25)
    rc, doc, _ = _run([str(tmp_path / "nope.mp4")], capsys)
    assert rc == 5 and "nope.mp4" in doc["error"]["message"]
    rc, doc, _ = _run([str(tmp_path)], capsys)
    assert rc == 5 and "a folder, not a clip" in doc["error"]["message"] and "*.mp4" in doc["error"]["hint"]
    rc, doc, _ = _run([str(CLIP), "--audio", str(tmp_path / "nope.wav")], capsys)
    assert rc == 5 and "nope.wav" in doc["error"]["message"]
    rc, doc, _ = _run([str(broken)], capsys)
    assert rc == 5 and "broken.mp4" in doc["error"]["message"]
    rc, doc, _ = _run([str(silent)], capsys)
    assert rc == 5 and "no audio stream" in doc["error"]["message"] and "--audio" in doc["error"]["hint"]
    rc, doc, _ = _run([str(CLIP), "--start", "5"], capsys)  # past the end of the clip: a usage error
    assert rc == 2 and "select no frames" in doc["error"]["message"]
    rc, doc, err = _run([str(broken), str(CLIP), "--end", "2"], capsys)
    assert rc == 1 and [c["status"] for c in doc["clips"]] == ["failed", "ok"] and doc["clips"][0]["reason"]
    assert "1 of 2 clip(s) did not pass" in err and broken.stat().st_size == 4000  # the input untouched
    # a batch's QC over its outputs, one of which a failed row never wrote: that clip fails alone (it stopped the
    # whole gate with exit 5 and no score)
    rc, doc, _ = _run([str(tmp_path / "never.mp4"), str(CLIP), "--end", "2"], capsys)
    assert rc == 1 and [c["status"] for c in doc["clips"]] == ["failed", "ok"]
    assert doc["clips"][0]["reason"] == "file not found"

    from tests.sync_media import write_wav

    write_wav(tmp_path / "short.wav", 1.0)  # shorter than the 2 s measured: the measure stops with it, said
    rc, doc, _ = _run([str(CLIP), "--audio", str(tmp_path / "short.wav"), "--end", "2"], capsys)
    assert rc == 0 and doc["clips"][0]["status"] == "ok"
    assert doc["clips"][0]["warnings"] == ["the sound (1.00 s from the span's start) is shorter than the picture "
                                           "(2.00 s): measured over the sound's length only"]


def test_official_scale_with_sfd_face(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """With sfd-face installed the official measurement runs (S3FD tracks: a fixed face box stands in for the random
    detector; a track needs more than 50 frames, the official minimum: the clip's first 2.2 s)."""
    import numpy as np

    from lipsyncctl.faces.detect_sfd import SfdFaceDetector

    local = tmp_path / "models"
    shutil.copytree(models, local)
    install_random_sfd_face(local)
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(local))
    monkeypatch.setattr(SfdFaceDetector, "detect_faces",
                        lambda self, rgb: np.array([[150.0, 250.0, 400.0, 500.0, 0.99]]))
    rc, doc, err = _run([str(CLIP), "--audio", str(DUB), "--end", "2.2"], capsys)
    assert rc == 0 and doc["scale"] == "official", err
    (track,) = doc["clips"][0]["tracks"]
    assert track["first"] == 0 and track["frames"] == 55 and doc["clips"][0]["lse_c"] == round(track["lse_c"], 4)
    rc, doc, _ = _run([str(CLIP), "--audio", str(DUB), "--end", "1.5"], capsys)  # shorter than a track can be
    assert rc == 0 and doc["clips"][0]["status"] == "unmeasured" and "50 frames" in doc["clips"][0]["reason"]


def test_the_python_api(installed: Path) -> None:
    import lipsyncctl

    result = lipsyncctl.score(CLIP, audio=DUB, end=2)
    assert result.ok and result.clips[0].lse_c is not None and result.to_dict()["counts"]["ok"] == 1
    assert shared_path("fixtures").is_dir()  # the suite's shared folder is beside the checkout (CI has it too)


def test_the_cli_passes_its_options_to_the_library(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A thin command: its arguments reach ``api.score`` as they are, the flags through the configuration."""
    from lipsyncctl import api
    from lipsyncctl.pipeline.score import ScoreResult

    calls: list[tuple] = []

    def fake(videos, config, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((videos, config, kwargs))
        return ScoreResult([], "official", {"verified": True})

    monkeypatch.setattr(api, "score", fake)
    rc = main(["--json", "score", "a.mp4", "b.mov", "-a", "dub.wav", "--start", "1.5", "--end", "4", "--min-sync", "3",
               "--device", "cpu", "--detector", "dlib", "--set", "sync.deinterlace=off"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["ok"] is True
    ((videos, config, kwargs),) = calls
    assert videos == [Path("a.mp4"), Path("b.mov")]
    assert kwargs == {"audio": Path("dub.wav"), "start": 1.5, "end": 4.0, "min_sync": 3.0}
    assert (config.inference.device, config.faces.backend, config.sync.deinterlace) == ("cpu", "dlib", "off")


def test_the_dub_among_several_streams(installed: Path, tmp_path: Path) -> None:
    """``sync.audio_stream`` picks the sound of a multi-stream file, as for sync: the dub as stream 1 of a file
    scores as the dub on its own, and the file's streams are said."""
    import subprocess

    import imageio_ffmpeg

    import lipsyncctl
    from tests.sync_media import write_wav

    stems = tmp_path / "stems.mkv"
    write_wav(tmp_path / "tone.wav", 4.0, freq=440.0)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(tmp_path / "tone.wav"), "-i", str(DUB),
                    "-map", "0:a", "-map", "1:a", "-c:a", "pcm_s16le", str(stems)], check=True)
    config = lipsyncctl.resolve_config(None, ["sync.audio_stream=1"])
    picked = lipsyncctl.score(CLIP, config, audio=stems, end=2).clips[0]
    alone = lipsyncctl.score(CLIP, audio=DUB, end=2).clips[0]
    assert (picked.lse_c, picked.lse_d, picked.offset) == (alone.lse_c, alone.lse_d, alone.offset)
    assert picked.warnings and "has 2 audio streams" in picked.warnings[0] and not alone.warnings


def test_an_image_sequence_is_a_clip(installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A PNG sequence (an ffmpeg pattern, read at sync.sequence_fps like sync's) is probed as a clip: without --audio
    it is a clip without sound (exit 5, as a silent file); a pattern that matches nothing is exit 5 too. (Its
    readers are sync's, whose sequence output equals the same pictures' in a file: test_sync_pipeline.)"""
    import numpy as np
    from PIL import Image

    for k in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * k, np.uint8)).save(tmp_path / f"f{k:04d}.png")
    rc, doc, _ = _run([str(tmp_path / "f%04d.png")], capsys)
    assert rc == 5 and "no audio stream" in doc["error"]["message"], doc
    rc, doc, _ = _run([str(tmp_path / "g%04d.png"), "--audio", str(DUB)], capsys)
    assert rc == 5 and "no image matches" in doc["error"]["message"]


def test_an_interrupt_keeps_the_clips_scored_so_far(installed: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduler's SIGTERM during the third of many long clips dropped the two already scored: --json gives them
    beside the error (exit 130), as sync --batch gives its rows."""
    from lipsyncctl.pipeline import score

    real, calls = score._score_one, []

    def stopping(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(score, "_score_one", stopping)
    rc, doc, _ = _run([str(CLIP), str(CLIP), str(CLIP), "--end", "2"], capsys)
    assert rc == 130 and doc["ok"] is False and doc["error"]["message"] == "interrupted after 1 of 3 clip(s) scored"
    assert [c["status"] for c in doc["clips"]] == ["ok"] and doc["counts"]["ok"] == 1
