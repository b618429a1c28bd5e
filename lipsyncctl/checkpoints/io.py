"""Reading and writing checkpoint files without holding a large file twice in memory.

Supported inputs (the format is recognised from the first bytes, not from the file name):

- ``torch.save`` zip archives (``.pt``/``.pth``/``.model``), read with ``weights_only=True`` and
  ``mmap=True``: tensors stay backed by the file's pages until they are cast or moved.
- legacy (pre-1.6) ``torch.save`` pickles: ``weights_only=True`` without mmap.
- ``.safetensors``: parsed here and memory-mapped without a copy (``torch.frombuffer``).
- diffusers model folders: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (or ``.bin``).

:func:`read_checkpoint` also unwraps the containers the official files use (``{"state_dict": ...}``,
``{"dims", "model_state_dict"}``, a leading DDP ``module.``) and returns the rest as metadata.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl.errors import CheckpointError, MissingModelError

if TYPE_CHECKING:
    import torch

#: The key in a safetensors header under which :func:`write_safetensors` stores our JSON metadata.
LIPSYNCCTL_META_KEY = "lipsyncctl"

_ZIP_MAGIC = b"PK\x03\x04"
_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# safetensors dtype codes -> torch dtype names (resolved lazily, torch is imported on use).
_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


@dataclass
class Checkpoint:
    """A state dict read from disk, plus what its container said about it.

    Attributes:
        path: the file or folder read.
        format: ``torch-zip``, ``torch-legacy``, ``safetensors`` or ``diffusers-folder``.
        container: how the state dict was wrapped: ``state_dict`` (``{"state_dict": ...}``),
            ``openai-whisper`` (``{"dims", "model_state_dict"}``), ``flat`` (the file is the state dict),
            ``lipsyncctl`` (our converted safetensors with a JSON header) or ``diffusers``.
        state_dict: name -> tensor (a leading ``module.`` already stripped).
        metadata: the container's other entries (``dims``, ``global_step``, ``config``, our header ...).
    """

    path: Path
    format: str
    container: str
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def lipsyncctl_header(self) -> dict[str, Any] | None:
        """Our JSON header of a converted file (kind, config, ...), or None."""
        header = self.metadata.get(LIPSYNCCTL_META_KEY)
        return header if isinstance(header, dict) else None


def sniff_format(path: str | os.PathLike[str]) -> str:
    """``torch-zip``, ``torch-legacy``, ``safetensors`` or ``diffusers-folder`` for ``path``.

    Raises:
        MissingModelError: the path does not exist.
        CheckpointError: the file is empty or in none of these formats.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").is_file() and any((p / w).is_file() for w in _DIFFUSERS_WEIGHTS):
            return "diffusers-folder"
        raise CheckpointError(
            f"{p} is a folder but not a diffusers model folder (config.json + {_DIFFUSERS_WEIGHTS[0]})"
        )
    if not p.exists():
        raise MissingModelError(f"checkpoint not found: {p}")
    with p.open("rb") as fh:
        head = fh.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{p} is empty or truncated ({len(head)} bytes)", hint=_CORRUPT_HINT)
    if head.startswith(_ZIP_MAGIC):
        return "torch-zip"
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] == b"{" and 0 < header_len < p.stat().st_size:
        return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol marker of a legacy torch.save file
        return "torch-legacy"
    from lipsyncctl.media.container import MEDIA_EXTS

    if p.suffix.lower() in MEDIA_EXTS:  # a clip given where weights go: no fetch will mend it
        raise CheckpointError(f"{p} is a media file, not model weights",
                              hint="give a checkpoint (.pt, .pth, .ckpt, .safetensors) or a model name")
    raise CheckpointError(
        f"{p} is not a PyTorch checkpoint, a safetensors file or a diffusers folder", hint=_CORRUPT_HINT
    )


_CORRUPT_HINT = ("the file may be truncated or corrupt, or not model weights; a downloaded model: run "
                 "`lipsyncctl models verify`, then fetch it again")


