"""``models convert``: an official checkpoint -> one safetensors file that carries its own config.

The output keeps the official tensor names (so the strict checks and the manifests still apply) and
stores, as JSON under the ``lipsyncctl`` header key: the model kind, the architecture config (UNet and
syncnet ``model:`` section, whisper ``dims``, VAE config), the config name and where it came from. The
loaders then need no config argument, and loading is a zero-copy memory map.

Nothing is written unless the source passes the strict check for its kind. Whisper files keep only the
encoder (LatentSync never uses the decoder). ``fp16`` halves the file; the motion-module position
tables (exact sinusoids) stay float32.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipsyncctl import __version__, progress
from lipsyncctl.checkpoints.info import detect_kind
from lipsyncctl.checkpoints.io import read_checkpoint, write_safetensors
from lipsyncctl.checkpoints.loaders import header_json, plan_for_role
from lipsyncctl.errors import CheckpointError, ConfigError, UsageError

FORMAT_VERSION = 1
#: Tensors kept in float32 by ``fp16`` conversion.
KEEP_FP32 = ("*.pos_encoder.pe",)
CONVERTIBLE = ("unet", "whisper", "vae", "stable-syncnet", "syncnet-eval")


@dataclass
class ConvertResult:
    source: Path
    output: Path
    kind: str
    config_name: str | None
    num_tensors: int
    dtype: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source), "output": str(self.output), "kind": self.kind,
            "config_name": self.config_name, "num_tensors": self.num_tensors, "dtype": self.dtype,
            "size_bytes": self.size_bytes,
        }


def convert_checkpoint(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    kind: str | None = None,
    config: Any = None,
    fp16: bool = False,
    overwrite: bool = False,
) -> ConvertResult:
    """Convert ``source`` to a self-describing safetensors file at ``output``.

    Args:
        source: an official file (``latentsync_unet.pt``, ``tiny.pt``, ``stable_syncnet.pt``,
            ``syncnet_v2.model``), a diffusers VAE folder, or a converted file.
        output: the ``.safetensors`` file to write (never the source; existing only with ``overwrite``).
        kind: ``unet``/``whisper``/``vae``/``stable-syncnet``/``syncnet-eval``; detected when None.
        config: architecture config for UNet / StableSyncNet (name, path or mapping). When None the
            official config whose tensors match exactly is used (stage2 stands for stage2_512: same
            tensors; pass ``stage2_512`` to record the 1.6 name).
        fp16: store floating tensors as float16.
        overwrite: replace an existing output file.

    Raises:
        UsageError: output equals the source or exists.
        CheckpointError / ConfigError: unknown kind, no matching config, or a strict-check failure.
    """
    src, dst = Path(source), Path(output)
    if dst.exists() and (src.exists() and dst.resolve() == src.resolve()):
        raise UsageError(f"refusing to overwrite the input {src}", hint="choose another output file")
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst} exists", hint="pass --overwrite to replace it, or choose another name")
    if dst.suffix != ".safetensors":
        raise UsageError(f"output must be a .safetensors file, got {dst.name}")

    from lipsyncctl.media.atomic import check_writable

    check_writable(dst)  # a read-only destination fails now, naming it (not the hidden file of a finished read)
    if kind is not None and kind not in CONVERTIBLE:  # the user's word, not a detection: a bad argument (2)
        raise UsageError(f"--kind {kind}: not a kind converted", hint=f"one of {', '.join(CONVERTIBLE)}")

    with progress.Task("convert: read", total=None):
        ck = read_checkpoint(src)
    kind = kind or (ck.lipsyncctl_header or {}).get("kind") or detect_kind(ck.state_dict)
    if kind not in CONVERTIBLE:
        raise CheckpointError(
            f"{src}: cannot tell which model this is (detected: {kind})",
            hint=f"pass --kind, one of {', '.join(CONVERTIBLE)}",
        )
    config_name: str | None = None
    if config is None and kind in ("unet", "stable-syncnet"):
        header = ck.lipsyncctl_header
        if header is not None and header.get("config") is not None:
            config = header["config"]
            config_name = header.get("config_name")
        else:
            from lipsyncctl.checkpoints.info import match_config

            config = match_config(kind, ck.state_dict)
            if config is None:
                from lipsyncctl.checkpoints.archs import UNET_CONFIG_NAMES

                names = f" ({', '.join(UNET_CONFIG_NAMES)}, or a YAML)" if kind == "unet" else " (a YAML)"
                raise ConfigError(
                    f"{src}: the tensors match none of the official {kind} configs",
                    hint=f"pass --config with the architecture the checkpoint was trained with{names}; a `train "
                    "--preset tiny` export: --config tiny",
                )
    if isinstance(config, (str, os.PathLike)) and config_name is None:
        config_name = Path(config).stem

    with progress.Task("convert: check", total=None):
        from lipsyncctl.checkpoints.io import damaged_member

        # a damaged archive loads (torch does not check its CRCs): its garbage would be written into a file that has
        # none, which no later verify could tell from good weights
        if src.is_file() and (damaged := damaged_member(src)) is not None:
            raise CheckpointError(f"{src}: damaged archive: member {damaged} fails its CRC check",
                                  hint="fetch or copy the file again; nothing was written")
        plan = plan_for_role(kind, src, config)
        report = plan.check()
    if not report.ok:
        raise CheckpointError(f"{src} does not match {plan.what}: {report.summary()}",
                              hint="pass the right --config / --kind; nothing was written")

    if kind == "whisper":
        tensors = {k: v for k, v in ck.state_dict.items() if k.startswith("encoder.")}
    elif kind == "vae":
        tensors = dict(plan.state_dict)  # legacy attention names already renamed
    else:
        tensors = dict(ck.state_dict)
    if fp16:
        import torch

        tensors = {
            k: v.to(torch.float16)
            if v.is_floating_point() and not any(fnmatch.fnmatchcase(k, p) for p in KEEP_FP32) else v
            for k, v in tensors.items()
        }
    header = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": header_json(plan.config) if plan.config is not None else None,
        "config_name": config_name,
        "source": src.name,
        "source_format": ck.format,
        "source_container": ck.container,
        "dtype": "float16" if fp16 else "as source",
        "written_by": f"lipsyncctl {__version__}",
    }
    if "global_step" in ck.metadata and isinstance(ck.metadata["global_step"], int):
        header["global_step"] = ck.metadata["global_step"]
    with progress.Task("convert: write", total=None):
        write_safetensors(dst, tensors, header)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
    return ConvertResult(src, dst, kind, config_name, len(tensors), "/".join(dtypes), dst.stat().st_size)
