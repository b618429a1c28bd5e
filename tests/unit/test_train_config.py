"""Training configuration, presets, trainable sets, start weights and run-folder rules (no data needed)."""

from __future__ import annotations

import os
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
    assert tc.resolve_train_config("tiny", ["run.max_steps=100", "data.workers=2", "optim.lr=0.5"]).stream_hash() == base.stream_hash()
    assert tc.resolve_train_config("tiny", ["optim.weight_decay=0.5"]).stream_hash() != base.stream_hash()
    assert tc.resolve_train_config("tiny", ["run.seed=1"]).stream_hash() != base.stream_hash()


#: the stream hash of every shipped preset as lipsyncctl wrote it before model.init and run.mixed_precision were
#: resumable and loss.noise, optim.warmup_steps and data.mask existed (computed by the code of cf437a5)
HASHES_OF_BEFORE = {
    "stage1": "03993ecec3e81371",
    "stage1_512": "0b7d5dce0bdfee63",
    "stage2-24gb": "55cb5f729b498be9",
    "stage2": "6b52780adb72ab56",
    "stage2_512-40gb": "25817e3cdc112f8c",
    "stage2_512": "823ccc1182670a20",
    "stage2_efficient": "b1d636f84905bb29",
    "syncnet_16_latent": "d68765cd69aac0e5",
    "syncnet_16_pixel": "ee961c8492927791",
    "syncnet_16_pixel_attn": "280639d981ef89df",
    "syncnet_25_pixel": "c4bb1ec59457897b",
    "tiny-stage1": "1b72e554a993ce2a",
    "tiny-syncnet-25": "0262fffcd0c556fa",
    "tiny-syncnet-latent": "0167162ff1cb6849",
    "tiny-syncnet": "bdce2901f2ad42ed",
    "tiny": "8f0be98583c2fadf"
}


#: the same, as lipsyncctl wrote them once model.init and run.mixed_precision were resumable and before optim.lr
#: was (computed by the code of facb5c0)
HASHES_BEFORE_LR = {
    "stage1": "e31f0e1686ba1325",
    "stage1_512": "b7d4ebf7d28e1324",
    "stage2": "10f4a2fd82be6fd9",
    "stage2-24gb": "810b56166eea3584",
    "stage2_512": "7882fb3f90b45481",
    "stage2_512-40gb": "aa23b95d02251058",
    "stage2_efficient": "6896f5b4c9b5821f",
    "syncnet_16_latent": "8ed6358e62863a76",
    "syncnet_16_pixel": "7d722cc3b46fc32e",
    "syncnet_16_pixel_attn": "2e108f1eeb44a8b3",
    "syncnet_25_pixel": "f5f6a79db8ee99cf",
    "tiny": "5ef640b43b2495bd",
    "tiny-stage1": "a8d3b069242a7a96",
    "tiny-syncnet": "4b0fdd5ce86059f2",
    "tiny-syncnet-25": "9cf5134b0ed4104c",
    "tiny-syncnet-latent": "8ec46263bfe0897f",
}


@pytest.mark.parametrize("written", [HASHES_OF_BEFORE, HASHES_BEFORE_LR], ids=["cf437a5", "facb5c0"])
def test_runs_written_before_resume_under_the_same_settings(written: dict[str, str]) -> None:
    assert set(written) == set(tc.list_train_presets())
    for name, saved in written.items():
        cfg = tc.resolve_train_config(name)
        assert cfg.continues(saved, cfg.to_dict()) and cfg.continues(saved, {}), name
        assert not tc.resolve_train_config(name, ["run.seed=7"]).continues(saved, cfg.to_dict()), name
        lower = tc.resolve_train_config(name, [f"optim.lr={cfg.optim.lr / 2}"])  # the lr is resumable now
        assert lower.continues(saved, cfg.to_dict()) and not lower.continues(saved, lower.to_dict()), name


