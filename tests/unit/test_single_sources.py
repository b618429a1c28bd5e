"""One fact in one place: each test pins a table or rule that used to be written twice.

The codec -> container table (``media.writer.CODECS``), the tiny-model rule
(``ModelOptions.tiny_roles``), the VRAM formula (``runner.vram``) and the DDIM scheduler config (the
official JSON in ``models/configs``). Every user of a fact reads the one source; these tests check the
users agree with it and pin the numbers that must not move.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from lipsyncctl import config as cfg
from lipsyncctl.errors import ConfigError, UsageError
from lipsyncctl.media.writer import CODECS, OUTPUT_CODECS
from lipsyncctl.pipeline import output
from lipsyncctl.runner import vram

# ----------------------------------------------------------------------------------------------
# Codec -> container


def _schema_codecs(options: type) -> set[str]:
    return set(typing.get_args(options.model_fields["codec"].annotation))


def test_every_schema_codec_has_containers_in_the_one_table() -> None:
    assert set(OUTPUT_CODECS) == _schema_codecs(cfg.OutputOptions)
    for name, oc in OUTPUT_CODECS.items():
        assert output.containers(name) == CODECS[oc.codec].containers
        assert output.default_extension(name) == CODECS[oc.codec].containers[0]
    for spec in CODECS.values():
        assert spec.containers and all(e.startswith(".") and e == e.lower() for e in spec.containers)


def test_the_named_codecs_restate_no_default_of_the_writers_table() -> None:
    # a name differs from its CODECS row only where it must (a profile, an RGB FFV1): the rest is the row's
    for name, oc in OUTPUT_CODECS.items():
        spec = CODECS[oc.codec]
        assert oc.profile in (None, *({oc.profile} - {spec.profile})) and oc.pix_fmt in (None, *({oc.pix_fmt} - {spec.pix_fmt})), name
    assert {n: (oc.codec, oc.profile, oc.pix_fmt) for n, oc in OUTPUT_CODECS.items() if oc.profile or oc.pix_fmt} == {
        "prores_4444": ("prores", "4444", "yuv444p10le"), "ffv1": ("ffv1", None, "bgr0")}


def test_doctor_checks_the_encoders_of_the_one_table() -> None:
    from lipsyncctl.checks import doctor
    from lipsyncctl.media import ffmpeg

    assert doctor.REQUIRED_ENCODERS == ("libx264", "aac")  # the default output: H.264 with AAC
    assert set(ffmpeg.WANTED_ENCODERS) == {spec.encoder for spec in CODECS.values()} | {"aac"}


def test_default_extensions_are_unchanged() -> None:
    # Shot file names (and the timeline's content keys) and prep's output names depend on these.
    assert {c: output.default_extension(c) for c in OUTPUT_CODECS} == {
        "h264": ".mp4", "h265": ".mp4", "prores_hq": ".mov", "prores_4444": ".mov", "dnxhr_hq": ".mov",
        "ffv1": ".mkv"}
    # prep's names before they became sync's: the alias keeps prores at .mov
    assert {c: output.default_extension(cfg.PrepOptions(codec=c).codec) for c in ("h264", "h265", "prores", "ffv1")} \
        == {"h264": ".mp4", "h265": ".mp4", "prores": ".mov", "ffv1": ".mkv"}


def test_prep_and_sync_take_the_same_codec_names() -> None:
    assert _schema_codecs(cfg.PrepOptions) == _schema_codecs(cfg.OutputOptions) == set(cfg.VIDEO_CODECS)
    assert cfg.PrepOptions.model_fields["codec"].metadata == cfg.OutputOptions.model_fields["codec"].metadata
    for name in [*cfg.VIDEO_CODECS, *cfg.CODEC_ALIASES]:
        assert cfg.PrepOptions(codec=name).codec == cfg.OutputOptions(codec=name).codec
    for bad in ("prores_ks", "dnxhr", "H264", "av1"):
        for options in (cfg.PrepOptions, cfg.OutputOptions):
            with pytest.raises(ValueError, match="codec"):
                options(codec=bad)


def test_prores_is_an_alias_of_prores_hq() -> None:
    assert cfg.CODEC_ALIASES == {"prores": "prores_hq"}
    assert cfg.PrepOptions(codec="prores").codec == "prores_hq"
    assert cfg.OutputOptions(codec="prores").codec == "prores_hq"
    # in a preset or --set too (resolve validates the merged mapping)
    assert cfg.resolve(sets=["prep.codec=prores", "output.codec=prores"]).prep.codec == "prores_hq"


def test_codec_help_lists_the_schema_names() -> None:
    text = cfg.codec_help()
    assert text.startswith(", ".join(cfg.VIDEO_CODECS)) and "prores = prores_hq" in text


@pytest.mark.parametrize("codec", sorted(OUTPUT_CODECS))
def test_check_output_follows_the_table(codec: str, tmp_path: Path) -> None:
    options = cfg.OutputOptions(codec=codec)
    for ext in output.containers(codec):
        output.check_output(tmp_path / f"out{ext.upper()}", options)  # case-insensitive
    written = {e for c in OUTPUT_CODECS for e in output.containers(c)}
    for ext in sorted(written - set(output.containers(codec))):  # another codec's container: the settings clash (3)
        with pytest.raises(ConfigError, match=codec):
            output.check_output(tmp_path / f"out{ext}", options)
    with pytest.raises(UsageError, match="not a video file extension written"):  # no codec's: the name is wrong (2)
        output.check_output(tmp_path / "out.webm", options)


def test_module_doc_lists_the_table() -> None:
    lines = [ln.split() for ln in (output.__doc__ or "").splitlines()]
    for codec in OUTPUT_CODECS:
        (row,) = [ln for ln in lines if ln and ln[0] == f"``{codec}``"]
        assert tuple(w for w in row if w.startswith(".")) == output.containers(codec)


def test_timeline_shots_use_the_table() -> None:
    import lipsyncctl.timeline.job as job
    from lipsyncctl.timeline.outputs import shot_extension

    assert not hasattr(job, "_EXT")
    for codec in OUTPUT_CODECS:  # the renders' (and the conform's) container: the table's default
        assert f".{shot_extension(cfg.resolve('tiny', [f'output.codec={codec}']))}" == output.default_extension(codec)


# ----------------------------------------------------------------------------------------------
# The tiny model


@pytest.mark.parametrize("preset", cfg.list_presets())
def test_tiny_rule_agrees_for_every_preset(preset: str) -> None:
    model = cfg.resolve(preset).model
    roles = model.tiny_roles()
    names = {"unet": (model.checkpoint, model.unet_config), "whisper": (model.whisper,), "vae": (model.vae,)}
    assert roles == {r for r, n in names.items() if cfg.TINY in n}
    assert vram.is_tiny(cfg.resolve(preset)) is ("unet" in roles)
    assert roles == ({"unet", "whisper", "vae"} if preset == "tiny" else set())


@pytest.mark.parametrize(
    ("sets", "roles"),
    [
        ([], {"unet", "whisper", "vae"}),
        (["model.checkpoint=latentsync-1.5"], {"unet", "whisper", "vae"}),  # unet_config is still tiny
        (["model.unet_config=stage2"], {"unet", "whisper", "vae"}),  # the checkpoint is still tiny
        (["model.checkpoint=latentsync-1.5", "model.unet_config=stage2"], {"whisper", "vae"}),
        (["model.vae=sd-vae-ft-mse"], {"unet", "whisper"}),
        (["model.whisper=whisper-tiny"], {"unet", "vae"}),  # the registry's whisper tiny is not 'tiny'
    ],
)
def test_tiny_roles(sets: list[str], roles: set[str]) -> None:
    assert cfg.resolve("tiny", sets).model.tiny_roles() == roles


def test_network_loader_asks_the_same_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lipsyncctl.checkpoints import tiny
    from lipsyncctl.pipeline import networks

    fake = tiny.TinyModelPaths(tmp_path, tmp_path / "u.pt", tmp_path / "w.pt", tmp_path / "vae")
    calls: list[int] = []
    monkeypatch.setattr(tiny, "ensure_tiny_models", lambda: calls.append(1) or fake)
    files = networks.resolve_files(cfg.resolve("tiny").model)
    assert files.is_tiny and (files.unet, files.whisper, files.vae) == (fake.unet, fake.whisper, fake.vae)
    assert calls == [1]  # generated once for the three roles

    (tmp_path / "vae.safetensors").write_bytes(b"")
    model = cfg.resolve("tiny", [f"model.vae={tmp_path / 'vae.safetensors'}"]).model
    assert networks.resolve_files(model).is_tiny is bool(model.tiny_roles()) is True


# ----------------------------------------------------------------------------------------------
# The VRAM formula


#: Bytes, as the formula gave them before it was written once (pinned so a refactor cannot move them).
VRAM_PINNED = [
    ("latentsync-1.5", (), 8261807343),
    ("latentsync-1.6", (), 18730790127),
    ("fast", (), 8261807343),
    ("broadcast", (), 18730790127),
    ("low-vram", (), 5980105967),
    ("tiny", (), 1109445516),
    ("tiny", ("inference.dtype=fp16",), 838422982),
    ("tiny", ("model.checkpoint=latentsync-1.5",), 1109445516),
    ("tiny", ("model.unet_config=stage2",), 1109445516),
    ("tiny", ("model.vae=sd-vae-ft-mse",), 5470323884),
    ("latentsync-1.5", ("model.vae=tiny",), 6081368159),
    ("latentsync-1.5", ("model.unet_config=stage1",), 6985678557),
    ("latentsync-1.5", ("model.unet_config=/x/custom.yaml",), 8261807343),  # unknown: counted as stage2
    ("latentsync-1.6", ("inference.guidance=1.0", "inference.dtype=fp32"), 30022232133),
]


@pytest.mark.parametrize(("preset", "sets", "expected"), VRAM_PINNED)
def test_vram_estimate_pinned(preset: str, sets: tuple[str, ...], expected: int) -> None:
    assert vram.estimate_vram(cfg.resolve(preset, list(sets))) == expected


def test_vram_formula_takes_the_model_sizes_as_inputs() -> None:
    tiny = cfg.resolve("tiny")
    sizes = vram.model_sizes(tiny.model)
    assert sizes == vram.ModelSizes(vram.TINY_UNET_PARAMS, vram.TINY_UNET_ACT_SCALE, vram.TINY_VAE_PARAMS,
                                    vram.TINY_VAE_ACT_SCALE, vram.TINY_FIXED_OVERHEAD)
    assert vram.UNET_PARAMS["tiny"] == vram.TINY_UNET_PARAMS
    official = vram.model_sizes(cfg.resolve("latentsync-1.5").model)
    assert official == vram.ModelSizes(vram.UNET_PARAMS["stage2"], 1.0, vram.VAE_PARAMS, 1.0, vram.FIXED_OVERHEAD)
    # The same formula with the official sizes: what the tiny run would need with full-size networks.
    assert vram.estimate_vram(tiny, official) > vram.estimate_vram(tiny) + vram.UNET_PARAMS["stage2"] * 4


# ----------------------------------------------------------------------------------------------
# Audio array layout


def test_audio_layouts(tmp_path: Path) -> None:
    """``media`` arrays are sample-major ``(n, channels)``; the timeline's are channel-major
    ``(channels, n)``, its reader being media's read_audio transposed (no second decoder)."""
    import wave

    import numpy as np

    from lipsyncctl.media.audio import read_audio
    from lipsyncctl.timeline import mediaio

    n, rate = 1600, 16000
    stereo = np.stack([np.full(n, 0.5), np.full(n, -0.25)], axis=1)  # (n, 2): left, right
    path = tmp_path / "lr.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((stereo * 32767).round().astype("<i2").tobytes())  # interleaved L R L R

    x = read_audio(path, None, None)
    assert x.shape == (n, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], 0.5, atol=1e-4)
    np.testing.assert_allclose(x[:, 1], -0.25, atol=1e-4)
    assert read_audio(path, rate, 1).shape == (n,)

    y, r = mediaio.read_audio(path, rate, 2)
    assert r == rate and y.shape == (2, n)
    np.testing.assert_array_equal(y, read_audio(path, rate, 2).T)


