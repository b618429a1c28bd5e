"""`lipsyncctl doctor` and the library checks behind it (lipsyncctl.checks.doctor, lipsyncctl.runner.gpus)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest

from lipsyncctl import config as cfg
from lipsyncctl.checks import doctor as checks
from lipsyncctl.cli.main import main
from lipsyncctl.runner import gpus as gpu
from lipsyncctl.runner import vram

GiB = gpu.GiB


def _by_name(result: checks.DoctorResult) -> dict[str, checks.Check]:
    return {c.name: c for c in result.checks}


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this is a CPU-only machine whatever the test host has."""
    monkeypatch.setattr(gpu, "list_gpus", lambda: gpu.GpuProbe([], "NVML unavailable: test", None))


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, free_gib: float, total_gib: float = 80.0) -> None:
    card = gpu.GpuInfo(0, "Fake H100", (9, 0), int(total_gib * GiB), int(free_gib * GiB), "nvml")
    monkeypatch.setattr(gpu, "list_gpus", lambda: gpu.GpuProbe([card], None, "999.1"))


# ----------------------------------------------------------------------------------------------
# The library function


@pytest.fixture
def bundled_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> str:
    """Use imageio-ffmpeg's binary (a dependency) so the result does not depend on the PATH's ffmpeg."""
    exe = pytest.importorskip("imageio_ffmpeg").get_ffmpeg_exe()
    monkeypatch.setenv("LIPSYNCCTL_FFMPEG", exe)
    return exe


def test_this_machine_passes_on_cpu(tmp_path: Path, models_dir: Path, no_gpu: None, bundled_ffmpeg: str) -> None:
    res = checks.run_checks(None, outputs_dir=tmp_path, models_dir=models_dir)
    rows = _by_name(res)
    assert res.ok, [(c.name, c.detail) for c in res.failures]
    for name in ("python", "torch", "gpu", "cpu", "ram", "disk outputs", "disk models", "ffmpeg",
                 "ffmpeg encoders", "pyav", "pyav encoders", "presets", "models dir", "sync scoring"):
        assert name in rows, name
    assert rows["gpu"].detail.startswith("no CUDA GPU: CPU only")
    assert rows["gpu"].status == "warn" and not rows["gpu"].required
    assert rows["torch GPU arch"].status == "skip"
    assert rows["ffmpeg"].data == {"path": bundled_ffmpeg, "source": "LIPSYNCCTL_FFMPEG",
                                   "version": rows["ffmpeg"].data["version"]}
    assert rows["presets"].data["presets"] == sorted(cfg.list_presets())
    assert rows["models dir"].data["path"] == str(models_dir)
    assert rows["models dir"].data["source"] == "LIPSYNCCTL_MODELS"
    assert all(c.status in ("ok", "warn", "fail", "skip") for c in res.checks)