def test_the_learning_rate_may_change_on_resume_and_is_said() -> None:
    plain = tc.resolve_train_config("tiny-stage1")
    lower = tc.resolve_train_config("tiny-stage1", ["optim.lr=5e-05"])
    assert lower.stream_hash() == plain.stream_hash() and lower.continues(plain.stream_hash(), plain.to_dict())
    # a run of facb5c0 started with --init and lr 3e-4 (its hash: that code's), resumed without --init at 1e-4
    assert plain.continues("9abd96ec14d80a43", tc.resolve_train_config(
        "tiny-stage1", ["model.init=/runs/s1/export/unet.safetensors", "optim.lr=0.0003"]).to_dict())
    assert lower.changes_from(plain.to_dict(), only=("optim.lr",)) == "optim.lr 0.0001 -> 5e-05"
    assert lower.changes_from(plain.to_dict()) == "" and plain.changes_from(plain.to_dict(), only=("optim.lr",)) == ""


def test_a_resume_needs_no_init_and_a_refusal_names_what_differs() -> None:
    """A resume takes its weights from the checkpoint: ``--init`` need not be repeated (it was refused as "another
    configuration" without saying which key), nor ``--mixed-precision`` (the precision it resolves to is checked);
    runs written before, whose hashes hold both, resume with the values their saved configuration has."""
    with_init = tc.resolve_train_config("tiny-stage1", ["model.init=/runs/s1/export/unet.safetensors"])
    plain = tc.resolve_train_config("tiny-stage1")
    assert with_init.stream_hash() == plain.stream_hash() and plain.continues(with_init.stream_hash())
    old_run = with_init.stream_hash(legacy={})  # a run of before, started with --init
    assert plain.continues(old_run, with_init.to_dict())  # resumed without it: its saved configuration says it
    assert not plain.continues(old_run, plain.to_dict())  # (a saved configuration of another init: not that run)
    bf16 = tc.resolve_train_config("tiny-stage1", ["run.mixed_precision=bf16"])
    assert bf16.continues(plain.stream_hash(legacy={}), plain.to_dict())  # auto before, bf16 asked now
    assert plain.continues(None)
    other = tc.resolve_train_config("tiny-stage1", ["optim.weight_decay=0.1", "run.max_steps=99"])
    assert not other.continues(plain.stream_hash())
    assert other.changes_from(plain.to_dict()) == "optim.weight_decay 0.01 -> 0.1"  # not the resumable max_steps
    assert other.changes_from(None) == ""


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


def test_a_trainable_part_matching_no_parameter_is_a_configuration_error() -> None:
    # `model.trainable=[nomatch]` ended in the optimizer's "empty parameter list", an internal error (exit 1);
    # a typo beside a good part trained less than asked, unsaid
    net = torch.nn.ModuleDict({"attentions": torch.nn.Linear(2, 2), "resnets": torch.nn.Linear(2, 2)})
    for rule, unused in ((("nomatch",), "'nomatch' matches"), (("attentions.", "motion_module."), "'motion_module.'")):
        with pytest.raises(ConfigError, match=f"model.trainable: {unused}") as err:
            trainable.select_trainable(net, rule)
        assert err.value.exit_code == 3 and "motion_modules." in err.value.hint


def test_adamw_betas_outside_0_to_1_are_refused_by_the_schema() -> None:
    # torch refused `optim.betas=[0.9,2]` when the optimizer was made, after the networks loaded: exit 1, internal
    for bad in ("[0.9,2]", "[-0.1,0.999]", "[0.9,1]"):
        with pytest.raises(ConfigError, match="optim.betas"):
            tc.resolve_train_config("tiny", [f"optim.betas={bad}"])
    assert tc.resolve_train_config("tiny", ["optim.betas=[0,0.5]"]).optim.betas == (0.0, 0.5)


