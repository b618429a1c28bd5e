"""Image operations behind alignment and paste-back, written to match the official numerics.

The official LatentSync code warps with kornia (``warp_affine`` with ``align_corners=True``, a
constant fill done as ``grid_sample(img) + (1 - grid_sample(ones)) * fill``), erodes with
``kornia.morphology.erosion`` and feathers with ``kornia.filters.gaussian_blur2d``. These are
re-expressed here with plain torch ops in float32 so that the results agree with the golden vectors
(``shared/golden/face_align_restore.json``) without depending on kornia; on the CPU the feather's Gaussian blur
runs through OpenCV's separable filter (same kernel and border, equal up to the order of the float32 sums). ``cv2.warpAffine`` is not
used on purpose: its fixed-point bilinear weights differ from ``grid_sample`` by a level here and there.

Conventions: images are float tensors ``(B, C, H, W)``; affine matrices are ``(2, 3)`` and map
*source pixel* coordinates to *destination pixel* coordinates, pixel centres on integers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _pixel_to_normalised(height: int, width: int) -> torch.Tensor:
    """3x3 matrix taking pixel coordinates to ``[-1, 1]`` (``align_corners=True`` convention)."""
    sx = 2.0 / (width - 1) if width > 1 else 2.0 / 1e-14
    sy = 2.0 / (height - 1) if height > 1 else 2.0 / 1e-14
    return torch.tensor([[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float32)


def to_homogeneous(matrix: torch.Tensor) -> torch.Tensor:
    """``(2, 3)`` -> ``(3, 3)`` by appending ``[0, 0, 1]``."""
    bottom = torch.tensor([[0.0, 0.0, 1.0]], dtype=matrix.dtype, device=matrix.device)
    return torch.cat([matrix, bottom], dim=0)


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of a ``(2, 3)`` affine map (through its 3x3 homogeneous form), same dtype."""
    inv = torch.linalg.inv(to_homogeneous(matrix.to(torch.float32)))
    return inv[:2].to(matrix.dtype)


