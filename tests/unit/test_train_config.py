"""Training configuration, presets, trainable sets, start weights and run-folder rules (no data needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lipsyncctl.errors import CheckpointError, ConfigError, MissingModelError, UsageError
from lipsyncctl.training import config as tc
from lipsyncctl.training import trainable

OFFICIAL_PRESETS = ("stage1", "stage1_512", "stage2", "stage2_512", "stage2_efficient",
                    "syncnet_16_pixel_attn", "syncnet_16_pixel")


def test_presets_resolve_and_precedence() -> None:
    presets = tc.list_train_presets()
    assert set(OFFICIAL_PRESETS) | {"tiny", "tiny-stage1", "tiny-syncnet"} <= set(presets)
    for name in presets:
        tc.resolve_train_config(name)
    cfg = tc.resolve_train_config("stage2", ["loss.trepa=0", "run.max_steps=7"], {"run.max_steps": 9,
                                                                                    "data.batch_size": None})
    assert (cfg.loss.trepa, cfg.run.max_steps, cfg.data.batch_size) == (0.0, 9, 1)
    assert cfg.loss.lpips == 0.1 and cfg.loss.sync == 0.05 and cfg.optim.lr == 1e-5 and cfg.run.seed == 1247
    with pytest.raises(ConfigError, match="unknown key 'loss.tepra'"):
        tc.resolve_train_config("stage2", ["loss.tepra=0"])
    with pytest.raises(ConfigError, match="run.max_steps"):
        tc.resolve_train_config("stage2", ["run.max_steps=0"])
    with pytest.raises(ConfigError, match="unknown preset"):
        tc.resolve_train_config("stage3")


def test_stream_hash_ignores_only_resumable_keys() -> None:
    base = tc.resolve_train_config("tiny")
    assert tc.resolve_train_config("tiny", ["run.max_steps=100", "data.workers=2"]).stream_hash() == base.stream_hash()
    assert tc.resolve_train_config("tiny", ["optim.lr=0.5"]).stream_hash() != base.stream_hash()
    assert tc.resolve_train_config("tiny", ["run.seed=1"]).stream_hash() != base.stream_hash()


@pytest.mark.parametrize(("preset", "tensors", "params"), [
    ("stage1", 686, 849_962_244), ("stage2", 936, 674_792_320), ("stage2_efficient", 392, 284_660_480),
    ("stage2_512", 936, 674_792_320), ("stage1_512", 686, 849_962_244), ("tiny", 572, 735_680),
])
def test_trainable_counts_on_meta_device(preset: str, tensors: int, params: int) -> None:
    from lipsyncctl.checkpoints.archs import load_unet_config

    cfg = tc.resolve_train_config(preset)
    count = trainable.count_for_config(load_unet_config(cfg.model.unet_config), cfg.model.trainable)
    assert (count.tensors, count.params) == (tensors, params)


def test_select_trainable_sets_requires_grad() -> None:
    net = torch.nn.ModuleDict({"attentions": torch.nn.Linear(2, 2), "resnets": torch.nn.Linear(2, 2)})
    chosen = trainable.select_trainable(net, ("attentions.",))
    assert [n for n, _ in chosen] == ["attentions.weight", "attentions.bias"]
    assert not net["resnets"].weight.requires_grad


def test_missing_loss_network_is_exit_4_naming_the_set(models_dir: Path) -> None:
    from lipsyncctl.training.networks import load_train_networks

    cfg = tc.resolve_train_config("tiny", ["model.videomae=videomae-v2-g", "model.videomae_config=giant"])
    with pytest.raises(MissingModelError) as e:
        load_train_networks(cfg, torch.device("cpu"), torch.float32)
    assert e.value.exit_code == 4 and "loss.trepa" in e.value.message and "--set loss.trepa=0" in (e.value.hint or "")
    # the term switched off on purpose: no VideoMAE needed
    cfg = tc.resolve_train_config("tiny", ["model.videomae=videomae-v2-g", "loss.trepa=0"])
    nets = load_train_networks(cfg, torch.device("cpu"), torch.float32)
    assert "videomae" not in nets.aux and {"lpips", "syncnet"} <= set(nets.aux)


def test_stage1_to_stage2_init_keeps_the_first_forward(tmp_path: Path, models_dir: Path) -> None:
    """Stage-2 from stage-1 weights: the motion modules start fresh (reported), everything else loads, and
    the fresh motion modules are identities, so the stage-2 model's first forward equals stage 1's."""
    from lipsyncctl.checkpoints.archs import load_unet_config
    from lipsyncctl.training.networks import build_unet

    s1 = tc.resolve_train_config("tiny-stage1")
    model1, arch1, _, _ = build_unet(s1, seed=3)
    path = tmp_path / "s1.pt"
    torch.save({"state_dict": model1.state_dict(), "global_step": 1}, path)
    s2 = tc.resolve_train_config("tiny", [f"model.init=stage1:{path}"])
    model2, _, report, _ = build_unet(s2, seed=5)
    assert any("start fresh" in line for line in report)
    x = torch.randn(1, 13, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    audio = torch.randn(1, 16, 50, 384, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model2.eval()(x, 500, audio), model1.eval()(x, 500, audio), atol=1e-5, rtol=1e-5)
    # a plain PATH init is strict: stage-1 weights do not fit a stage-2 UNet without the stage1: prefix
    with pytest.raises(CheckpointError, match="motion_modules") as e:
        build_unet(tc.resolve_train_config("tiny", [f"model.init={path}"]), seed=5)
    assert "stage1:PATH" in (e.value.hint or "")
    assert load_unet_config("tiny_stage1").use_motion_module is False and arch1.use_motion_module is False


def test_run_folder_rules(tmp_path: Path) -> None:
    from lipsyncctl.training.loop import prepare_run_folder

    cfg = tc.resolve_train_config("tiny")
    run = tmp_path / "run"
    assert prepare_run_folder(run, cfg, None, False) is None
    run.mkdir()
    (run / "train.yaml").write_text(f"stream_hash: {cfg.stream_hash()}\n")
    with pytest.raises(UsageError, match="already holds a training run"):
        prepare_run_folder(run, cfg, None, False)
    with pytest.raises(UsageError, match="no complete checkpoint"):
        prepare_run_folder(run, cfg, "latest", False)
    assert prepare_run_folder(run, cfg, None, True) is None and not (run / "train.yaml").exists()


def test_launch_command_runs_torch_elastic_with_the_same_arguments() -> None:
    from lipsyncctl.training.launch import launch_command

    cmd = launch_command(["--preset", "tiny", "--data", "d", "-o", "r"], 2, port=29999)
    assert cmd[1:5] == ["-m", "lipsyncctl.cli.launcher", "torch", "--nnodes"]  # torch.distributed.run
    assert cmd[cmd.index("--nproc-per-node") + 1] == "2" and cmd[-8:] == ["-m", "lipsyncctl", "train", "--preset",
                                                                            "tiny", "--data", "d", "-o", "r"][-8:]


def test_a_bad_device_is_a_usage_error_and_a_gpu_precision_on_the_cpu_a_configuration_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag value: exit 2 (as every flag's), with the command that lists the keys; a precision this machine
    cannot run: exit 3 (not an internal error); nothing written."""
    from lipsyncctl.cli.main import main

    args = ["train", "--preset", "tiny", "--data", str(tmp_path), "-o", str(tmp_path / "run")]
    assert main([*args, "--device", "foo"]) == 2
    assert "`lipsyncctl presets keys --train run`" in capsys.readouterr().err
    assert main([*args, "--device", "cpu", "--mixed-precision", "fp16"]) == 3
    assert "run.mixed_precision fp16 needs a GPU" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_device_cuda_n_becomes_the_current_gpu_before_accelerate_starts(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate's single process trains on the current GPU, whatever --device said: cuda:N is made current
    first (two runs on cuda:0 and cuda:1 both landed on GPU 0). Stopped right there: no GPU here."""
    import torch

    from lipsyncctl.runner import devices
    from lipsyncctl.training import loop
    from lipsyncctl.training.config import resolve_train_config

    class Current(Exception):
        pass

    def set_device(device: torch.device) -> None:
        raise Current(str(device))

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(devices, "resolve_device", lambda name: torch.device(name))
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    cfg = resolve_train_config("tiny", ["run.device=cuda:1", "run.mixed_precision=no"])  # YAML's no: "no"
    assert cfg.run.mixed_precision == "no"
    with pytest.raises(Current, match="cuda:1"):
        loop.train(cfg, data=tmp_path, out=tmp_path / "run")