def test_a_syncnet_export_of_another_config_is_named_by_its_header(models_dir: Path, tmp_path: Path) -> None:
    # a SyncNet run's export for the UNet's sync loss under another model.syncnet_config: a list of mismatched
    # tensors and the official configs, though the file's header names the config it was trained with
    from lipsyncctl.checkpoints import archs
    from lipsyncctl.checkpoints.io import write_safetensors
    from lipsyncctl.nets.syncnet import StableSyncNet
    from lipsyncctl.training.networks import load_train_networks
    from lipsyncctl.training.state import weights_header

    arch = archs.load_syncnet_config("tiny_25_pixel")
    path = tmp_path / "syncnet.safetensors"
    write_safetensors(path, StableSyncNet(arch).state_dict(), header=weights_header("syncnet", arch, "tiny_25_pixel", 3))
    cfg = tc.resolve_train_config("tiny", [f"model.syncnet={path}", "loss.trepa=0", "loss.lpips=0"])
    with pytest.raises(CheckpointError) as e:
        load_train_networks(cfg, torch.device("cpu"), torch.float32)
    assert e.value.exit_code == 4 and e.value.hint == ("its header names the config it was trained with: --set "
                                                       "model.syncnet_config=tiny_25_pixel")


def test_missing_loss_network_is_exit_4_naming_the_set(models_dir: Path) -> None:
    from lipsyncctl.training.networks import load_train_networks

    cfg = tc.resolve_train_config("tiny", ["model.videomae=videomae-v2-g", "model.videomae_config=giant"])
    with pytest.raises(MissingModelError) as e:
        load_train_networks(cfg, torch.device("cpu"), torch.float32)
    assert e.value.exit_code == 4 and "loss.trepa" in e.value.message and "--set loss.trepa=0" in (e.value.hint or "")
    # several missing: named in one error, with one fetch and the terms to switch off (one rerun each before)
    from lipsyncctl.training.networks import resolve_files

    both = tc.resolve_train_config("tiny", ["model.videomae=videomae-v2-g", "model.videomae_config=giant",
                                            "model.lpips=lpips-vgg"])
    with pytest.raises(MissingModelError) as e:
        resolve_files(both)
    assert "2 models the run needs are not installed: lpips-vgg (loss.lpips), videomae-v2-g (loss.trepa)" \
        in e.value.message
    assert "models fetch lpips-vgg videomae-v2-g" in (e.value.hint or "")
    assert "or --set loss.lpips=0 (drops lpips-vgg); or --set loss.trepa=0 (drops videomae-v2-g)" in (e.value.hint or "")
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


def test_the_papers_stage_1_starts_from_a_stable_diffusion_image_unet(tmp_path: Path) -> None:
    """``sd15:PATH``: an SD-1.5 UNet (diffusers names, 4 latent channels in, 768-d text cross-attention) seeds stage
    1 as the official loader does: conv_in and every attn2 to_k/to_v keep their fresh values, the rest loads;
    another shape is an error (the plain PATH init refuses all of it)."""
    from safetensors.torch import save_file

    from lipsyncctl.training.networks import build_unet

    fresh, _, _, _ = build_unet(tc.resolve_train_config("tiny-stage1"), seed=3)
    image = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i)) for i, (k, v)
             in enumerate(fresh.state_dict().items())}  # the image UNet's weights, another shape where SD's differ
    image["conv_in.weight"] = torch.randn(image["conv_in.weight"].shape[0], 4, 3, 3)
    kv = [k for k in image if ".attn2.to_k." in k or ".attn2.to_v." in k]
    for k in kv:
        image[k] = torch.randn(image[k].shape[0], 768)
    image["text_only.weight"] = torch.ones(2)  # a tensor this UNet has not: left out
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(image, str(path))
    model, _, report, source = build_unet(tc.resolve_train_config("tiny-stage1", [f"model.init=sd15:{path}"]), seed=3)
    got = model.state_dict()
    odd = {"conv_in.weight", "conv_in.bias", *kv}  # conv_in as a unit (its bias fits, and is the fresh zero)
    assert float(got["conv_in.bias"].abs().max()) == 0.0
    assert source == str(path) and kv
    assert all(torch.equal(got[k], fresh.state_dict()[k]) for k in odd)  # fresh: the official loader drops them
    assert all(torch.equal(got[k], image[k]) for k in got if k not in odd)
    assert any(f"{len(odd)} tensors of other shapes start fresh" in line for line in report), report
    assert any("1 tensors of the file are not part of this UNet" in line for line in report), report
    with pytest.raises(CheckpointError, match="does not fit"):
        build_unet(tc.resolve_train_config("tiny-stage1", [f"model.init={path}"]), seed=3)
    image["mid_block.resnets.0.conv1.bias"] = torch.zeros(3)  # another tensor of another size is refused
    save_file(image, str(path))
    with pytest.raises(CheckpointError, match="mid_block.resnets.0.conv1.bias is \\(3,\\)"):
        build_unet(tc.resolve_train_config("tiny-stage1", [f"model.init=sd15:{path}"]), seed=3)


