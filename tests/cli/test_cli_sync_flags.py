"""`sync`'s one flag table: every flag, in both modes, reaches the library as the exact resolved Config; flags
of the other mode are usage errors; --print-config needs no inputs; an existing output is never replaced
silently."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from lipsyncctl import api
from lipsyncctl import config as cfg
from lipsyncctl.cli.main import app, main
from lipsyncctl.cli.sync import FLAGS

#: flag -> (argv after the flag name, or None for a switch; the config keys it must set)
CONFIG_FLAGS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "--steps": ("7", {"inference.steps": 7}),
    "--guidance": ("2.5", {"inference.guidance": 2.5}),
    "--seed": ("3", {"inference.seed": 3}),
    "--dtype": ("fp16", {"inference.dtype": "fp16"}),
    "--device": ("cpu", {"inference.device": "cpu"}),
    "--deepcache": (None, {"inference.deepcache": True}),
    "--fps": ("25", {"sync.fps": "25"}),
    "--length-policy": ("loop", {"sync.length_policy": "loop"}),
    "--deinterlace": ("off", {"sync.deinterlace": "off"}),
    "--codec": ("ffv1", {"output.codec": "ffv1"}),
    "--crf": ("20", {"output.crf": 20}),
    "--matte": (None, {"output.matte": True}),
    "--detector": ("dlib", {"faces.backend": "dlib"}),
    "--blend": ("multiband", {"faces.blend": "multiband"}),
    "--face": ("2", {"faces.select": "id", "faces.track_id": 2}),
    "--face-at": ("10,20", {"faces.select": "point", "faces.point": [10.0, 20.0]}),
    "--handles": ("5", {"timeline.handles": 5}),
    "--non-dialogue": ("close", {"timeline.non_dialogue": "close"}),
    "--conform": (None, {"timeline.conform": True}),
    "--min-sync": ("1.5", {"timeline.min_sync": 1.5}),
    "--unchecked-gates": ("warn", {"timeline.unchecked_gates": "warn"}),
    "--scene-threshold": ("20", {"timeline.scene_threshold": 20.0}),
    "--scene-min-frames": ("8", {"timeline.scene_min_frames": 8}),
}
#: sample values of the flags that set no config key, for the wrong-mode tests
OTHER_VALUES = {"--start": "1", "--end": "2", "--video": "v.mp4", "--timeline": "e.otio", "--audio-offset": "0",
                "--audio-track": "DE", "--media-root": ".", "--relink": "a=b", "--edl-rate": "25", "--jobs": "1",
                "--gpus": "0", "--shard": "0/2", "--backend": "ray", "--conform-me": "me.wav"}


def _mode_flags(mode: str) -> list[str]:
    return [f.label for f in FLAGS if f.key is not None and mode in f.modes]


def _argv(flag: str) -> list[str]:
    value = CONFIG_FLAGS[flag][0] if flag in CONFIG_FLAGS else OTHER_VALUES.get(flag)
    return [flag] if value is None else [flag, value]


class _Captured(dict):  # type: ignore[type-arg]
    pass


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> _Captured:
    """Patches api.sync and api.sync_timeline; records what they were handed."""
    seen = _Captured()

    class Result:
        warnings: list[str] = []
        failed: list[str] = []

        def to_dict(self) -> dict[str, Any]:
            return {}

        def all_warnings(self) -> list[str]:
            return []

    def fake_sync(video, audio, output, config, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(mode="clip", video=video, audio=audio, output=output, config=config, kwargs=kwargs)
        return Result()

    def fake_timeline(job, config):  # type: ignore[no-untyped-def]
        seen.update(mode="timeline", job=job, config=config)
        return Result()

    monkeypatch.setattr(api, "sync", fake_sync)
    monkeypatch.setattr(api, "sync_timeline", fake_timeline)
    return seen


def _clip(tmp_path: Path, *extra: str) -> list[str]:
    return ["--json", "sync", "-i", "v.mp4", "-a", "a.wav", "-o", str(tmp_path / "o.mp4"), *extra]


def _timeline(tmp_path: Path, *extra: str) -> list[str]:
    return ["--json", "sync", "--timeline", "edit.otio", "-a", "de=de.wav", "-o", str(tmp_path / "out"), *extra]


def test_every_sync_option_is_in_the_table() -> None:
    command = typer.main.get_command(app).commands["sync"]
    options = {p.name for p in command.params}
    assert options == {f.name for f in FLAGS}
    assert set(CONFIG_FLAGS) == {f.label for f in FLAGS if f.key is not None}


@pytest.mark.parametrize("flag", _mode_flags("clip"))
def test_clip_flag_gives_the_exact_config(flag: str, tmp_path: Path, captured: _Captured,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_clip(tmp_path, *_argv(flag))) == 0, capsys.readouterr().err
    assert captured["config"] == cfg.resolve(None, (), CONFIG_FLAGS[flag][1])


@pytest.mark.parametrize("flag", _mode_flags("timeline"))
def test_timeline_flag_gives_the_exact_config(flag: str, tmp_path: Path, captured: _Captured,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_timeline(tmp_path, *_argv(flag))) == 0, capsys.readouterr().err
    assert captured["mode"] == "timeline"
    assert captured["config"] == cfg.resolve(None, (), CONFIG_FLAGS[flag][1])


def test_blend_multiband_reaches_a_timeline(tmp_path: Path, captured: _Captured) -> None:
    """The bug that started this: the timeline mode had its own table without faces.blend."""
    assert main(_timeline(tmp_path, "--blend", "multiband", "--preset", "tiny")) == 0
    assert captured["config"].faces.blend == "multiband"


def test_flags_win_over_set_and_preset(tmp_path: Path, captured: _Captured) -> None:
    assert main(_clip(tmp_path, "--preset", "tiny", "--set", "inference.steps=4", "--steps", "6")) == 0
    assert captured["config"] == cfg.resolve("tiny", ["inference.steps=4"], {"inference.steps": 6})


@pytest.mark.parametrize("flag", [f.label for f in FLAGS if f.modes == {"clip"}])
def test_clip_only_flags_are_refused_with_a_timeline(flag: str, tmp_path: Path, captured: _Captured,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_timeline(tmp_path, *_argv(flag))) == 2
    assert f"{flag}: not with --timeline" in capsys.readouterr().err
    assert not captured


@pytest.mark.parametrize("flag", [f.label for f in FLAGS if f.modes == {"timeline"}
                                  and f.label not in ("--timeline", "--split-scenes")] + ["--no-conform"])
def test_timeline_only_flags_are_refused_for_a_clip(flag: str, tmp_path: Path, captured: _Captured,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_clip(tmp_path, *_argv(flag))) == 2  # an explicit --jobs 1 counts as given
    err = capsys.readouterr().err
    assert "only with --timeline" in err and flag.replace("--no-", "--") in err
    assert not captured


@pytest.mark.parametrize("flag", [f.label for f in FLAGS if f.modes == {"timeline", "batch"}])
def test_timeline_and_batch_flags_say_both_modes_for_a_clip(flag: str, tmp_path: Path, captured: _Captured,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--gpus, --jobs, --shard... belong to --timeline and --batch: a clip's refusal names both."""
    assert main(_clip(tmp_path, *_argv(flag))) == 2
    assert f"{flag}: only with --timeline or --batch" in capsys.readouterr().err
    assert not captured


