"""Whisper-tiny audio encoder as LatentSync uses it: transformers' ``WhisperEncoder`` returning all hidden
states without the final norm.

LatentSync conditions on all five hidden states of the whisper encoder: the embedding output (after
``conv1 -> GELU -> conv2(stride 2) -> GELU -> + positional embedding``) and the output of each of the
four residual blocks, **without** the final layer norm (``ln_post`` / HF ``layer_norm``). transformers'
``output_hidden_states`` applies that norm to the last state, so :class:`WhisperFeatureEncoder` walks
the HF submodules itself. Loading the official OpenAI-layout ``tiny.pt`` is
:mod:`lipsyncctl.checkpoints.whisper`'s job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder


def build_whisper_encoder(config: WhisperConfig) -> WhisperEncoder:
    """An HF ``WhisperEncoder`` (random init, eval mode) for an HF config (from OpenAI ``dims``:
    :func:`lipsyncctl.checkpoints.whisper.whisper_config`).

    Honours an enclosing ``torch.device("meta")`` context for shape-only builds.
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config._attn_implementation = "sdpa"
    return WhisperEncoder(config).eval()


class WhisperFeatureEncoder(nn.Module):
    """Wraps an HF ``WhisperEncoder`` and returns all hidden states without the final norm.

    ``forward(mel)`` takes ``(B, n_mels, 2 * n_audio_ctx)`` log-mel windows (3000 frames for
    tiny) and returns ``(B, n_layers + 1, n_audio_ctx, d_model)`` = ``(B, 5, 1500, 384)`` for
    tiny: index 0 is the embedding output, index k the output of block k.
    """

    def __init__(self, encoder: WhisperEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def n_ctx(self) -> int:
        return int(self.encoder.config.max_source_positions)

    @property
    def n_mels(self) -> int:
        return int(self.encoder.config.num_mel_bins)

    @property
    def d_model(self) -> int:
        return int(self.encoder.config.d_model)

    @property
    def num_hidden_states(self) -> int:
        return len(self.encoder.layers) + 1

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        expected = 2 * self.n_ctx
        if mel.ndim != 3 or mel.shape[1] != self.n_mels or mel.shape[2] != expected:
            raise ValueError(
                f"expected log-mel windows (B, {self.n_mels}, {expected}), got {tuple(mel.shape)}"
            )
        x = nn.functional.gelu(enc.conv1(mel))
        x = nn.functional.gelu(enc.conv2(x))
        x = x.permute(0, 2, 1) + enc.embed_positions.weight
        states = [x]
        for layer in enc.layers:
            x = layer(x, None)
            states.append(x)
        return torch.stack(states, dim=1)
