"""What GPUs this machine has and whether the installed torch can drive them.

Two questions ``doctor`` and the worker pool ask (what a preset needs is :mod:`lipsyncctl.runner.vram`):

- :func:`list_gpus` - each CUDA GPU's name, compute capability and total/free memory, read through NVML
  (``nvidia-ml-py``; the numbers ``nvidia-smi`` shows, other processes included) and, where NVML is
  missing, through torch.
- :func:`arch_covered` - whether torch's compiled architecture list (``torch.cuda.get_arch_list()``)
  has kernels that run on a GPU of a given compute capability.

torch is imported lazily (inside functions) so importing this module stays cheap.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA GPU. Memory in bytes; ``free_bytes`` is None when it could not be read."""

    index: int
    name: str
    capability: tuple[int, int]
    total_bytes: int
    free_bytes: int | None
    source: str  # "nvml" or "torch"

    @property
    def sm(self) -> str:
        """The capability as torch spells it in its arch list, e.g. ``"sm_90"`` or ``"sm_120"``."""
        return f"sm_{self.capability[0]}{self.capability[1]}"


@dataclass(frozen=True)
class GpuProbe:
    """Result of :func:`list_gpus`: the GPUs, and why NVML gave none (for a plain message)."""

    gpus: list[GpuInfo]
    nvml_error: str | None
    driver: str | None


def _nvml_gpus() -> tuple[list[GpuInfo], str | None, str | None]:
    """GPUs via NVML. Returns ``(gpus, error, driver_version)``; ``error`` is set when NVML is unusable."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed", None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # NVMLError_LibraryNotFound on machines without the NVIDIA driver
        return [], f"NVML unavailable: {exc}", None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GpuInfo(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    capability=(int(major), int(minor)),
                    total_bytes=int(mem.total),
                    free_bytes=int(mem.free),
                    source="nvml",
                )
            )
        return gpus, None, driver.decode() if isinstance(driver, bytes) else str(driver)
    except pynvml.NVMLError as exc:
        return [], f"NVML query failed: {exc}", None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _torch_gpus() -> list[GpuInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        try:
            free, total = torch.cuda.mem_get_info(i)
        except RuntimeError:
            free, total = None, props.total_memory
        gpus.append(
            GpuInfo(
                index=i,
                name=props.name,
                capability=(props.major, props.minor),
                total_bytes=int(total),
                free_bytes=None if free is None else int(free),
                source="torch",
            )
        )
    return gpus


def visible_gpus(gpus: list[GpuInfo], visible: str | None) -> list[GpuInfo]:
    """Apply ``CUDA_VISIBLE_DEVICES`` to NVML's list so that ``index`` is what ``cuda:N`` means.

    NVML sees every GPU of the machine; CUDA (and torch) only the listed ones, renumbered from 0. An
    empty value hides all GPUs. UUID / MIG forms are left as they are (NVML order is kept).
    """
    if visible is None:
        return gpus
    items = [v.strip() for v in visible.split(",") if v.strip()]
    if not items:
        return []
    if not all(v.isdigit() for v in items):
        return gpus
    by_index = {g.index: g for g in gpus}
    out = []
    for new, old in enumerate(int(v) for v in items):
        if old not in by_index:
            break  # CUDA stops at the first invalid ordinal
        out.append(replace(by_index[old], index=new))
    return out


def list_gpus() -> GpuProbe:
    """The CUDA GPUs this process can use (NVML first, torch as the fallback). Never raises for "no GPU"."""
    gpus, error, driver = _nvml_gpus()
    if gpus:
        gpus = visible_gpus(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    else:
        gpus = _torch_gpus()
    return GpuProbe(gpus, error, driver)


_ARCH = re.compile(r"^(sm|compute)_(\d+)([a-z]?)$")


def arch_covered(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a build with ``arch_list`` (``torch.cuda.get_arch_list()``) runs on ``capability``.

    CUDA's compatibility rules: a cubin for ``sm_XY`` runs on GPUs of the same major X with minor >= Y
    (``sm_80`` runs on an ``8.6`` card); an ``a`` suffix (``sm_90a``) runs on exactly that GPU; PTX
    (``compute_XY``) is JIT-compiled by the driver for any GPU of capability >= X.Y.
    """
    major, minor = capability
    for arch in arch_list:
        m = _ARCH.match(arch)
        if not m:
            continue
        kind, digits, suffix = m.groups()
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "compute":
            if (a_major, a_minor) <= (major, minor):
                return True
        elif suffix == "a":
            if (a_major, a_minor) == (major, minor):
                return True
        elif a_major == major and a_minor <= minor:
            return True
    return False
