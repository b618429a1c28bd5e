"""S3FD (Zhang et al. 2017, "S³FD: Single Shot Scale-invariant Face Detector"), the face detector of the
official SyncNet evaluation (syncnet_python ``detectors/s3fd``, copied into LatentSync's
``eval/detectors/s3fd``; weights ``auxiliary/sfd_face.pth``).

Architecture (the official one, which differs from face-alignment's port in two places that do not change
any parameter shape: ``pool3`` rounds up (``ceil_mode``) and ``fc6`` is a dilated convolution, dilation 6):

- VGG16 trunk ``conv1_1 .. conv5_3`` (ReLU after each, 2x2 max-pool after each stage), ``fc6`` (3x3,
  dilation 6) and ``fc7`` (1x1) as convolutions, extra layers ``conv6_1/6_2`` and ``conv7_1/7_2``
  (stride-2 3x3 convolutions, ReLU after each);
- L2 normalisation with a learned per-channel scale on ``conv3_3`` (initial 10), ``conv4_3`` (8),
  ``conv5_3`` (5);
- six detection sources (strides 4, 8, 16, 32, 64, 128; anchors 16 .. 512 px, one square anchor per
  cell), each with a 3x3 ``loc`` head (4 box offsets) and a 3x3 ``conf`` head (2 classes; the first
  source has 4 outputs, the first 3 are background scores max-pooled into one: the paper's
  "max-out background label").

Our parameter names are the Caffe/paper names above; the official checkpoint calls them ``vgg.N``,
``L2Norm3_3``, ``extras.N``, ``loc.N``, ``conf.N`` (the key map is in
:mod:`lipsyncctl.checkpoints.sfd`).

Input: ``(B, 3, H, W)`` float32, **RGB** channel order, mean ``(123, 117, 104)`` subtracted (the official
code subtracts ``(104, 117, 123)`` in BGR order and swaps back to RGB before the network), no scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch
import torch.nn.functional as F
from torch import nn

#: per source: (stride in input pixels, anchor size in input pixels)
STRIDES = (4, 8, 16, 32, 64, 128)
ANCHORS = (16, 32, 64, 128, 256, 512)
VARIANCES = (0.1, 0.2)
#: the trunk: (name, in, out) of each 3x3 convolution; a stage ends with a 2x2 max-pool
VGG_STAGES: tuple[tuple[tuple[str, int, int], ...], ...] = (
    (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
    (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
    (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
    (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
    (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
)
#: channels of the six detection sources: conv3_3, conv4_3, conv5_3 (normalised), fc7, conv6_2, conv7_2
SOURCE_CHANNELS = (256, 512, 512, 1024, 512, 256)


class L2Norm(nn.Module):
    """``x / (||x||_2 over channels + 1e-10) * weight`` (ParseNet normalisation, per-channel scale)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = 1e-10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


@dataclass(frozen=True)
class S3FDOutput:
    """Raw predictions for every anchor ``P`` of the image.

    ``loc``: ``(B, P, 4)`` encoded box offsets; ``scores``: ``(B, P, 2)`` softmax (background, face);
    ``priors``: ``(P, 4)`` anchors as ``(cx, cy, w, h)`` in units of the input width/height.
    """

    loc: torch.Tensor
    scores: torch.Tensor
    priors: torch.Tensor