def prepare_run_folder(run: Path, cfg: tc.TrainConfig, resume: str | None, overwrite: bool,
                       data: Path | None = None) -> Path | None:
    """What train does with its run folder: the check, then the run it replaces removed."""
    from lipsyncctl.training.runfolder import check_run_folder, clear_run

    folder, replace = check_run_folder(run, cfg, resume, overwrite, data)
    if replace:
        clear_run(run)
    return folder


def test_run_folder_rules(tmp_path: Path) -> None:

    cfg = tc.resolve_train_config("tiny")
    run = tmp_path / "run"
    assert prepare_run_folder(run, cfg, None, False) is None
    run.mkdir()
    (run / "train.yaml").write_text(f"stream_hash: {cfg.stream_hash()}\n")
    (run / "checkpoints" / "step-000003").mkdir(parents=True)  # complete: state.pt + model.safetensors
    for name in ("state.pt", "model.safetensors"):
        (run / "checkpoints" / "step-000003" / name).write_bytes(b"x")
    with pytest.raises(UsageError, match="already holds a training run"):
        prepare_run_folder(run, cfg, None, False)
    assert prepare_run_folder(run, cfg, None, True) is None and not (run / "train.yaml").exists()
    assert not (run / "checkpoints").exists()
    # a run folder that is the dataset or inside it (DATA/features, even with -y): mixed into the curated data
    data = tmp_path / "data"
    for inside in (data, data / "features", data / "runs" / "r1"):
        with pytest.raises(UsageError, match="inside the dataset it trains on"):
            prepare_run_folder(inside, cfg, None, True, data)
    assert prepare_run_folder(tmp_path / "data-runs", cfg, None, False, data) is None  # beside it: fine


