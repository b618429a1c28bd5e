"""Run configuration: precedence, strict schema errors (file + dotted key), ranges, presets, --print-config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lipsyncctl import config as cfg
from lipsyncctl.cli.main import main
from lipsyncctl.errors import ConfigError, UsageError


def _write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------------------------
# Precedence: defaults < preset < --set < flags


def test_defaults_without_anything() -> None:
    assert cfg.resolve() == cfg.Config()
    assert cfg.resolve().inference.steps == cfg.InferenceOptions().steps


def test_precedence_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    preset = _write(tmp_path, "inference:\n  steps: 7\n  guidance: 2.0\nmodel:\n  resolution: 512\n")
    from_preset = cfg.resolve(str(preset))
    assert (from_preset.inference.steps, from_preset.inference.guidance) == (7, 2.0)
    assert from_preset.inference.window == cfg.InferenceOptions().window  # untouched keys keep defaults
    assert from_preset.model.resolution == 512

    with_set = cfg.resolve(str(preset), ["inference.steps=9"])
    assert with_set.inference.steps == 9 and with_set.inference.guidance == 2.0

    with_flag = cfg.resolve(str(preset), ["inference.steps=9"], {"inference.steps": 11, "inference.seed": None})
    assert with_flag.inference.steps == 11
    assert with_flag.inference.seed == cfg.InferenceOptions().seed  # None = flag not given
    assert with_flag.model.resolution == 512


def test_later_set_wins_and_values_are_yaml(tmp_path: Path) -> None:
    c = cfg.resolve("tiny", ["inference.steps=3", "inference.steps=4", "inference.deepcache=true",
                             "inference.guidance=1.0", "output.pix_fmt=null", "prep.max_size=720"])
    assert c.inference.steps == 4 and c.inference.deepcache is True and c.inference.guidance == 1.0
    assert c.output.pix_fmt is None and c.prep.max_size == 720


def test_fps_values_stay_exact_strings() -> None:
    assert cfg.resolve(None, ["prep.fps=25"]).prep.fps == "25"
    assert cfg.resolve(None, ["prep.fps=30000/1001"]).prep.fps == "30000/1001"
    assert cfg.resolve(None, ["sync.fps=source"]).sync.fps == "source"


def test_frame_rates_may_be_numbers_in_preset_files_and_flags(tmp_path: Path) -> None:
    """YAML reads ``fps: 25`` and ``fps: 29.97`` as numbers: accepted (they were 'a valid string' errors);
    ``curate.fps`` (the integer 25) through --set too."""
    preset = _write(tmp_path, "sync: {fps: 25}\nprep: {fps: 29.97}\n")
    c = cfg.resolve(str(preset), ["curate.fps=25"])
    assert (c.sync.fps, c.prep.fps, c.curate.fps) == ("25", "29.97", 25)
    assert cfg.resolve(None, flags={"sync.fps": 25}).sync.fps == "25"


@pytest.mark.parametrize("item", ["timeline.min_sync=off", "timeline.handles=no", "inference.steps=yes",
                                  "output.crf=no", "faces.detect_every=on"])
def test_yaml_booleans_are_not_numbers(item: str, tmp_path: Path) -> None:
    """``min_sync: off`` turned the sync gate on at 0, ``crf: no`` made lossless output: refused (exit 3)."""
    with pytest.raises(ConfigError, match="expected a number, not (true|false)"):
        cfg.resolve("tiny", [item])
    key, value = item.split("=")
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=f"invalid value for '{key}'"):
        cfg.resolve(str(_write(tmp_path, f"{section}:\n  {name}: {value}\n")))
    assert cfg.resolve("tiny", ["timeline.min_sync=null", "inference.deepcache=off"]).inference.deepcache is False


def test_preset_given_as_mapping() -> None:
    c = cfg.resolve({"inference": {"steps": 5}})
    assert c.inference.steps == 5


# ----------------------------------------------------------------------------------------------
# Errors name the source and the dotted key


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("inference:\n  stepz: 3\n", "inference.stepz"),
        ("model:\n  checkpoint: tiny\n  colour: red\n", "model.colour"),
        ("bogus: 1\n", "bogus"),
    ],
)
def test_unknown_key_names_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    p = _write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        cfg.resolve(str(p))
    assert str(p) in info.value.message and f"unknown key '{key}'" in info.value.message
    assert info.value.exit_code == 3 and info.value.hint


def test_unknown_key_in_set_and_flags() -> None:
    with pytest.raises(ConfigError, match=r"--set: unknown key 'inference\.foo'"):
        cfg.resolve("tiny", ["inference.foo=1"])
    with pytest.raises(UsageError, match=r"command-line flags: unknown key 'faces\.bar'"):
        cfg.resolve("tiny", (), {"faces.bar": 1})


@pytest.mark.parametrize(("key", "value"), [("inference.dtype", "fp64"), ("sync.fps", "abc"), ("inference.steps", 0),
                                            ("output.codec", "xyz")])
def test_a_bad_flag_value_is_a_usage_error_and_the_same_value_in_a_set_is_config(key: str, value: object) -> None:
    """A flag's value is a command-line argument (exit 2, as Click's own bounds); in --set or a preset it is
    configuration (exit 3)."""
    with pytest.raises(UsageError, match=rf"command-line flags: invalid value for '{key}'") as info:
        cfg.resolve("tiny", (), {key: value})
    assert info.value.exit_code == 2
    with pytest.raises(ConfigError) as info:
        cfg.resolve("tiny", [f"{key}={value}"])
    assert info.value.exit_code == 3


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ("inference.steps=0", "inference.steps"),
        ("inference.guidance=0.5", "inference.guidance"),
        ("inference.window=65", "inference.window"),
        ("model.resolution=300", "model.resolution"),
        ("prep.crf=52", "prep.crf"),
        ("prep.fps=1000", "prep.fps"),
        ("prep.fps=abc", "prep.fps"),
        ("inference.device=gpu", "inference.device"),
        ("output.codec=mpeg2", "output.codec"),
    ],
)
def test_range_errors_name_the_key(item: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.resolve("tiny", [item])
    assert f"invalid value for '{key}'" in info.value.message and info.value.exit_code == 3


def test_range_error_in_preset_file_names_the_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "inference:\n  steps: 5000\n")
    with pytest.raises(ConfigError) as info:
        cfg.resolve(str(p))
    assert str(p) in info.value.message and "'inference.steps'" in info.value.message


@pytest.mark.parametrize("bad", ["inference.steps", "=3", "inference..steps=3"])
def test_malformed_set(bad: str) -> None:
    with pytest.raises(ConfigError, match="--set"):
        cfg.resolve(None, [bad])


def test_bad_yaml_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfg.resolve(str(_write(tmp_path, "inference: [1, 2\n")))
    with pytest.raises(ConfigError, match="must be a mapping"):
        cfg.resolve(str(_write(tmp_path, "- a\n- b\n", "list.yaml")))
    with pytest.raises(ConfigError, match="not found"):
        cfg.resolve(str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match="unknown preset 'nope'") as info:
        cfg.resolve("nope")
    assert "tiny" in info.value.hint  # lists the built-in names
    # a preset of the other kind says which command takes it
    with pytest.raises(ConfigError, match="unknown preset 'stage2': it is a training preset") as info:
        cfg.resolve("stage2")
    assert "train --preset stage2 --print-config" in info.value.hint
    from lipsyncctl.training.config import resolve_train_config

    with pytest.raises(ConfigError, match="'latentsync-1.5': it is a preset of sync, prep, score and curate"):
        resolve_train_config("latentsync-1.5")


def test_empty_preset_file_is_the_defaults(tmp_path: Path) -> None:
    c = cfg.resolve(str(_write(tmp_path, "")))
    assert c.model_dump(exclude={"name"}) == cfg.Config().model_dump(exclude={"name"})
    assert c.name == "mine"


# ----------------------------------------------------------------------------------------------
# Built-in presets


@pytest.mark.parametrize("name", sorted(cfg.list_presets()))
def test_builtin_preset_validates(name: str) -> None:
    c = cfg.resolve(name)
    assert c.name == name and c.description
    raw = yaml.safe_load(cfg.list_presets()[name].read_text())
    for section, values in raw.items():  # every value written in the file made it into the config
        if isinstance(values, dict):
            for key, value in values.items():
                assert getattr(getattr(c, section), key) == value, f"{name}: {section}.{key}"


def test_expected_builtins_exist() -> None:
    assert {"latentsync-1.5", "latentsync-1.6", "fast", "low-vram", "broadcast", "tiny"} <= set(cfg.list_presets())
    assert cfg.resolve("latentsync-1.5").model.resolution == 256
    assert cfg.resolve("latentsync-1.6").model.resolution == 512
    # its training data is aligned at 512 too (train refuses smaller clips: tests/unit/test_train_data.py)
    assert cfg.resolve("latentsync-1.6").curate.resolution == 512 == cfg.resolve("latentsync-1.6").model.resolution
    assert cfg.resolve("latentsync-1.5").curate.resolution == 256
    assert cfg.resolve("tiny").inference.device == "cpu"


def test_yaml_dump_round_trips() -> None:
    c = cfg.resolve("broadcast", ["inference.steps=12"])
    assert cfg.resolve(yaml.safe_load(cfg.dump_yaml(c))) == c


# ----------------------------------------------------------------------------------------------
# --print-config


def test_print_config_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--preset", "tiny", "--set", "inference.steps=3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == cfg.resolve("tiny", ["inference.steps=3"]).to_dict()
    assert printed["inference"]["steps"] == 3 and printed["name"] == "tiny"


def test_print_config_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "doctor", "--preset", "latentsync-1.6", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == cfg.resolve("latentsync-1.6").to_dict()


def test_print_config_reports_errors_with_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _write(tmp_path, "faces:\n  detect_evry: 2\n")
    assert main(["doctor", "--preset", str(p), "--print-config"]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"error: {p}: unknown key 'faces.detect_evry'") and "\nhint: " in err


@pytest.mark.parametrize("item", ["output.encoder_preset=bogus", "prep.encoder_preset=fastest",
                                  "output.pix_fmt=bogus", "prep.pix_fmt=yuv4200p"])
def test_encoder_presets_and_pixel_formats_are_checked_up_front(item: str) -> None:
    """They failed at the first encoded frame (exit 1, naming a hidden temporary file, after the faces and
    the networks had run): now a configuration error naming the key (3)."""
    with pytest.raises(ConfigError, match=f"invalid value for '{item.split('=')[0]}'"):
        cfg.resolve("tiny", [item])
    good = cfg.resolve("tiny", ["output.encoder_preset=veryfast", "output.pix_fmt=yuv422p10le"])
    assert (good.output.encoder_preset, good.output.pix_fmt) == ("veryfast", "yuv422p10le")


def test_a_preset_or_segments_file_that_is_not_utf8_is_said(tmp_path) -> None:
    """UTF-16 (what a Windows editor's 'Unicode' writes): a one-line error naming the file, not an internal error."""
    from lipsyncctl.config import read_preset
    from lipsyncctl.errors import ConfigError, UsageError
    from lipsyncctl.timeline.ranges import load_segments

    bad = tmp_path / "p.yaml"
    bad.write_bytes("inference:\n  steps: 5\n".encode("utf-16"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        read_preset(str(bad))
    with pytest.raises(UsageError, match="--segments .*not UTF-8 text"):
        load_segments(bad)


def test_off_is_the_word_not_yamls_false() -> None:
    """YAML reads ``off`` as False: ``--set sync.deinterlace=off`` (and a preset's ``deinterlace: off``) means the
    setting ``off``; ``true`` is still refused."""
    config = cfg.resolve("tiny", ["sync.deinterlace=off", "prep.deinterlace=off"])
    assert (config.sync.deinterlace, config.prep.deinterlace) == ("off", "off")
    assert cfg.resolve("tiny").sync.deinterlace == "auto"
    with pytest.raises(ConfigError, match="sync.deinterlace"):
        cfg.resolve("tiny", ["sync.deinterlace=true"])


@pytest.mark.parametrize("point", ["[.nan, 3]", "[3, .inf]", "[-1, 3]"])
def test_a_face_point_is_finite_pixels(point: str) -> None:
    """--face-at refused NaN; the same from --set, a preset or --segments passed (NaN is not below 0)."""
    with pytest.raises(ConfigError, match="faces.point must be pixel coordinates >= 0"):
        cfg.resolve(None, [f"faces.point={point}", "faces.select=point"])


def test_a_preset_that_is_a_folder_is_said_as_such(tmp_path: Path) -> None:
    """It said "preset file not found" of a folder that is there."""
    with pytest.raises(ConfigError, match="preset .*: a folder, not a YAML file"):
        cfg.resolve(str(tmp_path))
    with pytest.raises(ConfigError, match="preset file not found"):
        cfg.resolve(str(tmp_path / "nope.yaml"))
