"""Paste-back measurements shared by tests/unit/test_faces_blend.py and tests/bench/bench_blend.py.

* the official support: pixels the official restore may change (its matte > 0);
* two boundary bands: the feathered edge of that support, and the mouth-mask edge warped into the frame;
* seam visibility: mean |gradient magnitude(out) - gradient magnitude(source)| over a band (Sobel on
  luma, in 8-bit levels); 0 means the paste left the edge structure of the source untouched;
* PSNR of a region against the source;
* a generator-like perturbation of an aligned face inside the mouth region.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from lipsyncctl.faces.align import FaceAligner


def official_weight(aligner: FaceAligner, frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(H, W) uint8 official paste weight (the pipeline's matte): 0 exactly where the source is kept."""
    white = np.full_like(frame, 255)
    black = -torch.ones((3, aligner.resolution, aligner.resolution))
    return (255 - aligner.restore(white, black, matrix))[..., 0]


def mouth_band(aligner: FaceAligner, frame_hw: tuple[int, int], matrix: np.ndarray, keep_mask: np.ndarray,
               radius: int = 3) -> np.ndarray:
    """(H, W) bool: pixels within ``radius`` of the mouth-mask edge, warped from the crop into the frame."""
    w, h = aligner.crop_wh
    regen = cv2.resize((1.0 - keep_mask).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    inv = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    warped = cv2.warpAffine(regen, inv, (frame_hw[1], frame_hw[0]), flags=cv2.INTER_LINEAR)
    edge = cv2.morphologyEx((warped > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return cv2.dilate(edge, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)) > 0


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 Sobel gradient magnitude of the luma of an (H, W, 3) uint8 RGB image."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def seam(out: np.ndarray, src: np.ndarray, band: np.ndarray) -> float:
    """Mean absolute gradient-magnitude difference between ``out`` and ``src`` over ``band``."""
    if not band.any():
        return float("nan")
    return float(np.abs(gradient_magnitude(out) - gradient_magnitude(src))[band].mean())


def psnr(out: np.ndarray, src: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB, peak 255) of ``out`` vs ``src`` over the (H, W) bool ``region``; inf if identical."""
    err = (out.astype(np.float64) - src.astype(np.float64))[region]
    mse = float((err * err).mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def perturb(reference: torch.Tensor, keep_mask: np.ndarray, rng: np.random.Generator,
            shift: tuple[float, float, float] = (0.07, 0.03, -0.04), blur_sigma: float = 1.2,
            noise: float = 0.02) -> torch.Tensor:
    """What a generator does to the mouth region: a colour/brightness shift (per RGB channel, in
    [-1, 1] units), a Gaussian blur and noise, kept only where ``keep_mask`` is 0 (the pipeline pastes
    the reference back elsewhere). ``reference`` (3, res, res) in [-1, 1]; returns the same shape."""
    ref = reference.numpy().transpose(1, 2, 0).astype(np.float32)
    gen = cv2.GaussianBlur(ref, (0, 0), blur_sigma) + np.asarray(shift, np.float32)
    gen = gen + rng.normal(0.0, noise, gen.shape).astype(np.float32)
    keep = np.asarray(keep_mask, np.float32)[..., None]
    out = np.clip(gen, -1, 1) * (1 - keep) + ref * keep
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def to_unit(face_u8: np.ndarray) -> torch.Tensor:
    """(res, res, 3) uint8 aligned face -> (3, res, res) float32 in [-1, 1] like the pipeline's ``ref``."""
    return (torch.from_numpy(np.ascontiguousarray(face_u8)).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5