def test_a_run_folder_holding_the_users_files_is_refused_and_y_removes_only_what_a_run_wrote(tmp_path: Path) -> None:
    """-o a clone of the official repository (its checkpoints/latentsync_unet.pt): a new run mixed its steps into
    that folder, and a later -y removed the whole checkpoints/ folder, official weights included; a new run replaced
    a metrics.csv that was there. Now a new run is refused where the user's files hold a run's names, and -y removes
    what a run writes and nothing else."""
    cfg = tc.resolve_train_config("tiny")
    repo = tmp_path / "LatentSync"
    (repo / "checkpoints" / "whisper").mkdir(parents=True)
    (repo / "checkpoints" / "latentsync_unet.pt").write_bytes(b"official")
    (repo / "README.md").write_text("the repository's own")
    with pytest.raises(UsageError, match=r"holds files no training run wrote where a run writes its own "
                                         r"\(checkpoints/latentsync_unet.pt, checkpoints/whisper\)") as e:
        prepare_run_folder(repo, cfg, None, False)
    assert "new or empty folder" in (e.value.hint or "")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metrics.csv").write_text("my numbers")
    with pytest.raises(UsageError, match=r"\(metrics.csv\)"):
        prepare_run_folder(tmp_path / "mine", cfg, None, False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("other names: fine")
    assert prepare_run_folder(tmp_path / "notes", cfg, None, False) is None
    # a run there (as the first run of an earlier version could leave it, beside the official weights): -y
    # removes its train.yaml, logs, steps and exports, and keeps every file it did not write
    (repo / "train.yaml").write_text(f"stream_hash: {cfg.stream_hash()}\n")
    (repo / "metrics.csv").write_text("step,name,value\n")
    for name in ("state.pt", "model.safetensors"):
        (repo / "checkpoints" / "step-000003").mkdir(exist_ok=True)
        (repo / "checkpoints" / "step-000003" / name).write_bytes(b"x")
    (repo / "export").mkdir()
    (repo / "export" / "unet.safetensors").write_bytes(b"x")
    (repo / "export" / "..latentsync_unet.pt.new.4242.tmp").write_bytes(b"a killed export's")  # (gigabytes)
    (repo / "export" / "..unet.safetensors.new.tmp-4242").write_bytes(b"a killed export's")
    (repo / "export" / "my_notes.txt").write_text("mine")
    (repo / "tb").mkdir()
    (repo / "tb" / "events.out.tfevents.1.host").write_bytes(b"x")
    assert prepare_run_folder(repo, cfg, None, True) is None
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == [
        "README.md", "checkpoints", "checkpoints/latentsync_unet.pt", "checkpoints/whisper", "export",
        "export/my_notes.txt"]


def _stopped_before_its_first_checkpoint(run: Path, cfg: tc.TrainConfig, data: str = "data",
                                         pid: int | None = None, host: str | None = None) -> None:
    """What Ctrl-C before the first save leaves: train.yaml (as the loop writes it, by a process now gone), logs,
    no checkpoint. ``pid``: the process that wrote it (a run still going)."""
    import yaml

    from lipsyncctl.media.atomic import host_tag
    from tests.unit.test_temps import _dead_pid

    (run / "tb").mkdir(parents=True)
    (run / "tb" / "events.out.tfevents.1700000000.host.1.0").write_text("x")
    (run / "metrics.csv").write_text("step,name,value\n1,loss,0.5\n")
    (run / "checkpoints" / ".step-000003.tmp").mkdir(parents=True)  # a save cut short: not a checkpoint
    (run / "train.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "stream_hash": cfg.stream_hash(),
                                                    "data": {**cfg.to_dict()["data"], "path": data},
                                                    "writer": {"host": host or host_tag(),
                                                               "pid": pid or _dead_pid()}}))


def test_a_run_stopped_before_its_first_checkpoint_restarts_with_the_same_command(tmp_path: Path) -> None:
    """Ctrl-C before the first checkpoint: the same command starts the run again (nothing to resume or lose),
    --resume latest says so; another configuration or data, or an export there, still needs -y."""
    from lipsyncctl import progress

    cfg, run = tc.resolve_train_config("tiny"), tmp_path / "run"
    _stopped_before_its_first_checkpoint(run, cfg)
    with pytest.raises(UsageError, match="stopped before its first one") as e:
        prepare_run_folder(run, cfg, "latest", False, Path("data"))
    assert "without --resume" in (e.value.hint or "")
    other = "stopped before its first checkpoint, with another configuration or data"
    with pytest.raises(UsageError, match=other) as e:
        prepare_run_folder(run, tc.resolve_train_config("tiny", ["optim.weight_decay=0.1"]), None, False, Path("data"))
    assert "--overwrite/-y" in (e.value.hint or "") and "--resume" not in (e.value.hint or "")
    with pytest.raises(UsageError, match=other):
        prepare_run_folder(run, cfg, None, False, Path("other"))
    (run / "export").mkdir()
    with pytest.raises(UsageError, match="already holds a training run"):  # exported weights: never dropped
        prepare_run_folder(run, cfg, None, False, Path("data"))
    (run / "export").rmdir()
    live = tmp_path / "live"  # the same command launched twice: the first is still before its first checkpoint
    _stopped_before_its_first_checkpoint(live, cfg, pid=os.getpid())
    with pytest.raises(UsageError, match="already holds a training run"):
        prepare_run_folder(live, cfg, None, False, Path("data"))
    assert (live / "train.yaml").is_file() and (live / "tb" / "events.out.tfevents.1700000000.host.1.0").is_file()
    # written in another process space (a requeued container: its pids cannot be seen) or by an earlier version
    # (4 hex digits): gone, since a live run would hold the folder's lock (it was refused, hinting at --resume)
    requeued = tmp_path / "requeued"
    _stopped_before_its_first_checkpoint(requeued, cfg, pid=os.getpid(), host="ab12")
    assert prepare_run_folder(requeued, cfg, None, False, Path("data")) is None
    # a change a resume would accept too (run.max_steps) is the same run
    with progress.use_sink(progress.RecordingSink()) as sink:
        assert prepare_run_folder(run, tc.resolve_train_config("tiny", ["run.max_steps=9"]), None, False,
                                  Path("data")) is None
    assert any("starting it again" in e[1] for e in sink.events if e[0] == "message")
    assert not any((run / name).exists() for name in ("train.yaml", "metrics.csv", "tb", "checkpoints"))
    # no run there at all: --resume latest says so
    with pytest.raises(UsageError, match="no training run in"):
        prepare_run_folder(tmp_path / "none", cfg, "latest", False)


