"""The frozen networks of UNet training: VGG16 trunk, LPIPS-VGG, TREPA's VideoMAE-v2, their loaders and loss terms.

Numerical parity was checked once outside the suite (lpips 0.1.4 installed with --no-deps into a scratch folder,
torchvision stubbed so that ``tv.vgg16().features`` is our :class:`VGG16Features`, random weights, 3 images of
64x96): our LPIPS forward and its input gradient were bit-identical to ``lpips.LPIPS(net="vgg")`` (max abs
difference 0.0 for both). Against golden/train/train_step (official lpips with the hash-generated VGG16 and the
wheel's real ``vgg.pth``, tiny VAE decode of the stored ``pred_latents``): per-image LPIPS within 4.5e-8,
TREPA fake/real features within 6e-8 and the TREPA loss bit-identical. The last part is re-checked below for
the real clip (no lpips package or real weights needed).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lipsyncctl.checkpoints import aux_train, loaders
from lipsyncctl.checkpoints.aux_train import (
    TINY_VGG_WIDTHS,
    ensure_tiny_aux,
    load_lpips,
    load_vgg16_features,
    load_videomae,
    videomae_config,
)
from lipsyncctl.checkpoints.registry import ROLES, load_registry
from lipsyncctl.errors import CheckpointError, ConfigError
from lipsyncctl.nets.lpips import LPIPS, lin_heads
from lipsyncctl.nets.vgg import CONV_INDICES, VGG16_WIDTHS, VGG16Features
from lipsyncctl.nets.videomae import VideoMAEConfig, VisionTransformer
from lipsyncctl.training.perceptual import lpips_loss, trepa_features, trepa_loss
from tests.conftest import shared_path

VGG16_FEATURE_PARAMS = 14_714_688
#: vit_giant_patch14_224 (D 1408, 40 blocks, MLP 6144, 174 classes): per block 4D^2 + 2*D*6144 + 8D + 6144 =
#: 25 248 768; + patch embed 1408*(3*2*14*14) + 1408, fc_norm 2*1408, head 174*1408 + 174.
VIT_G_PARAMS = 40 * 25_248_768 + 1408 * 1177 + 2 * 1408 + 174 * 1409
TINY_VIDEOMAE_PARAMS = 70_244  # golden/train/train_step.json videomae_tiny


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ensure_tiny_aux(tmp_path_factory.mktemp("models"))


def _frozen(module: torch.nn.Module) -> bool:
    return not module.training and not any(p.requires_grad for p in module.parameters())


# --------------------------------------------------------------------------------------------------
# architectures on the meta device: official key sets and sizes


def test_full_size_key_sets_and_parameter_counts() -> None:
    assert VIT_G_PARAMS == 1_011_855_918
    with torch.device("meta"):
        vgg, lp, vit = VGG16Features(), LPIPS(), VisionTransformer()
    assert set(vgg.state_dict()) == {f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")}
    assert len(vgg.features) == 31 and _n(vgg) == VGG16_FEATURE_PARAMS
    lins = {k: tuple(v.shape) for k, v in lp.state_dict().items() if k.startswith("lin")}
    assert lins == {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(VGG16_WIDTHS)}
    assert set(lp.state_dict()) == {f"net.{k}" for k in vgg.state_dict()} | set(lins)  # no scaling buffers
    assert {n: tuple(b.shape) for n, b in lp.named_buffers()} == {"scaling_layer.shift": (1, 3, 1, 1),
                                                                   "scaling_layer.scale": (1, 3, 1, 1)}
    sd = vit.state_dict()
    assert _n(vit) == VIT_G_PARAMS and len(sd) == 40 * 13 + 6
    assert "pos_embed" not in sd and tuple(vit.pos_embed.shape) == (1, 8 * 16 * 16, 1408)
    assert {k.split(".", 2)[2] for k in sd if k.startswith("blocks.0.")} == {
        "norm1.weight", "norm1.bias", "attn.q_bias", "attn.v_bias", "attn.qkv.weight", "attn.proj.weight",
        "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
        "mlp.fc2.bias"}
    assert tuple(sd["blocks.0.mlp.fc1.weight"].shape) == (6144, 1408)
    assert tuple(sd["patch_embed.proj.weight"].shape) == (1408, 3, 2, 14, 14)
    assert tuple(sd["head.weight"].shape) == (174, 1408) and "norm.weight" not in sd
    assert _n(VisionTransformer(videomae_config("tiny"))) == TINY_VIDEOMAE_PARAMS


def test_vgg_taps_and_videomae_shapes() -> None:
    vgg = VGG16Features(TINY_VGG_WIDTHS)
    taps = vgg(torch.randn(2, 3, 48, 80))
    assert [tuple(t.shape) for t in taps] == [(2, c, 48 >> i, 80 >> i) for i, c in enumerate(TINY_VGG_WIDTHS)]
    assert all((t >= 0).all() for t in taps)  # after ReLUs
    vit = VisionTransformer(videomae_config("tiny")).eval()
    with torch.no_grad():
        x = torch.rand(2, 3, 16, 224, 224)
        assert tuple(vit.forward_features(x).shape) == (2, 32) and tuple(vit(x).shape) == (2, 174)
        assert tuple(vit.forward_features(torch.rand(1, 3, 8, 224, 224)).shape) == (1, 32)  # time-interpolated table
    assert tuple(vit.position_embedding(8).shape) == (1, 4 * 256, 32)
    with pytest.raises(ValueError, match="112x112"):
        vit.forward_features(torch.rand(1, 3, 16, 112, 112))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        VideoMAEConfig(embed_dim=30, num_heads=4)


# --------------------------------------------------------------------------------------------------
# tiny files in the official formats, through the strict loaders


def test_tiny_files_have_the_official_layouts_and_load(tiny: dict[str, Path]) -> None:
    assert set(tiny) == {"vgg16", "lpips", "videomae"}
    vgg_sd = torch.load(tiny["vgg16"], weights_only=True)
    assert {k.split(".")[0] for k in vgg_sd} == {"features", "classifier"}
    assert sorted(torch.load(tiny["lpips"], weights_only=True)) == [f"lin{i}.model.1.weight" for i in range(5)]
    assert list(torch.load(tiny["videomae"], weights_only=True)) == ["module"]

    vgg = load_vgg16_features(tiny["vgg16"])
    assert vgg.widths == TINY_VGG_WIDTHS and _frozen(vgg)
    lp = load_lpips(tiny["vgg16"], tiny["lpips"])
    assert lp.widths == TINY_VGG_WIDTHS and _frozen(lp)
    assert all((lin.model[1].weight >= 0).all() for lin in lp.lins)
    torch.testing.assert_close(lp.net.features[0].weight, vgg.features[0].weight, rtol=0, atol=0)
    vit = load_videomae(tiny["videomae"], "tiny")
    assert _n(vit) == TINY_VIDEOMAE_PARAMS and _frozen(vit)
    assert vit.pos_embed.device.type == "cpu" and torch.isfinite(vit.pos_embed).all()
    # seeded and cached: a second call returns the same files without rewriting them
    stamp = tiny["videomae"].stat().st_mtime_ns
    assert ensure_tiny_aux(tiny["videomae"].parents[1]) == tiny and tiny["videomae"].stat().st_mtime_ns == stamp
    # models verify's checks: the VGG widths come from the file; the heads and the ViT default to the official sizes
    assert loaders.check_checkpoint("vgg16", tiny["vgg16"]).ok
    assert not loaders.check_checkpoint("lpips", tiny["lpips"]).ok
    assert not loaders.check_checkpoint("videomae", tiny["videomae"]).ok
    assert loaders.check_checkpoint("videomae", tiny["videomae"], "tiny").ok


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_loaders_are_strict_and_name_the_file(tiny: dict[str, Path], tmp_path: Path) -> None:
    vgg_sd = torch.load(tiny["vgg16"], weights_only=True)
    lin_sd = torch.load(tiny["lpips"], weights_only=True)
    vit_sd = torch.load(tiny["videomae"], weights_only=True)["module"]

    missing = _save({k: v for k, v in vgg_sd.items() if k != "features.26.weight"}, tmp_path / "v1.pth")
    with pytest.raises(CheckpointError, match="features.26.weight") as err:
        load_vgg16_features(missing)
    assert str(missing) in err.value.message and "vgg16-imagenet" in err.value.hint
    extra = _save({**vgg_sd, "features.31.weight": torch.zeros(1)}, tmp_path / "v2.pth")
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): features.31.weight"):
        load_vgg16_features(extra)
    with pytest.raises(CheckpointError, match="no 'features.0.weight'"):
        load_vgg16_features(tiny["lpips"])

    with pytest.raises(CheckpointError, match="lin5") as err:  # the heads' file is named, not the trunk's
        load_lpips(tiny["vgg16"], _save({**lin_sd, "lin5.model.1.weight": torch.zeros(1, 8, 1, 1)}, tmp_path / "l.pth"))
    assert str(tmp_path / "l.pth") in err.value.message and "lpips-vgg" in err.value.hint
    wide = _save({k: torch.zeros(1, 2 * v.shape[1], 1, 1) for k, v in lin_sd.items()}, tmp_path / "l2.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_lpips(tiny["vgg16"], wide)

    for key in ("model", "module"):  # TREPA's two wrappers, and a flat file
        assert _n(load_videomae(_save({key: vit_sd, "epoch": 3}, tmp_path / f"{key}.pth"), "tiny")) == 70_244
    flat = _save(vit_sd, tmp_path / "flat.pth")
    assert _n(load_videomae(flat, {"embed_dim": 32, "depth": 2, "num_heads": 2})) == 70_244
    no_bias = _save({"module": {k: v for k, v in vit_sd.items() if k != "blocks.1.attn.v_bias"}}, tmp_path / "nb.pth")
    with pytest.raises(CheckpointError, match="blocks.1.attn.v_bias"):
        load_videomae(no_bias, "tiny")
    with pytest.raises(CheckpointError) as err:
        load_videomae(flat)  # the giant config on a tiny file
    assert "videomae-v2-g" in err.value.hint and "tiny" in err.value.hint
    with pytest.raises(ConfigError, match="unknown VideoMAE config 'huge'"):
        load_videomae(flat, "huge")


def test_full_size_vgg_file_checks_with_its_classifier(tmp_path: Path) -> None:
    """A torchvision-shaped VGG16 file (values need not be real: stride-0 views keep it a few KB)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VGG16Features().state_dict().items()}
    shapes |= {"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,), "classifier.6.bias": (1000,)}
    path = _save({k: torch.zeros(1).expand(s) for k, s in shapes.items()}, tmp_path / "vgg16-397923af.pth")
    plan = aux_train.plan_vgg16(path)
    assert plan.config == VGG16_WIDTHS and plan.check().ok and len(plan.state_dict) == 26


# --------------------------------------------------------------------------------------------------
# LPIPS and TREPA: properties of the loss terms


def test_lpips_properties(tiny: dict[str, Path]) -> None:
    lp = load_lpips(tiny["vgg16"], tiny["lpips"])
    gen = torch.Generator().manual_seed(0)
    x, y = (torch.rand(3, 3, 32, 48, generator=gen) * 2 - 1 for _ in range(2))
    d = lp(x, y)
    assert tuple(d.shape) == (3, 1, 1, 1) and (d > 0).all()
    assert lp(x, x).abs().max() == 0
    torch.testing.assert_close(lp(y, x), d, rtol=1e-5, atol=1e-7)
    fake = x.clone().requires_grad_(True)
    lpips_loss(lp, fake, y).backward()
    assert fake.grad is not None and fake.grad[..., 16:, :].abs().sum() > 0
    assert fake.grad[..., :16, :].abs().max() == 0  # the upper half does not enter the loss
    assert all(p.grad is None for p in lp.parameters())


def test_lpips_loss_uses_the_lower_half_only(tiny: dict[str, Path]) -> None:
    lp = load_lpips(tiny["vgg16"], tiny["lpips"])
    gen = torch.Generator().manual_seed(1)
    fake, real = (torch.rand(4, 3, 33, 32, generator=gen) * 2 - 1 for _ in range(2))  # odd height: rows 16..32
    base = lpips_loss(lp, fake, real)
    changed = fake.clone()
    changed[..., :16, :] = torch.rand(4, 3, 16, 32, generator=gen)
    assert lpips_loss(lp, changed, real) == base
    changed[..., 16, :] = 1.0
    assert lpips_loss(lp, changed, real) != base
    manual = lp(fake[:, :, 16:], real[:, :, 16:]).flatten().mean()
    assert base == manual and base.ndim == 0


def test_trepa_loss_zero_for_identical_clips_and_grad_to_fake(tiny: dict[str, Path]) -> None:
    vit = load_videomae(tiny["videomae"], "tiny")
    gen = torch.Generator().manual_seed(2)
    real = torch.rand(1, 3, 16, 40, 40, generator=gen) * 2 - 1
    assert trepa_loss(vit, real, real.clone()) == 0
    fake = (real + 0.5 * torch.randn(real.shape, generator=gen)).requires_grad_(True)
    loss = trepa_loss(vit, fake, real)
    assert loss.ndim == 0 and loss > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    vit.gradient_checkpointing = True  # the official with_cp: recomputed blocks, the same gradient
    again = fake.detach().clone().requires_grad_(True)
    trepa_loss(vit, again, real).backward()
    torch.testing.assert_close(again.grad, fake.grad, rtol=1e-5, atol=1e-9)
    feats = trepa_features(vit, fake.detach())
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(1))