def test_a_missing_ffmpeg_binary_warns_with_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyAV does every command's media work: the binary (the benchmarks' reference) is optional."""
    monkeypatch.setenv("LIPSYNCCTL_FFMPEG", str(tmp_path / "no-such-ffmpeg"))
    rows = {c.name: c for c in checks.check_ffmpeg()}
    assert rows["ffmpeg"].status == "warn" and not rows["ffmpeg"].required and not rows["ffmpeg"].failed
    assert "LIPSYNCCTL_FFMPEG" in rows["ffmpeg"].detail and rows["ffmpeg"].hint
    assert rows["ffmpeg encoders"].status == "skip"


def test_missing_required_encoder_fails_optional_one_warns() -> None:
    everything = {e: True for e in checks.REQUIRED_ENCODERS + checks.OPTIONAL_ENCODERS}
    assert checks._encoder_row("enc", everything).status == "ok"
    no_prores = checks._encoder_row("enc", {**everything, "prores_ks": False})
    assert no_prores.status == "warn" and "prores_ks" in no_prores.detail and no_prores.hint
    assert not no_prores.failed
    no_x264 = checks._encoder_row("enc", {**everything, "libx264": False})
    assert no_x264.failed and "libx264" in no_x264.detail and no_x264.hint


def test_low_disk_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Usage(NamedTuple):
        total: int
        used: int
        free: int

    monkeypatch.setattr(checks.shutil, "disk_usage", lambda p: Usage(100 * GiB, 99.5 * GiB, GiB // 2))
    (row,) = checks.check_disk("outputs", tmp_path / "not" / "yet" / "there")
    assert row.failed and row.hint
    assert str(tmp_path) in row.detail  # reported where it measured: the nearest existing folder
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda p: Usage(100 * GiB, 95 * GiB, 5 * GiB))
    (row,) = checks.check_disk("outputs", tmp_path)
    assert row.status == "warn" and not row.failed


def test_broken_builtin_preset_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for p in cfg.list_presets().values():
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "typo.yaml").write_text("inference:\n  stepz: 3\n")
    monkeypatch.setattr(cfg, "builtin_presets_dir", lambda: tmp_path)
    (row,) = checks.check_presets()
    assert row.failed and "typo" in row.detail and "inference.stepz" in row.detail


def test_nvml_missing_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pynvml = pytest.importorskip("pynvml")

    def boom() -> None:
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", boom)
    gpus, error, driver = gpu._nvml_gpus()
    assert gpus == [] and driver is None and error.startswith("NVML unavailable")


# ----------------------------------------------------------------------------------------------
# Presets: CPU-only machine, and a (fake) GPU with too little / enough free memory


def test_cpu_preset_passes_without_gpu(tmp_path: Path, models_dir: Path, no_gpu: None) -> None:
    res = checks.run_checks(cfg.resolve("tiny"), outputs_dir=tmp_path, models_dir=models_dir)
    rows = _by_name(res)
    assert res.ok and res.preset == "tiny"
    assert rows["preset tiny"].status == "ok" and rows["preset models"].status == "ok"
    assert res.vram_needed_bytes == vram.estimate_vram(cfg.resolve("tiny"))


def test_tiny_models_with_nowhere_to_be_made(tmp_path: Path, no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny models are made on first use: a models folder that cannot hold them fails doctor's preset check and
    the run, naming that folder (doctor passed; the run failed naming a hidden temporary folder, exit 1)."""
    import lipsyncctl
    from lipsyncctl.errors import MissingModelError

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(tmp_path / "afile"))
    res = checks.run_checks(cfg.resolve("tiny"), outputs_dir=tmp_path, models_dir=tmp_path / "afile")
    rows = _by_name(res)
    assert not res.ok and rows["preset models"].status == "fail"
    assert "tiny models cannot be written in" in rows["preset models"].detail
    assert rows["models dir"].detail.endswith("is a file, not a folder")
    with pytest.raises(MissingModelError, match="it is a file, not a folder") as err:
        lipsyncctl.load_pipeline("tiny")
    assert "LIPSYNCCTL_MODELS" in (err.value.hint or "")
    from lipsyncctl.checkpoints.aux_train import ensure_tiny_aux
    from lipsyncctl.checkpoints.tiny_sync import ensure_tiny_sync

    for make in (ensure_tiny_sync, ensure_tiny_aux):  # every tiny set (a bare FileNotFoundError for these)
        with pytest.raises(MissingModelError, match="it is a file, not a folder"):
            make()
    assert (tmp_path / "afile").read_text() == "x"


def test_explicit_cuda_without_gpu_fails(tmp_path: Path, models_dir: Path, no_gpu: None) -> None:
    config = cfg.resolve("tiny", ["inference.device=cuda"])
    res = checks.run_checks(config, outputs_dir=tmp_path, models_dir=models_dir)
    row = _by_name(res)["preset tiny"]
    assert not res.ok and res.failures == [row]
    assert "no CUDA GPU: CPU only" in row.detail and "inference.device=cpu" in row.hint


def test_auto_device_without_gpu_only_warns(no_gpu: None) -> None:
    (row,) = checks.check_preset(cfg.resolve("latentsync-1.6"), gpu.list_gpus())
    assert row.status == "warn" and not row.required and "CPU only" in row.detail