def sampling_grid(
    matrix: torch.Tensor,
    src_hw: tuple[int, int],
    dst_hw: tuple[int, int],
    box: tuple[int, int, int, int] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``grid_sample`` grid ``(1, h, w, 2)`` for warping a ``src_hw`` image by ``matrix``.

    ``matrix`` (2, 3) maps source pixels to destination pixels; every destination pixel samples the
    source at ``matrix^-1 (x, y)``. Computed like kornia 0.8 + ``F.affine_grid``: normalise the
    homography to both images' ``[-1, 1]`` frames in float32, invert it, multiply the base grid.
    ``box = (x0, y0, x1, y1)`` returns only that part of the destination, with exactly the values
    the full grid has there (so a cropped warp equals the crop of the full warp bit for bit).
    ``device``: where the grid is built (the 3x3 algebra stays on the CPU; a GPU's float32 product may
    differ from the CPU's in the last bit).
    """
    src_h, src_w = src_hw
    dst_h, dst_w = dst_hw
    m3 = to_homogeneous(matrix.to(torch.float32))
    src_pix_from_norm = torch.linalg.inv(_pixel_to_normalised(src_h, src_w))
    dst_norm_from_src_norm = _pixel_to_normalised(dst_h, dst_w) @ (m3 @ src_pix_from_norm)
    theta = torch.linalg.inv(dst_norm_from_src_norm)[None, :2, :].to(device)
    x0, y0, x1, y1 = box if box is not None else (0, 0, dst_w, dst_h)
    xs = torch.linspace(-1, 1, dst_w, dtype=torch.float32, device=device)[x0:x1]
    ys = torch.linspace(-1, 1, dst_h, dtype=torch.float32, device=device)[y0:y1]
    base = torch.empty((1, y1 - y0, x1 - x0, 3), dtype=torch.float32, device=device)
    base[..., 0] = xs
    base[..., 1] = ys[:, None]
    base[..., 2] = 1.0
    grid = base.view(1, -1, 3).bmm(theta.transpose(1, 2))
    return grid.view(1, y1 - y0, x1 - x0, 2)


def warp_affine(
    image: torch.Tensor,
    matrix: torch.Tensor,
    dst_hw: tuple[int, int],
    fill: float | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Bilinear affine warp of ``image`` (B, C, H, W) float32 into ``dst_hw``.

    ``fill=None`` pads with zeros; a number fills the outside with that value, blended at the
    border exactly like kornia's ``padding_mode="fill"`` (partial taps get ``(1 - coverage) * fill``).
    ``box`` restricts the output to ``(x0, y0, x1, y1)`` of the destination (see :func:`sampling_grid`).
    Returns (B, C, h, w) float32 (the box's size when given).
    """
    grid = sampling_grid(matrix, (image.shape[-2], image.shape[-1]), dst_hw, box)
    return sample(image, grid, fill)


def sample(image: torch.Tensor, grid: torch.Tensor, fill: float | None = None,
           coverage: torch.Tensor | None = None) -> torch.Tensor:
    """``grid_sample`` (bilinear, ``align_corners=True``) with zero or constant ``fill`` padding.

    ``coverage``: ``sample(ones, grid)`` (``(B or 1, 1, h, w)``) when the caller has it already (the fill
    weight; the same values this would compute)."""
    grid = grid.to(image.device).expand(image.shape[0], -1, -1, -1)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if fill is None:
        return out
    if coverage is not None:
        return out + (1 - coverage.to(image.device)) * fill
    # A broadcast view of one 1.0 (no frame-sized allocation; grid_sample reads the same values).
    ones = torch.ones((), dtype=image.dtype, device=image.device).expand(
        image.shape[0], 1, image.shape[-2], image.shape[-1]
    )
    coverage = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out + (1 - coverage) * fill


def erode_2x2(mask: torch.Tensor) -> torch.Tensor:
    """kornia ``erosion`` with a 2x2 flat kernel: ``out[y, x] = min(in[y-1:y+1, x-1:x+1])``.

    Taps outside the image are ignored (kornia's geodesic border). ``mask`` (B, C, H, W).
    """
    # min of two shifted copies, twice (exact: a minimum rounds nothing); was -max_pool2d(-pad(inf)).
    out = mask.clone()
    torch.minimum(out[..., 1:, :], mask[..., :-1, :], out=out[..., 1:, :])
    rows = out.clone()
    torch.minimum(out[..., :, 1:], rows[..., :, :-1], out=out[..., :, 1:])
    return out


def erode_rect(mask: torch.Tensor, size: int) -> torch.Tensor:
    """OpenCV's ``erode`` with a ``size x size`` kernel of ones (its default anchor, the kernel's centre
    ``size // 2``, so taps ``-(size // 2) .. size - 1 - size // 2``; taps outside the image ignored) in torch,
    on the tensor's device: the minimum over rows, then over columns (a minimum rounds nothing: equal to
    OpenCV's bit for bit). ``mask`` (B, C, H, W) float."""
    if size <= 1:
        return mask
    before, after = size // 2, size - 1 - size // 2
    out = -F.max_pool2d(F.pad(-mask, (before, after, 0, 0), value=-math.inf), (1, size), stride=1)
    return -F.max_pool2d(F.pad(-out, (0, 0, before, after), value=-math.inf), (size, 1), stride=1)


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """Normalised ``exp(-x^2 / 2 sigma^2)`` for ``x = -(size//2) .. size//2`` (float32, odd ``size``)."""
    x = torch.arange(size, dtype=torch.float32) - size // 2
    kernel = torch.exp(-x.pow(2.0) / (2 * torch.tensor(sigma, dtype=torch.float32).pow(2.0)))
    return kernel / kernel.sum()


def gaussian_blur(image: torch.Tensor, size: int, sigma: float, exact: bool = False) -> torch.Tensor:
    """Separable Gaussian blur with reflect borders (kornia ``gaussian_blur2d``); (B, C, H, W).

    On the CPU, float32 planes go through OpenCV's separable filter with the same kernel and border (reflect
    without repeating the edge, ``BORDER_REFLECT_101``): 7-13x faster than torch's grouped convolution for the
    paste-back's 31-51 tap kernels (14 ms of a 1080p frame's paste before), and equal to it up to the order of
    the float32 sums (a few units in the last place; measured 5e-7 at most, as float32 kornia vs float16 CUDA
    already differ upstream). ``exact``: torch's convolution (kornia's arithmetic) everywhere."""
    if size <= 1:
        return image
    kernel = gaussian_kernel1d(size, sigma).to(image.device, image.dtype)
    if not exact and image.device.type == "cpu" and image.dtype == torch.float32 and min(image.shape[-2:]) > size // 2:
        import cv2

        k = kernel.numpy()
        planes = image.reshape(-1, *image.shape[-2:]).numpy()
        out = np.stack([cv2.sepFilter2D(np.ascontiguousarray(p), cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT_101)
                        for p in planes])
        return torch.from_numpy(out).reshape(image.shape)
    channels = image.shape[1]
    pad = size // 2
    horizontal = kernel.view(1, 1, 1, size).expand(channels, 1, 1, size)
    vertical = kernel.view(1, 1, size, 1).expand(channels, 1, size, 1)
    out = F.conv2d(F.pad(image, (pad, pad, 0, 0), mode="reflect"), horizontal, groups=channels)
    return F.conv2d(F.pad(out, (0, 0, pad, pad), mode="reflect"), vertical, groups=channels)


def resize_bicubic_antialias(image: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """torchvision's tensor ``resize(BICUBIC, antialias=True)``, incl. its same-size shortcut."""
    if tuple(image.shape[-2:]) == tuple(size_hw):
        return image
    squeeze = image.dim() == 3
    batch = image[None] if squeeze else image
    out = F.interpolate(batch, size=size_hw, mode="bicubic", align_corners=False, antialias=True)
    return out[0] if squeeze else out


def warped_bounds(
    matrix_inv: np.ndarray, src_wh: tuple[int, int], dst_wh: tuple[int, int], margin: int
) -> tuple[int, int, int, int]:
    """Integer box ``(x0, y0, x1, y1)`` in the destination covering the source rectangle mapped by
    ``matrix_inv`` (source -> destination), grown by ``margin`` and clipped to the destination."""
    w, h = src_wh
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64)
    pts = corners @ np.asarray(matrix_inv, dtype=np.float64).T
    x0 = max(int(math.floor(pts[:, 0].min())) - margin, 0)
    y0 = max(int(math.floor(pts[:, 1].min())) - margin, 0)
    x1 = min(int(math.ceil(pts[:, 0].max())) + margin + 1, dst_wh[0])
    y1 = min(int(math.ceil(pts[:, 1].max())) + margin + 1, dst_wh[1])
    return x0, y0, max(x1, x0), max(y1, y0)