def test_trepa_features_match_golden_real_clip() -> None:
    """golden/train/train_step: the tiny official-class VideoMAE on the real ground-truth clips
    (``trepa_feats_real``), rebuilt from the stored PNG strip; suggested tolerance atol 1e-5."""
    import cv2
    import numpy as np
    from safetensors.torch import load_file

    io = load_file(str(shared_path("golden", "train", "train_step_io.safetensors")))
    weights = shared_path("golden", "train", "train_step_videomae_tiny_fp16.safetensors")
    strip = cv2.imread(str(shared_path("golden", "train", "train_clip_128.png")), cv2.IMREAD_COLOR)[:, :, ::-1]
    frames = torch.from_numpy(np.ascontiguousarray(strip)).reshape(75, 128, 128, 3).permute(0, 3, 1, 2)
    clips = torch.stack([frames[s : s + 16] for s in io["start_idx"].tolist()]).float()
    clips = (clips / 255.0 - 0.5) / 0.5  # (2, 16, 3, 128, 128), the dataset's Normalize([0.5], [0.5])
    vit = load_videomae(weights, "tiny", dtype=torch.float32)
    with torch.no_grad():
        feats = trepa_features(vit, clips.permute(0, 2, 1, 3, 4))
    torch.testing.assert_close(feats, io["trepa_feats_real"], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# registry


def test_registry_entries_and_roles() -> None:
    assert {"vgg16", "lpips", "videomae"} <= set(ROLES)
    reg = load_registry()
    vgg = reg.get("vgg16-imagenet").file("vgg16")
    assert vgg.url == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert (vgg.path, vgg.sha256, vgg.sha256_prefix) == ("vgg16-397923af.pth", None, "397923af")
    lin = reg.get("lpips-vgg").file("lpips")
    assert lin.wheel.member == "lpips/weights/v0.1/vgg.pth" and lin.sha256 is not None  # pinned in the wheel
    assert "vgg16-imagenet" in reg.get("lpips-vgg").requires
    vit = reg.get("videomae-v2-g").file("videomae")
    assert (vit.hub.repo, vit.hub.filename) == ("ByteDance/LatentSync-1.5", "auxiliary/vit_g_hybrid_pt_1200e_ssv2_ft.pth")
    assert vit.path == vit.hub.filename and vit.sha256 is None
    assert math.isclose(videomae_config().mlp_ratio, 48 / 11) and videomae_config().mlp_hidden_dim == 6144
    assert tuple(lin_heads().lin4.model[1].weight.shape) == (1, 512, 1, 1)


def test_freezing_the_vae_casts_it_without_a_false_warning() -> None:
    """diffusers' ModelMixin.to warns "modules that should be kept in float32: []" on every dtype cast; a frozen
    network of a train run is cast without it (it was in every run's log), and is frozen in eval mode."""
    import logging

    from diffusers import AutoencoderKL
    from diffusers.utils import logging as dlogging

    from lipsyncctl.checkpoints.tiny import TINY_VAE_CONFIG
    from lipsyncctl.training.networks import freeze

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    root = dlogging.get_logger("diffusers")
    root.addHandler(handler)
    try:
        AutoencoderKL(**TINY_VAE_CONFIG).to(dtype=torch.float16)  # the library's own cast still warns
        assert any("kept in float32" in r.getMessage() for r in records)
        records.clear()
        vae = freeze(AutoencoderKL(**TINY_VAE_CONFIG).train(), "cpu", torch.float16)
    finally:
        root.removeHandler(handler)
    assert not records
    assert not vae.training and {p.dtype for p in vae.parameters()} == {torch.float16}
    assert not any(p.requires_grad for p in vae.parameters())
