"""Curate clip stage ``sync``: official-scale LSE-C / offset of the aligned clip, the offset correction and its
confirmation (LATENTSYNC.md §4 step 8).

The scorer is replaced by a stand-in that knows the truth: the clip's audio is early by ``k`` frames (the
official ``av_offset`` is ``k``), and audio delayed by ``d`` samples measures ``k - d / 640``; it finds ``d``
by matching the samples it is given against the source WAV exactly, so it also checks what the stage feeds
it. The aligned clips are lossless (FFV1 + PCM), so the corrected clip's audio is compared sample for sample
with the WAV. Through the job/CLI: a stand-in ``align`` stage writes the aligned clip (the real one is tested
in test_curate_align.py)."""

from __future__ import annotations

import dataclasses
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipsyncctl import config as cfg
from lipsyncctl.cli.main import main
from lipsyncctl.curation import clipstages, features, job, sync
from lipsyncctl.curation.clipstages import ClipContext, ClipStage
from lipsyncctl.errors import MissingModelError
from lipsyncctl.scoring.lse import FrameSource, replayable
from lipsyncctl.scoring.official import SCALE_OFFICIAL, SyncScores, TrackSync
from tests.curate_media import flat_frames, write_lossless_rgb, write_talking_clip

SPF = 640  # 16 kHz samples per 25 fps frame
SIZE = 128  # aligned stand-in frames: the smallest the S3FD trunk takes at its 0.25 scale (32 px)


# ---------------------------------------------------------------------------------------------------
# helpers


def _noise(n: int, seed: int) -> np.ndarray:
    """Speech-like int16 noise bursts: no two windows are equal, so a shift is found by exact matching."""
    rng = np.random.default_rng(seed)
    envelope = np.repeat(rng.uniform(0.05, 1.0, n // 1600 + 1), 1600)[:n]
    return (9000 * envelope * rng.standard_normal(n)).clip(-32768, 32767).astype(np.int16)


def _write_wav(path: Path, pcm: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def _write_aligned(path: Path, n: int, seed: int = 0) -> Path:
    """An ``n``-frame FFV1 RGB .mkv at 25 fps (video only: the sync stage muxes its own audio): one still
    picture with a little noise per frame (one shot for the scorer's scene detection)."""
    rng = np.random.default_rng(seed)
    still = rng.integers(0, 250, (SIZE, SIZE, 3), dtype=np.uint8)
    frames = still + rng.integers(0, 6, (n, SIZE, SIZE, 3), dtype=np.uint8)
    return write_lossless_rgb(path, frames)


def _window(raw: np.ndarray, start: int, n: int) -> np.ndarray:
    """``raw[start:start + n]``, zeros outside the array (written independently of the stage's reader)."""
    out = np.zeros(n, np.int16)
    lo, hi = max(start, 0), min(start + n, len(raw))
    if hi > lo:
        out[lo - start:hi - start] = raw[lo:hi]
    return out


def _decoded_audio(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])])


def _video_packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def _result(conf: float, offset: int, frames: int, dist: float = 7.0) -> SyncScores:
    return SyncScores(SCALE_OFFICIAL, (TrackSync(0, frames, dist, conf, offset),))


