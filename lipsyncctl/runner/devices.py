"""Devices a job runs on: the device and dtype a run configuration names, and a ``--gpus`` list.

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lipsyncctl.errors import ConfigError, DeviceError, UsageError

if TYPE_CHECKING:
    import torch

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else CPU. Raises DeviceError if unavailable."""
    import torch

    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but CUDA is not available")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' requested but MPS is not available")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` = fp16 on CUDA GPUs with compute capability >= 8 (official rule), else fp32."""
    import torch

    if name == "auto":
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] > 7:
            return torch.float16
        return torch.float32
    if name == "fp16" and device.type == "cpu":
        raise ConfigError(
            "inference.dtype fp16 is not supported on the CPU", hint="use fp32 or bf16 on the CPU"
        )
    return getattr(torch, _DTYPES[name])


def parse_gpus(value: str | None) -> list[str]:
    """``"0,1"`` -> ``["cuda:0", "cuda:1"]``."""
    if not value:
        return []
    out = []
    for part in value.split(","):
        part = part.strip()
        if not part.isdigit():
            raise UsageError(f"--gpus {value!r}: expected GPU indices like 0,1")
        out.append(f"cuda:{part}")
    return out
