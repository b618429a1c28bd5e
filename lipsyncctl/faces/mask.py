"""Mouth mask, masked image and reference image, as the official pipeline builds them.

Reproduces ``load_fixed_mask``, ``ImageProcessor.prepare_masks_and_masked_images`` (inference call,
``affine_transform=False``) and the latent mask of ``LipsyncPipeline.prepare_mask_latents``
(LATENTSYNC.md section 1.7; golden vector 5). Mask convention: 1 = keep, 0 = regenerate; masked
pixels are 0 (mid-grey in [-1, 1]). At inference the reference image is the unmasked aligned face.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from lipsyncctl import paths
from lipsyncctl.errors import MissingModelError

DEFAULT_MASK = paths.OFFICIAL_MASK


def mask_path(name: str | Path = DEFAULT_MASK) -> Path:
    """The name of a mask bundled in ``lipsyncctl/data`` (default: the official one), or a file path: a bare name
    is the bundled file when there is one (a ``mask.png`` in the current folder is ``./mask.png``: never guessed)."""
    found = paths.bundled(name) if isinstance(name, str) else None
    if found is not None:
        return found
    p = Path(name)
    if p.is_file():
        return p
    raise MissingModelError(
        f"mouth mask not found: {name}",
        hint=f"pass a PNG path or one of {sorted(q.name for q in paths.DATA_DIR.glob('mask*.png'))}",
    )


@lru_cache(maxsize=8)
def _mask_u8(path: str, resolution: int) -> np.ndarray:
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise MissingModelError(f"cannot read mouth mask {path} as an image",
                                hint="give a PNG: white where the face is kept, black the mouth region regenerated")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    out = image[..., 0].copy()
    out.setflags(write=False)
    return out


def mouth_mask_u8(resolution: int, name: str | Path = DEFAULT_MASK) -> np.ndarray:
    """The mask resized like upstream (OpenCV Lanczos-4 on the RGB PNG): ``(res, res)`` uint8, read-only.

    Upstream's float mask is exactly this ``/ 255.0`` on all three channels."""
    return _mask_u8(str(mask_path(name)), int(resolution))


def mouth_mask(resolution: int, name: str | Path = DEFAULT_MASK) -> np.ndarray:
    """``load_fixed_mask``: float64 ``(res, res)`` in [0, 1] (1 = keep). Binary at 256; at 512 the
    Lanczos resize leaves 9186 intermediate edge values, as upstream."""
    return mouth_mask_u8(resolution, name) / 255.0


def prepare_masked_images(faces, mask: np.ndarray, dtype=None):
    """Official ``prepare_masks_and_masked_images`` for aligned faces.

    Args:
        faces: uint8 ``(N, 3, res, res)`` (numpy or torch), the aligned crops in RGB.
        mask: ``(res, res)`` float mask from :func:`mouth_mask`.
        dtype: torch dtype of the outputs (default float32). The masked image is computed in float64
            like upstream and then cast.

    Returns ``(ref_pixel_values, masked_pixel_values, masks)``: ``(N, 3, res, res)`` in [-1, 1],
    the same times the mask (0 where the mouth is regenerated), and ``(N, 1, res, res)``.
    """
    import torch

    dtype = dtype or torch.float32
    faces_t = torch.as_tensor(faces)
    if faces_t.dim() != 4 or faces_t.shape[1] != 3:
        raise ValueError(f"faces must be (N, 3, res, res), got {tuple(faces_t.shape)}")
    if tuple(faces_t.shape[-2:]) != tuple(mask.shape):
        raise ValueError(f"faces {tuple(faces_t.shape[-2:])} and mask {mask.shape} differ in size")
    ref = (faces_t.to(torch.float32) / 255.0 - 0.5) / 0.5
    mask_t = torch.from_numpy(np.asarray(mask, dtype=np.float64)).to(faces_t.device)
    masked = ref.to(torch.float64) * mask_t
    masks = mask_t[None, None].expand(faces_t.shape[0], 1, -1, -1)
    return ref.to(dtype), masked.to(dtype), masks.to(dtype)


def latent_mask(masks, latent_hw: tuple[int, int] | None = None):
    """``prepare_mask_latents``: nearest downsampling ``(N, 1, res, res) -> (N, 1, res/8, res/8)``
    (keeps rows/cols 0, 8, 16, ...)."""
    import torch
    import torch.nn.functional as F

    masks = torch.as_tensor(masks)
    size = latent_hw or (masks.shape[-2] // 8, masks.shape[-1] // 8)
    return F.interpolate(masks, size=size)