def test_clip_arguments_reach_the_library(tmp_path: Path, captured: _Captured) -> None:
    assert main(_clip(tmp_path, "--start", "1.5", "--end", "3")) == 0
    assert captured["video"] == Path("v.mp4") and captured["audio"] == Path("a.wav")
    assert captured["output"] == tmp_path / "o.mp4"
    assert captured["kwargs"] == {"start": 1.5, "end": 3.0, "overwrite": False}
    assert captured["config"] == cfg.resolve(None)
    assert main(_clip(tmp_path, "-y")) == 0
    assert captured["kwargs"]["overwrite"] is True


def test_timeline_arguments_reach_the_job(tmp_path: Path, captured: _Captured) -> None:
    from lipsyncctl.timeline.types import TimelineJob

    assert main(_timeline(tmp_path)) == 0
    assert captured["job"] == TimelineJob(timeline=Path("edit.otio"), output=tmp_path / "out",
                                          audio=[("de", Path("de.wav"))])
    assert main(_timeline(tmp_path, "--jobs", "1", "--backend", "ray", "--edl-rate", "25", "--dry-run",
                          "--shard", "1/2", "--audio-offset", "01:00:00:00", "--media-root", "m",
                          "--audio-track", "fr=French")) == 0
    job = captured["job"]
    assert (job.jobs, job.backend, job.edl_rate, job.dry_run, job.shard) == (1, "ray", 25.0, True, (1, 2))
    assert (job.audio_offset, job.media_root, job.audio_tracks) == ("01:00:00:00", Path("m"), [("fr", "French")])