@pytest.mark.parametrize("init", ["nosuch.pt", "runs/s1/unet.safetensors", "stage1:runs/s1/export"])
def test_a_missing_init_path_is_bad_input(init: str, models_dir: Path) -> None:
    """--init PATH that is not there: a typo in a path (exit 5, check the path), not a model to fetch."""
    from lipsyncctl.errors import MediaError
    from lipsyncctl.training.networks import build_unet

    with pytest.raises(MediaError, match="file not found") as e:
        build_unet(tc.resolve_train_config("tiny", [f"model.init={init}"]), seed=5)
    assert e.value.exit_code == 5 and e.value.hint == "check the path"
    assert init.removeprefix("stage1:") in e.value.message


@pytest.mark.parametrize("init", ["nosuchmodel", "latentsync-1.5"])
def test_a_bare_init_name_is_a_model_to_fetch(init: str, models_dir: Path) -> None:
    from lipsyncctl.training.networks import build_unet

    with pytest.raises(MissingModelError) as e:
        build_unet(tc.resolve_train_config("tiny", [f"model.init={init}"]), seed=5)
    assert e.value.exit_code == 4 and "lipsyncctl models" in (e.value.hint or "")


def test_an_unwritable_run_folder_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """-o that cannot be written (read-only mount, chattr +i: os.access says so) fails first, naming the folder,
    as sync/prep/curate do (exit 1), before the data or a network is read."""
    import os

    from lipsyncctl.cli.main import main
    from lipsyncctl.training import data as train_data
    from lipsyncctl.training import loop, networks

    locked = tmp_path / "imm"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    for work in (train_data, networks):  # reaching either is too late
        monkeypatch.setattr(work, "read_clips" if work is train_data else "load_train_networks",
                            lambda *a, **k: pytest.fail("work started before -o was checked"))
    with pytest.raises(PermissionError, match="cannot create the folders of .*run here") as e:
        loop.train(tc.resolve_train_config("tiny"), data=tmp_path / "data", out=locked / "run")
    assert e.value.filename == str(locked)
    assert main(["train", "--preset", "tiny", "--data", str(tmp_path), "-o", str(locked / "r")]) == 1
    assert f"error: cannot create the folders of {locked / 'r'} here (permission denied): {locked}" in \
        capsys.readouterr().err
    assert not (locked / "r").exists()


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


