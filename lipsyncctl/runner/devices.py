"""Devices a job runs on: the device and dtype a run configuration names, and a ``--gpus`` list.

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
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


def check_gpu_count(count: int, option: str) -> None:
    """DeviceError (exit 4) unless ``count`` CUDA GPUs are visible (``CUDA_VISIBLE_DEVICES`` counts): a group
    asked to run on GPUs would otherwise run on the CPU, hours slower, without a word. ``option``: what asked."""
    visible = _visible_gpus()
    if visible < count:
        raise DeviceError(f"{option}: this machine has {visible} CUDA GPU(s) visible",
                          hint="--nproc N runs N processes on the CPU; check CUDA_VISIBLE_DEVICES and "
                               "`lipsyncctl doctor`")


def check_gpus(devices: Sequence[str]) -> None:
    """Every device of a ``--gpus`` list (``cuda:N``, :func:`parse_gpus`) exists here, checked before any work: a
    worker's first network load failed on it after the CPU stages had run (curate: an internal error).

    Raises:
        DeviceError: naming the first missing one (exit 4).
    """
    if not devices:
        return
    import torch

    visible = _visible_gpus()
    for device in devices:
        index = torch.device(device).index or 0
        if index >= visible:
            raise DeviceError(f"--gpus {index}: this machine has {visible} CUDA GPU(s) visible",
                              hint="leave --gpus out to run on the CPU (--jobs N: N worker processes); check "
                                   "CUDA_VISIBLE_DEVICES and `lipsyncctl doctor`")


def _visible_gpus() -> int:
    """CUDA GPUs visible here (``CUDA_VISIBLE_DEVICES`` counts)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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


#: MKL's conditional numerical reproducibility (CNR) mode: results that do not depend on where in memory a tensor
#: lies. Without it, MKL (the BLAS of torch's x86 CPU builds) takes other code paths for other alignments, and the
#: same run gives other last bits from one process to the next (a CPU training run did not repeat bit for bit).
MKL_CBWR = "AUTO,STRICT"
_MKL_CBWR_AUTO, _MKL_CBWR_STRICT = 2, 0x10000


@functools.cache
def reproducible_cpu_math() -> bool:
    """Ask MKL for alignment-independent results (:data:`MKL_CBWR`) in this process and the processes it starts
    (data workers, ranks: through the environment). MKL takes the mode only before its first call: returns
    whether the mode is in force (False: MKL was used before in this process, or the mode could not be set).
    Decided once per process (a second call must not read the variable the first one set as the user's)."""
    import ctypes
    import os

    if os.environ.get("MKL_CBWR"):
        return True  # set before this process used MKL (MKL reads it at its first call)
    os.environ["MKL_CBWR"] = MKL_CBWR  # for the children; and for MKL itself if nothing has called it yet
    try:
        import torch

        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        set_mode = lib.mkl_serv_cbwr_set
    except (OSError, AttributeError):  # another BLAS (ARM, macOS): no MKL, nothing to set
        return True
    set_mode.argtypes = [ctypes.c_int]
    return set_mode(_MKL_CBWR_AUTO | _MKL_CBWR_STRICT) == 0