def test_vram_against_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, free_gib=10)
    probe = gpu.list_gpus()
    (big,) = checks.check_preset(cfg.resolve("latentsync-1.6", ["inference.device=cuda"]), probe)
    assert big.failed and "low-vram" in big.hint and big.data["free_bytes"] == 10 * GiB
    (small,) = checks.check_preset(cfg.resolve("latentsync-1.5", ["inference.device=cuda:0"]), probe)
    assert small.status == "ok" and small.data["vram_needed_bytes"] < 10 * GiB
    (auto,) = checks.check_preset(cfg.resolve("latentsync-1.6"), probe)
    assert auto.status == "warn" and not auto.failed  # auto may still fall back; only explicit cuda fails
    (missing,) = checks.check_preset(cfg.resolve("tiny", ["inference.device=cuda:3"]), probe)
    assert missing.failed


def test_missing_weights_fail_preset_models(models_dir: Path) -> None:
    pytest.importorskip("lipsyncctl.checkpoints.registry")
    (row,) = checks.check_preset_models(cfg.resolve("latentsync-1.5"), models_dir)
    assert row.failed and "latentsync-1.5" in row.data["missing"]
    assert "lipsyncctl models fetch" in row.hint


# ----------------------------------------------------------------------------------------------
# The VRAM estimate and the arch check