def test_an_interrupted_train_says_how_to_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C/SIGTERM: exit 130 with the way on for this run folder (the global "rerun the same command to resume"
    was refused after a checkpoint: a run folder that holds one needs --resume latest)."""
    from lipsyncctl.cli.main import main
    from lipsyncctl.training import loop

    def stopped(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", stopped)
    run, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    args = ["train", "--preset", "tiny", "--data", str(data), "-o", str(run)]
    assert main(args) == 130
    assert "rerun the same command: nothing was checkpointed" in capsys.readouterr().err
    step = run / "checkpoints" / "step-000003"
    step.mkdir(parents=True)
    (step / "state.pt").write_bytes(b"x")
    (step / "model.safetensors").write_bytes(b"x")
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "--resume latest (from its checkpoint at step 3)" in err and "export" not in err
    # an export of an earlier step (a run resumed, then stopped before its end): the hand-off to sync would render
    # older weights than the checkpoint's, unsaid
    from lipsyncctl.checkpoints.io import write_safetensors
    from lipsyncctl.training.state import weights_header

    (run / "export").mkdir()
    write_safetensors(run / "export" / "unet.safetensors", {"w": torch.zeros(1)},
                      weights_header("unet", {}, "x", 2))
    import yaml

    (run / "train.yaml").write_text(yaml.safe_dump(tc.resolve_train_config("tiny").to_dict()))
    assert main(args) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert (f"{run / 'export'} holds step 2's weights, older than the checkpoint's ({step / 'model.safetensors'}: "
            "model.checkpoint= for sync") in err
    # a LoRA run's checkpoint holds its adapters unmerged (sync refuses it): not offered to sync
    (run / "train.yaml").write_text(yaml.safe_dump(tc.resolve_train_config("tiny", ["run.lora_rank=4"]).to_dict()))
    assert main(args) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "older than the checkpoint's (the resumed run writes a new export at its end)" in err


def test_model_paths_are_stored_absolute_and_older_relative_runs_still_resume(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A model file given relative (--set model.syncnet=runs/sn/export/syncnet.safetensors) is stored absolute, as
    data.mask: a resume from another working folder found no file, and refused the absolute path as another
    configuration. Registry and built-in names stay names; a run recorded relative before still continues."""
    monkeypatch.chdir(tmp_path)
    cfg = tc.resolve_train_config("tiny", ["model.syncnet=runs/sn/syncnet.safetensors", "model.init=stage1:u.pt",
                                           "model.vae=tiny", "model.unet_config=tiny"])
    assert cfg.model.syncnet == str(tmp_path / "runs/sn/syncnet.safetensors")
    assert cfg.model.init == f"stage1:{tmp_path / 'u.pt'}"
    assert (cfg.model.vae, cfg.model.unet_config) == ("tiny", "tiny")
    assert tc.model_reference("stable-syncnet") == "stable-syncnet" and tc.model_reference("none") == "none"
    assert tc.model_reference("./w") == str(tmp_path / "w") and tc.model_reference("sd15:~/x.bin").startswith("sd15:/")
    # a train.yaml written by the code before (2f79960: the relative value in its model section, its hash pinned)
    before = tc.resolve_train_config("tiny", ["model.syncnet=weights/sync.safetensors"])
    old = before.to_dict()
    old["model"]["syncnet"] = "weights/sync.safetensors"
    assert before.stream_hash() != "7dfed5c8c6d93448" and before.continues("7dfed5c8c6d93448", old)
    assert "model.syncnet" not in before.changes_from(old)  # the same file, not a change to name
    other = tc.resolve_train_config("tiny", ["model.syncnet=elsewhere/sync.safetensors"])
    assert not other.continues("7dfed5c8c6d93448", old)
    # and one older still (before optim.lr could change on a resume): both rules at once
    older = {**old, "optim": {**old["optim"], "lr": 0.0003}}
    legacy = before.stream_hash(legacy=older, generation=1, model={"syncnet": "weights/sync.safetensors"})
    assert legacy != before.stream_hash(legacy=older, generation=1) and before.continues(legacy, older)


def test_a_runs_train_yaml_is_a_preset(tmp_path: Path) -> None:
    """RUN/train.yaml (the resolved configuration a run records) starts a run configured as that one: its record's
    own keys (stream hash, writer, data path) are dropped (unknown key 'data.path', exit 3)."""
    import yaml

    cfg = tc.resolve_train_config("tiny", ["optim.lr=0.0003", "run.max_steps=5"])
    record = {**cfg.to_dict(), "stream_hash": cfg.stream_hash(),
              "data": {**cfg.to_dict()["data"], "path": str(tmp_path / "data")}, "writer": {"host": "ab12", "pid": 1}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    again = tc.resolve_train_config(str(tmp_path / "train.yaml"), ["run.max_steps=7"])
    assert again.stream_hash() == cfg.stream_hash() and again.optim.lr == 0.0003 and again.run.max_steps == 7
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"data": {"path": "x"}}))  # not a record: strict as ever
    from lipsyncctl.errors import ConfigError

    with pytest.raises(ConfigError, match="data.path"):
        tc.resolve_train_config(str(tmp_path / "other.yaml"))
    # a record edited by hand: its errors name its file (they said "preset:")
    record["optim"] = {**record["optim"], "lrate": 0.1}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'train.yaml'}: unknown key 'optim.lrate'"):
        tc.resolve_train_config(str(tmp_path / "train.yaml"))