@pytest.mark.parametrize("codec", sorted(OUTPUT_CODECS))
def test_pcm_audio_containers_come_from_mux(codec: str, tmp_path: Path) -> None:
    from lipsyncctl.media.mux import PCM_CONTAINERS

    options = cfg.OutputOptions(codec=codec, audio_codec="pcm")
    for ext in output.containers(codec):
        if ext in PCM_CONTAINERS:
            output.check_output(tmp_path / f"out{ext}", options)
        else:
            with pytest.raises(ConfigError, match="PCM"):
                output.check_output(tmp_path / f"out{ext}", options)


# ----------------------------------------------------------------------------------------------
# The networks' time base: 16 kHz sound, 25 fps pictures


def test_the_model_rates_are_one_fact_each() -> None:
    import ast

    from lipsyncctl import audio
    from lipsyncctl.scoring import lse
    from lipsyncctl.training import clips

    assert (audio.MODEL_AUDIO_RATE, audio.MODEL_FPS) == (16_000, 25)
    assert lse.EVAL_FPS == audio.MODEL_FPS and clips.TrainClip.__dataclass_fields__["fps"].default == audio.MODEL_FPS
    # the curate schema's rate has to be a literal for pydantic: it is the same fact
    assert typing.get_args(cfg.CurateOptions.model_fields["fps"].annotation) == (audio.MODEL_FPS,)
    assert typing.get_args(cfg.CurateOptions.model_fields["audio_rate"].annotation) == (audio.MODEL_AUDIO_RATE,)
    assert cfg.PrepOptions.model_fields["audio_rate"].default == audio.MODEL_AUDIO_RATE  # prep makes model inputs
    # No other module writes 16000 for the model's rate: the ones that do hold facts of their own (the schema's
    # literals above; media/audio.py's peak-measuring rate and spill size; Silero VAD's input rate).
    root = Path(audio.__file__).parents[1]
    written = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 16000:
                written.add(path.relative_to(root).as_posix())
    assert written == {"audio/__init__.py", "config.py", "media/audio.py", "timeline/dub.py"}