def test_the_face_detector_row(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync needs a face detector: the row says which one the preset's ``faces.backend`` stands for, whether it is
    the official one and why each other one is not usable; a backend set but not usable fails with its hint."""
    from lipsyncctl.faces import detect

    reasons = {"insightface": "det_10g.onnx not in X", "face-alignment": "not installed", "dlib": None}
    monkeypatch.setattr(detect, "available_backends", lambda models_dir=None: reasons)
    monkeypatch.setattr(detect, "backend_status", lambda name, models_dir=None: reasons[name])
    (row,) = checks.check_face_detector(cfg.resolve("tiny"), models_dir)
    assert row.status == "ok" and row.data["backend"] == "dlib"
    assert row.detail.startswith("dlib (auto; not the official insightface)") and "det_10g.onnx not in X" in row.detail
    (row,) = checks.check_face_detector(cfg.resolve("tiny", ["faces.backend=insightface"]), models_dir)
    assert row.status == "fail" and row.failed and "'insightface' is not usable" in row.detail
    assert "models fetch insightface" in row.hint
    reasons["dlib"] = "the dlib package is not installed"
    (row,) = checks.check_face_detector(cfg.resolve("tiny"), models_dir)
    assert row.status == "fail" and "no face detector is usable" in row.detail


def test_estimate_vram_follows_the_documented_formula() -> None:
    base = cfg.resolve("latentsync-1.5")
    est = vram.estimate_vram
    assert 7 * GiB < est(base) < 8.5 * GiB  # the official README: 8 GB minimum for 1.5
    assert 16.5 * GiB < est(cfg.resolve("latentsync-1.6")) < 19 * GiB  # and 18 GB for 1.6
    assert est(cfg.resolve("latentsync-1.5", ["model.resolution=512"])) > est(base)
    assert est(cfg.resolve("latentsync-1.5", ["inference.dtype=fp32"])) > est(base)
    assert est(cfg.resolve("latentsync-1.5", ["inference.guidance=1.0"])) < est(base)
    assert est(cfg.resolve("latentsync-1.5", ["inference.window=8"])) < est(base)
    assert est(cfg.resolve("latentsync-1.5", ["inference.vae_batch=4"])) < est(base)
    assert est(cfg.resolve("low-vram")) < est(base)
    weights_fp16 = (vram.UNET_PARAMS["stage2"] + vram.VAE_PARAMS) * 2
    assert est(base) > weights_fp16 + vram.FIXED_OVERHEAD


@pytest.mark.parametrize(
    ("capability", "archs", "covered"),
    [
        ((8, 6), ["sm_80"], True),  # same major, newer minor runs the cubin
        ((8, 0), ["sm_86"], False),  # older minor does not
        ((9, 0), ["sm_80", "sm_86"], False),
        ((9, 0), ["sm_80", "compute_80"], True),  # PTX JIT-compiles forward
        ((9, 0), ["sm_90a"], True),
        ((10, 0), ["sm_90a"], False),  # arch-specific cubins are not forward compatible
        ((12, 0), ["sm_90", "sm_100"], False),
        ((12, 0), ["sm_100", "sm_120"], True),
        ((7, 5), [], False),
    ],
)
def test_arch_covered(capability: tuple[int, int], archs: list[str], covered: bool) -> None:
    assert gpu.arch_covered(capability, archs) is covered


# ----------------------------------------------------------------------------------------------
# The command


def test_cli_cpu_only_exits_0(tmp_path: Path, models_dir: Path, no_gpu: None, bundled_ffmpeg: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--outputs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no CUDA GPU: CPU only" in out and "all required checks passed" in out


def test_cli_json_and_preset(tmp_path: Path, models_dir: Path, no_gpu: None, bundled_ffmpeg: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "doctor", "--preset", "tiny", "-o", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["preset"] == "tiny" and data["gpus"] == []
    assert data["vram_needed_bytes"] == vram.estimate_vram(cfg.resolve("tiny"))
    names = [c["name"] for c in data["checks"]]
    assert "preset tiny" in names and "ffmpeg" in names
    assert set(data["checks"][0]) >= {"name", "status", "detail", "hint", "required"}


def test_cli_without_an_ffmpeg_binary_passes_with_a_warning(tmp_path: Path, models_dir: Path, no_gpu: None,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Every command works without the binary (prep and sync encode through PyAV): doctor passed no such
    machine (exit 4) although it could run."""
    monkeypatch.setenv("LIPSYNCCTL_FFMPEG", str(tmp_path / "missing-ffmpeg"))
    assert main(["--json", "doctor", "-o", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    row = next(c for c in data["checks"] if c["name"] == "ffmpeg")
    assert data["ok"] is True and row["status"] == "warn" and not row["required"]
    assert next(c for c in data["checks"] if c["name"] == "pyav encoders")["status"] in ("ok", "warn")


def test_cli_bad_preset_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--preset", "no-such-preset"]) == 3
    assert "unknown preset" in capsys.readouterr().err


def test_cuda_visible_devices_renumbers_nvml_gpus() -> None:
    cards = [gpu.GpuInfo(i, f"card{i}", (8, 0), 40 * GiB, (10 + i) * GiB, "nvml") for i in range(3)]
    assert gpu.visible_gpus(cards, None) == cards
    assert gpu.visible_gpus(cards, "") == []
    picked = gpu.visible_gpus(cards, "2,0")
    assert [(g.index, g.name) for g in picked] == [(0, "card2"), (1, "card0")]
    assert [g.name for g in gpu.visible_gpus(cards, "1,7,0")] == ["card1"]  # CUDA stops at a bad ordinal
    assert gpu.visible_gpus(cards, "GPU-1234abcd") == cards


def test_torch_arch_check_against_a_fake_cuda_build(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_86", "sm_90"])
    cards = [gpu.GpuInfo(0, "A100", (8, 0), 80 * GiB, 70 * GiB, "nvml"),
             gpu.GpuInfo(1, "RTX 5090", (12, 0), 32 * GiB, 30 * GiB, "nvml")]
    ok, new = checks.check_torch_arch(gpu.GpuProbe(cards, None, "570.1"))
    assert ok.status == "ok" and not ok.failed
    assert new.failed and "sm_120" in new.detail and "sm_120" in new.hint

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # e.g. a driver older than the CUDA build
    (row,) = checks.check_torch_arch(gpu.GpuProbe(cards, None, "470.1"))
    assert row.failed and "driver" in row.hint


def test_tiny_preset_estimate_counts_the_tiny_models() -> None:
    """The tiny preset's estimate uses the tiny models' sizes, not the full-size formula (was ~2.4 GiB)."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from lipsyncctl.checkpoints import tiny
    from lipsyncctl.nets.unet import UNet3DConditionModel

    with torch.device("meta"):
        unet = UNet3DConditionModel(tiny.tiny_unet_config())
        vae = diffusers.AutoencoderKL.from_config(tiny.TINY_VAE_CONFIG)
    assert sum(p.numel() for p in unet.parameters()) == vram.TINY_UNET_PARAMS == vram.UNET_PARAMS["tiny"]
    assert sum(p.numel() for p in vae.parameters()) == vram.TINY_VAE_PARAMS
    shapes = tiny.whisper_encoder_shapes(tiny.WHISPER_TINY_DIMS)
    assert sum(torch.Size(s).numel() for s in shapes.values()) == vram.WHISPER_ENCODER_PARAMS

    t = cfg.resolve("tiny")
    est = vram.estimate_vram(t)
    weights = (vram.TINY_UNET_PARAMS + vram.TINY_VAE_PARAMS + vram.WHISPER_ENCODER_PARAMS) * 4  # fp32
    assert weights + vram.TINY_FIXED_OVERHEAD < est < 1.5 * GiB
    assert est < vram.FIXED_OVERHEAD < vram.estimate_vram(cfg.resolve("latentsync-1.5"))
    assert vram.estimate_vram(cfg.resolve("tiny", ["inference.dtype=fp16"])) < est
    assert vram.estimate_vram(cfg.resolve("tiny", ["model.checkpoint=latentsync-1.5"])) < 1.5 * GiB  # unet tiny
    (row,) = checks.check_preset(cfg.resolve("tiny", ["inference.device=cuda"]),
                                 gpu.GpuProbe([gpu.GpuInfo(0, "fake", (9, 0), 2 * GiB, 2 * GiB, "nvml")], None, None))
    assert row.status == "ok" and row.data["vram_needed_bytes"] == est


# ----------------------------------------------------------------------------------------------
# The dtype each preset runs in, and why (issue 9)


def test_preset_rows_say_dtype_and_why_on_cpu(no_gpu: None) -> None:
    probe = gpu.list_gpus()
    (tiny,) = checks.check_preset(cfg.resolve("tiny"), probe)
    assert tiny.data["dtype"] == "fp32" and tiny.data["dtype_setting"] == "fp32"
    assert "dtype fp32 on cpu" in tiny.detail and tiny.data["dtype_reason"] in tiny.detail
    (official,) = checks.check_preset(cfg.resolve("latentsync-1.5"), probe)
    assert official.data["dtype"] == "fp32" and official.data["dtype_setting"] == "auto"
    assert "compute capability >= 8 (the official rule)" in official.detail


def test_preset_rows_say_dtype_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, free_gib=70)
    probe = gpu.list_gpus()
    (row,) = checks.check_preset(cfg.resolve("latentsync-1.6"), probe)
    assert row.status == "ok" and row.data["dtype"] == "fp16" and "dtype fp16 on cuda (gpu 0, cc 9.0)" in row.detail
    (bf,) = checks.check_preset(cfg.resolve("latentsync-1.6", ["inference.dtype=bf16"]), probe)
    assert bf.data["dtype"] == "bf16" and "bf16 set" in bf.detail
    old = gpu.GpuInfo(0, "Fake T4", (7, 5), 16 * GiB, 15 * GiB, "nvml")
    monkeypatch.setattr(gpu, "list_gpus", lambda: gpu.GpuProbe([old], None, "999.1"))
    (t4,) = checks.check_preset(cfg.resolve("latentsync-1.5"), gpu.list_gpus())
    assert t4.data["dtype"] == "fp32" and "cc 7.5" in t4.detail


def test_fp16_on_the_cpu_is_reported(no_gpu: None) -> None:
    probe = gpu.list_gpus()
    (explicit,) = checks.check_preset(cfg.resolve("tiny", ["inference.dtype=fp16"]), probe)
    assert explicit.failed and explicit.data["dtype"] is None
    assert "fp16 refused" in explicit.detail and "inference.dtype=bf16" in explicit.hint
    (low,) = checks.check_preset(cfg.resolve("low-vram"), probe)  # device auto -> cpu: the run would stop
    assert low.status == "fail" and low.failed and "fp16 refused on cpu" in low.detail


def test_cli_json_reports_the_dtype(tmp_path: Path, models_dir: Path, no_gpu: None, bundled_ffmpeg: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--preset", "tiny", "-o", str(tmp_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    row = next(c for c in doc["checks"] if c["name"] == "preset tiny")
    assert code == 0 and row["data"]["dtype"] == "fp32" and row["data"]["dtype_reason"]


def test_print_config_prints_and_runs_no_check(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``doctor --print-config`` alone prints the default run configuration (it ran every check and printed
    none); with a training preset, that preset's training configuration."""
    from lipsyncctl import api
    from lipsyncctl.config import Config

    monkeypatch.setattr(api, "doctor", lambda *a, **k: pytest.fail("the checks ran"))
    assert main(["--json", "doctor", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == Config().to_dict()
    assert main(["--json", "doctor", "--preset", "stage2", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == api.resolve_train_config("stage2").to_dict()


def test_the_sync_scoring_row_says_which_scale_score_gets(tmp_path: Path) -> None:
    """None installed, syncnet-v2 alone (approximate scale), syncnet-v2 + sfd-face (official): optional rows."""
    from tests.unit.test_timeline_qc import install_random_sfd_face, install_random_syncnet

    models = tmp_path / "models"
    (row,) = checks.check_sync_scoring(models)
    assert (row.status, row.required, row.data["scale"]) == ("warn", False, None)
    assert "score and --min-sync exit 4" in row.detail and row.hint == "lipsyncctl models fetch syncnet-v2 sfd-face"
    install_random_syncnet(models)
    (row,) = checks.check_sync_scoring(models)
    assert (row.status, row.data["scale"]) == ("warn", "approximate (not official)") and "sfd-face" in row.hint
    install_random_sfd_face(models)
    (row,) = checks.check_sync_scoring(models)
    assert (row.status, row.data["scale"], row.hint) == ("ok", "official", "")


def test_a_training_preset_checks_the_files_train_loads(tmp_path: Path, models_dir: Path, no_gpu: None,
                                                        bundled_ffmpeg: str, capsys: pytest.CaptureFixture[str]) -> None:
    """doctor --preset stage2 passed with no weights installed, then train stopped (exit 4): the files train
    would load (its own resolution: --init official, the VAE, the weighted loss terms' networks) are checked."""
    from lipsyncctl.training.config import resolve_train_config

    assert main(["--json", "doctor", "--preset", "stage2", "-o", str(tmp_path)]) == 4
    data = json.loads(capsys.readouterr().out)
    row = next(c for c in data["checks"] if c["name"] == "train models")
    assert data["ok"] is False and row["status"] == "fail" and row["required"]
    assert row["data"]["missing"] == ["init latentsync-1.5", "vae sd-vae-ft-mse", "vgg vgg16-imagenet",
                                      "lpips lpips-vgg", "syncnet stable-syncnet", "videomae videomae-v2-g"]
    assert "lipsyncctl models fetch latentsync-1.5 sd-vae-ft-mse" in row["hint"] and "loss.trepa=0" in row["hint"]
    # what a run with the terms off and its own start needs: the VAE only
    (row,) = checks.check_train_models(resolve_train_config(
        "stage2", ["loss.lpips=0", "loss.sync=0", "loss.trepa=0", "model.init=none"]))
    assert row.data["missing"] == ["vae sd-vae-ft-mse"]
    (row,) = checks.check_train_models(resolve_train_config("tiny", ["model.init=runs/s1/unet.pt"]))
    assert row.status == "fail" and row.hint == f"--init {Path('runs/s1/unet.pt').absolute()}: check the path"
    (row,) = checks.check_train_models(resolve_train_config("tiny"))  # tiny files: generated on first use
    assert row.status == "ok" and not row.data["missing"] and not list(models_dir.iterdir())


def test_an_outputs_folder_that_cannot_be_written_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor --outputs DIR said "ok, 71.9 GiB free" for an immutable folder: it checks it can be written, with
    the commands' own check (os.access says no for chattr +i, a read-only mount, a 0o555 folder)."""
    import os

    locked = tmp_path / "imm"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    (row,) = checks.check_disk("outputs", locked, writable=True)
    assert row.status == "fail" and row.required
    assert row.detail == f"{locked}: cannot write the output here (permission denied): {locked}"
    (row,) = checks.check_disk("outputs", locked / "new" / "sub", writable=True)  # created there: the same
    assert row.status == "fail" and row.detail.endswith(f": {locked}")
    (row,) = checks.check_disk("outputs", tmp_path / "new", writable=True)
    assert row.status != "fail"
    rows = _by_name(checks.run_checks(None, outputs_dir=locked, models_dir=tmp_path))
    assert rows["disk outputs"].status == "fail"
    monkeypatch.chdir(locked)  # not asked about (--outputs not given): the current folder, a warning only
    rows = _by_name(checks.run_checks(None, outputs_dir=None, models_dir=tmp_path))
    assert rows["disk outputs"].status == "warn" and "--outputs DIR" in rows["disk outputs"].hint