def test_split_scenes_and_segments_make_a_clip_an_edit(tmp_path: Path, captured: _Captured,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """--split-scenes / --segments with --video: the timeline job on the clip (-o a folder), timeline flags
    allowed, clip-only flags refused."""
    assert main(_clip(tmp_path, "--split-scenes", "--scene-threshold", "20", "--handles", "2")) == 0
    job = captured["job"]
    assert (job.timeline, job.split_scenes, job.segments) == (Path("v.mp4"), True, None)
    assert captured["config"].timeline.scene_threshold == 20 and captured["config"].timeline.handles == 2
    ranges = tmp_path / "r.yaml"
    ranges.write_text("- {start: 0, end: 1, lipsync: false}\n")
    assert main(_clip(tmp_path, "--segments", str(ranges))) == 0
    job = captured["job"]
    assert job.timeline == Path("v.mp4") and not job.split_scenes and job.segments.ranges[0].options == {"enabled": False}
    assert main(_clip(tmp_path, "--split-scenes", "--face", "1")) == 2
    assert "--face: not with --timeline" in capsys.readouterr().err
    assert main(["sync", "--split-scenes", "-a", "a.wav", "-o", str(tmp_path / "out")]) == 2
    assert main(["sync", "--split-scenes", "-i", "v.mp4", "-t", "e.otio", "-a", "a.wav", "-o", str(tmp_path)]) == 2


@pytest.mark.parametrize(("flag", "value"), [("--steps", "0"), ("--crf", "52"), ("--handles", "1001"),
                                             ("--jobs", "0"), ("--start", "-1"), ("--end", "inf"),
                                             ("--guidance", "inf"), ("--face-at", "nan,nan"), ("--face-at", "1,inf")])
def test_bounds_are_usage_errors_naming_the_flag(flag: str, value: str, tmp_path: Path, captured: _Captured,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    argv = _timeline(tmp_path, flag, value) if flag in ("--handles", "--jobs") else _clip(tmp_path, flag, value)
    assert main(argv) == 2
    assert flag in capsys.readouterr().err and not captured


# ----------------------------------------------------------------------------------------------
# --print-config needs no --video, -o or --timeline


def test_print_config_without_inputs(captured: _Captured, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--preset", "tiny", "--blend", "multiband", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == cfg.resolve("tiny", (), {"faces.blend": "multiband"}).to_dict()
    assert not captured


def test_print_config_of_a_timeline(captured: _Captured, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--timeline", "cut.edl", "--blend", "multiband", "--handles", "3", "--print-config",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["faces"]["blend"] == "multiband" and printed["timeline"]["handles"] == 3


def test_missing_output_is_a_usage_error(captured: _Captured, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "-i", "v.mp4", "-a", "a.wav"]) == 2
    assert "--output" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# An existing output is replaced only with --overwrite/-y


@pytest.fixture
def media(tmp_path: Path) -> tuple[Path, Path]:
    from tests.sync_media import sample_frames, write_clip, write_wav

    return write_clip(tmp_path / "v.mkv", sample_frames(2, scale=0.75), Fraction(25)), write_wav(tmp_path / "a.wav", 0.08)


@pytest.fixture
def face_pass(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    ran: list[int] = []

    def stop(*args, **kwargs):  # type: ignore[no-untyped-def]
        ran.append(1)
        raise KeyboardInterrupt  # got past every check; stop here (exit 130)

    monkeypatch.setattr("lipsyncctl.pipeline.faces.cached_clip_faces", stop)
    return ran


def test_existing_output_is_refused_before_any_work(media, models_dir: Path, tmp_path: Path, face_pass: list[int],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "done.mp4"
    out.write_bytes(b"an earlier render")
    argv = ["sync", "-i", str(media[0]), "-a", str(media[1]), "-o", str(out), "--preset", "tiny"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {out}: exists" in err and "-y" in err.split("hint:", 1)[1]
    assert out.read_bytes() == b"an earlier render" and not face_pass
    assert main([*argv, "-y"]) == 130 and face_pass  # with -y it goes on to the work


def test_overwriting_an_input_is_a_usage_error(media, models_dir: Path, face_pass: list[int],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    video, audio = media
    assert main(["sync", "-i", str(video), "-a", str(audio), "-o", str(video), "--preset", "tiny", "-y",
                 "--codec", "ffv1"]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err and not face_pass


@pytest.mark.parametrize("argv", [
    ["sync", "--codec", "prores_hq", "--crf", "20"],
    ["sync", "--set", "output.codec=ffv1", "--crf", "0"],
    ["prep", "in.mp4", "-o", "out", "--codec", "dnxhr_hq", "--crf", "20"],
])
def test_a_crf_flag_for_a_codec_without_one_is_refused(argv: list[str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """ProRes, DNxHR and FFV1 have no CRF: the flag would be ignored silently, so it is a usage error (before
    anything is read or written)."""
    assert main([*argv, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "has no CRF" in err and "hint: CRF sets the quality of h264 and h265" in err


def test_a_preset_crf_with_a_codec_without_one_is_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """The fast preset's crf: 20 serves its default codec; choosing ProRes with it is fine (no flag said crf)."""
    assert main(["--json", "sync", "--preset", "fast", "--codec", "prores_hq", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["output"]["codec"] == "prores_hq" and printed["output"]["crf"] == 20
    assert main(["sync", "--codec", "h265", "--crf", "22", "--print-config"]) == 0
