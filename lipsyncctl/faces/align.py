"""The official LatentSync face alignment and paste-back (``AlignRestore`` / ``affine_transform``).

Reproduces ``latentsync/utils/affine_transform.py`` and ``ImageProcessor.affine_transform`` of the
official code (bytedance/LatentSync a229c39, LATENTSYNC.md section 1.6), pinned by golden vector 4:

1. three points per face: the two eyebrow centres and the nose (:func:`points3_from_106`,
   :func:`points3_from_68`), in image order ``[image-left brow, image-right brow, nose]``;
2. a similarity transform (float32, torch SVD) onto the template ``[[17,20],[58,20],[37.5,40]] * ratio``
   with ``ratio = res/256*2.8``, plus the official "smoothing bias" (nose offset in normalised
   units, exponentially smoothed 0.2/0.8 over frames);
3. a bilinear warp into a ``210x280`` crop (``420x560`` at 512), fill 127, truncated to uint8;
4. an anisotropic OpenCV Lanczos-4 resize to ``res x res``.

Paste-back (:meth:`FaceAligner.restore`) warps the face back with the inverse transform and blends
it with a feathered (eroded and blurred) mask, then truncates to uint8, like ``restore_img``.
:meth:`FaceAligner.restore_delta` pastes a change ``face - reference`` with the same feathered weights
(the ``multiband`` blend of :mod:`lipsyncctl.faces.blend`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

TEMPLATE_UNITS = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])
FILL_VALUE = 127.0

# 106-point InsightFace (2d106det) indices read by the official code.
LEFT_BROW_106 = [43, 48, 49, 51, 50]
RIGHT_BROW_106 = [101, 102, 103, 104, 105]
NOSE_106 = [74, 77, 83, 86]

# 68-point iBUG 300-W layout (dlib, face-alignment), 0-based. Brows 17-21 are on the image left,
# 22-26 on the image right. The official nose point is the mean of four 2d106 points running from
# the lower nose bridge to the tip; the 68-point equivalent is the lower bridge and the tip
# (28, 29, 30) plus the tip once more (30), chosen because it lands on the official nose point
# within about a pixel on the demo frame (see tests/golden/test_faces_align.py).
LEFT_BROW_68 = [17, 18, 19, 20, 21]
RIGHT_BROW_68 = [22, 23, 24, 25, 26]
NOSE_68 = [28, 29, 30, 30]


def points3_from_106(landmarks: np.ndarray, round_half_even: bool = True) -> np.ndarray:
    """``(106, 2)`` InsightFace landmarks -> ``(3, 2)`` float64 ``[left brow, right brow, nose]``.

    The official code rounds the integer landmarks first and the means afterwards with ``np.round``
    (half to even); both are kept when ``round_half_even`` is true.
    """
    lmk = np.asarray(landmarks)
    pts = np.stack([lmk[LEFT_BROW_106].mean(0), lmk[RIGHT_BROW_106].mean(0), lmk[NOSE_106].mean(0)])
    return np.round(pts) if round_half_even else pts.astype(np.float64)


def points3_from_68(landmarks: np.ndarray, round_half_even: bool = False) -> np.ndarray:
    """``(68, 2)`` iBUG landmarks -> ``(3, 2)`` float64 ``[left brow, right brow, nose]``.

    Brow centres are the means of the five brow points; the nose is the mean of points
    28, 29, 30, 30 (see :data:`NOSE_68`). Sub-pixel values are kept by default (our landmarks are
    smoothed floats); ``round_half_even=True`` rounds like the official code.
    """
    lmk = np.asarray(landmarks, dtype=np.float64)
    pts = np.stack([lmk[LEFT_BROW_68].mean(0), lmk[RIGHT_BROW_68].mean(0), lmk[NOSE_68].mean(0)])
    return np.round(pts) if round_half_even else pts


def points3_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Dispatch on the layout: 68 or 106 points -> ``(3, 2)``; ``(3, 2)`` is returned as float64.

    106 integer landmarks are rounded like upstream; float landmarks and 68 points are not."""
    n = np.asarray(landmarks).shape[0]
    if n == 68:
        return points3_from_68(landmarks)
    if n == 106:
        # Official rounding only for integer landmarks (what InsightFace gives upstream); smoothed
        # float landmarks keep their sub-pixel precision.
        lmk = np.asarray(landmarks)
        return points3_from_106(lmk, round_half_even=bool(np.all(lmk == np.round(lmk))))
    if n == 3:
        return np.asarray(landmarks, dtype=np.float64)
    raise ValueError(f"unsupported landmark layout with {n} points (expected 3, 68 or 106)")


