"""hyperIQA (Su et al., CVPR 2020): the blind image-quality network of LatentSync's data filter.

LatentSync's ``eval/hyper_iqa.py`` copies the authors' ``models.py`` (github.com/SSL92/hyperIQA) and builds
``HyperNet(16, 112, 224, 112, 56, 28, 14, 7)`` with the weights ``koniq_pretrained.pkl`` (trained on
KonIQ-10k; scores 0-100, higher is better). This is a re-implementation in torch alone, with the official
module names, so that file (a flat ``HyperNet.state_dict()``, 355 entries) loads strictly:

``res.*``
    a ResNet-50 without its classifier (``conv1 bn1 layer1..4``, torchvision names) plus the *local
    distortion aware* heads ``lda1..3_pool`` (1x1 conv + 7x7 average pool) / ``lda1..4_fc``, which turn
    the outputs of ``layer1..4`` into the target network's input vector (16 + 16 + 16 + 176 = 224);
``conv1.{0,2,4}``
    three 1x1 convs 2048 -> 1024 -> 512 -> 112 on ``layer4``'s 7x7 map (the hyper network's features);
``fc{1..4}w_conv`` / ``fc{1..5}b_fc`` / ``fc5w_fc``
    the hyper head: 3x3 convs produce the weights of the target network's layers 1-4 (the 7x7 map read
    as a vector), linear layers on the pooled features produce its biases and its last layer.

The target network is not a module with parameters: every image gets its own weights. Its layers are
``sigmoid(W x + b)`` for 224 -> 112 -> 56 -> 28 -> 14, then ``W5 x + b5`` -> 1, computed as the official
``TargetFC`` does, as a grouped 1x1 convolution (groups = batch).

Input: ``(B, 3, 224, 224)`` float32, ImageNet-normalised RGB (the ``lda*_pool`` sizes assume 224 px).
Output of :class:`TargetNet`: ``(B,)`` scores.

Two upstream details are not reproduced: the constructor's ImageNet download (``pretrained=True``; every
value is overwritten by the strict koniq load) and the ``pretrained=False`` initialiser, which cannot run
(``init.uniform_(w, 1.0, 0.02)`` has from > to). Parameters here start uninitialised-but-finite and are
meant to be loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

#: The names of the HyperNet output dict (the official keys).
PARAS = ("target_in_vec", "target_fc1w", "target_fc1b", "target_fc2w", "target_fc2b", "target_fc3w",
         "target_fc3b", "target_fc4w", "target_fc4b", "target_fc5w", "target_fc5b")


@dataclass(frozen=True)
class HyperNetConfig:
    """``HyperNet(lda_out_channels, hyper_in_channels, target_in_size, target_fc1..4_size, feature_size)``;
    the defaults are the only configuration LatentSync (and the koniq weights) use."""

    lda_out_channels: int = 16
    hyper_in_channels: int = 112
    target_in_size: int = 224
    target_fc1_size: int = 112
    target_fc2_size: int = 56
    target_fc3_size: int = 28
    target_fc4_size: int = 14
    feature_size: int = 7

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Bottleneck(nn.Module):
    """The torchvision v1 ResNet bottleneck (stride on the 3x3 conv), expansion 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


def _lda_pool(channels: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, out, 1, bias=False), nn.AvgPool2d(7, stride=7))


