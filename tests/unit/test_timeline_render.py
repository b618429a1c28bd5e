"""`lipsyncctl sync --timeline` end to end on CPU with the tiny preset (1 DDIM step, 360x640 shots):
two languages over the demo edit, the relinked timelines re-read, rendered durations, the QC report,
the conform, dry runs, a killed run resumed, the non-dialogue modes, and the HTML in a headless browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.cli.main import main
from tests.conftest import REPO, shared_path
from tests.sync_media import audio_info, decode_rgb, video_rate
from tests.timeline_media import (
    EXPECTED_SHOTS,
    EXPECTED_SKIPS,
    FILM,
    build_edit,
    clip,
    write_edit,
    write_sources,
)
from tests.unit.test_timeline_timecode import timecode_tracks

BASE = ["--preset", "tiny", "--steps", "1", "--handles", "2", "--set", "faces.detect_every=3"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Media, the demo edit, two dubs and one tiny model set for the module."""
    from lipsyncctl.media.audio import write_wav
    from lipsyncctl.timeline.mediaio import read_audio

    root = tmp_path_factory.mktemp("tl")
    models = root / "models"
    de = shared_path("fixtures", "demo1_audio.wav")
    write_sources(root, shared_path("fixtures", "demo1_video.mp4"))
    edit = build_edit(root)
    samples, rate = read_audio(de, rate=48000, channels=2)
    fr = write_wav(root / "fr.wav", samples[:, rate * 2 :].T, rate)  # another take: 48 kHz stereo
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNCCTL_MODELS", str(models))
        yield {"root": root, "edit": edit, "de": de, "fr": fr, "models": models}


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def test_two_languages_end_to_end(env, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    out = env["root"] / "out"
    args = ["--timeline", str(env["edit"]), "--audio", f"de={env['de']}", "--audio", f"fr={env['fr']}",
            "-o", str(out), *BASE]
    # dry run: the plan, nothing written
    rc, dry = _run([*args, "--dry-run"], capsys)
    assert rc == 0 and dry["dry_run"] and dry["counts"]["to_render"] == 8 and not out.exists()
    frames = sum(s["render"]["frames"] for s in dry["plan"]["segments"])
    assert dry["work"] == {"shots": 8, "frames": 2 * frames, "frame_steps": 2 * frames, "languages": 2}
    assert [s["name"] for s in dry["plan"]["segments"]] == list(EXPECTED_SHOTS)

    capsys.readouterr()
    rc = main(["--json", "sync", *args, "--conform"])  # not quiet: each shot is reported as it finishes
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert rc == 0, res
    assert "reused 0 of 4 shots (de), rendering 4" in captured.err
    assert all(f"{lang}/{seg['id']}: done in " in captured.err for lang in ("de", "fr") for seg in res["plan"]["segments"])
    assert res["counts"]["rendered"] == 8 and res["counts"]["reused"] == 0 and res["failed"] == []
    plan = {s["name"]: s for s in res["plan"]["segments"]}
    for name, (rec, frames, src) in EXPECTED_SHOTS.items():
        assert (plan[name]["record"]["start"], plan[name]["record"]["frames"], plan[name]["source"]["start"]) == (rec, frames, src)

    source_tl = otio.adapters.read_from_file(str(env["edit"]))
    source_clips = {c.name: c for c in source_tl.find_clips()}
    for lang, info in res["languages"].items():
        shots = {s["name"]: s for s in info["shots"]}
        # rendered shots: frames = visible + handles at 23.976, audio as long as the picture
        for s in shots.values():
            assert s["status"] == "done" and s["face_coverage"] > 0.5
            path = Path(s["output"])
            assert path.parent == out / lang / "v001" / "shots" and path.suffix == ".mp4"
            assert len(decode_rgb(path)) == s["rendered_frames"] == s["frames"] + sum(s["handles"])
            assert video_rate(path) == FILM
            rate, _, n = audio_info(path)
            assert abs(n / rate - s["rendered_frames"] / float(FILM)) <= 2048 / rate  # AAC frames of 1024
        # the relinked timeline: same record ranges, the render active, the original kept
        relinked = otio.adapters.read_from_file(info["timelines"][0])
        clips = {c.name: c for t in relinked.video_tracks() for c in t.find_clips()}
        assert set(clips) == set(source_clips)
        for name, c in clips.items():
            orig = source_clips[name]
            assert c.range_in_parent() == orig.range_in_parent() and c.source_range == orig.source_range
            if name in EXPECTED_SHOTS:
                assert c.active_media_reference_key == f"lipsync_{lang}"
                refs = c.media_references()
                # relative URLs stay relative, from the folder the relinked timeline is in
                here = Path(info["timelines"][0]).parent
                assert (here / refs["DEFAULT_MEDIA"].target_url).resolve() == (
                    env["root"] / orig.media_reference.target_url).resolve()
                assert not c.media_reference.target_url.startswith(("/", "file:"))
                target = (here / c.media_reference.target_url).resolve()
                assert target.is_file() and target == Path(shots[name]["output"])
                avail = c.media_reference.available_range
                assert avail.duration.to_frames() == shots[name]["rendered_frames"]
                media_start = 86400 if name.startswith("B") else 0  # cam_b's timecode 01:00:00:00
                assert avail.start_time.to_frames() == media_start + plan[name]["render"]["start"]
                # ... and that is the timecode written into the render, beside its reel name
                tc, tmcd = timecode_tracks(target)
                assert tc == otio.opentime.to_timecode(avail.start_time, avail.start_time.rate) and tmcd
                assert c.metadata["cmx_3600"]["reel"] == refs[f"lipsync_{lang}"].metadata["lipsyncctl"]["reel"]
            else:
                assert c.active_media_reference_key == "DEFAULT_MEDIA"
        # the dub on its own audio track at its record position (sample 0 at the first frame)
        (dub,) = [t for t in relinked.tracks if t.name == f"Dub {lang}"]
        assert dub.kind == otio.schema.TrackKind.Audio and len(dub) == 1
        assert dub[0].media_reference.target_url == str(Path(env[lang]).resolve())  # as given: a plain path
        assert dub[0].range_in_parent().start_time.value == 0 and dub[0].source_range.start_time.value == 0
        # otiotool finds every file of the relinked timeline from its folder
        verify = subprocess.run([str(Path(sys.executable).parent / "otiotool"), "-i", Path(info["timelines"][0]).name,
                                 "--verify-media"], cwd=here, capture_output=True, text=True, timeout=120)
        lost = [line for line in verify.stdout.splitlines() if "NOT FOUND" in line]
        assert verify.returncode == 0 and verify.stdout.count("MEDIA EXISTS") >= 6, verify  # renders, originals, dub
        assert len(lost) == 1 and "nowhere/missing.mkv" in lost[0]  # the edit's one clip without media
        # the QC report
        report = json.loads(Path(info["report"]).read_text())
        assert report["ok"] and report["summary"]["done"] == 4 and report["summary"]["skipped"] == 4
        assert {k["name"] for k in report["skipped"]} == set(EXPECTED_SKIPS)
        assert report["sync_scores"] is False and all(s["sync_after"] is None for s in report["shots"])
        assert report["start"] == "01:00:00:00" and report["shots"][1]["record_in"] == "01:00:00:12"
        html = Path(info["report_html"]).read_text()
        assert html.count("data:image/jpeg;base64,") == 8 and "missing media" in html
        # the conform: the whole edit with the dub
        conform = Path(info["conform"])
        assert len(decode_rgb(conform)) == 62 and audio_info(conform)[2] > 0
        assert timecode_tracks(conform)[0] == "01:00:00:00"  # the record timecode
    de_cov = {s["name"]: s["speech_coverage"] for s in res["languages"]["de"]["shots"]}
    assert de_cov["A1"] < 1.0 and de_cov["A3"] == 1.0  # the dialogue starts 0.45 s into the dub

    # rerun: everything reused; a changed dub offset re-renders what its cut changed
    capsys.readouterr()
    rc = main(["--json", "sync", *args])  # not quiet: a no-op rerun says what it reused
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert rc == 0 and again["counts"]["rendered"] == 0 and again["counts"]["reused"] == 8
    for lang in ("de", "fr"):
        assert f"reused 4 of 4 shots ({lang}), nothing to render" in captured.err
        assert f"writing the relinked timeline(s) and the QC report ({lang}, v002)" in captured.err  # a new version
    rc, dry2 = _run([*args, "--audio-offset", "01:00:00:20", "--dry-run"], capsys)
    assert rc == 0 and dry2["counts"]["to_render"] == 8  # every cut moved
    env["report_html"] = res["languages"]["de"]["report_html"]


@pytest.mark.slow  # 12 s, a second render of the edit; shard locking and planning stay in the default suite
def test_shards_running_at_the_same_time_deliver(env, capsys: pytest.CaptureFixture[str], tmp_path: Path,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Shard 1 of an array job finishes while shard 0 renders (after shard 0 looked up what was done, before
    its own renders are recorded): neither saw every shot settled when it looked, so nobody delivered. Shard
    0, finishing last, now looks again before its outputs and delivers."""
    from lipsyncctl.timeline import job as tl_job

    out = tmp_path / "out"
    args = ["--timeline", str(env["edit"]), "--audio", f"de={env['de']}", "-o", str(out), *BASE]
    real = tl_job._render
    shard1: list[dict] = []  # type: ignore[type-arg]

    def render(job, store, mine, dub_tracks):  # type: ignore[no-untyped-def]
        if job.shard == (0, 2) and not shard1:  # shard 1 runs to its end in the middle of shard 0's run
            rc, res = _run([*args, "--shard", "1/2"], capsys)
            assert rc == 0 and res["counts"]["pending"] > 0 and not (out / "de").exists()
            shard1.append(res)
        real(job, store, mine, dub_tracks)

    monkeypatch.setattr(tl_job, "_render", render)
    rc, res = _run([*args, "--shard", "0/2"], capsys)
    assert rc == 0 and shard1, res
    counts = res["counts"]
    assert counts["pending"] == 0 and counts["reused"] == shard1[0]["counts"]["rendered"]
    assert counts["rendered"] + counts["reused"] == 4 and (out / "de" / "v001").is_dir()
    assert len(list((out / "de" / "v001" / "shots").glob("*.mp4"))) == 4


@pytest.mark.slow  # opt-in (-m slow): keeps the default suite under 10 min
def test_killed_run_resumes_only_unfinished(env, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    args = ["--timeline", str(env["edit"]), "--audio", f"de={env['de']}", "-o", str(out), *BASE]
    cmd = [sys.executable, "-m", "lipsyncctl", "-q", "sync", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "LIPSYNCCTL_MODELS": str(env["models"])},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    jobs = out / ".lipsyncctl" / "jobs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(jobs.glob("*.json"))) < 1:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(jobs.glob("*.json")))
    assert 1 <= finished < 4, proc.stderr.read().decode() if proc.stderr else ""
    assert not (out / "de" / "v001").exists()  # killed before the outputs
    rc, res = _run(args, capsys)
    assert rc == 0
    assert res["counts"]["reused"] == finished and res["counts"]["rendered"] == 4 - finished
    assert len(list((out / "de" / "v001" / "shots").glob("*.mp4"))) == 4
    assert not list((out / ".lipsyncctl" / "renders").glob(".*"))  # no half-written temporaries left


def test_a_delivered_shot_keeps_the_sources_samples(env, capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    """Delivered in YUV (lossless FFV1 4:2:0 here, so only the pipeline can move a sample), a shot's frames are the
    source's own samples: the passthrough frames all of them, the re-rendered ones all but the face's."""
    import av

    from lipsyncctl.media.splice import planes_of, splice_layout

    edit = write_edit(tmp_path / "short.otio", [clip("A1", str(env["root"] / "cam_a.mkv"), 4, 12, available=(0, 40))],
                      name="short")
    rc, res = _run(["--timeline", str(edit), *BASE, "--codec", "ffv1", "--set", "output.pix_fmt=yuv420p",
                    "--handles", "0", "--non-dialogue", "passthrough", "--audio", f"de={env['de']}",
                    "-o", str(tmp_path / "p")], capsys)
    assert rc == 0
    shot = res["languages"]["de"]["shots"][0]
    layout = splice_layout("yuv420p")
    assert layout is not None
    with av.open(shot["output"]) as out, av.open(str(env["root"] / "cam_a.mkv")) as src:
        got = [planes_of(f, layout) for f in out.decode(video=0)]
        want = [planes_of(f, layout) for f in src.decode(video=0)][4:16]
    assert len(got) == len(want) == 12
    exact = [all(np.array_equal(g, w) for g, w in zip(a, b, strict=True)) for a, b in zip(got, want, strict=True)]
    moved = [float(np.mean(a[0] != b[0])) for a, b in zip(got, want, strict=True)]
    silent = int(round((1 - shot["speech_coverage"]) * 12))
    assert all(exact[: silent - 3]) and not any(exact[silent + 3:])
    assert max(moved) < 0.25  # the face, never the picture


def test_an_hdr10_edit_is_delivered_with_its_metadata(env, capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    """A HDR10 camera file (10-bit HEVC, PQ, mastering display and light level): the delivered shot (rendered
    lossless, then re-encoded in the run's codec) and the conform carry the metadata in H.265, and the shot says
    nothing of it (its lossless intermediate could not carry it, the delivery does)."""
    from lipsyncctl.media.probe import ColorInfo, probe
    from lipsyncctl.media.reader import VideoReader
    from lipsyncctl.media.writer import VideoWriter

    hdr = ColorInfo("bt2020", "smpte2084", "bt2020nc", "tv",
                    "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)", "1000,400")
    cam = tmp_path / "media" / "cam_hdr.mkv"
    cam.parent.mkdir()
    with VideoReader(env["root"] / "cam_a.mkv") as reader, \
            VideoWriter(cam, FILM, codec="h265", pix_fmt="yuv420p10le", color=hdr, preset="ultrafast") as writer:
        for frame in reader:
            writer.write(frame.image)
    edit = write_edit(tmp_path / "hdr.otio", [clip("A1", str(cam), 4, 12, available=(0, 40))], name="hdr")
    rc, res = _run(["--timeline", str(edit), *BASE, "--codec", "h265", "--handles", "0", "--non-dialogue",
                    "passthrough", "--conform", "--audio", f"de={env['de']}", "-o", str(tmp_path / "h")], capsys)
    assert rc == 0, res
    (shot,) = res["languages"]["de"]["shots"]
    assert not [w for w in shot["warnings"] if "HDR10" in w]
    for delivered in (shot["output"], res["languages"]["de"]["conform"]):
        color = probe(delivered).video.color  # type: ignore[union-attr]
        assert (color.transfer, color.mastering, color.light_level) == ("smpte2084", hdr.mastering, "1000,400")


def test_non_dialogue_passthrough_and_close(env, capsys: pytest.CaptureFixture[str], tmp_path: Path,  # type: ignore[no-untyped-def]
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A1 (record 0-12 + 2 handles) hears the dub's first 0.6 s: silence, then speech from 0.45 s."""

    from lipsyncctl.media.audio import write_wav
    from lipsyncctl.pipeline import clip as clip_module

    edit = write_edit(tmp_path / "short.otio", [clip("A1", str(env["root"] / "cam_a.mkv"), 4, 12, available=(0, 40))],
                      name="short")
    tone = write_wav(tmp_path / "tone.wav", np.zeros(16000, np.float32), 16000)
    common = ["--timeline", str(edit), *BASE, "--codec", "ffv1", "--handles", "0", "--non-dialogue"]
    rc, res = _run([*common, "passthrough", "--audio", f"de={env['de']}", "--audio", f"mute={tone}",
                    "-o", str(tmp_path / "p")], capsys)
    assert rc == 0
    mute = res["languages"]["mute"]["shots"][0]
    assert mute["status"] == "no_dialogue" and mute["output"] is None and mute["speech_coverage"] == 0
    shot = res["languages"]["de"]["shots"][0]
    assert shot["status"] == "done" and 0 < shot["speech_coverage"] < 1
    got = decode_rgb(Path(shot["output"]))
    src = decode_rgb(env["root"] / "cam_a.mkv")[4:16]
    same = [np.array_equal(g, s) for g, s in zip(got, src, strict=True)]
    silent = int(round((1 - shot["speech_coverage"]) * 12))
    assert all(same[: silent - 3]) and not any(same[silent + 3 :])  # source pixels until speech (- pad)
    # what the model hears: a copy of the audio handed to the clip pipeline (the work files are removed)
    heard_copy, real_sync_clip = tmp_path / "heard.wav", clip_module.sync_clip

    def spy(video, audio, *args, **kwargs):  # type: ignore[no-untyped-def]
        shutil.copy(audio, heard_copy)
        return real_sync_clip(video, audio, *args, **kwargs)

    monkeypatch.setattr(clip_module, "sync_clip", spy)
    rc, res = _run([*common, "close", "--audio", f"de={env['de']}", "-o", str(tmp_path / "c"),
                    "--set", "output.audio_codec=pcm"], capsys)
    assert rc == 0 and res["languages"]["de"]["shots"][0]["status"] == "done"
    from lipsyncctl.timeline.mediaio import read_audio

    muxed, rate = read_audio(Path(res["languages"]["de"]["shots"][0]["output"]))
    dub, _ = read_audio(env["de"], rate=rate)
    n = int(12 * rate / FILM)
    # the file carries the real dub (PCM16), the model heard it silenced before the speech
    assert np.abs(muxed[0, :n] - dub[0, :n]).max() < 2e-4 and np.abs(dub[0, :n]).max() > 0.01
    assert not (tmp_path / "c" / ".lipsyncctl" / "work").exists()  # no dub cuts left behind
    heard, _ = read_audio(heard_copy)
    assert np.all(heard[0, : rate // 4] == 0) and np.abs(heard[0, -rate // 8 :]).max() > 0.01


def test_report_in_headless_chromium(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    browser = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if browser is None:
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); apt-get install chromium")
    html = env.get("report_html")
    if html is None:  # the end-to-end test ran in another worker, or another chunk of this one (its env is gone)
        rc = main(["-q", "sync", "--timeline", str(env["edit"]), "--audio", f"de={env['de']}",
                   "-o", str(tmp_path / "out"), *BASE])
        assert rc == 0
        html = next((tmp_path / "out" / "de").rglob("report.html"))
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", Path(html).as_uri()],
        capture_output=True, text=True, timeout=60,
    )
    dom = proc.stdout
    assert 'data-images="8"' in dom and 'data-images-ok="8"' in dom, proc.stderr[-2000:]
    assert dom.count('<tr data-status="done">') == 4 and "Lip-sync QC" in dom


def test_languages_with_the_same_dub_share_one_render(env, capsys: pytest.CaptureFixture[str], tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two languages given byte-identical dubs (a placeholder) have shots of one content key: each is rendered once
    and both languages deliver it (with --jobs 2 the two workers wrote the one cache file at once: one failed)."""
    import shutil

    from lipsyncctl.timeline import shot_task

    rendered: list[str] = []
    real = shot_task.execute_shot

    def counted(task, cache, device):  # type: ignore[no-untyped-def]
        rendered.append(f"{task.language}/{task.segment_id}")
        return real(task, cache, device)

    monkeypatch.setattr(shot_task, "execute_shot", counted)
    same = shutil.copy(env["de"], tmp_path / "placeholder.wav")
    out = tmp_path / "out"
    rc, res = _run(["--timeline", str(env["edit"]), "--audio", f"de={env['de']}", "--audio", f"fr={same}",
                    "-o", str(out), *BASE], capsys)
    assert rc == 0 and res["ok"], res
    assert len(rendered) == 4 and {r.split("/")[0] for r in rendered} == {"de"}  # one render a shot, not two
    assert res["work"]["shots"] == 4  # the work the run did (its estimate counted each language's render)
    for lang in ("de", "fr"):
        assert len(list((out / lang / "v001" / "shots").glob("*.mp4"))) == 4


def test_the_shots_of_one_key_fall_in_one_shard() -> None:
    # two languages of one dub: shot k of each is one render; by position, --shard i/2 split them when the edit had an
    # odd number of shots, and the two shards wrote the one cache file at once
    from types import SimpleNamespace

    from lipsyncctl.timeline.job import shard_shots

    shots = [SimpleNamespace(key=f"k{k}", task=object(), reused=False, language=lang) for lang in ("de", "fr")
             for k in range(3)]
    parts = [shard_shots(shots, (i, 2)) for i in range(2)]  # type: ignore[arg-type]
    assert sorted(len(p) for p in parts) == [2, 4] and sum(len(p) for p in parts) == 6
    for part in parts:
        keys = {s.key for s in part}
        assert all(s in part for s in shots if s.key in keys)  # every language of a key in the same shard