class TruthScorer:
    """Audio early by ``k`` frames at the source: audio delayed by ``d`` samples (against the span's own)
    measures ``k - d / 640``. ``conf`` per call (the last one repeats)."""

    def __init__(self, raw: np.ndarray, first: int, k: int, conf: tuple[float, ...] = (5.0,)) -> None:
        self.raw, self.first, self.k, self.conf = raw, first, k, conf
        self.calls: list[dict[str, Any]] = []

    def score(self, frames: FrameSource, audio: np.ndarray, fps: int, *, count: int | None = None) -> SyncScores:
        open_frames, n = replayable(frames, count)
        assert callable(frames) and sum(1 for _ in open_frames()) == n  # a pass, never a held list
        assert fps == 25 and audio.dtype == np.int16 and len(audio) == n * SPF
        for d in range(-20 * SPF, 20 * SPF + 1, SPF):
            if np.array_equal(audio, _window(self.raw, self.first * SPF - d, len(audio))):
                break
        else:
            raise AssertionError("the scorer got audio that is not a whole-frame shift of the span")
        self.calls.append({"frames": n, "delay": d})
        conf = self.conf[min(len(self.calls) - 1, len(self.conf) - 1)]
        return _result(conf, self.k - d // SPF, n)


class ScriptedScorer:
    def __init__(self, *results: SyncScores) -> None:
        self.results = list(results)
        self.calls = 0

    def score(self, frames: FrameSource, audio: np.ndarray, fps: int, *, count: int | None = None) -> SyncScores:
        self.calls += 1
        return self.results.pop(0)


@pytest.fixture
def clip(tmp_path: Path) -> dict[str, Any]:
    """A 300-frame source WAV and the aligned clip of its span [100, 160)."""
    raw = _noise(300 * SPF, seed=3)
    return {"raw": raw, "wav": _write_wav(tmp_path / "audio.wav", raw), "first": 100, "stop": 160,
            "aligned": _write_aligned(tmp_path / "data" / "aligned" / "s" / "s_000100-000160.mkv", 60)}


def _ctx(tmp_path: Path, clip: dict[str, Any], options: cfg.CurateOptions | None = None, *, first: int | None = None,
         stop: int | None = None) -> ClipContext:
    first = clip["first"] if first is None else first
    stop = clip["stop"] if stop is None else stop
    models = {"syncnet-v2": tmp_path / "syncnet_v2.model", "sfd-face": tmp_path / "sfd_face.pth"}
    return ClipContext(f"s_{first:06d}-{stop:06d}", "s", tmp_path / "src.mp4", first, stop, clip["wav"],
                       tmp_path / "data", options or cfg.CurateOptions(lossless=True),
                       {"align": {"aligned": str(clip["aligned"])}}, {}, None, models)


def _use(monkeypatch: pytest.MonkeyPatch, scorer: Any) -> None:
    monkeypatch.setattr(sync, "_scorer", lambda ctx: scorer)


# ---------------------------------------------------------------------------------------------------
# measurement and thresholds


@pytest.mark.parametrize(("conf", "verdict"), [(3 - 1e-3, "rejected"), (3.0, "kept"), (3 + 1e-3, "kept")])
def test_the_confidence_gates_at_3_plus_minus_epsilon(tmp_path: Path, clip, monkeypatch, conf: float,  # type: ignore[no-untyped-def]
                                                      verdict: str) -> None:
    scorer = TruthScorer(clip["raw"], clip["first"], k=0, conf=(conf,))
    _use(monkeypatch, scorer)
    options = cfg.CurateOptions(lossless=True)
    data = sync.run(_ctx(tmp_path, clip, options))
    # the aligned clip's 60 frames and the span's own samples; offset 0: nothing to correct
    assert scorer.calls == [{"frames": 60, "delay": 0}]
    assert data["measured"]["lse_c"] == conf and data["measured"]["offset"] == 0 and data["scale"] == "official"
    assert not data["corrected"] and data["audio_shift_samples"] == 0 and data["synced"] is None
    assert not (tmp_path / "data" / "synced").exists()
    decision = sync.decide(data, options)
    if verdict == "kept":
        assert decision is None
    else:
        assert decision is not None and (decision.stage, decision.reason) == ("sync", "low-sync")
        assert decision.value == pytest.approx(conf, abs=1e-4)
    # a new threshold re-decides from the stored measurement (no scorer: it is not called again)
    assert sync.decide(data, options.model_copy(update={"sync_min_conf": conf - 0.01})) is None
    assert sync.decide(data, options.model_copy(update={"sync_min_conf": conf + 0.01})) is not None
    assert len(scorer.calls) == 1
    summary = sync.summary(data)
    assert summary == {"lse_c": conf, "lse_d": 7.0, "offset": 0, "corrected": False, "sync_scale": "official"}


@pytest.mark.parametrize(("k", "verdict"), [(6, "kept"), (-6, "kept"), (7, "rejected"), (-7, "rejected")])
def test_the_offset_gates_at_6_and_7_frames(tmp_path: Path, clip, monkeypatch, k: int, verdict: str) -> None:  # type: ignore[no-untyped-def]
    scorer = TruthScorer(clip["raw"], clip["first"], k=k)
    _use(monkeypatch, scorer)
    options = cfg.CurateOptions(lossless=True)
    data = sync.run(_ctx(tmp_path, clip, options))
    # corrected whatever the thresholds (they only decide), and confirmed at 0
    assert data["corrected"] and data["confirmed"]["offset"] == 0 and len(scorer.calls) == 2
    decision = sync.decide(data, options)
    if verdict == "kept":
        assert decision is None
    else:
        assert decision is not None and (decision.reason, decision.value) == ("sync-offset", k)
        # a wider limit keeps it from the stored measurements: the correction is already there
        assert sync.decide(data, options.model_copy(update={"sync_max_offset": 7})) is None
    assert len(scorer.calls) == 2


def test_no_track_is_rejected_with_the_scorers_reason(tmp_path: Path, clip, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    why = "no face track (S3FD score > 0.9, > 50 frames, > 100 px)"
    scorer = ScriptedScorer(SyncScores(SCALE_OFFICIAL, reason=why))
    _use(monkeypatch, scorer)
    stale = tmp_path / "data" / "synced" / "s" / "s_000100-000160.mkv"  # an earlier run's correction
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    data = sync.run(_ctx(tmp_path, clip))
    assert scorer.calls == 1 and not data["corrected"] and not stale.exists()
    decision = sync.decide(data, cfg.CurateOptions())
    assert decision is not None and (decision.reason, decision.value) == ("no-sync-track", why)
    assert sync.summary(data)["lse_c"] is None and sync.summary(data)["sync_note"] == why


# ---------------------------------------------------------------------------------------------------
# the correction


@pytest.mark.parametrize(("k", "first", "stop"), [
    (3, 100, 160),    # audio early: delayed by 3 frames, the source's audio before the span fills the start
    (-2, 100, 160),   # audio late: advanced by 2 frames, the audio after the span fills the end
    (5, 2, 62),       # only 2 frames of source audio before the span: silence for the rest
    (-4, 240, 298),   # 2 frames of source audio after the span (300 frames): silence past the end
])
def test_an_offset_of_k_frames_delays_the_audio_by_exactly_k_times_640_samples(
        tmp_path: Path, clip, monkeypatch, k: int, first: int, stop: int) -> None:  # type: ignore[no-untyped-def]
    clip["aligned"] = _write_aligned(tmp_path / "data" / "aligned" / "s" / f"s_{first:06d}-{stop:06d}.mkv",
                                     stop - first)
    scorer = TruthScorer(clip["raw"], first, k=k)
    _use(monkeypatch, scorer)
    options = cfg.CurateOptions(lossless=True)
    data = sync.run(_ctx(tmp_path, clip, options, first=first, stop=stop))

    # the official sign: av_offset k > 0 = audio early, fixed by `-itsoffset k/25` on the audio (a delay)
    assert data["corrected"] and data["audio_shift_samples"] == -k * SPF == sync.audio_shift_samples(k)
    synced = Path(data["synced"])
    assert synced == tmp_path / "data" / "synced" / "s" / f"s_{first:06d}-{stop:06d}.mkv"
    audio = _decoded_audio(synced)
    assert audio.dtype == np.int16 and len(audio) == (stop - first) * SPF  # the span's length, no more
    np.testing.assert_array_equal(audio, _window(clip["raw"], first * SPF - k * SPF, len(audio)))
    if k > 0:  # sample n of the clip is source sample first*640 + n - k*640
        assert np.array_equal(audio[k * SPF:], clip["raw"][first * SPF:stop * SPF - k * SPF])
    # the video stream is copied, packet for packet (no new video encode)
    assert _video_packets(synced) == _video_packets(clip["aligned"])

    # the re-score saw the corrected samples and is the one that decides
    assert [c["delay"] for c in scorer.calls] == [0, k * SPF]
    assert data["measured"]["offset"] == k and data["confirmed"]["offset"] == 0
    assert sync.decide(data, options) is None
    summary = sync.summary(data)
    assert summary["corrected"] is True and summary["offset"] == k and summary["offset_after"] == 0
    assert summary["aligned"] == str(synced) and summary["audio_shift_samples"] == -k * SPF
    assert sync.outputs(data) == [str(synced)]
    assert not list(synced.parent.glob(".*"))  # written atomically: no temporary left


def test_the_confirmed_measurement_decides(tmp_path: Path, clip, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    options = cfg.CurateOptions(lossless=True)
    cases = [
        (_result(5.0, 1, 60), None),                                  # re-scored within 1 frame: kept
        (_result(5.0, 3, 60), ("sync-offset-unconfirmed", 3)),        # the correction did not hold
        (_result(2.5, 0, 60), ("low-sync", 2.5)),                     # the corrected clip's conf is used
        (SyncScores(SCALE_OFFICIAL, reason="gone"), ("sync-offset-unconfirmed", "gone")),
    ]
    for confirmed, expected in cases:
        scorer = ScriptedScorer(_result(5.0, 4, 60), confirmed)
        _use(monkeypatch, scorer)
        data = sync.run(_ctx(tmp_path, clip, options))
        assert scorer.calls == 2 and data["corrected"]
        decision = sync.decide(data, options)
        assert (None if decision is None else (decision.reason, decision.value)) == expected
        assert sync.summary(data)["lse_c"] == confirmed.lse_c
        # the official rule, for a reproduction: the measured confidence (5.0) decides, every correction is kept
        assert sync.decide(data, cfg.CurateOptions(lossless=True, sync_confirm="official")) is None
    low = {**data, "measured": {**data["measured"], "lse_c": 2.0}}
    official = sync.decide(low, cfg.CurateOptions(sync_confirm="official"))
    assert official is not None and (official.reason, official.value) == ("low-sync", 2.0)


# ---------------------------------------------------------------------------------------------------
# features read the shifted span


def test_span_pcm_reads_a_shifted_window_with_silence_only_outside_the_source(tmp_path: Path) -> None:
    raw = _noise(10 * SPF, seed=1)
    wav = _write_wav(tmp_path / "a.wav", raw)
    for first, stop, shift in [(2, 5, 0), (2, 5, -SPF), (2, 5, -3 * SPF - 7), (7, 10, 2 * SPF + 1), (0, 3, -50 * SPF)]:
        got = features.span_pcm(wav, first, stop, shift=shift)
        np.testing.assert_array_equal(got, _window(raw, first * SPF + shift, (stop - first) * SPF))


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset's random whisper file alone (the whole tiny set also makes a UNet and a VAE)."""
    import torch

    from lipsyncctl.checkpoints.tiny import TINY_SEED, WHISPER_TINY_DIMS, tiny_whisper_state_dict

    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    state = tiny_whisper_state_dict(torch.Generator().manual_seed(TINY_SEED))
    torch.save({"dims": dict(WHISPER_TINY_DIMS), "model_state_dict": state}, path)
    return path


# ---------------------------------------------------------------------------------------------------
# registration, models, skip, tiny


def test_registered_after_align_and_before_quality() -> None:
    names = [s.name for s in clipstages.CLIP_STAGES]
    assert names.index("align") + 1 == names.index("sync") and names.index("sync") + 1 == names.index("quality")
    assert names.index("quality") < names.index("features")
    stage = clipstages.clip_stage("sync")
    assert stage.skipped(cfg.CurateOptions(skip_sync=True)) and not stage.skipped(cfg.CurateOptions())
    # thresholds are not in the key (they only decide); skipping is
    assert sync.settings(cfg.CurateOptions(sync_min_conf=5, sync_max_offset=2)) == sync.settings(cfg.CurateOptions())
    assert sync.settings(cfg.CurateOptions(skip_sync=True)) != sync.settings(cfg.CurateOptions())


def _source(path: Path, frames: int, seed: int = 0) -> Path:
    """A 64x64 25 fps source with speech-like noise as AAC 16 kHz mono."""
    return write_talking_clip(path, flat_frames(frames), audio=_noise(frames * SPF, seed).astype(np.float32) / 32768)


def _fake_align_run(ctx: ClipContext) -> dict[str, Any]:
    FAKE_ALIGN_CALLS.append(ctx.clip_id)
    return {"aligned": str(_write_aligned(ctx.output("aligned", ".mkv"), ctx.frames, seed=ctx.first))}


FAKE_ALIGN_CALLS: list[str] = []
FAKE_ALIGN = ClipStage("align", 1, _fake_align_run, lambda data, options: None,
                       outputs=lambda data: [data["aligned"]], summary=lambda data: {"aligned": data["aligned"]})


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One 60-frame source (one span), an empty models dir, the stand-in ``align`` then the real ``sync``."""
    FAKE_ALIGN_CALLS.clear()
    raw = _source(tmp_path / "raw" / "talk.mp4", 60)
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "models"))
    stages = (FAKE_ALIGN, clipstages.clip_stage("sync"))
    monkeypatch.setattr(clipstages, "CLIP_STAGES", stages)
    monkeypatch.setattr(job, "CLIP_STAGES", stages)
    return {"raw": raw, "data": tmp_path / "data", "models": tmp_path / "models", "monkeypatch": monkeypatch}


def _manifest(data: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]


def test_without_the_weights_the_job_stops_with_exit_4_naming_models_fetch(env, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["curate", str(env["raw"]), "-o", str(env["data"])])
    assert code == 4
    assert "lipsyncctl models fetch syncnet-v2 sfd-face" in capsys.readouterr().err
    assert not (env["data"] / ".lipsyncctl").exists() and not FAKE_ALIGN_CALLS  # failed fast
    with pytest.raises(MissingModelError, match="syncnet-v2, sfd-face"):
        job._clip_models(cfg.resolve(None), "sync")
    assert job._clip_models(cfg.resolve(None), "align") == {"align": {}}  # --until align needs no weights
    # every stage that misses its models is named (a user learnt them one rerun at a time)
    env["monkeypatch"].setattr(job, "CLIP_STAGES", tuple(clipstages._registered()))
    with pytest.raises(MissingModelError, match=r"syncnet-v2, sfd-face not installed \(the quality, features stages "
                                                r"need models not installed either: --dry-run lists every one\)"):
        job._clip_models(cfg.resolve(None), "features")


def test_skip_sync_runs_without_the_weights_keeps_the_clip_and_says_so(env, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["curate", str(env["raw"]), "-o", str(env["data"]), "--set", "curate.skip_sync=true"])
    assert code == 0, capsys.readouterr().err
    (line,) = _manifest(env["data"])
    assert line["decision"]["verdict"] == "kept" and line["corrected"] is False
    assert line["sync"] == "skipped" and "no SyncNet filter or offset correction ran" in line["sync_note"]


def test_tiny_preset_loads_random_official_files_measures_nothing_and_keeps_the_clip(env, capsys) -> None:  # type: ignore[no-untyped-def]
    import torch

    from lipsyncctl.checkpoints.loaders import load_syncnet_eval
    from lipsyncctl.checkpoints.sfd import expected_official_shapes, load_sfd_face
    from lipsyncctl.checkpoints.tiny_sync import TINY_SYNC_DIR

    short = _source(env["raw"].parent / "short.mp4", 30)  # 1.2 s: the random S3FD is slow on a CPU
    env["raw"].unlink()
    code = main(["curate", str(short), "-o", str(env["data"]), "--preset", "tiny", "--set", "curate.min_seconds=1",
                 "--set", "curate.min_sync_frames=25"])
    assert code == 0, capsys.readouterr().err
    (line,) = _manifest(env["data"])
    assert line["decision"]["verdict"] == "kept" and line["sync"] == "tiny: not measured"
    assert line["sync_scale"] == "tiny"  # not "official": nothing was measured on any scale
    assert "RANDOM" in line["sync_note"] and "NOT MEASURED" in line["sync_note"] and line["corrected"] is False
    record = json.loads(next((env["data"] / ".lipsyncctl" / "records" / "clips").rglob("*.json")).read_text())
    measured = record["stages"]["sync"]["data"]["measured"]
    assert measured["tracks"] == [] and measured["reason"] and measured["offset"] is None
    # the files: the official flat layouts, strict through the real loaders
    root = env["models"] / TINY_SYNC_DIR
    sfd = torch.load(root / "sfd_face.pth", weights_only=True)
    assert {k: tuple(v.shape) for k, v in sfd.items()} == expected_official_shapes()
    assert not load_syncnet_eval(root / "syncnet_v2.model").training
    # the random S3FD finds no face, not even a real one (why tiny keeps its clips rather than measuring)
    from lipsyncctl.faces.detect_sfd import SfdFaceDetector
    from tests.sync_media import sample_frames

    detector = SfdFaceDetector(load_sfd_face(root / "sfd_face.pth"))
    assert len(detector.detect_faces(sample_frames(1, scale=0.75)[0])) == 0


def test_through_the_job_the_corrected_clip_is_trained_on_and_thresholds_re_decide_without_running(
        env, capsys, whisper: Path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file

    from lipsyncctl.audio.wav2lip_mel import wav2lip_mel

    monkeypatch = env["monkeypatch"]
    files = {name: env["models"] / name for name in sync.MODELS}
    for p in files.values():
        p.write_bytes(b"stand-in")
    monkeypatch.setattr(sync, "models", lambda model: files)
    registered = {s.name: s for s in clipstages._registered()}
    stages = (FAKE_ALIGN, dataclasses.replace(registered["sync"], models=sync.models), registered["features"])
    monkeypatch.setattr(clipstages, "CLIP_STAGES", stages)
    monkeypatch.setattr(job, "CLIP_STAGES", stages)
    scorers: list[TruthScorer] = []

    def scorer(ctx: ClipContext) -> TruthScorer:  # the truth: this clip's audio is 3 frames early
        if not scorers:
            with wave.open(str(ctx.audio)) as w:
                raw = np.frombuffer(w.readframes(w.getnframes()), "<i2")
            scorers.append(TruthScorer(raw, ctx.first, k=3, conf=(5.0, 5.5)))
        return scorers[0]

    monkeypatch.setattr(sync, "_scorer", scorer)
    args = ["curate", str(env["raw"]), "-o", str(env["data"]), "--set", "curate.lossless=true",
            "--set", f"model.whisper={whisper}"]
    assert main(args) == 0, capsys.readouterr().err
    (line,) = _manifest(env["data"])
    assert line["decision"]["verdict"] == "kept" and line["corrected"] is True
    assert (line["offset"], line["offset_after"], line["lse_c"], line["audio_shift_samples"]) == (3, 0, 5.5, -1920)
    synced = Path(line["aligned"])  # training reads the corrected clip
    assert synced.parent.parent == env["data"] / "synced" and synced.name == f"{line['id']}.mkv"
    assert str(synced) in (env["data"] / "train.txt").read_text() + (env["data"] / "val.txt").read_text()
    raw = scorers[0].raw
    assert (line["first"], line["stop"]) == (0, 60)
    n = 60 * SPF
    np.testing.assert_array_equal(_decoded_audio(synced), _window(raw, -3 * SPF, n))  # 3 frames of silence first
    np.testing.assert_array_equal(load_file(line["features"])["mel"].numpy(), wav2lip_mel(_window(raw, -3 * SPF, n)))
    assert len(scorers[0].calls) == 2 and len(FAKE_ALIGN_CALLS) == 1

    # a stricter threshold re-decides from the stored scores: nothing runs again
    assert main([*args, "--set", "curate.sync_min_conf=6"]) == 0
    (line,) = _manifest(env["data"])
    assert line["decision"] == {"verdict": "rejected", "stage": "sync", "reason": "low-sync", "value": 5.5}
    assert main([*args, "--set", "curate.sync_max_offset=2"]) == 0
    (line,) = _manifest(env["data"])
    assert (line["decision"]["reason"], line["decision"]["value"]) == ("sync-offset", 3)
    assert main(args) == 0
    (line,) = _manifest(env["data"])
    assert line["decision"]["verdict"] == "kept" and line["features"]
    assert len(scorers[0].calls) == 2 and len(FAKE_ALIGN_CALLS) == 1


def _stand_in_models(env: dict[str, Any]) -> None:
    """The sync stage's files present (so the job starts), holding 8 bytes that are no checkpoint."""
    files = {name: env["models"] / name for name in sync.MODELS}
    for p in files.values():
        p.write_bytes(b"stand-in")
    env["monkeypatch"].setattr(sync, "models", lambda model: files)
    registered = {s.name: s for s in clipstages._registered()}
    stages = (FAKE_ALIGN, dataclasses.replace(registered["sync"], models=sync.models))
    env["monkeypatch"].setattr(clipstages, "CLIP_STAGES", stages)
    env["monkeypatch"].setattr(job, "CLIP_STAGES", stages)


def test_a_model_file_that_does_not_load_stops_the_run_with_exit_4_not_every_span_failing(
        env, capsys) -> None:  # type: ignore[no-untyped-def]
    # a corrupt (truncated) SyncNet failed each span one by one, exit 1 after the whole dataset, each span's error
    # the same; the run now stops at the first load with the models hint, and stores no failure to retry
    _stand_in_models(env)
    second = _source(env["raw"].parent / "second.mp4", 60, seed=1)
    code = main(["curate", str(env["raw"]), str(second), "-o", str(env["data"])])
    err = capsys.readouterr().err
    assert code == 4, err
    assert f"{env['models'] / 'syncnet-v2'} is not a PyTorch checkpoint" in err and "models verify" in err
    assert len(FAKE_ALIGN_CALLS) == 1  # the first span's align ran, nothing after the failed load
    records = [json.loads(p.read_text()) for p in (env["data"] / ".lipsyncctl" / "records" / "clips").rglob("*.json")]
    assert [sorted(r["stages"]) for r in records] == [["align"]]  # no sync failure stored: a rerun computes it


def test_a_failed_span_is_named_with_its_error_in_the_runs_message(env, capsys) -> None:  # type: ignore[no-untyped-def]
    # the message said "report.json (or --json) gives each error", and neither has a span's error (the manifest has)
    from lipsyncctl.errors import MediaError

    _stand_in_models(env)

    def scorer(ctx: ClipContext) -> TruthScorer:
        raise MediaError("the span's audio is unreadable here")

    env["monkeypatch"].setattr(sync, "_scorer", scorer)
    code = main(["curate", str(env["raw"]), "-o", str(env["data"])])
    err = capsys.readouterr().err
    assert code == 1, err
    assert (f"1 source(s) failed, or some of their spans: {env['raw']}; the first: {env['raw']} span 0-60 at sync: "
            "the span's audio is unreadable here") in err
    assert "the spans' in manifest.jsonl" in err
    (line,) = _manifest(env["data"])
    assert line["decision"] == {"verdict": "failed", "stage": "sync", "error": "the span's audio is unreadable here"}


def test_the_clip_is_read_a_frame_at_a_time_and_a_short_one_is_bad_media(clip) -> None:  # type: ignore[no-untyped-def]
    # the stage held every frame of the clip in a list (2.4 GB for a 120 s piece at 512 px): a pass now, per reading
    from lipsyncctl.errors import MediaError

    frames = sync.span_frames(clip["aligned"], 60)
    first = next(frames)
    assert first.shape[2] == 3 and first.dtype == np.uint8 and sum(1 for _ in frames) == 59
    assert sum(1 for _ in sync.span_frames(clip["aligned"], 10)) == 10
    with pytest.raises(MediaError, match=r"60 decodable frame\(s\) of the span.s 61"):
        list(sync.span_frames(clip["aligned"], 61))