class S3FD(nn.Module):
    """The official S3FD network (see the module docstring); ``forward`` returns :class:`S3FDOutput`."""

    def __init__(self) -> None:
        super().__init__()
        for stage in VGG_STAGES:
            for name, cin, cout in stage:
                self.add_module(name, nn.Conv2d(cin, cout, 3, padding=1))
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=6, dilation=6)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv6_1 = nn.Conv2d(1024, 256, 1)
        self.conv6_2 = nn.Conv2d(256, 512, 3, stride=2, padding=1)
        self.conv7_1 = nn.Conv2d(512, 128, 1)
        self.conv7_2 = nn.Conv2d(128, 256, 3, stride=2, padding=1)
        self.norm3_3 = L2Norm(256, 10)
        self.norm4_3 = L2Norm(512, 8)
        self.norm5_3 = L2Norm(512, 5)
        self.loc = nn.ModuleList(nn.Conv2d(c, 4, 3, padding=1) for c in SOURCE_CHANNELS)
        self.conf = nn.ModuleList(nn.Conv2d(c, 4 if i == 0 else 2, 3, padding=1)
                                  for i, c in enumerate(SOURCE_CHANNELS))

    def sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six feature maps the heads read."""
        out: list[torch.Tensor] = []
        norms = {2: self.norm3_3, 3: self.norm4_3, 4: self.norm5_3}
        for s, stage in enumerate(VGG_STAGES):
            for name, _, _ in stage:
                x = F.relu(getattr(self, name)(x))
            if s in norms:
                out.append(norms[s](x))
            # the official trunk rounds the third pool up (odd sizes keep their last row/column)
            x = F.max_pool2d(x, 2, 2, ceil_mode=(s == 2))
        x = F.relu(self.fc7(F.relu(self.fc6(x))))
        out.append(x)
        x = F.relu(self.conv6_2(F.relu(self.conv6_1(x))))
        out.append(x)
        x = F.relu(self.conv7_2(F.relu(self.conv7_1(x))))
        out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> S3FDOutput:
        """``x``: ``(B, 3, H, W)`` RGB minus the mean (see the module docstring)."""
        height, width = x.shape[-2:]
        locs, confs, sizes = [], [], []
        for i, src in enumerate(self.sources(x)):
            conf = self.conf[i](src)
            if i == 0:  # max-out background label: 3 background scores -> their maximum
                conf = torch.cat([conf[:, :3].max(dim=1, keepdim=True).values, conf[:, 3:]], dim=1)
            locs.append(self.loc[i](src).permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4))
            confs.append(conf.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 2))
            sizes.append((src.shape[-2], src.shape[-1]))
        scores = torch.cat(confs, dim=1).softmax(dim=-1)
        priors = prior_boxes(sizes, (int(height), int(width))).to(x.device)
        return S3FDOutput(torch.cat(locs, dim=1), scores, priors)


def prior_boxes(feature_sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> torch.Tensor:
    """``(P, 4)`` float32 anchors ``(cx, cy, w, h)`` relative to the image, row-major per source.

    As the official ``PriorBox``: centres at ``(j + 0.5) * stride / W``, computed from the image size
    and the stride (not from the feature-map size), square anchors of ``ANCHORS[k]`` pixels.
    """
    imh, imw = image_size
    values: list[float] = []
    for k, (fh, fw) in enumerate(feature_sizes):
        f_kw, f_kh = imw / STRIDES[k], imh / STRIDES[k]
        s_kw, s_kh = ANCHORS[k] / imw, ANCHORS[k] / imh
        for i, j in product(range(fh), range(fw)):
            values += [(j + 0.5) / f_kw, (i + 0.5) / f_kh, s_kw, s_kh]
    return torch.tensor(values, dtype=torch.float32).view(-1, 4)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """``(P, 4)`` offsets + anchors -> ``(P, 4)`` boxes ``(x1, y1, x2, y2)`` relative to the image (SSD
    encoding with variances 0.1 / 0.2)."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    top_left = centre - size / 2
    return torch.cat([top_left, size + top_left], dim=1)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float, top_k: int) -> torch.Tensor:
    """Indices kept by greedy NMS, best first: the ``top_k`` best boxes are considered; a box is dropped
    when its IoU with a kept one is above ``overlap`` (areas without +1, as the official ``nms``)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    order = scores.sort(0).indices[-top_k:]  # ascending; the best is last
    keep = []
    while order.numel() > 0:
        i = order[-1]
        keep.append(int(i))
        order = order[:-1]
        if order.numel() == 0:
            break
        w = (torch.minimum(x2[order], x2[i]) - torch.maximum(x1[order], x1[i])).clamp(min=0.0)
        h = (torch.minimum(y2[order], y2[i]) - torch.maximum(y1[order], y1[i])).clamp(min=0.0)
        inter = w * h
        iou = inter / ((area[order] - inter) + area[i])
        order = order[iou <= overlap]
    return torch.tensor(keep, dtype=torch.long)


def detections(out: S3FDOutput, *, conf_thresh: float = 0.05, nms_thresh: float = 0.3, nms_top_k: int = 5000,
               top_k: int = 750) -> list[torch.Tensor]:
    """Per image ``(n, 5)`` rows ``(score, x1, y1, x2, y2)`` (relative coordinates), best first: the
    official ``Detect`` (face scores above ``conf_thresh``, NMS at ``nms_thresh`` over the ``nms_top_k``
    best, at most ``top_k`` kept)."""
    result = []
    for b in range(out.loc.shape[0]):
        boxes = decode_boxes(out.loc[b], out.priors)
        face = out.scores[b, :, 1]
        mask = face > conf_thresh
        boxes, face = boxes[mask], face[mask]
        keep = box_nms(boxes, face, nms_thresh, nms_top_k)[:top_k]
        result.append(torch.cat([face[keep, None], boxes[keep]], dim=1))
    return result
