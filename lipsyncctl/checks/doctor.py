"""Environment checks behind ``lipsyncctl doctor``: can this machine run the toolkit (and a given preset)?

:func:`run_checks` returns a :class:`DoctorResult`, a list of :class:`Check` rows. A row is *required*
when a failure means jobs will not run (no ffmpeg, torch missing, no GPU for a preset that asks for
CUDA...); optional rows only inform (RAM, a CPU-only machine, missing optional encoders) and can at most
warn. ``DoctorResult.ok`` is True when no required row failed; the CLI exits 0 then, 4 otherwise.

Each probe is a small function returning rows, so a test can monkeypatch the thing it probes (ffmpeg
discovery, disk usage, the GPU list) and see the row fail with its hint. Nothing here prints or exits.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lipsyncctl import paths
from lipsyncctl.errors import LipsyncError
from lipsyncctl.media.ffmpeg import (  # fail when absent / warn when absent
    OPTIONAL_ENCODERS,
    REQUIRED_ENCODERS,
)
from lipsyncctl.runner import gpus as gpu_mod
from lipsyncctl.runner import precision, vram

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.training.config import TrainConfig

Status = Literal["ok", "warn", "fail", "skip"]

MIN_PYTHON = (3, 11)
#: Below this much free disk a check fails (nothing can be written); below WARN it warns.
DISK_FAIL_BYTES = 1 * gpu_mod.GiB
DISK_WARN_BYTES = 10 * gpu_mod.GiB
#: Available RAM below this warns (decoding 4K footage and loading the models need headroom).
RAM_WARN_BYTES = 8 * gpu_mod.GiB
#: Decoders the media layer relies on for camera and editorial footage.
WANTED_DECODERS = ("h264", "hevc", "prores", "mjpeg", "aac", "pcm_s16le")


@dataclass(frozen=True)
class Check:
    """One row of the doctor report. ``hint`` says what to do when ``status`` is warn or fail."""

    name: str
    status: Status
    detail: str
    hint: str = ""
    required: bool = True
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """A required check that failed (this is what makes doctor exit 4)."""
        return self.required and self.status == "fail"


@dataclass
class DoctorResult:
    """All checks, in display order, plus the GPU list and (with a preset) its VRAM estimate."""

    checks: list[Check]
    gpus: list[gpu_mod.GpuInfo] = field(default_factory=list)
    preset: str | None = None
    vram_needed_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "preset": self.preset,
            "vram_needed_bytes": self.vram_needed_bytes,
            "gpus": [asdict(g) for g in self.gpus],
            "checks": [asdict(c) for c in self.checks],
        }


def _gib(n: float | None) -> str:
    return "?" if n is None else f"{n / gpu_mod.GiB:.1f} GiB"


# ----------------------------------------------------------------------------------------------
# Probes. Each returns one or more rows; none raises for an expected problem.


def check_python() -> list[Check]:
    v = sys.version_info
    ok = (v.major, v.minor) >= MIN_PYTHON
    return [
        Check(
            "python",
            "ok" if ok else "fail",
            f"{platform.python_version()} ({sys.executable})",
            "" if ok else f"use Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer (scripts/bootstrap.sh)",
        )
    ]


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError as exc:
        return [Check("torch", "fail", f"not importable: {exc}", "run scripts/bootstrap.sh (installs torch)")]
    cuda = torch.version.cuda
    build = f"CUDA {cuda} build" if cuda else "CPU build"
    if cuda and torch.backends.cudnn.is_available():
        build += f", cuDNN {torch.backends.cudnn.version()}"
    threads = torch.get_num_threads()
    return [Check("torch", "ok", f"{torch.__version__} ({build}; {threads} CPU threads)",
                  data={"version": torch.__version__, "cuda": cuda, "threads": threads})]


def check_gpus(probe: gpu_mod.GpuProbe) -> list[Check]:
    """One row per GPU, or one plain "no CUDA GPU: CPU only" row (not a failure by itself)."""
    if not probe.gpus:
        why = probe.nvml_error or "torch sees no CUDA device"
        return [
            Check(
                "gpu",
                "warn",
                f"no CUDA GPU: CPU only ({why})",
                "CPU runs work but are slow; the `tiny` preset is the CPU demo",
                required=False,
            )
        ]
    rows = []
    for g in probe.gpus:
        detail = (
            f"{g.name}, compute {g.capability[0]}.{g.capability[1]}, {_gib(g.total_bytes)} total, "
            f"{_gib(g.free_bytes)} free ({g.source}" + (f", driver {probe.driver})" if probe.driver else ")")
        )
        rows.append(Check(f"gpu {g.index}", "ok", detail, required=False, data=asdict(g)))
    return rows


def check_torch_arch(probe: gpu_mod.GpuProbe) -> list[Check]:
    """Does torch have kernels for every GPU? (e.g. a new card with an old CUDA build: it does not.)"""
    if not probe.gpus:
        return [Check("torch GPU arch", "skip", "no GPU to check", required=False)]
    try:
        import torch
    except ImportError:
        return [Check("torch GPU arch", "skip", "torch not importable", required=False)]
    if not torch.version.cuda:
        return [
            Check(
                "torch GPU arch",
                "warn",
                f"{len(probe.gpus)} GPU(s) present but torch {torch.__version__} is a CPU build",
                "install a CUDA build of torch (TORCH_SPEC / TORCH_INDEX_URL in scripts/bootstrap.sh)",
                required=False,
            )
        ]
    if not torch.cuda.is_available():
        return [
            Check(
                "torch GPU arch",
                "fail",
                f"{len(probe.gpus)} GPU(s) present (driver {probe.driver or '?'}) but torch (CUDA "
                f"{torch.version.cuda}) cannot use them",
                "the NVIDIA driver is probably older than this torch's CUDA: update the driver or install "
                "a torch build for an older CUDA",
            )
        ]
    archs = torch.cuda.get_arch_list()
    rows = []
    for g in probe.gpus:
        covered = gpu_mod.arch_covered(g.capability, archs)
        rows.append(
            Check(
                f"torch arch gpu {g.index}",
                "ok" if covered else "fail",
                f"{g.sm} {'covered by' if covered else 'NOT in'} torch arch list [{' '.join(archs) or 'empty'}]",
                ""
                if covered
                else f"install a torch build compiled for {g.sm} (a newer CUDA wheel), or run with device cpu",
                data={"sm": g.sm, "arch_list": archs},
            )
        )
    return rows


def check_cpu_ram() -> list[Check]:
    import psutil

    threads = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False)
    vm = psutil.virtual_memory()
    ram_ok = vm.available >= RAM_WARN_BYTES
    return [
        Check("cpu", "ok", f"{threads} threads ({physical or '?'} cores), {platform.machine()}", required=False),
        Check(
            "ram",
            "ok" if ram_ok else "warn",
            f"{_gib(vm.total)} total, {_gib(vm.available)} available",
            "" if ram_ok else "close other programs or lower inference.vae_batch / --jobs",
            required=False,
            data={"total_bytes": vm.total, "available_bytes": vm.available},
        ),
    ]


def _existing_ancestor(path: Path) -> Path:
    p = path.expanduser().resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_disk(label: str, path: Path, *, writable: bool = False, required: bool = True) -> list[Check]:
    """Free space at ``path`` (its nearest existing folder); ``writable``: also that the commands could write
    their outputs there (:func:`lipsyncctl.media.atomic.check_writable`, their own check before any work): a
    failure, or a warning when not ``required`` (the current folder, which doctor was not asked about)."""
    from lipsyncctl.media.atomic import check_writable

    where = _existing_ancestor(path)
    try:
        free = shutil.disk_usage(where).free
        if writable:
            check_writable(path.expanduser() / "probe", name=path)  # the folder, or the nearest one above it
    except OSError as exc:
        detail = f"{path}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        return [Check(f"disk {label}", "fail" if required else "warn", detail,
                      "check the path and permissions, or choose another location"
                      + ("" if required else " (--outputs DIR checks the folder the outputs go to)"))]
    status: Status = "ok" if free >= DISK_WARN_BYTES else "warn" if free >= DISK_FAIL_BYTES else "fail"
    hint = {
        "ok": "",
        "warn": f"less than {_gib(DISK_WARN_BYTES)} free: models and renders may not fit",
        "fail": f"less than {_gib(DISK_FAIL_BYTES)} free: free some space or choose another location",
    }[status]
    return [Check(f"disk {label}", status, f"{_gib(free)} free at {where}", hint, data={"free_bytes": free})]


def check_ffmpeg() -> list[Check]:
    """The ffmpeg binary: optional (PyAV does every command's media work, the ``pyav`` rows decide; the
    binary is the benchmarks' reference command), so a missing one or a build without libx264 warns."""
    from lipsyncctl.media import ffmpeg

    try:
        info = ffmpeg.ffmpeg_info()
    except LipsyncError as exc:
        return [
            Check("ffmpeg", "warn", exc.message, f"only the benchmarks use the binary; {exc.hint}", required=False),
            Check("ffmpeg encoders", "skip", "no ffmpeg", required=False),
        ]
    row = Check(
        "ffmpeg",
        "ok",
        f"{info.version} at {info.path} (from {info.source})",
        data={"path": str(info.path), "source": info.source, "version": info.version},
        required=False,
    )
    encoders = _encoder_row("ffmpeg encoders", info.encoders)
    if encoders.status == "fail":
        encoders = dataclasses.replace(encoders, status="warn", hint=f"{encoders.hint} (the benchmarks' reference "
                                       "commands; the commands encode through PyAV)")
    return [row, dataclasses.replace(encoders, required=False)]


def _encoder_row(name: str, encoders: dict[str, bool]) -> Check:
    missing_req = [e for e in REQUIRED_ENCODERS if not encoders.get(e)]
    missing_opt = [e for e in OPTIONAL_ENCODERS if not encoders.get(e)]
    have = [e for e, ok in encoders.items() if ok]
    detail = " ".join(have) or "none"
    if missing_req or missing_opt:
        detail += f"; missing: {' '.join(missing_req + missing_opt)}"
    if missing_req:
        return Check(name, "fail", detail, "use an ffmpeg build with libx264 and aac (imageio-ffmpeg has both)",
                     data={"encoders": encoders})
    if missing_opt:
        return Check(name, "warn", detail, "ProRes/DNxHR/H.265 outputs need an ffmpeg build with those encoders",
                     data={"encoders": encoders})
    return Check(name, "ok", detail, data={"encoders": encoders})


def check_pyav() -> list[Check]:
    try:
        import av
    except ImportError as exc:
        return [Check("pyav", "fail", f"not importable: {exc}", "pip install av (scripts/bootstrap.sh)")]
    from lipsyncctl.media import ffmpeg

    lib = av.library_versions.get("libavcodec")
    version = f"PyAV {av.__version__}" + (f", libavcodec {'.'.join(map(str, lib))}" if lib else "")
    decoders = ffmpeg.pyav_codecs(WANTED_DECODERS, "r")
    missing_dec = [d for d, ok in decoders.items() if not ok]
    rows = [
        Check(
            "pyav",
            "ok" if not missing_dec else "warn",
            version + (f"; decoders missing: {' '.join(missing_dec)}" if missing_dec else "; decoders ok"),
            "" if not missing_dec else "some camera codecs cannot be read; install a fuller PyAV wheel",
            required=True,
            data={"version": av.__version__, "decoders": decoders},
        )
    ]
    rows.append(_encoder_row("pyav encoders", ffmpeg.pyav_encoders()))
    return rows


def check_presets() -> list[Check]:
    from lipsyncctl import config as cfg

    names, bad = [], []
    for name, path in cfg.list_presets().items():
        try:
            cfg.resolve(str(path))
            names.append(name)
        except LipsyncError as exc:
            bad.append(f"{name}: {exc.message}")
    if bad:
        return [Check("presets", "fail", "; ".join(bad), "fix the preset file (the message names the key)")]
    if not names:
        return [Check("presets", "fail", f"no presets in {cfg.builtin_presets_dir()}", "reinstall lipsyncctl")]
    return [Check("presets", "ok", f"{len(names)} valid: {' '.join(names)}", data={"presets": names})]


def check_timeline_formats() -> list[Check]:
    """The edit formats ``sync --timeline`` reads here: OTIO's own, and those whose adapter is installed (EDL, FCP 7
    XML, AAF: the extras of :data:`~lipsyncctl.timeline.source.ADAPTER_EXTRAS`). Optional: a missing one is a
    warning naming its package and extra."""
    from lipsyncctl.timeline.source import (
        ADAPTER_EXTRAS,
        ADAPTER_PACKAGES,
        ADAPTERS_BY_SUFFIX,
        installed_adapters,
    )

    have = set(installed_adapters())
    suffixes = sorted(s for s, a in ADAPTERS_BY_SUFFIX.items() if a in have or a not in ADAPTER_PACKAGES)
    missing = {s: a for s, a in ADAPTERS_BY_SUFFIX.items() if a in ADAPTER_EXTRAS and a not in have}
    detail = "reads " + " ".join(suffixes) + (f"; not {' '.join(missing)}" if missing else "")
    extras = sorted({ADAPTER_EXTRAS[a] for a in missing.values()})
    hint = (f"pip install {' '.join(sorted({ADAPTER_PACKAGES[a] for a in missing.values()}))} "
            f"(or the extra{'s' * (len(extras) > 1)} {', '.join(extras)})") if missing else ""
    return [Check("timeline formats", "warn" if missing else "ok", detail, hint, required=False,
                  data={"reads": suffixes, "missing": sorted(missing)})]


def check_models_dir(models_dir: Path) -> list[Check]:
    source = paths.models_dir_source()
    exists = models_dir.is_dir()
    detail = f"{models_dir} (chosen by {source})" + ("" if exists else ", does not exist yet")
    data: dict[str, Any] = {"path": str(models_dir), "source": source, "exists": exists}
    installed, error = installed_models(models_dir)
    if installed is not None:
        have = sorted(n for n, ok in installed.items() if ok)
        detail += f"; installed: {' '.join(have) or 'none'} (of {len(installed)} known)"
        data["installed"] = installed
    elif error:
        detail += f"; registry unreadable: {error}"
    hint = "" if exists else "it is created by `lipsyncctl models fetch`; set LIPSYNCCTL_MODELS to move it"
    if not exists and models_dir.exists():  # a file of that name: nothing can be fetched or made there
        detail = f"{models_dir} (chosen by {source}) is a file, not a folder"
        hint = "set LIPSYNCCTL_MODELS to a folder"
    status: Status = "ok" if exists and not error else "warn"
    return [Check("models dir", status, detail, hint or error or "", required=False, data=data)]


def check_sync_scoring(models_dir: Path) -> list[Check]:
    """Which sync measurement ``score``, the timeline QC and ``--min-sync`` get here: the official scale
    (``syncnet-v2`` + ``sfd-face``), the approximate one (``syncnet-v2`` alone), or none (``score`` and
    ``--min-sync`` exit 4, the QC report has no scores). Optional: a missing model warns with its fetch."""
    from lipsyncctl.scoring.evaluator import EVAL_MODEL
    from lipsyncctl.scoring.official import SCALE_APPROXIMATE, SCALE_OFFICIAL, SFD_MODEL

    installed, _ = installed_models(models_dir)
    have = {name for name, ok in (installed or {}).items() if ok}
    if EVAL_MODEL in have and SFD_MODEL in have:
        return [Check("sync scoring", "ok", f"{SCALE_OFFICIAL} scale ({EVAL_MODEL} + {SFD_MODEL}): score, the "
                      "timeline QC, --min-sync", required=False, data={"scale": SCALE_OFFICIAL})]
    if EVAL_MODEL in have:
        return [Check("sync scoring", "warn", f"{SCALE_APPROXIMATE} scale only ({SFD_MODEL} is not installed)",
                      f"lipsyncctl models fetch {SFD_MODEL}", required=False, data={"scale": SCALE_APPROXIMATE})]
    return [Check("sync scoring", "warn", f"not available ({EVAL_MODEL} is not installed): score and --min-sync "
                  "exit 4, the timeline QC reports no scores", f"lipsyncctl models fetch {EVAL_MODEL} {SFD_MODEL}",
                  required=False, data={"scale": None})]


def installed_models(models_dir: Path) -> tuple[dict[str, bool] | None, str | None]:
    """``({registry name: every file present}, None)``, or ``(None, why)`` without a usable registry."""
    try:
        from lipsyncctl.checkpoints import registry
    except ImportError:
        return None, None  # this build has no checkpoint registry
    try:
        reg = registry.load_registry()
    except LipsyncError as exc:
        return None, exc.message
    return {
        e.name: all(f.present for f in registry.model_status(e, models_dir=models_dir)) for e in reg
    }, None


# ----------------------------------------------------------------------------------------------
# Preset-specific checks


def check_preset(config: Config, probe: gpu_mod.GpuProbe) -> list[Check]:
    """The device the preset asks for exists, its VRAM estimate fits the free memory, and which dtype
    it runs in there and why (``data["dtype"]``, ``data["dtype_reason"]``)."""
    rows = _check_preset_device(config, probe)
    row = rows[0]
    if row.status == "fail":  # no such device: the dtype question does not arise yet
        return rows
    where = row.data.get("device", config.inference.device)
    gpu = next((g for g in probe.gpus if g.index == row.data.get("gpu")), None)
    device_type = "cuda" if str(where).startswith("cuda") or gpu is not None else str(where)
    setting = config.inference.dtype
    dtype = precision.resolved_dtype(setting, device_type, gpu.capability if gpu else None)
    reason = precision.DTYPE_REASONS[setting]
    on = f"{device_type}" + (f" (gpu {gpu.index}, cc {gpu.capability[0]}.{gpu.capability[1]})" if gpu else "")
    data = {**row.data, "dtype": dtype, "dtype_setting": setting, "dtype_reason": reason}
    if dtype is None:  # fp16 on the CPU: the run would stop with a configuration error (exit 3)
        refused = f"dtype fp16 refused on {on}: the run would stop (exit 3)"
        hint = "use --set inference.dtype=bf16 (or fp32) on the CPU, or run on a CUDA GPU"
        return [dataclasses.replace(row, status="fail", required=True,  # the run stops: never a pass
                                    detail=f"{row.detail}; {refused}",
                                    hint="; ".join(h for h in (row.hint, hint) if h), data=data)]
    return [dataclasses.replace(row, detail=f"{row.detail}; dtype {dtype} on {on} ({reason})", data=data)]


def _check_preset_device(config: Config, probe: gpu_mod.GpuProbe) -> list[Check]:
    """The device the preset asks for exists, and its VRAM estimate fits the free memory."""
    device = config.inference.device
    need = vram.estimate_vram(config)
    name = f"preset {config.name}"
    cpu_ok = vram.is_tiny(config)  # the tiny preset: its estimate counts the tiny models
    if device == "cpu":
        slow = "" if cpu_ok else "; full-size models on CPU take minutes per second of video"
        return [Check(name, "ok", f"device cpu: no GPU needed{slow}", data={"device": device})]
    if device == "mps":
        import torch

        ok = torch.backends.mps.is_available()
        return [Check(name, "ok" if ok else "fail", f"device mps {'available' if ok else 'NOT available'}",
                      "" if ok else "use --set inference.device=cpu", data={"device": device})]
    explicit = device.startswith("cuda")
    if not probe.gpus:
        if explicit:
            return [Check(name, "fail", f"device {device} requested but no CUDA GPU: CPU only",
                          f"run on a machine with a GPU (needs about {_gib(need)}), or "
                          "--set inference.device=cpu", data={"device": device, "vram_needed_bytes": need})]
        detail = "device auto -> cpu (no CUDA GPU: CPU only)"
        if cpu_ok:
            return [Check(name, "ok", detail, data={"device": "cpu"})]
        return [Check(name, "warn", detail + f"; on a GPU it would need about {_gib(need)}",
                      "CPU inference of full-size models is very slow; the `tiny` preset is the CPU demo",
                      required=False, data={"device": "cpu", "vram_needed_bytes": need})]
    gpus = probe.gpus
    if device.startswith("cuda:"):
        idx = int(device[5:])
        gpus = [g for g in probe.gpus if g.index == idx]
        if not gpus:
            return [Check(name, "fail", f"device {device} requested; this machine has GPUs "
                          f"{', '.join(str(g.index) for g in probe.gpus)}", "choose an existing cuda:N")]
    best = max(gpus, key=lambda g: g.free_bytes if g.free_bytes is not None else g.total_bytes)
    free = best.free_bytes if best.free_bytes is not None else best.total_bytes
    fits = need <= free
    detail = f"needs about {_gib(need)} VRAM (estimate); gpu {best.index} has {_gib(free)} free"
    hint = "" if fits else (
        "use the low-vram preset, or --set inference.vae_batch=4 --set inference.guidance=1.0 "
        "--set inference.dtype=fp16, or free GPU memory"
    )
    status: Status = "ok" if fits else ("fail" if explicit else "warn")
    return [Check(name, status, detail, hint, required=explicit,
                  data={"device": device, "vram_needed_bytes": need, "gpu": best.index, "free_bytes": free})]


def check_preset_models(config: Config, models_dir: Path) -> list[Check]:
    """Every model the preset names (and what they require) is installed, or is an existing path."""
    names = [config.model.checkpoint, config.model.whisper, config.model.vae]
    if all(n == "tiny" for n in names):
        from lipsyncctl.checkpoints import tiny

        if not tiny.tiny_models_current(models_dir):  # made on first use: there must be a place to write them
            try:
                tiny.check_can_make(tiny.tiny_root(models_dir))
            except LipsyncError as exc:
                return [Check("preset models", "fail", exc.message, exc.hint)]
            return [Check("preset models", "ok", "tiny random model: no weights needed (made on first use)")]
        return [Check("preset models", "ok", "tiny random model: no weights needed")]
    try:
        from lipsyncctl.checkpoints import registry
    except ImportError:
        return [Check("preset models", "skip", "no checkpoint registry in this build", required=False)]
    try:
        reg = registry.load_registry()
    except LipsyncError as exc:
        return [Check("preset models", "fail", exc.message, exc.hint)]
    wanted: list[str] = []
    for n in names:
        if n in reg:
            wanted += [n, *(r for r in reg.get(n).requires if r not in names)]
        else:
            wanted.append(n)
    have, missing = [], []
    for n in dict.fromkeys(wanted):
        if n == "tiny":
            continue
        if n in reg:
            present = all(f.present for f in registry.model_status(reg.get(n), models_dir=models_dir))
        else:
            present = Path(n).expanduser().exists()
        (have if present else missing).append(n)
    detail = f"installed: {' '.join(have) or 'none'}" + (f"; missing: {' '.join(missing)}" if missing else "")
    hints = []
    fetch = [n for n in missing if n in reg]
    if fetch:
        hints.append(f"run `lipsyncctl models fetch {' '.join(fetch)}` on a machine that is online")
    if len(fetch) < len(missing):
        hints.append("model paths in the preset must exist; registry names: `lipsyncctl models list`")
    hint = "; ".join(hints)
    return [Check("preset models", "fail" if missing else "ok", detail, hint,
                  data={"installed": have, "missing": missing, "models_dir": str(models_dir)})]


def check_face_detector(config: Config, models_dir: Path) -> list[Check]:
    """The face detector the preset's ``faces.backend`` stands for is usable (``auto``: the first usable one, in
    the order of :data:`~lipsyncctl.faces.detect.BACKENDS`), and why each other one is not."""
    from lipsyncctl.faces.detect import OFFICIAL_BACKEND, available_backends, usable_backend

    setting = config.faces.backend
    reasons = available_backends(models_dir)
    others = "; ".join(f"{k}: {v}" for k, v in reasons.items() if v is not None)
    data: dict[str, Any] = {"setting": setting, "backends": reasons}
    try:
        chosen = usable_backend(setting, models_dir)
    except LipsyncError as exc:
        return [Check("face detector", "fail", exc.message, exc.hint, data=data)]
    official = "the official one" if chosen == OFFICIAL_BACKEND else f"not the official {OFFICIAL_BACKEND}"
    detail = f"{chosen} ({'auto' if setting == 'auto' else 'set'}; {official})" + (f"; {others}" if others else "")
    return [Check("face detector", "ok", detail, data={**data, "backend": chosen})]


def check_train_preset(config: TrainConfig, probe: gpu_mod.GpuProbe) -> list[Check]:
    """The training VRAM estimate (:func:`lipsyncctl.training.memory.estimate_training_memory`) against the
    GPU with the most free memory; informative only (a training run is not what doctor gates)."""
    from lipsyncctl.errors import ConfigError
    from lipsyncctl.training.memory import estimate_training_memory

    name = f"train preset {config.name}"
    try:
        mem = estimate_training_memory(config)
    except ConfigError as exc:  # (a model.trainable part that names no parameter: a row, not the whole report)
        return [Check(name, "fail", exc.message, exc.hint or "")]
    other = mem.full if mem.checkpointing else mem.checkpointed
    detail = (f"needs about {mem.total_gb:.1f} GiB VRAM per process (estimate, {mem.precision}, checkpointing "
              f"{'on' if mem.checkpointing else 'off'}; {other.total:.1f} GiB with it "
              f"{'off' if mem.checkpointing else 'on'})")
    data: dict[str, Any] = {"vram_needed_bytes": int(mem.total_gb * gpu_mod.GiB), "estimate": mem.to_dict()}
    if not probe.gpus:
        return [Check(name, "ok", f"{detail}; no GPU: estimate only", required=False, data=data)]
    best = max(probe.gpus, key=lambda g: g.free_bytes if g.free_bytes is not None else g.total_bytes)
    free = best.free_bytes if best.free_bytes is not None else best.total_bytes
    fits = mem.total_gb * gpu_mod.GiB <= free
    hint = "" if fits else ("use a smaller preset (stage2-24gb, stage2_efficient), --set run.grad_checkpointing=true, "
                            "run.lora_rank=64 or loss.trepa=0, or free GPU memory")
    return [Check(name, "ok" if fits else "warn", f"{detail}; gpu {best.index} has {_gib(free)} free", hint,
                  required=False, data={**data, "gpu": best.index, "free_bytes": free})]


def check_train_models(config: TrainConfig) -> list[Check]:
    """Every file ``train`` loads for the training preset is there: the networks' files
    (:func:`lipsyncctl.training.networks.needed_files`, found by the run's own
    :func:`~lipsyncctl.training.networks.resolve_needed`) and, with sync validation on, its scorer's
    (:func:`lipsyncctl.training.validation.model_files`). Required: a missing one stops the run (exit 4;
    5 for a ``--init`` path). The ``tiny`` files are generated on first use, so they are not looked for."""
    from lipsyncctl.training import networks, validation

    installed, _ = installed_models(paths.models_dir())  # registry names (the run resolves in paths.models_dir())
    known = set(installed or ())
    have, missing, failed, hints = [], [], [], []
    for need in networks.needed_files(config):
        label = f"{need.key} {need.name}"
        if need.name == networks.TINY:
            have.append(label)
            continue
        try:
            networks.resolve_needed(need)
        except LipsyncError as exc:
            missing.append(label)
            failed.append((need, exc))
        else:
            have.append(label)
    if failed:  # registry models: one fetch line for all, the terms' --set after it; a path: its own hint
        hints.append(networks.missing_hint(failed, known))
    if validation.enabled(config):
        try:
            have += [f"validation {name}" for name in validation.model_files(config)]
        except LipsyncError as exc:
            missing.append("validation scorer")
            hints.append(exc.hint)
    detail = (f"found: {', '.join(have) or 'none'}" if have or missing else "no files (a seeded random start)") + \
        (f"; missing: {', '.join(missing)}" if missing else "")
    return [Check("train models", "fail" if missing else "ok", detail, "; ".join(dict.fromkeys(hints)),
                  data={"found": have, "missing": missing})]


# ----------------------------------------------------------------------------------------------


def run_checks(preset: Config | None, outputs_dir: Path | None, models_dir: Path | None = None,
               train_config: TrainConfig | None = None) -> DoctorResult:
    """Run every check (and the preset's device/VRAM check when ``preset`` is given; the training VRAM
    estimate when ``train_config`` is). ``outputs_dir`` None: the current folder, whose write access only warns."""
    models_dir = models_dir if models_dir is not None else paths.models_dir()
    probe = gpu_mod.list_gpus()
    checks: list[Check] = []
    checks += check_python()
    checks += check_torch()
    checks += check_gpus(probe)
    checks += check_torch_arch(probe)
    checks += check_cpu_ram()
    checks += check_disk("outputs", outputs_dir or Path("."), writable=True, required=outputs_dir is not None)
    checks += check_disk("models", models_dir)
    checks += check_ffmpeg()
    checks += check_pyav()
    checks += check_presets()
    checks += check_timeline_formats()
    checks += check_models_dir(models_dir)
    checks += check_sync_scoring(models_dir)
    need = None
    if preset is not None:
        checks += check_preset(preset, probe)
        checks += check_preset_models(preset, models_dir)
        checks += check_face_detector(preset, models_dir)
        need = vram.estimate_vram(preset)
    if train_config is not None:
        checks += check_train_preset(train_config, probe)
        need = checks[-1].data["vram_needed_bytes"]
        checks += check_train_models(train_config)
    name = preset.name if preset else train_config.name if train_config else None
    return DoctorResult(checks=checks, gpus=list(probe.gpus), preset=name, vram_needed_bytes=need)