class ResNetBackbone(nn.Module):
    """ResNet-50 (``[3, 4, 6, 3]`` bottlenecks, no classifier) with the four LDA heads.

    ``forward(x (B, 3, 224, 224))`` -> ``{"hyper_in_feat": (B, 2048, 7, 7), "target_in_vec": (B, in_chn)}``.
    """

    def __init__(self, lda_out_channels: int, in_chn: int, layers: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        # local distortion aware heads: at 224 px, layer1..3 maps are 56, 28, 14 px -> 8x8, 4x4, 2x2 after
        # the 7x7 pools (16*64 = 32*16 = 64*4 = 1024 values each); layer4 (7x7) pools to 1x1
        self.lda1_pool = _lda_pool(256, 16)
        self.lda1_fc = nn.Linear(16 * 64, lda_out_channels)
        self.lda2_pool = _lda_pool(512, 32)
        self.lda2_fc = nn.Linear(32 * 16, lda_out_channels)
        self.lda3_pool = _lda_pool(1024, 64)
        self.lda3_fc = nn.Linear(64 * 4, lda_out_channels)
        self.lda4_pool = nn.AvgPool2d(7, stride=7)
        self.lda4_fc = nn.Linear(2048, in_chn - lda_out_channels * 3)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        lda_1 = self.lda1_fc(self.lda1_pool(x).flatten(1))
        x = self.layer2(x)
        lda_2 = self.lda2_fc(self.lda2_pool(x).flatten(1))
        x = self.layer3(x)
        lda_3 = self.lda3_fc(self.lda3_pool(x).flatten(1))
        x = self.layer4(x)
        lda_4 = self.lda4_fc(self.lda4_pool(x).flatten(1))
        return {"hyper_in_feat": x, "target_in_vec": torch.cat((lda_1, lda_2, lda_3, lda_4), 1)}


class HyperNet(nn.Module):
    """The hyper network: image -> the target network's input vector and per-image weights.

    ``forward(img (B, 3, 224, 224))`` returns the official dict (:data:`PARAS`): ``target_in_vec``
    ``(B, 224, 1, 1)``, ``target_fc{i}w`` ``(B, out_i, in_i, 1, 1)``, ``target_fc{i}b`` ``(B, out_i)`` for
    the layers 224 -> 112 -> 56 -> 28 -> 14 -> 1.
    """

    def __init__(self, config: HyperNetConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or HyperNetConfig()
        self.res = ResNetBackbone(c.lda_out_channels, c.target_in_size)
        hin, fs2 = c.hyper_in_channels, c.feature_size**2
        self.conv1 = nn.Sequential(
            nn.Conv2d(2048, 1024, 1), nn.ReLU(inplace=True),
            nn.Conv2d(1024, 512, 1), nn.ReLU(inplace=True),
            nn.Conv2d(512, hin, 1), nn.ReLU(inplace=True),
        )
        sizes = self.sizes
        for i in range(1, 5):  # the 7x7 map of a 3x3 conv's channels, read as the (out, in) weight matrix
            n_in, n_out = sizes[i - 1], sizes[i]
            self.add_module(f"fc{i}w_conv", nn.Conv2d(hin, n_in * n_out // fs2, 3, padding=1))
            self.add_module(f"fc{i}b_fc", nn.Linear(hin, n_out))
        self.fc5w_fc = nn.Linear(hin, c.target_fc4_size)
        self.fc5b_fc = nn.Linear(hin, 1)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The target network's widths: ``(224, 112, 56, 28, 14, 1)``."""
        c = self.config
        return (c.target_in_size, c.target_fc1_size, c.target_fc2_size, c.target_fc3_size, c.target_fc4_size, 1)

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        c, sizes = self.config, self.sizes
        res_out = self.res(img)
        out = {"target_in_vec": res_out["target_in_vec"].reshape(-1, c.target_in_size, 1, 1)}
        feat = self.conv1(res_out["hyper_in_feat"]).reshape(-1, c.hyper_in_channels, c.feature_size, c.feature_size)
        pooled = F.adaptive_avg_pool2d(feat, 1).flatten(1)  # the official pool + squeeze, batch of one kept
        for i in range(1, 5):
            conv: nn.Conv2d = getattr(self, f"fc{i}w_conv")
            fc: nn.Linear = getattr(self, f"fc{i}b_fc")
            out[f"target_fc{i}w"] = conv(feat).reshape(-1, sizes[i], sizes[i - 1], 1, 1)
            out[f"target_fc{i}b"] = fc(pooled).view(-1, sizes[i])
        out["target_fc5w"] = self.fc5w_fc(pooled).view(-1, 1, c.target_fc4_size, 1, 1)
        out["target_fc5b"] = self.fc5b_fc(pooled).view(-1, 1)
        return out


def target_fc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The official ``TargetFC``: per-image ``W x + b`` as one grouped 1x1 conv.

    Args:
        x: ``(B, in, 1, 1)``; weight: ``(B, out, in, 1, 1)``; bias: ``(B, out)``.

    Returns:
        ``(B, out, 1, 1)``.
    """
    b, n_out = weight.shape[:2]
    out = F.conv2d(x.reshape(1, b * x.shape[1], x.shape[2], x.shape[3]),
                   weight.reshape(b * n_out, *weight.shape[2:]), bias.reshape(b * n_out), groups=b)
    return out.view(b, n_out, x.shape[2], x.shape[3])


class TargetNet(nn.Module):
    """The target network, driven by a :class:`HyperNet` output: ``forward(paras) -> (B,)`` scores.

    Four ``sigmoid(TargetFC)`` layers and a last linear ``TargetFC`` (official ``TargetNet``, whose
    ``forward(paras["target_in_vec"])`` squeezes the result; here a batch of one stays ``(1,)``).
    """

    def forward(self, paras: dict[str, torch.Tensor]) -> torch.Tensor:
        q = paras["target_in_vec"]
        for i in range(1, 5):
            q = torch.sigmoid(target_fc(q, paras[f"target_fc{i}w"], paras[f"target_fc{i}b"]))
        q = target_fc(q, paras["target_fc5w"], paras["target_fc5b"])
        return q.reshape(q.shape[0])


def hyperiqa_score(hyper: HyperNet, img: torch.Tensor) -> torch.Tensor:
    """HyperNet then TargetNet, as the official filter does: ``img (B, 3, 224, 224)`` normalised ->
    ``(B,)`` quality scores (0-100 with the koniq weights)."""
    return TargetNet()(hyper(img))