# ----------------------------------------------------------------------------------------------
# Option bounds: the schema's, or config's counts that are no key; the CLI and the library read the same


def _option_limits(command: object, flag: str) -> tuple[object, object]:
    import typer.main

    group = typer.main.get_command(command)  # type: ignore[arg-type]
    for param in group.params:
        if flag in param.opts:
            return param.min, param.max  # type: ignore[attr-defined]
    raise AssertionError(flag)


def test_count_options_take_their_bounds_from_one_place() -> None:
    import typer

    from lipsyncctl.cli.curate import curate_cmd
    from lipsyncctl.cli.prep import prep_cmd
    from lipsyncctl.cli.train import train_cmd
    from lipsyncctl.training.config import TrainConfig

    def app(cmd: object) -> typer.Typer:
        a = typer.Typer()
        a.command()(cmd)  # type: ignore[arg-type]
        return a

    assert _option_limits(app(prep_cmd), "--jobs") == _option_limits(app(curate_cmd), "--jobs") == cfg.JOBS
    assert _option_limits(app(train_cmd), "--gpus") == _option_limits(app(train_cmd), "--nproc") == cfg.LAUNCH_PROCESSES
    schema = TrainConfig.model_json_schema(mode="serialization")["$defs"]
    for flag, (section, key) in {"--max-steps": ("TrainRun", "max_steps"), "--workers": ("TrainData", "workers"),
                                 "--batch-size": ("TrainData", "batch_size")}.items():
        field = schema[section]["properties"][key]
        assert _option_limits(app(train_cmd), flag) == (field.get("minimum"), field.get("maximum")), flag