def read_checkpoint(path: str | os.PathLike[str], *, mmap_ok: bool = True) -> Checkpoint:
    """Read any supported checkpoint and unwrap its container. Never downloads.

    Args:
        path: a file or a diffusers folder.
        mmap_ok: memory-map when the format allows it (the default; tensors are then views of the file).

    Raises:
        MissingModelError: the path does not exist.
        CheckpointError: unreadable, not weights-only, or an unknown container.
    """
    p = Path(path)
    fmt = sniff_format(p)
    if fmt == "diffusers-folder":
        return _read_diffusers_folder(p, mmap_ok=mmap_ok)
    if fmt == "safetensors":
        tensors, meta = read_safetensors(p, mmap_ok=mmap_ok)
        header = _parse_header(meta, p)
        metadata: dict[str, Any] = {k: v for k, v in meta.items() if k != LIPSYNCCTL_META_KEY}
        if header is not None:
            metadata[LIPSYNCCTL_META_KEY] = header
        container = "lipsyncctl" if header is not None else "flat"
        return Checkpoint(p, fmt, container, strip_prefix(tensors, "module."), metadata)
    obj = torch_load(p, mmap_ok=mmap_ok and fmt == "torch-zip")
    state_dict, container, metadata = unwrap(obj, p)
    return Checkpoint(p, fmt, container, state_dict, metadata)


def check_models_writable(folder: Path, what: str, *, made: str) -> None:
    """Files can be written in ``folder`` of the models folder (``what``: the models to write there; ``made``: when
    they are, for the hint).

    Raises:
        MissingModelError: a read-only or unwritable folder, a file in the way: naming the models folder and the
            rule that chose it (not the hidden temporary a write would have failed on)."""
    from lipsyncctl import paths
    from lipsyncctl.media.atomic import check_writable

    try:
        check_writable(folder / ".probe", name=folder)
    except OSError as exc:
        where = folder.parent
        if where.exists() and not where.is_dir():
            why = "it is a file, not a folder"
        elif exc.errno:
            why = os.strerror(exc.errno).lower() + (f" at {exc.filename}" if exc.filename and
                                                     Path(exc.filename) not in (where, folder) else "")
        else:
            why = str(exc)
        raise MissingModelError(f"{what} cannot be written in {where}: {why}",
                                hint=f"{made} in the models folder (chosen by {paths.models_dir_source()}): make it "
                                     "writable, or set LIPSYNCCTL_MODELS to a writable folder") from None


