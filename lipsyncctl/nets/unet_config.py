"""Architecture config of the LatentSync 3D UNet (the ``model:`` section of ``configs/unet/*.yaml``).

A frozen dataclass that travels with the weights. :meth:`UNetConfig.from_dict` accepts exactly the keys
of the official ``model:`` section plus the diffusers defaults the official code fills in
(``resolved_config`` of ``shared/reference/latentsync_unet_*.json``); any other key is a ``ValueError``
that names it. Values the official configs never use and this implementation does not support (linear
projection, class embeddings, ...) are rejected the same way instead of being silently ignored.

Every field is checked against its annotation and its bounds when the config is built (also by the constructor,
so a checkpoint header or a hand-made config is held to the same rules): :mod:`.arch_config`'s checker, which the
SyncNet's config shares. This module imports nothing but the standard library (``nets`` depends on torch alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from lipsyncctl.nets.arch_config import ABOVE_0, AT_LEAST_0, AT_LEAST_1, Bounds, check_keys, normalize_fields

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock3D", "DownBlock3D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock3D", "UpBlock3D")
MID_BLOCK_TYPES = ("UNetMidBlock3DCrossAttn",)


@dataclass(frozen=True)
class MotionModuleConfig:
    """``motion_module_kwargs`` of the official config (AnimateDiff ``VanillaTemporalModule``)."""

    num_attention_heads: int = 8
    num_transformer_block: int = 1
    attention_block_types: tuple[str, ...] = ("Temporal_Self", "Temporal_Self")
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 24
    temporal_attention_dim_div: int = 1
    zero_initialize: bool = True

    BOUNDS: ClassVar[dict[str, Bounds]] = {
        "num_attention_heads": AT_LEAST_1, "num_transformer_block": AT_LEAST_1,
        "temporal_position_encoding_max_len": AT_LEAST_1, "temporal_attention_dim_div": AT_LEAST_1,
    }

    def __post_init__(self) -> None:
        normalize_fields(self, self.BOUNDS, prefix="motion_module_kwargs.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MotionModuleConfig:
        check_keys(d, {f.name for f in fields(cls)}, "motion_module_kwargs")
        cfg = cls(**d)
        for t in cfg.attention_block_types:
            if t != "Temporal_Self":
                raise ValueError(
                    f"motion_module_kwargs.attention_block_types: {t!r} is not supported "
                    "(only 'Temporal_Self')"
                )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention_block_types"] = list(self.attention_block_types)
        return d


# Defaults = the official model section (configs/unet/stage2.yaml) so that ``UNetConfig()`` is LatentSync 1.5/1.6.
@dataclass(frozen=True)
class UNetConfig:
    """LatentSync ``UNet3DConditionModel`` architecture.

    Note ``attention_head_dim`` is, as in the official code, the NUMBER of heads of the spatial
    transformers (head width = channels / attention_head_dim).
    """

    sample_size: int = 64
    in_channels: int = 13
    out_channels: int = 4
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
    mid_block_type: str = "UNetMidBlock3DCrossAttn"
    up_block_types: tuple[str, ...] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 384
    attention_head_dim: int = 8
    resnet_time_scale_shift: str = "default"
    add_audio_layer: bool = True
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = False
    motion_module_decoder_only: bool = False
    motion_module_type: str = "Vanilla"
    motion_module_kwargs: MotionModuleConfig = field(default_factory=MotionModuleConfig)
    # Filled in by diffusers defaults upstream; only these values are supported.
    only_cross_attention: bool = False
    dual_cross_attention: bool = False
    use_linear_projection: bool = False
    class_embed_type: str | None = None
    num_class_embeds: int | None = None
    upcast_attention: bool = False
    use_inflated_groupnorm: bool = False

    #: Limits of the numeric fields (each element of a tuple field); types come from the annotations.
    BOUNDS: ClassVar[dict[str, Bounds]] = {
        "sample_size": AT_LEAST_1, "in_channels": AT_LEAST_1, "out_channels": AT_LEAST_1,
        "freq_shift": AT_LEAST_0, "block_out_channels": AT_LEAST_1, "layers_per_block": AT_LEAST_1,
        "downsample_padding": AT_LEAST_0, "mid_block_scale_factor": ABOVE_0, "norm_num_groups": AT_LEAST_1,
        "norm_eps": ABOVE_0, "cross_attention_dim": AT_LEAST_1, "attention_head_dim": AT_LEAST_1,
        "motion_module_resolutions": AT_LEAST_1, "num_class_embeds": AT_LEAST_1,
    }

    def __post_init__(self) -> None:
        normalize_fields(self, self.BOUNDS)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        """Build from an official ``model:`` section (or a ``to_dict()`` output). Unknown key, wrong type,
        value out of range or unsupported value -> ValueError naming the key."""
        if not isinstance(d, dict):
            raise ValueError(f"UNet config must be a mapping, got {type(d).__name__}")
        check_keys(d, {f.name for f in fields(cls)}, "UNet model config")
        kw = dict(d)
        if kw.get("motion_module_kwargs", ...) is None:
            kw["motion_module_kwargs"] = {}  # an empty YAML section means the defaults
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML/JSON dict (lists, nested dict); ``from_dict(to_dict())`` round-trips."""
        d = asdict(self)
        for name in ("down_block_types", "up_block_types", "block_out_channels", "motion_module_resolutions"):
            d[name] = list(d[name])
        d["motion_module_kwargs"] = self.motion_module_kwargs.to_dict()
        return d

    def validate(self) -> None:
        """Raise ``ValueError`` naming the key for any value this implementation cannot build."""
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                "down_block_types, up_block_types and block_out_channels must have the same length"
            )
        for t in self.down_block_types:
            if t not in DOWN_BLOCK_TYPES:
                raise ValueError(f"down_block_types: unsupported block {t!r}")
        for t in self.up_block_types:
            if t not in UP_BLOCK_TYPES:
                raise ValueError(f"up_block_types: unsupported block {t!r}")
        if self.mid_block_type not in MID_BLOCK_TYPES:
            raise ValueError(f"mid_block_type: unsupported block {self.mid_block_type!r}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups or c % self.attention_head_dim:
                raise ValueError(
                    f"block_out_channels: {c} is not divisible by norm_num_groups "
                    f"({self.norm_num_groups}) and attention_head_dim ({self.attention_head_dim})"
                )
        if self.use_motion_module and any(c % 32 for c in self.block_out_channels):
            raise ValueError("block_out_channels: motion modules use GroupNorm(32), so every width must be a "
                             "multiple of 32")
        if self.act_fn != "silu":
            raise ValueError(f"act_fn: only 'silu' is supported, got {self.act_fn!r}")
        if self.resnet_time_scale_shift != "default":
            raise ValueError("resnet_time_scale_shift: only 'default' is supported")
        if self.motion_module_type != "Vanilla":
            raise ValueError(
                f"motion_module_type: only 'Vanilla' is supported, got {self.motion_module_type!r}"
            )
        unsupported = {
            "only_cross_attention": False,
            "dual_cross_attention": False,
            "use_linear_projection": False,
            "class_embed_type": None,
            "num_class_embeds": None,
            "upcast_attention": False,
        }
        for key, ok in unsupported.items():
            if getattr(self, key) != ok:
                raise ValueError(f"{key}: only {ok!r} is supported (as in every official config)")

    @property
    def num_frames_max(self) -> int | None:
        """Most frames one forward call may carry (temporal position encoding length), None if unlimited."""
        mm = self.motion_module_kwargs
        if self.use_motion_module and mm.temporal_position_encoding:
            return mm.temporal_position_encoding_max_len
        return None
