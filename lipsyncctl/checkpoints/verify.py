"""``models verify``: are the installed files the right ones, and would they load?

Per file: present, size (when known), sha256 (against the registry, else against the hash recorded
by the first verified download), and loadability: the file is read memory-mapped and its names and
shapes are compared with the model built on the meta device (no weights are materialised, so even the
5 GB UNet is checked in seconds, plus hashing time).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsyncctl import paths
from lipsyncctl.checkpoints.fetch import sha256_file
from lipsyncctl.checkpoints.registry import LocalState, ModelEntry, ModelFile, expected_sha256
from lipsyncctl.errors import LipsyncError

OK, MISSING, SIZE, HASH, UNLOADABLE = "ok", "missing", "size-mismatch", "hash-mismatch", "unloadable"


@dataclass
class FileCheck:
    path: str
    role: str
    local_path: Path
    status: str
    detail: str = ""
    size: int | None = None
    sha256: str | None = None
    sha256_origin: str | None = None  # registry | local | recorded | None (unknown)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "role": self.role, "local_path": str(self.local_path), "status": self.status,
            "detail": self.detail, "size": self.size, "sha256": self.sha256, "sha256_origin": self.sha256_origin,
        }


@dataclass
class ModelCheck:
    name: str
    folder: Path
    files: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status == OK for f in self.files)

    @property
    def installed(self) -> bool:
        return all(f.status != MISSING for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder), "ok": self.ok,
                "files": [f.to_dict() for f in self.files]}


#: the source a hash recorded by ``models verify --record`` names (the QC report says where a file came from)
RECORDED_IN_PLACE = "a copy in place (`models verify --record`)"


def verify_model(
    entry: ModelEntry,
    *,
    models_dir: Path | None = None,
    hashes: bool = True,
    load: bool = True,
    record: bool = False,
) -> ModelCheck:
    """Check every file of ``entry``.

    Args:
        hashes: compute sha256 (slow for big files; sizes are always checked).
        load: compare names/shapes with the model (meta build, no weights).
        record: store the sha256 of files that pass but whose hash is unknown, in ``local.yaml``.
    """
    mdir = models_dir if models_dir is not None else paths.models_dir()
    state = LocalState.load(mdir)
    result = ModelCheck(entry.name, entry.folder(mdir))
    for f in entry.files:
        result.files.append(_check_file(entry, f, mdir, state, hashes=hashes, load=load))
    if record:
        changed = False
        for fc, f in zip(result.files, entry.files, strict=True):
            if fc.status == OK and fc.sha256 and fc.sha256_origin is None and fc.size is not None:
                # (not f.source: the file was put there by hand, not downloaded from the registry's source)
                state.record(entry.name, f.path, fc.sha256, fc.size, RECORDED_IN_PLACE)
                fc.sha256_origin = "recorded"
                changed = True
        if changed:
            state.save()
    return result


def _check_file(
    entry: ModelEntry, f: ModelFile, mdir: Path, state: LocalState, *, hashes: bool, load: bool
) -> FileCheck:
    p = entry.local_path(f, mdir)
    check = FileCheck(f.path, f.role, p, OK)
    if not p.is_file():
        check.status, check.detail = MISSING, f"not installed (source: {f.source})"
        return check
    check.size = p.stat().st_size
    known, origin = expected_sha256(entry, f, state)
    rec = state.get(entry.name, f.path)
    expected_size = f.size if f.size is not None else (rec.size if rec is not None else None)
    if expected_size is not None and check.size != expected_size:
        check.status, check.detail = SIZE, f"{check.size} B, expected {expected_size} B"
        return check
    if hashes:
        digest = sha256_file(p, f"hash {entry.name}/{f.path}")
        check.sha256 = digest
        if known is not None:
            check.sha256_origin = origin
            if digest != known:
                check.status = HASH
                check.detail = f"sha256 {digest[:16]}... != {origin} {known[:16]}..."
                return check
        elif f.sha256_prefix:
            if not digest.startswith(f.sha256_prefix):
                check.status, check.detail = HASH, f"sha256 {digest[:16]}... does not start with {f.sha256_prefix}"
                return check
            check.sha256_origin = "prefix"
    if load:
        problem = _load_problem(entry, f, p)
        if problem:
            check.status, check.detail = UNLOADABLE, problem
            return check
    if hashes and check.sha256_origin is None:
        check.detail = "sha256 not known yet (use --record to remember it)"
    return check


def _load_problem(entry: ModelEntry, f: ModelFile, p: Path) -> str:
    """'' when the file would load as its role, else a readable reason."""
    from lipsyncctl.checkpoints.loaders import plan_for_role

    try:
        if f.role == "vae-config":
            data = json.loads(p.read_text())
            return "" if isinstance(data, dict) and "block_out_channels" in data else "not a VAE config.json"
        if f.role == "fan":
            return "" if zipfile.is_zipfile(p) else "not a TorchScript archive (zip)"
        if f.role in ("scrfd", "landmark-106"):
            return _onnx_problem(f.role, p)
        if f.role == "s3fd":
            from lipsyncctl.checkpoints.info import detect_kind
            from lipsyncctl.checkpoints.io import read_checkpoint

            kind = detect_kind(read_checkpoint(p).state_dict)
            return "" if kind == "s3fd" else f"not an S3FD state dict (looks like: {kind})"
        from lipsyncctl.checkpoints.io import damaged_member

        if (damaged := damaged_member(p)) is not None:  # a torch archive's CRCs find a damaged file with no hash
            return f"damaged archive: member {damaged} fails its CRC check"
        config = entry.unet_config if f.role == "unet" else entry.syncnet_config
        target = p.parent if f.role == "vae" else p
        plan = plan_for_role(f.role, target, config)
        report = plan.check()
        return report.summary() if not report.ok else _architecture_problem(f.role, plan.config)
    except LipsyncError as exc:
        return exc.message


def _onnx_problem(role: str, p: Path) -> str:
    """'' when ``p`` is an ONNX model InsightFace takes for ``role`` (it tells its models apart by their shapes):
    an SCRFD detector has nine outputs (scores, boxes, key points of strides 8/16/32), the 106-point landmark
    model a 192x192 input and 212 outputs."""
    try:
        import onnx
    except ImportError:
        return "the onnx package is not installed (pip install 'lipsyncctl[insightface]')"
    try:
        graph = onnx.load(str(p), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and others for a damaged file
        return f"not an ONNX model ({type(exc).__name__})"

    def dims(value: Any) -> list[int | str]:
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]

    initialised = {t.name for t in graph.initializer}
    inputs = [dims(v) for v in graph.input if v.name not in initialised]
    outputs = [dims(v) for v in graph.output]
    if role == "scrfd":
        return "" if len(outputs) == 9 else f"not an SCRFD detector with key points ({len(outputs)} outputs, not 9)"
    if inputs and inputs[0][2:] == [192, 192] and outputs and outputs[0][-1:] == [212]:
        return ""
    return f"not a 106-point landmark model (input {inputs[0] if inputs else None}, output {outputs[0] if outputs else None})"


def _architecture_problem(role: str, config: Any) -> str:
    """'' when a file that names its own architecture (a whisper's dims, a VAE's config.json) has LatentSync's:
    whisper tiny and sd-vae-ft-mse. Any self-consistent file of the family loaded strictly, so a whisper
    base or a small test VAE passed as the official one."""
    from lipsyncctl.checkpoints.loaders import SD_VAE_FT_MSE_CONFIG
    from lipsyncctl.checkpoints.tiny import WHISPER_TINY_DIMS

    if role == "whisper":
        want = {k: v for k, v in WHISPER_TINY_DIMS.items() if k.startswith("n_audio") or k == "n_mels"}
        what = "whisper tiny's encoder"
    elif role == "vae":
        want = {k: SD_VAE_FT_MSE_CONFIG[k] for k in ("block_out_channels", "layers_per_block", "latent_channels",
                                                      "in_channels", "out_channels", "norm_num_groups")}
        what = "sd-vae-ft-mse"
    else:
        return ""
    got = {k: _plain(v) for k, v in dict(config or {}).items()}
    wrong = [f"{k} {got.get(k)} (expected {_plain(v)})" for k, v in want.items() if got.get(k) != _plain(v)]
    return f"not {what}: {', '.join(wrong)}" if wrong else ""


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
