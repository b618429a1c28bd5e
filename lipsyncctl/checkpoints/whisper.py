"""The official whisper file (openai-whisper's ``tiny.pt``: ``{"dims": {...}, "model_state_dict": {...}}``)
converted to transformers' ``WhisperEncoder`` names and config.

:func:`convert_openai_whisper` maps its ``encoder.*`` keys onto the HF encoder (decoder keys are
ignored). ``encoder.positional_embedding`` is loaded from the file (it is stored as float16-rounded
sinusoids; recomputing them changes every feature by up to ~1e-4). The network is
:mod:`lipsyncctl.nets.whisper`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from transformers import WhisperConfig

    from lipsyncctl.nets.whisper import WhisperFeatureEncoder

# OpenAI -> HF names inside one encoder block (applied to the part after "encoder.blocks.N.").
_BLOCK_RENAMES: tuple[tuple[str, str], ...] = (
    ("attn.query.", "self_attn.q_proj."),
    ("attn.key.", "self_attn.k_proj."),
    ("attn.value.", "self_attn.v_proj."),
    ("attn.out.", "self_attn.out_proj."),
    ("attn_ln.", "self_attn_layer_norm."),
    ("mlp.0.", "fc1."),
    ("mlp.2.", "fc2."),
    ("mlp_ln.", "final_layer_norm."),
)
_TOP_RENAMES: dict[str, str] = {
    "encoder.conv1.weight": "conv1.weight",
    "encoder.conv1.bias": "conv1.bias",
    "encoder.conv2.weight": "conv2.weight",
    "encoder.conv2.bias": "conv2.bias",
    "encoder.positional_embedding": "embed_positions.weight",
    "encoder.ln_post.weight": "layer_norm.weight",
    "encoder.ln_post.bias": "layer_norm.bias",
}
_DIMS_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")


def _openai_key_to_hf(key: str) -> str:
    """Map one ``encoder.*`` key of an OpenAI checkpoint to the HF ``WhisperEncoder`` name."""
    if key in _TOP_RENAMES:
        return _TOP_RENAMES[key]
    prefix = "encoder.blocks."
    if key.startswith(prefix):
        index, _, rest = key[len(prefix) :].partition(".")
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(old):
                return f"layers.{index}.{new}{rest[len(old) :]}"
    raise CheckpointError(f"unknown whisper encoder key {key!r} in the OpenAI checkpoint")


def whisper_config(dims: Mapping[str, Any]) -> WhisperConfig:
    """HF ``WhisperConfig`` for the encoder described by OpenAI ``dims`` (decoder sizes copied too)."""
    from transformers import WhisperConfig

    missing = [k for k in _DIMS_KEYS if k not in dims]
    if missing:
        raise CheckpointError(f"whisper 'dims' lacks {missing}; got keys {sorted(dims)}")
    return WhisperConfig(
        num_mel_bins=int(dims["n_mels"]),
        max_source_positions=int(dims["n_audio_ctx"]),
        d_model=int(dims["n_audio_state"]),
        encoder_attention_heads=int(dims["n_audio_head"]),
        encoder_layers=int(dims["n_audio_layer"]),
        encoder_ffn_dim=4 * int(dims["n_audio_state"]),
        vocab_size=int(dims.get("n_vocab", 51865)),
        max_target_positions=int(dims.get("n_text_ctx", 448)),
        decoder_attention_heads=int(dims.get("n_text_head", dims["n_audio_head"])),
        decoder_layers=int(dims.get("n_text_layer", dims["n_audio_layer"])),
        decoder_ffn_dim=4 * int(dims.get("n_text_state", dims["n_audio_state"])),
        activation_function="gelu",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        scale_embedding=False,
    )


def convert_openai_whisper(
    state_dict: Mapping[str, torch.Tensor], dims: Mapping[str, Any]
) -> tuple[WhisperConfig, dict[str, torch.Tensor]]:
    """Convert an OpenAI-layout whisper ``model_state_dict`` to an HF encoder state dict.

    Args:
        state_dict: OpenAI names (``encoder.*`` and, ignored, ``decoder.*``); a leading ``module.`` is
            stripped.
        dims: the checkpoint's ``dims`` dict (n_mels, n_audio_ctx, n_audio_state, n_audio_head,
            n_audio_layer, ...).

    Returns:
        ``(hf_config, encoder_state_dict)``: tensors keep their dtype (the official file is float16);
        the keys are exactly those of ``WhisperEncoder(hf_config).state_dict()``.

    Raises:
        CheckpointError: no encoder keys, or an encoder key we do not know.
    """
    config = whisper_config(dims)
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if not name.startswith("encoder."):
            continue  # decoder: unused by LatentSync
        converted[_openai_key_to_hf(name)] = value
    if not converted:
        raise CheckpointError("the whisper checkpoint has no 'encoder.*' entries")
    return config, converted


def encoder_from_dims(dims: Mapping[str, Any]) -> WhisperFeatureEncoder:
    """Random-initialised feature encoder for OpenAI ``dims`` (for tests and shape checks)."""
    from lipsyncctl.nets.whisper import WhisperFeatureEncoder, build_whisper_encoder

    return WhisperFeatureEncoder(build_whisper_encoder(whisper_config(dims)))


def encoder_from_openai(
    obj: Mapping[str, Any],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> WhisperFeatureEncoder:
    """Build and load strictly from an OpenAI checkpoint object ``{"dims", "model_state_dict"}``.

    Weights are cast to ``dtype`` (default float32; the official file is float16, LatentSync computes
    in float32 on CPU). Raises :class:`CheckpointError` on a bad container or key mismatch.
    """
    import torch

    from lipsyncctl.nets.whisper import WhisperFeatureEncoder, build_whisper_encoder

    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(obj, Mapping) or "dims" not in obj or "model_state_dict" not in obj:
        keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"expected an openai-whisper checkpoint {{'dims', 'model_state_dict'}}, got {keys}"
        )
    dims = obj["dims"]
    if not isinstance(dims, Mapping):  # openai's ModelDimensions dataclass
        dims = vars(dims)
    config, state = convert_openai_whisper(obj["model_state_dict"], dims)
    with torch.device("meta"):
        encoder = build_whisper_encoder(config)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shapes = [
        f"{k}: {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            "whisper encoder weights do not match its dims: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {bad_shapes[:5]}"
        )
    state = {k: v.to(dtype=dtype, device=device) for k, v in state.items()}
    encoder.load_state_dict(state, strict=True, assign=True)
    return WhisperFeatureEncoder(encoder).eval()
