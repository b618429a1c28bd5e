"""SyncNet v2 (syncnet_python's ``S``): the evaluation network behind LSE-C / LSE-D.

Layer indices inside the ``nn.Sequential`` containers are part of the checkpoint names
(``syncnet_v2.model`` is a flat state dict: ``netcnnaud.0.weight`` ...), so the containers keep the
official layout including the parameter-free ReLU / max-pool slots.

Inputs:
- lip: ``(B, 3, 5, 224, 224)`` float, BGR channel order, raw ``0..255`` values (no normalisation);
- audio: ``(B, 1, 13, 20)`` MFCC windows (13 coefficients x 20 steps of 10 ms = 0.2 s = 5 frames at 25 fps).
Both towers return ``(B, 1024)`` (not normalised); the score is a plain L2 distance.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def _audio_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1),  # 0
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=1, stride=1),  # 3
        nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1),  # 4
        nn.BatchNorm2d(192),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=(1, 2)),  # 7
        nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 8
        nn.BatchNorm2d(384),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 11
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 14
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),  # 17
        nn.Conv2d(256, 512, kernel_size=(5, 4), padding=0),  # 18: 5x4 -> 1x1
        nn.BatchNorm2d(512),
        nn.ReLU(),
    )


def _lip_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),  # 0: 5 frames -> 1
        nn.BatchNorm3d(96),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 3
        nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),  # 4
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),  # 8
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),  # 11
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),  # 14
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 17
        nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),  # 18: 6x6 -> 1x1
        nn.BatchNorm3d(512),
        nn.ReLU(inplace=True),
    )


def _fc(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(512, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Linear(512, embed_dim),
    )


class SyncNetEval(nn.Module):
    """syncnet_python ``S(num_layers_in_fc_layers=1024)``. Use in eval mode (BatchNorm running stats)."""

    def __init__(self, embed_dim: int = 1024) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        # Registration order follows the official state dict.
        self.netcnnaud = _audio_cnn()
        self.netfcaud = _fc(embed_dim)
        self.netfclip = _fc(embed_dim)
        self.netcnnlip = _lip_cnn()

    def load_official_state_dict(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """Copy a ``syncnet_v2.model`` state dict in by name, as the official ``loadParameters`` does.

        Entries absent from ``state`` (e.g. ``num_batches_tracked`` of very old files) keep their
        defaults and are returned; unknown names or wrong shapes raise ``KeyError``/``ValueError``.
        Values are cast to each destination's dtype (fp16 files load into a float32 model).
        """
        own = self.state_dict()
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise KeyError(f"not SyncNet v2 parameters: {unknown[:5]}")
        for name, value in state.items():
            if tuple(value.shape) != tuple(own[name].shape):
                raise ValueError(f"{name}: shape {tuple(value.shape)} != {tuple(own[name].shape)}")
            with torch.no_grad():
                own[name].copy_(value)
        return sorted(set(own) - set(state))

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 13, 20)`` MFCC windows -> ``(B, embed_dim)``."""
        mid = self.netcnnaud(mfcc)
        return self.netfcaud(mid.reshape(mid.shape[0], -1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 5, 224, 224)`` BGR 0..255 -> ``(B, embed_dim)``."""
        mid = self.netcnnlip(frames)
        return self.netfclip(mid.reshape(mid.shape[0], -1))

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lip_embeds, audio_embeds)``."""
        return self.forward_lip(frames), self.forward_aud(mfcc)