def damaged_member(path: Path) -> str | None:
    """The first member of the torch zip archive ``path`` whose data fails its CRC check (a file damaged with no
    hash to compare: torch's reader does not check them, and loads the damaged weights), else None (a sound
    archive, or no zip). Reads the whole file."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        return archive.testzip()


def torch_load(path: Path, *, mmap_ok: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, memory-mapped when possible.

    Raises:
        CheckpointError: the pickle holds objects other than tensors and plain containers, or the file
            is damaged.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap_ok)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refusing to unpickle objects other than tensors (weights_only=True): "
            f"{str(exc).splitlines()[0]}",
            hint="only load checkpoints from sources you trust; convert trusted files with "
            "`lipsyncctl models convert`",
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}", hint=_CORRUPT_HINT) from exc


def unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Find the state dict inside a loaded checkpoint object.

    Returns:
        ``(state_dict, container, metadata)`` with a leading ``module.`` stripped from the names.
    """
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    if "model_state_dict" in obj and "dims" in obj:
        dims = obj["dims"]
        meta = {"dims": dict(dims) if isinstance(dims, Mapping) else dims}
        return _tensors_only(obj["model_state_dict"], path), "openai-whisper", meta
    for key in ("state_dict", "model_state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            meta = {k: v for k, v in obj.items() if k != key and not isinstance(v, torch.Tensor)}
            return _tensors_only(inner, path), key if key == "state_dict" else f"wrapped:{key}", meta
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and len(tensors) == len(obj):
        return _tensors_only(obj, path), "flat", {}
    raise CheckpointError(
        f"{path}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:8]))})",
        hint="expected {'state_dict': ...}, {'dims', 'model_state_dict'} or a flat name->tensor dict",
    )


def _tensors_only(sd: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    import torch

    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state dict entry {bad[0]!r} is not a tensor")
    return strip_prefix(dict(sd), "module.")


def strip_prefix(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Remove ``prefix`` from every name when ALL names carry it (DDP's ``module.``)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def read_safetensors(
    path: str | os.PathLike[str], *, mmap_ok: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and the ``__metadata__`` dict of a safetensors file.

    With ``mmap_ok`` the tensors are zero-copy views of a private (copy-on-write) mapping of the file,
    so a 5 GB file costs no anonymous memory until a tensor is cast or written to.
    """
    import torch

    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > size - 8:
            raise CheckpointError(f"{p}: safetensors header larger than the file", hint=_CORRUPT_HINT)
        try:
            header = json.loads(fh.read(n))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{p}: bad safetensors header: {exc}", hint=_CORRUPT_HINT) from exc
        meta = header.pop("__metadata__", None) or {}
        data_start = 8 + n
        data_len = size - data_start
        try:
            end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise CheckpointError(f"{p}: bad safetensors header: an entry is not a tensor ({exc!r})",
                                  hint=_CORRUPT_HINT) from None
        if end > data_len:
            raise CheckpointError(
                f"{p}: truncated safetensors file ({data_len} data bytes, header needs {end})",
                hint=_CORRUPT_HINT,
            )
        if mmap_ok and data_len > 0:
            buf: Any = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        else:
            fh.seek(0)
            buf = bytearray(fh.read())
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        code = info["dtype"]
        if code not in _ST_DTYPES:
            raise CheckpointError(f"{p}: tensor {name!r} has unsupported dtype {code}")
        dtype = getattr(torch, _ST_DTYPES[code])
        shape = [int(s) for s in info["shape"]]
        start, stop = (int(o) for o in info["data_offsets"])
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = (stop - start) // itemsize
        expected = 1
        for s in shape:
            expected *= s
        if count != expected:
            raise CheckpointError(f"{p}: tensor {name!r}: {stop - start} bytes do not fit shape {shape}")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(buf, dtype=torch.uint8, count=stop - start, offset=data_start + start)
        tensors[name] = flat.view(dtype).reshape(shape)
    return tensors, {str(k): str(v) for k, v in meta.items()}


def _parse_header(meta: Mapping[str, str], path: Path) -> dict[str, Any] | None:
    raw = meta.get(LIPSYNCCTL_META_KEY)
    if raw is None:
        return None
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: bad '{LIPSYNCCTL_META_KEY}' header metadata: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: '{LIPSYNCCTL_META_KEY}' header metadata is not a JSON object")
    return header


def write_safetensors(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    header: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``state_dict`` as safetensors, with ``header`` as JSON under the ``lipsyncctl`` metadata key.

    Written to a temporary name in the same folder and renamed, so a crash never leaves a half file.
    """
    from safetensors.torch import save_file

    from lipsyncctl.media.atomic import output_mode

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {LIPSYNCCTL_META_KEY: json.dumps(dict(header), sort_keys=True)} if header is not None else None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    # Views of one buffer (e.g. tensors read zero-copy from another safetensors file) would be refused
    # as shared memory: give each such tensor its own storage.
    owners: dict[int, int] = {}
    for t in tensors.values():
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            owners[ptr] = owners.get(ptr, 0) + 1
    tensors = {
        k: t.clone() if t.numel() and owners[t.untyped_storage().data_ptr()] > 1 else t for k, t in tensors.items()
    }
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except Exception as exc:  # safetensors' own error: "I/O error: No space left on device (os error 28)"
            found = re.search(r"\(os error (\d+)\)", str(exc))
            if found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), str(tmp)) from exc  # a write failure, as Python's own
        output_mode(tmp)  # (safetensors writes 0600)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def _read_diffusers_folder(folder: Path, *, mmap_ok: bool) -> Checkpoint:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: cannot read: {exc}") from exc
    weights = next(folder / w for w in _DIFFUSERS_WEIGHTS if (folder / w).is_file())
    if weights.suffix == ".safetensors":
        state_dict, _ = read_safetensors(weights, mmap_ok=mmap_ok)
    else:
        state_dict, _, _ = unwrap(torch_load(weights, mmap_ok=mmap_ok and sniff_format(weights) == "torch-zip"), weights)
    return Checkpoint(folder, "diffusers-folder", "diffusers", state_dict, {"config": config, "weights": weights.name})
