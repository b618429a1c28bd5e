"""Golden vector train/3: one official stage-2 UNet training step (``scripts/train_unet.py main()``)
through the project's training code: :func:`lipsyncctl.training.step.unet_micro_step` with the official
random draws, then backward, ``clip_grad_norm_(1.0)`` and one AdamW step with the settings the loop builds,
against the sidecar's tolerances.

Everything is rebuilt from the vector's folder: the batch (each tensor checked against its SHA-256), the tiny
stage-2 UNet (``archs.load_unet_config("tiny")`` = ``unet_forward.json``'s), the tiny VAE (diffusers
``AutoencoderKL``, fp16 file used as float32), the tiny StableSyncNet, LPIPS-VGG (hash-generated VGG16 through
the strict loader, and lpips 0.1.4's ``vgg.pth``), the tiny VideoMAE-v2. Memory layout as in the official step
(the sidecar's note): gt and masked frames reach the VAE contiguous, the reference frames channels-last.

The LPIPS heads (``vgg.pth``, 7 KB) are not in the vector: they are the lpips wheel's file (sha256 in the
sidecar), found as the installed model ``lpips-vgg`` (``<models dir>/lpips-vgg/vgg.pth``) or in an installed
``lpips`` package. Without them the step runs with the LPIPS term off, and only what does not depend on it
is compared (latents, prediction, recon / sync / TREPA terms); the rest skips with the reason.

Timing: the full-width VGG16 of LPIPS on 2x32 images of 64x128 dominates (about 9 s CPU forward, 4 s
backward); the step costs about 40 s of CPU in all. The per-term gradient norms need four more backward
passes (about 45 s): they are the opt-in ``slow`` test, which also runs with gradient checkpointing on (as
the loop does).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch

from tests.conftest import SHARED
from tests.golden.hashweights import hash_tensor, sha256_f32

GOLDEN = SHARED / "golden"
TRAIN = GOLDEN / "train"
SIDECAR = TRAIN / "train_step.json"

pytestmark = pytest.mark.skipif(not SIDECAR.is_file(), reason=f"golden vector not found: {SIDECAR}")

TERMS = ("recon", "sync", "lpips", "trepa")  # the order of term_grad_norms_per_tensor
TRAINABLE_TENSORS, TRAINABLE_PARAMS = 572, 735_680


# --------------------------------------------------------------------------------------------------
# the vector's data


@pytest.fixture(scope="module")
def sidecar() -> dict[str, Any]:
    return json.loads(SIDECAR.read_text())


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(TRAIN / "train_step_io.safetensors")


def _batch_spec(sidecar: dict[str, Any]) -> dict[str, Any]:
    return next(v for k, v in sidecar["inputs"].items() if k.startswith("batch"))


def lpips_lin_file(sidecar: dict[str, Any]) -> Path | None:
    """lpips 0.1.4's ``weights/v0.1/vgg.pth`` with the vector's sha256, or None."""
    found = re.search(r"sha256 ([0-9a-f]{64})", sidecar["config"]["lpips"]["lin_weights"])
    assert found is not None
    digest, candidates = found.group(1), []
    from lipsyncctl.errors import LipsyncError

    try:
        from lipsyncctl.pipeline.networks import resolve_model_file

        candidates.append(resolve_model_file("lpips-vgg", "lpips"))
    except LipsyncError:
        pass
    spec = importlib.util.find_spec("lpips")  # a top-level package: located, not imported
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth")
    for path in candidates:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
            return path
    return None


def build_batch(io: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The two ``UNetDataset`` items as the sidecar builds them, in the step's batch layout."""
    import cv2
    from safetensors.torch import load_file

    strip = cv2.imread(str(TRAIN / "train_clip_128.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    hwc = torch.from_numpy(np.ascontiguousarray(strip)).reshape(75, 128, 128, 3)

    def clip(starts: torch.Tensor) -> torch.Tensor:  # (B, F, 3, H, W): a permuted (channels-last) view
        u8 = torch.stack([hwc[s : s + 16] for s in starts.tolist()]).permute(0, 1, 4, 2, 3)
        return (u8 / 255.0 - 0.5) / 0.5

    gt = clip(io["start_idx"]).contiguous()      # official: contiguous NCHW at the VAE
    ref = clip(io["ref_start_idx"])              # official: channels-last at the VAE (process_images)
    assert ref.stride(2) == 1
    mask64 = torch.from_numpy(io["mask_128_u8"].numpy() / 255.0)  # float64, as load_fixed_mask
    masked = (gt.double() * mask64).float()      # the dataset's float64 product, cast at the step
    features = load_file(GOLDEN / "whisper_features.safetensors")["features"]  # (150, 5, 384)
    whisper = features[io["audio_embeds_feature_index"]].reshape(2, 16, 50, 384)
    return {"gt": gt, "masked": masked, "ref": ref, "mask": mask64.float()[None, None].expand(2, 1, -1, -1),
            "whisper": whisper, "mel": io["mel"]}


def official_draws(io: dict[str, torch.Tensor]) -> Any:
    """The stored draws as :class:`~lipsyncctl.training.step.Draws`; the noise mixed by the library's
    :func:`~lipsyncctl.training.noise.mixed_noise` from the two stored ``randn`` draws (shared first)."""
    from lipsyncctl.training import noise
    from lipsyncctl.training.step import Draws

    eps = torch.stack([io["vae_eps_gt"], io["vae_eps_masked"], io["vae_eps_ref"]])  # rows b*16 + f
    eps = eps.reshape(3, 2, 16, 4, 16, 16)
    mixed = []
    for b in range(2):
        served = iter([io["noise_shared_draw"][b], io["noise_ind_draw"][b]])

        def randn(shape: tuple[int, ...], generator: Any = None, dtype: Any = None,
                  _s: Any = served) -> torch.Tensor:
            value = next(_s)
            assert tuple(shape) == tuple(value.shape)
            return value.clone()

        with mock.patch.object(noise.torch, "randn", randn):
            mixed.append(noise.mixed_noise((4, 16, 16, 16), 1.0, torch.Generator()))
    return Draws(eps, torch.stack(mixed), io["timesteps"].clone())


def build_networks(sidecar: dict[str, Any], lin: Path | None, tmp: Path) -> Any:
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    from lipsyncctl.checkpoints import archs
    from lipsyncctl.checkpoints.aux_train import load_lpips, load_videomae
    from lipsyncctl.nets.syncnet import StableSyncNet
    from lipsyncctl.nets.unet import UNet3DConditionModel
    from lipsyncctl.training.networks import TrainNetworks

    def f32(path: Path) -> dict[str, torch.Tensor]:
        return {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}

    unet = UNet3DConditionModel(archs.load_unet_config("tiny"))
    unet.load_state_dict(f32(GOLDEN / "unet_tiny_weights.safetensors"), strict=True)
    vae = AutoencoderKL(**sidecar["config"]["vae"]["config"])
    vae.load_state_dict(f32(TRAIN / "train_step_vae_tiny_fp16.safetensors"), strict=True)
    syncnet = StableSyncNet(json.loads((GOLDEN / "stable_syncnet_tiny.json").read_text())["config"])
    syncnet.load_state_dict(f32(GOLDEN / "stable_syncnet_tiny_weights_fp16.safetensors"), strict=True)
    videomae = load_videomae(TRAIN / "train_step_videomae_tiny_fp16.safetensors", "tiny", dtype=torch.float32)
    aux: dict[str, torch.nn.Module] = {"syncnet": syncnet.eval().requires_grad_(False), "videomae": videomae}
    if lin is not None:
        vgg = {}
        for name, spec in sidecar["config"]["lpips"]["vgg16_table"].items():
            value = hash_tensor(name, spec["shape"], float.fromhex(spec["scale_hex"]))
            assert sha256_f32(value) == spec["sha256_f32"], name
            vgg[name] = torch.from_numpy(value)
        torch.save(vgg, tmp / "vgg16-397923af.pth")  # torchvision's layout (features only)
        aux["lpips"] = load_lpips(tmp / "vgg16-397923af.pth", lin)
    return TrainNetworks(unet.train(), vae=vae.eval().requires_grad_(False), aux=aux)


def stage2_config(lpips: bool) -> Any:
    """The official stage-2 preset at the vector's size (128 px, batch 2, the tiny UNet)."""
    from lipsyncctl.training.config import resolve_train_config

    sets = ["model.resolution=128", "model.unet_config=tiny", "data.batch_size=2"]
    cfg = resolve_train_config("stage2", sets=sets + ([] if lpips else ["loss.lpips=0"]))
    assert cfg.data.num_frames == 16 and cfg.loss.mixed_noise_alpha == 1.0
    assert (cfg.loss.recon, cfg.loss.sync, cfg.loss.trepa) == (1.0, 0.05, 10.0)
    assert cfg.loss.lpips == (0.1 if lpips else 0.0)
    assert cfg.model.trainable == ("motion_modules.", "attentions.")
    return cfg


def run_forward(sidecar: dict[str, Any], io: dict[str, torch.Tensor], tmp: Path, *,
                checkpointing: bool = False) -> dict[str, Any]:
    """The networks, the trainable parameters and the step's forward (losses with the kept tensors)."""
    from lipsyncctl.training import noise
    from lipsyncctl.training.step import unet_micro_step
    from lipsyncctl.training.trainable import select_trainable

    lin = lpips_lin_file(sidecar)
    cfg = stage2_config(lin is not None)
    nets = build_networks(sidecar, lin, tmp)
    trainable = select_trainable(nets.model, cfg.model.trainable)
    if checkpointing:  # as the loop does with run.grad_checkpointing (the official step has it on)
        nets.model.enable_gradient_checkpointing()
        nets.vae.enable_gradient_checkpointing()
    seen: dict[str, Any] = {}  # the frozen networks' outputs inside the step (forward hooks: no extra work)
    hooks = [nets.aux["syncnet"].register_forward_hook(
        lambda m, a, out: seen.__setitem__("sync", tuple(o.detach() for o in out)))]
    if "lpips" in nets.aux:
        hooks.append(nets.aux["lpips"].register_forward_hook(
            lambda m, a, out: seen.__setitem__("lpips", out.detach())))
    batch = build_batch(io)
    losses = unet_micro_step(nets, batch, cfg, alphas=noise.alphas_cumprod(), device=torch.device("cpu"),
                             autocast=nullcontext, draws=official_draws(io), keep=True)
    for h in hooks:
        h.remove()
    return {"cfg": cfg, "nets": nets, "trainable": trainable, "batch": batch, "losses": losses, "seen": seen,
            "lpips": lin is not None}


@pytest.fixture(scope="module")
def step(sidecar: dict[str, Any], io: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Any]:
    """One whole step: forward, backward, clip, AdamW (the loop's settings); results detached."""
    from lipsyncctl.training.perceptual import trepa_features

    run = run_forward(sidecar, io, tmp_path_factory.mktemp("train_step"))
    cfg, losses, nets = run["cfg"], run["losses"], run["nets"]
    tensors = {k: v.detach() for k, v in losses.tensors.items()}
    with torch.no_grad():
        run["trepa_fake"] = trepa_features(nets.aux["videomae"], tensors["decoded"])
        run["trepa_real"] = trepa_features(nets.aux["videomae"], run["batch"]["gt"].permute(0, 2, 1, 3, 4))
    params = [p for _, p in run["trainable"]]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay)
    optimizer.zero_grad()
    losses.total.backward()
    run["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm))
    run["grads"] = {n: p.grad.detach().clone() for n, p in run["trainable"]}
    optimizer.step()
    run["updated"] = {n: p.detach().clone() for n, p in run["trainable"]}
    run["tensors"] = tensors
    run["values"] = {k: float(getattr(losses, k).detach()) for k in TERMS if getattr(losses, k) is not None}
    run["values"]["loss"] = float(losses.total.detach())
    run["losses"] = None  # free the graph
    return run


def _need_lpips(step: dict[str, Any]) -> None:
    if not step["lpips"]:
        pytest.skip("LPIPS heads not installed (lpips 0.1.4 weights/v0.1/vgg.pth: `lipsyncctl models fetch "
                    "lpips-vgg` or an installed lpips package); the step ran without the LPIPS term")


def _within(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0) -> float:
    err = (actual - expected).abs()
    bad = err > atol + rtol * expected.abs()
    assert not bool(bad.any()), f"{int(bad.sum())} beyond atol {atol} rtol {rtol}; max {float(err.max()):.3g}"
    return float(err.max())


# --------------------------------------------------------------------------------------------------
# tests


def test_the_batch_is_the_official_one(sidecar: dict[str, Any], io: dict[str, torch.Tensor]) -> None:
    from lipsyncctl.faces.mask import mouth_mask_u8

    digests = _batch_spec(sidecar)["sha256_float32"]
    batch = build_batch(io)
    per_frame_mask = batch["mask"][:, None].expand(2, 16, 1, 128, 128)
    for name, value in [("gt_pixel_values", batch["gt"]), ("masked_pixel_values", batch["masked"]),
                        ("masks", per_frame_mask), ("ref_pixel_values", batch["ref"]), ("mel", batch["mel"]),
                        ("audio_embeds", batch["whisper"])]:
        assert value.dtype == torch.float32
        assert sha256_f32(value.contiguous().numpy()) == digests[name], name
    # the stored mask is the project's own load_fixed_mask at 128 px (Lanczos-4 of the bundled mask.png)
    assert np.array_equal(mouth_mask_u8(128), io["mask_128_u8"].numpy())


def test_trainable_selection_is_the_official_rule(sidecar: dict[str, Any], step: dict[str, Any]) -> None:
    names = [n for n, _ in step["trainable"]]
    assert names == sidecar["outputs"]["trainable_names"]
    assert len(names) == TRAINABLE_TENSORS
    assert sum(p.numel() for _, p in step["trainable"]) == TRAINABLE_PARAMS


def test_the_draws_mix_like_the_official_noise(io: dict[str, torch.Tensor]) -> None:
    draws = official_draws(io)
    assert torch.equal(draws.noise, io["noise"])  # sqrt(1/2) shared frame-0 part + sqrt(1/2) independent part
    assert draws.timesteps.tolist() == [822, 983]


def test_latents_and_prediction_match(io: dict[str, torch.Tensor], step: dict[str, Any]) -> None:
    t = step["tensors"]
    # suggested tolerances; observed here: 2.0e-6, 2.4e-6, 3.0e-7, exact, exact, 3.6e-7, 3.6e-6, 4.8e-5
    for name in ("gt_latents", "masked_latents", "ref_latents"):
        _within(t[name], io[name], 3e-4)
    for name in ("latent_masks", "noise", "noisy_latents"):
        _within(t[name], io[name], 1e-5)
    _within(t["pred_noise"], io["pred_noise"], 1e-4)
    _within(t["pred_latents"], io["pred_latents"], 1e-3, 1e-5)  # values to |63| after the x13.3 at t = 983
    assert t["decoded"].shape == (2, 3, 16, 128, 128)


def test_loss_terms_match(io: dict[str, torch.Tensor], step: dict[str, Any]) -> None:
    from lipsyncctl.nets.syncnet import sync_cosine

    values = step["values"]
    # observed: recon exact, sync 6e-8, trepa 1.2e-10 (atol 1e-5, rtol 1e-5); embeddings / features <= 2.5e-7
    for name in ("recon", "sync", "trepa"):
        expected = float(io[f"{name}_loss"])
        assert abs(values[name] - expected) <= 1e-5 + 1e-5 * abs(expected), name
    vision, audio = step["seen"]["sync"]
    _within(vision, io["sync_vision_embeds"], 1e-5)
    _within(audio, io["sync_audio_embeds"], 1e-5)
    _within(sync_cosine(vision, audio), io["sync_cos"], 1e-5)
    _within(step["trepa_fake"], io["trepa_feats_fake"], 1e-5)
    _within(step["trepa_real"], io["trepa_feats_real"], 1e-5)


def test_lpips_and_total_loss_match(io: dict[str, torch.Tensor], step: dict[str, Any]) -> None:
    _need_lpips(step)
    values = step["values"]
    # observed: lpips 3e-8, loss 1.2e-7 (atol 1e-5, rtol 1e-5); per-image LPIPS <= 3e-8
    for name in ("lpips", "loss"):
        key = "loss" if name == "loss" else f"{name}_loss"
        assert abs(values[name] - float(io[key])) <= 1e-5 + 1e-5 * abs(float(io[key])), name
    _within(step["seen"]["lpips"].flatten(), io["lpips_per_image"], 1e-5)  # row = b*16 + f


def test_gradients_match_after_clipping(io: dict[str, torch.Tensor], step: dict[str, Any]) -> None:
    _need_lpips(step)
    # pre-clip norm 1.3128 (> 1: clipping acts); observed relative error 9e-8 (rtol 1e-5)
    assert math.isclose(step["grad_norm"], float(io["grad_norm_preclip"]), rel_tol=1e-5, abs_tol=0)
    worst = 0.0
    for name, grad in step["grads"].items():
        ref = io[f"grad.{name}"]
        worst = max(worst, _within(grad, ref, 1e-6, 1e-4))  # observed max 8.4e-8 (|g| <= 0.028)
        norm = float(ref.norm())
        if norm > 0:
            assert float((grad - ref).norm()) <= 1e-3 * norm, name  # observed per tensor <= 6.7e-6
    total = math.sqrt(sum(float(g.double().square().sum()) for g in step["grads"].values()))
    assert abs(total - 0.9999993088) <= 1e-6  # the sidecar's post-clip norm


def test_adamw_update_matches(io: dict[str, torch.Tensor], step: dict[str, Any]) -> None:
    _need_lpips(step)
    # every element within 2 lr (Adam's first step is ~lr * sign(g)); all but 1e-4 of them within 2e-6.
    # Observed: max 8.0e-7, none above 2e-6.
    far, total = 0, 0
    for name, value in step["updated"].items():
        diff = (value - io[f"updated.{name}"]).abs()
        assert float(diff.max()) <= 2.1e-5, name
        far += int((diff > 2e-6).sum())
        total += diff.numel()
    assert total == TRAINABLE_PARAMS and far <= 1e-4 * total


@pytest.mark.slow
def test_term_gradient_norms_with_checkpointing(sidecar: dict[str, Any], io: dict[str, torch.Tensor],
                                                tmp_path: Path) -> None:
    """Each weighted term's gradient norm per trainable tensor (recon dominates the total: sync is 2e-4 and
    LPIPS 2e-3 of it, so a wrong backward in those two shows only here), with gradient checkpointing on in the
    UNet and the VAE, as the loop runs; then the total gradient once more."""
    run = run_forward(sidecar, io, tmp_path, checkpointing=True)
    _need_lpips(run)
    losses, cfg = run["losses"], run["cfg"]
    params = [p for _, p in run["trainable"]]
    reference = io["term_grad_norms_per_tensor"]
    # suggested rtol 1e-4 recon / trepa, 1e-2 sync / lpips; observed per tensor 2.3e-6, 1.7e-3, 1.1e-3, 1.5e-6
    rtols = {"recon": 1e-4, "sync": 1e-2, "lpips": 1e-2, "trepa": 1e-4}
    for row, term in enumerate(TERMS):
        weighted = getattr(losses, term) * getattr(cfg.loss, term)
        grads = torch.autograd.grad(weighted, params, retain_graph=True, allow_unused=True)
        zero = torch.zeros((), dtype=torch.float64)
        norms = torch.stack([zero if g is None else torch.linalg.vector_norm(g.double()) for g in grads])
        rel = (norms - reference[row]).abs() / reference[row]
        assert float(rel.max()) <= rtols[term], f"{term}: max relative error {float(rel.max()):.3g}"
        total = float(norms.norm())
        assert math.isclose(total, float(io["term_grad_norms_total"][row]), rel_tol=rtols[term]), term
    losses.total.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm))
    assert math.isclose(norm, float(io["grad_norm_preclip"]), rel_tol=1e-5)
    for name, p in run["trainable"]:
        _within(p.grad, io[f"grad.{name}"], 1e-6, 1e-4)