def crop_size(resolution: int) -> tuple[int, int]:
    """Crop ``(width, height)`` before the squeeze: ``(210, 280)`` at 256, ``(420, 560)`` at 512."""
    ratio = resolution / 256 * 2.8
    return int(75 * ratio), int(100 * ratio)


def face_template(resolution: int) -> np.ndarray:
    """The three template points ``(3, 2)`` in crop pixels."""
    return TEMPLATE_UNITS * (resolution / 256 * 2.8)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + T`` the official way (float32 torch, SVD).

    Returns ``(M, nose_bias)``: ``M`` float32 ``(2, 3)`` without the smoothing bias and the raw bias
    ``dst_n[2] - src_n[2]`` (float32 ``(2,)``, normalised units) that the caller smooths and adds to
    ``M[:, 2]``. ``std`` is the unbiased std over all six centred coordinates, as upstream.
    """
    import torch

    p1 = torch.as_tensor(np.asarray(src), dtype=torch.float32)
    p2 = torch.as_tensor(np.asarray(dst), dtype=torch.float32)
    c1 = p1.mean(0)
    c2 = p2.mean(0)
    p1 = p1 - c1
    p2 = p2 - c2
    s1 = p1.std()
    s2 = p2.std()
    p1 = p1 / s1
    p2 = p2 / s2
    u, _, vh = torch.linalg.svd(p1.T @ p2)
    v = vh.T
    rot = v @ u.T
    if torch.linalg.det(rot) < 0:
        v = v.clone()
        v[:, -1] = -v[:, -1]
        rot = v @ u.T
    s_rot = (s2 / s1) * rot
    trans = c2.reshape(2, 1) - s_rot @ c1.reshape(2, 1)
    matrix = torch.cat([s_rot, trans], dim=1)
    bias = p2[2] - p1[2]
    return matrix.numpy(), bias.numpy()


@dataclass
class FaceAligner:
    """Aligns faces to the official crop and pastes generated faces back.

    One instance per clip: it carries the official smoothing bias from frame to frame (call
    :meth:`reset` at a cut). ``smooth=False`` disables the bias smoothing (the bias itself is still
    added, as upstream does on every frame). ``pixel_aspect``: the frame's stored pixel width / height
    (anamorphic footage): the similarity is found for the face as shown (square pixels) and the matrix takes
    stored pixels, so the crop is the face at its true shape and the paste squeezes it back. ``device``: where the
    paste-back (:meth:`restore`, :meth:`restore_delta`) computes: ``None`` (default) on the CPU with OpenCV's
    erosion and blur of the feather (the fast path); a torch device (``"cuda"``, also ``"cpu"``) runs all of it
    with torch ops on that device, as the official kornia code does on the GPU: only the face's box of each frame
    travels there and back, and a face already on that device stays there. Both follow the golden restore; they
    can differ by one level where a float32 sum's last bit decides the truncation.
    """

    resolution: int = 256
    smooth: bool = True
    pixel_aspect: float = 1.0
    device: str | None = None
    _prev_bias: np.ndarray | None = field(default=None, init=False, repr=False)
    #: per-thread scratch of :meth:`warp_crop` (a float frame; the pipelined renderer aligns in its own thread)
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False, compare=False)

    @property
    def crop_wh(self) -> tuple[int, int]:
        return crop_size(self.resolution)

    def reset(self) -> None:
        """Forget the smoothing state (new shot or new clip)."""
        self._prev_bias = None

    def matrix(self, points3: np.ndarray) -> np.ndarray:
        """Frame -> crop affine ``(2, 3)`` float32 for the ``(3, 2)`` points, updating the smoothing."""
        square = self.pixel_aspect != 1
        if square:  # landmarks in square pixels: x stretched by the pixel aspect
            points3 = np.asarray(points3, np.float32) * np.float32([self.pixel_aspect, 1])
        matrix, bias = similarity_transform(points3, face_template(self.resolution))
        if self.smooth and self._prev_bias is not None:
            bias = (np.float32(0.2) * self._prev_bias + np.float32(0.8) * bias).astype(np.float32)
        self._prev_bias = bias
        matrix = matrix.copy()
        matrix[:, 2] += bias
        if square:  # stored pixels -> square pixels -> crop
            matrix[:, 0] *= np.float32(self.pixel_aspect)
        return matrix

    def warp_crop(self, frame: np.ndarray, matrix: np.ndarray, roi: bool = True) -> np.ndarray:
        """Warp ``frame`` (H, W, 3) uint8 by ``matrix`` into the crop ``(h, w, 3)`` uint8 (truncated).

        ``roi``: convert to float only the box of the frame the crop's bilinear taps can reach (plus 2
        pixels), in a per-thread frame-sized buffer whose other pixels are never read; the sampling grid is
        the whole frame's, so the crop is the same bit for bit (``False``: the whole frame, as upstream)."""
        import torch

        from lipsyncctl.faces import warp

        w, h = self.crop_wh
        m = torch.from_numpy(np.asarray(matrix, np.float32))
        height, width = frame.shape[:2]
        if not roi:
            img = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].to(torch.float32)
        else:
            x0, y0, x1, y1 = warp.warped_bounds(warp.invert_affine(m).numpy(), (w, h), (width, height), margin=2)
            buf = getattr(self._local, "frame", None)
            if buf is None or buf.shape != (height, width, frame.shape[2]):
                buf = self._local.frame = torch.zeros((height, width, frame.shape[2]), dtype=torch.float32)
            buf[y0:y1, x0:x1] = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1]))
            img = buf.permute(2, 0, 1)[None]  # the same strides as the whole-frame conversion
        out = warp.warp_affine(img, m, (h, w), fill=FILL_VALUE)
        return out[0].permute(1, 2, 0).numpy().astype(np.uint8)

    def align(self, frame: np.ndarray, points3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame: returns ``(face, M)``, face ``(res, res, 3)`` uint8 HWC (same channel order as
        ``frame``), ``M`` float32 ``(2, 3)`` frame -> crop. The pipeline takes ``face.transpose(2, 0, 1)``
        for the official CHW tensor."""
        matrix = self.matrix(points3)
        return self.face(frame, matrix), matrix

    def face(self, frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """The aligned face ``(res, res, 3)`` uint8 of ``frame`` for a :meth:`matrix` (warp, then Lanczos)."""
        import cv2

        crop = self.warp_crop(frame, matrix)
        return cv2.resize(crop, (self.resolution, self.resolution), interpolation=cv2.INTER_LANCZOS4)

    def restore(self, frame: np.ndarray, face, matrix: np.ndarray, roi: bool = True) -> np.ndarray:
        """Paste ``face`` back into ``frame`` (official ``restore_video`` + ``restore_img``).

        Args:
            frame: (H, W, 3) uint8, the source frame.
            face: (3, h, w) float tensor/array in [-1, 1]; if not the crop size (e.g. the generated
                ``(3, res, res)``) it is first resized with bicubic antialiasing like upstream.
            matrix: the frame -> crop matrix returned by :meth:`align`.
            roi: compute only inside the box the face can touch (identical result, much faster on
                large frames); ``False`` processes the whole frame like upstream.

        Returns the blended (H, W, 3) uint8 frame; pixels outside the feathered region are ``frame``.
        """
        return self._paste(frame, face, matrix, roi, delta=False)

    def restore_delta(self, frame: np.ndarray, delta, matrix: np.ndarray, roi: bool = True) -> np.ndarray:
        """Paste a *change* ``delta = face - reference`` (3, h, w) in [-1, 1] units onto ``frame``.

        Same inverse warp and feathered weights ``soft`` as :meth:`restore`, but the output is
        ``round(frame + soft * warp(delta) * 127.5)`` instead of ``soft * warp(face) + (1 - soft) *
        frame``: where the face was not changed the source pixel comes back exactly (no resampling
        blur), and nothing changes where the official weight is 0. Returns (H, W, 3) uint8.
        """
        return self._paste(frame, delta, matrix, roi, delta=True)

    def paste_bounds(self, frame_hw: tuple[int, int], matrix: np.ndarray, inv=None) -> tuple[int, int, int, int]:
        """The box ``(x0, y0, x1, y1)`` of a ``frame_hw`` frame that a paste-back by ``matrix`` (frame -> crop) may
        change (:meth:`restore`, :meth:`restore_delta`): every pixel outside it stays the frame's. ``inv``: the
        inverse matrix when the caller has it (a ``(2, 3)`` float32 tensor)."""
        from lipsyncctl.faces import warp

        if inv is None:
            import torch

            inv = warp.invert_affine(torch.from_numpy(np.asarray(matrix, dtype=np.float32)))
        w, h = self.crop_wh
        height, width = frame_hw
        # Margin: erosion + blur radius stay inside the box (w_edge <= sqrt(area)/20).
        reach = int((w * h * float(abs(np.linalg.det(inv[:, :2].numpy())))) ** 0.5) // 20
        return warp.warped_bounds(inv.numpy(), (w, h), (width, height), margin=4 * reach + 4)

    def _paste(self, frame: np.ndarray, face, matrix: np.ndarray, roi: bool, delta: bool) -> np.ndarray:
        import torch

        from lipsyncctl.faces import warp

        w, h = self.crop_wh
        face_t = torch.as_tensor(np.asarray(face) if not isinstance(face, torch.Tensor) else face)
        face_t = warp.resize_bicubic_antialias(face_t.to(self.device or "cpu", torch.float32), (h, w))
        m = torch.from_numpy(np.asarray(matrix, dtype=np.float32))
        inv = warp.invert_affine(m)
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = self.paste_bounds((height, width), matrix, inv) if roi else (0, 0, width, height)
        if x1 <= x0 or y1 <= y0:
            return frame.copy()
        out = frame.copy()
        box = (x0, y0, x1, y1)
        restore_box = self._delta_box if delta else self._restore_box
        out[y0:y1, x0:x1] = restore_box(frame, face_t, inv, box, tight=roi)
        return out

    def _feather(self, inv, full_hw: tuple[int, int], box: tuple[int, int, int, int], tight: bool):
        """``restore_img``'s weights on ``box``: ``(grid, coverage, inv_mask, soft, sub)``, the sampling grid
        ``(1, bh, bw, 2)``, the warped coverage of the crop and the same 2x2-eroded ``(1, 1, bh, bw)``, and the
        eroded, blurred paste weight ``soft`` ``(1, sh, sw)`` on ``sub = (sx0, sy0, sx1, sy1)`` (box pixels);
        ``soft`` is exactly 0 in the rest of the box.

        ``tight``: blur only ``sub``, the eroded mask's non-zero rows and columns grown by twice the blur
        radius (clipped to the box): every output within one radius of the non-zero pixels reads the same
        inputs as on the whole box, reflected borders included (what lies between one and two radii out is
        zeros either way), and everything further out is a sum of zeros. ``False``: blur the whole box.

        With a :attr:`device`, everything is torch's on that device and the whole box is blurred (no sync to find
        ``sub``: on a GPU the blur of the box costs less than the round trip), in float64 (the same float32 weights
        summed exactly enough that no TF32 convolution or order of sums shows)."""
        import cv2
        import torch

        from lipsyncctl.faces import warp

        w, h = self.crop_wh
        grid = warp.sampling_grid(inv, (h, w), full_hw, box, device=self.device)  # same for the face and its mask
        coverage = warp.sample(torch.ones((), dtype=torch.float32, device=grid.device).expand(1, 1, h, w), grid)
        inv_mask = warp.erode_2x2(coverage)
        w_edge = int(torch.sum(inv_mask).item() ** 0.5) // 20
        k = 2 * w_edge + 1
        sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
        if self.device is not None:
            center_t = warp.erode_rect(inv_mask, 2 * w_edge)  # the mask itself at w_edge 0, as below
            bh, bw = center_t.shape[-2:]
            # in float64: a GPU's float32 convolution may run in TF32 (cuDNN's default), 10 mantissa bits
            soft = warp.gaussian_blur(center_t.double(), k, sigma, exact=True)[0].float()
            return grid, coverage, inv_mask, soft, (0, 0, bw, bh)
        center = inv_mask[0, 0].numpy()
        if w_edge > 0:
            center = cv2.erode(center, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
        bh, bw = center.shape
        sub = (0, 0, bw, bh)
        if tight:
            rows, cols = np.flatnonzero(center.any(1)), np.flatnonzero(center.any(0))
            if len(rows) == 0:
                return grid, coverage, inv_mask, torch.zeros((1, 0, 0)), (0, 0, 0, 0)
            reach = 2 * (k // 2)
            sub = (max(int(cols[0]) - reach, 0), max(int(rows[0]) - reach, 0),
                   min(int(cols[-1]) + 1 + reach, bw), min(int(rows[-1]) + 1 + reach, bh))
        sx0, sy0, sx1, sy1 = sub
        part = torch.from_numpy(np.ascontiguousarray(center[sy0:sy1, sx0:sx1]))[None, None]
        soft = warp.gaussian_blur(part, k, sigma)[0]
        return grid, coverage, inv_mask, soft, sub

    def _restore_box(self, frame, face_t, inv, box: tuple[int, int, int, int], tight: bool = True) -> np.ndarray:
        """``restore_img`` evaluated on ``box = (x0, y0, x1, y1)`` of the full frame only (where the paste
        weight is 0 the source pixel is kept without computing the face there: ``0 * face + 1 * src``)."""
        import torch

        from lipsyncctl.faces import warp

        x0, y0, x1, y1 = box
        grid, coverage, inv_mask, soft, (sx0, sy0, sx1, sy1) = self._feather(inv, frame.shape[:2], box, tight)
        out = np.array(frame[y0:y1, x0:x1])
        if sx1 <= sx0 or sy1 <= sy0:
            return out
        part = (slice(sy0, sy1), slice(sx0, sx1))
        inv_face = warp.sample(face_t[None], grid[:, part[0], part[1]], fill=FILL_VALUE,
                               coverage=coverage[:, :, part[0], part[1]])[0]
        inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
        pasted = inv_mask[0][:, part[0], part[1]] * inv_face
        src = _planes(out[part], grid.device)
        blended = soft * pasted + (1 - soft) * src
        out[part] = blended.permute(1, 2, 0).to(torch.uint8).cpu().numpy()
        return out

    def _delta_box(self, frame, delta_t, inv, box: tuple[int, int, int, int], tight: bool = True) -> np.ndarray:
        """:meth:`restore_delta` on ``box``: ``frame + soft * inv_mask * warp(delta) * 127.5``, rounded (the
        source pixel where the weight is 0)."""
        import torch

        from lipsyncctl.faces import warp

        x0, y0, x1, y1 = box
        grid, _, inv_mask, soft, (sx0, sy0, sx1, sy1) = self._feather(inv, frame.shape[:2], box, tight)
        out = np.array(frame[y0:y1, x0:x1])
        if sx1 <= sx0 or sy1 <= sy0:
            return out
        part = (slice(sy0, sy1), slice(sx0, sx1))
        inv_delta = warp.sample(delta_t[None], grid[:, part[0], part[1]])[0] * 127.5  # zero outside the crop
        src = _planes(out[part], grid.device)
        res = src + (soft * inv_mask[0][:, part[0], part[1]]) * inv_delta
        out[part] = res.round().clamp(0, 255).permute(1, 2, 0).to(torch.uint8).cpu().numpy()
        return out


def _planes(image: np.ndarray, device):
    """(h, w, 3) uint8 -> (3, h, w) float32 on ``device`` (the bytes travel, converted there)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).to(torch.float32)
