"""The official SyncNet evaluation's face detector: S3FD (``sfd_face.pth``) run as syncnet_python's
``S3FD.detect_faces(image, conf_th=0.9, scales=[0.25])``.

Per frame (RGB uint8):
1. ``cv2.resize`` by 0.25 (bilinear);
2. float32, minus the mean ``(104, 117, 123)`` given in BGR order, i.e. ``(123, 117, 104)`` on the RGB
   channels the network is fed;
3. the network's ``Detect`` (score > 0.05, NMS 0.3, at most 750 boxes);
4. boxes scaled to the full frame (``x * W``, ``y * H``), kept while their score is above ``conf_th``;
5. a second NMS at IoU 0.1 over what is left (numpy, as ``nms_``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lipsyncctl.nets.s3fd import S3FD

#: the official mean, in BGR order
MEAN_BGR = (104.0, 117.0, 123.0)
CONF_TH = 0.9
SCALE = 0.25
FINAL_NMS = 0.1


def nms_numpy(dets: np.ndarray, thresh: float) -> np.ndarray:
    """Greedy NMS over ``(n, 5)`` rows ``(x1, y1, x2, y2, score)``; indices kept, best first (areas
    without +1; the sort order is numpy's default ``argsort`` reversed, as upstream)."""
    x1, y1, x2, y2, scores = (dets[:, k] for k in range(5))
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]))
        inter = w * h
        overlap = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(overlap <= thresh)[0] + 1]
    return np.array(keep, dtype=np.int32)


class SfdFaceDetector:
    """S3FD with the official evaluation's parameters. ``net``: a loaded
    :class:`~lipsyncctl.nets.s3fd.S3FD` (its device and dtype are used)."""

    name = "sfd-face"

    def __init__(self, net: S3FD, conf_th: float = CONF_TH, scale: float = SCALE) -> None:
        self.net = net.eval()
        self.conf_th = conf_th
        self.scale = scale

    def network_input(self, rgb: np.ndarray) -> np.ndarray:
        """``(3, h, w)`` float32: the frame scaled by ``scale``, RGB minus the mean."""
        import cv2

        small = cv2.resize(rgb, dsize=(0, 0), fx=self.scale, fy=self.scale, interpolation=cv2.INTER_LINEAR)
        chw = small.transpose(2, 0, 1).astype(np.float32)
        return chw - np.array(MEAN_BGR[::-1], dtype=np.float32)[:, None, None]

    def detect_faces(self, rgb: np.ndarray) -> np.ndarray:
        """``(n, 5)`` float64 rows ``(x1, y1, x2, y2, score)`` in frame pixels, best first."""
        import torch

        from lipsyncctl.nets.s3fd import detections

        h, w = rgb.shape[:2]
        param = next(self.net.parameters())
        x = torch.from_numpy(self.network_input(rgb))[None].to(device=param.device, dtype=param.dtype)
        with torch.inference_mode():
            (det,) = detections(self.net(x))
        det = det.float().cpu()
        det = det[det[:, 0] > self.conf_th]  # rows are best first: the official `while score > conf_th`
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        boxes = np.empty((0, 5))
        if len(det):
            boxes = np.concatenate([(det[:, 1:] * scale).numpy().astype(np.float64),
                                    det[:, :1].numpy().astype(np.float64)], axis=1)
        return boxes[nms_numpy(boxes, FINAL_NMS)] if len(boxes) else boxes