def test_a_damaged_train_yaml_does_not_stop_a_resume_with_a_traceback(tmp_path: Path) -> None:
    """An unparseable RUN/train.yaml (a write cut short by an earlier version, a hand edit) was an internal error
    (a YAML ScannerError) on --resume; the checkpoint's own record is what a resume is checked against."""
    cfg, run = tc.resolve_train_config("tiny"), tmp_path / "run"
    (run / "checkpoints" / "step-000003").mkdir(parents=True)
    for name in ("state.pt", "model.safetensors"):
        (run / "checkpoints" / "step-000003" / name).write_bytes(b"x")
    (run / "train.yaml").write_text("stream_hash: [unclosed\n")
    assert prepare_run_folder(run, cfg, "latest", False) == run / "checkpoints" / "step-000003"


def test_a_checkpoint_is_on_disk_before_its_name_says_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing was fsynced: after a power cut a checkpoint's files could be empty under their complete name, and
    --resume latest took it. Its files and folder are synced before the rename, the checkpoints folder after."""
    import torch

    from lipsyncctl.training import state

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    model = torch.nn.Linear(2, 2)
    final = state.save_checkpoint(tmp_path, 3, model=model, kind="unet", arch={}, arch_name="x", state={"step": 3},
                                  rng={}, rank=0, is_main=True, barrier=lambda: None, keep=2)
    assert final == tmp_path / "checkpoints" / "step-000003"
    assert synced == ["model.safetensors", "rng-rank0.pt", "state.pt", ".step-000003.tmp", "checkpoints"]


def test_train_needs_a_preset_except_to_resume_a_run_as_it_was_configured(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Without --preset, train took the schema's defaults (every parameter of the stage-2 UNet: no recipe) in
    silence; a resume without it now continues the run as its train.yaml says."""
    import yaml

    from lipsyncctl.cli.main import main
    from lipsyncctl.training import loop

    run, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    assert main(["train", "--data", str(data), "-o", str(run)]) == 2
    err = capsys.readouterr().err
    assert "give the training preset: --preset NAME" in err and "--list-presets" in err
    seen = []

    def stop(cfg: tc.TrainConfig, **_: object) -> None:
        seen.append(cfg)
        raise UsageError("stop here")

    monkeypatch.setattr(loop, "train", stop)
    cfg = tc.resolve_train_config("tiny", ["optim.lr=0.0003"])
    run.mkdir()
    (run / "train.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "stream_hash": cfg.stream_hash()}))
    assert main(["train", "--data", str(data), "-o", str(run), "--resume", "latest"]) == 2
    assert seen and seen[0].stream_hash() == cfg.stream_hash()


def test_a_full_disk_said_at_the_sync_of_a_checkpoint_leaves_nothing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC reported late, at fsync (NFS, delayed allocation), was a plain OSError (exit 1 without the space hint)
    and left the half-made .step-N.tmp."""
    import errno

    import torch

    from lipsyncctl.errors import WriteError
    from lipsyncctl.training import state

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError):
        state.save_checkpoint(tmp_path, 3, model=torch.nn.Linear(2, 2), kind="unet", arch={}, arch_name="x",
                              state={"step": 3}, rng={}, rank=0, is_main=True, barrier=lambda: None, keep=2)
    assert not (tmp_path / "checkpoints" / ".step-000003.tmp").exists()
    assert not (tmp_path / "checkpoints" / "step-000003").exists()