def test_the_library_checks_the_counts_the_cli_bounds(tmp_path: Path) -> None:
    from lipsyncctl.preparation.job import prep
    from lipsyncctl.runner.workers import run_tasks
    from lipsyncctl.training.launch import launch

    with pytest.raises(UsageError, match=r"--jobs 0: not in the range 1<=x<=256"):
        prep([str(tmp_path)], tmp_path / "out", jobs=0)
    with pytest.raises(UsageError, match="--jobs 257"):
        run_tasks([1], lambda t: t, lambda t, o: None, jobs=257)
    with pytest.raises(UsageError, match="--nproc 65"):
        launch(["lipsyncctl", "train"], 65, cpu=True)
    assert not (tmp_path / "out").exists()
    from lipsyncctl import api

    # the library's jobs: refused before an input is read or a lock taken (a dry run accepted jobs=0)
    with pytest.raises(UsageError, match="--jobs 0"):
        api.curate([tmp_path / "none.mp4"], tmp_path / "data", "tiny", jobs=0, dry_run=True)
    with pytest.raises(UsageError, match="--jobs 300"):
        api.sync_batch(tmp_path / "none.csv", "tiny", jobs=300)
    with pytest.raises(UsageError, match="--jobs 0"):
        api.timeline_job(tmp_path / "none.otio", tmp_path / "out", audio=["de=none.wav"], jobs=0)
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()
