"""The models directory as a whole: what is installed, fetching with dependencies, verifying.

The three operations behind ``lipsyncctl models list|fetch|verify``, as library calls with typed
results (the CLI only renders them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsyncctl.checkpoints.fetch import FetchResult
from lipsyncctl.checkpoints.verify import ModelCheck
from lipsyncctl.errors import CheckpointError, MissingModelError


@dataclass
class ModelRow:
    """One registry entry and how much of it is installed."""

    name: str
    kind: str
    description: str
    installed: bool
    partial: bool
    size: int | None               # bytes of the files present, None when none is
    licence: str | None
    licence_note: str | None
    folder: Path
    requires: list[str]
    files: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "installed": self.installed, "partial": self.partial, "size": self.size,
                "licence": self.licence, "licence_note": self.licence_note, "folder": str(self.folder),
                "requires": list(self.requires), "files": list(self.files)}


@dataclass
class ModelsListing:
    """``models list``: every known model, where the models directory is and why."""

    models_dir: Path
    models_dir_source: str
    registry: Path
    models: list[ModelRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"models_dir": str(self.models_dir), "models_dir_source": self.models_dir_source,
                "registry": str(self.registry), "models": [m.to_dict() for m in self.models]}


def list_models(models_dir: Path | None = None) -> ModelsListing:
    """Every model of the registry, installed or not (never downloads, never hashes)."""
    from lipsyncctl import paths
    from lipsyncctl.checkpoints import registry as regmod

    reg = regmod.load_registry()
    mdir = models_dir if models_dir is not None else paths.models_dir()
    state = regmod.LocalState.load(mdir)
    rows = []
    for entry in reg:
        files = regmod.model_status(entry, models_dir=mdir, state=state)
        present = sum(f.present for f in files)
        rows.append(ModelRow(
            name=entry.name, kind=entry.kind, description=entry.description,
            installed=present == len(files), partial=0 < present < len(files),
            size=sum(f.size or 0 for f in files) if present else None, licence=entry.licence,
            licence_note=entry.licence_note, folder=entry.folder(mdir), requires=list(entry.requires),
            files=[f.to_dict() for f in files]))
    source = paths.models_dir_source() if models_dir is None else "argument"
    return ModelsListing(mdir, source, reg.path, rows)


def fetch_order(names: list[str], *, deps: bool = True) -> list[str]:
    """``names`` with the models they require first (each once). Unknown names raise
    :class:`MissingModelError` listing the known ones."""
    from lipsyncctl.checkpoints.registry import load_registry

    reg = load_registry()
    order: list[str] = []
    for name in names:
        entry = reg.get(name)
        for dep in entry.requires if deps else ():
            if dep not in order:
                order.append(dep)
        if name not in order:
            order.append(name)
    return order


def fetch_models(names: list[str], *, force: bool = False, deps: bool = True) -> list[FetchResult]:
    """Download ``names`` (and what they require) into the models directory: the only call that
    downloads. See :func:`lipsyncctl.checkpoints.fetch.fetch_model`."""
    from lipsyncctl import progress
    from lipsyncctl.checkpoints.fetch import fetch_model
    from lipsyncctl.checkpoints.registry import load_registry

    reg = load_registry()
    results = []
    for name in fetch_order(names, deps=deps):
        progress.message(f"fetching {name} ...")
        results.append(fetch_model(reg.get(name), force=force))
    return results


def verify_models(names: list[str] | None = None, *, hashes: bool = True, load: bool = True,
                  record: bool = False, models_dir: Path | None = None) -> list[ModelCheck]:
    """Sizes, hashes and strict loadability of ``names`` (default: every installed model).

    Returns the checks (the caller renders them); raises nothing for a bad file - see
    :func:`raise_for_checks` for the error a command exits with.
    """
    from lipsyncctl import paths
    from lipsyncctl.checkpoints.registry import load_registry, model_status
    from lipsyncctl.checkpoints.verify import verify_model

    reg = load_registry()
    mdir = models_dir if models_dir is not None else paths.models_dir()
    if names:
        entries = [reg.get(n) for n in names]
    else:
        entries = [e for e in reg if any(f.present for f in model_status(e, models_dir=mdir))]
        if not entries:
            raise MissingModelError(f"no models are installed in {mdir}")
    return [verify_model(e, models_dir=mdir, hashes=hashes, load=load, record=record) for e in entries]


def raise_for_checks(checks: list[ModelCheck]) -> None:
    """The error for failed verifications: corrupt files (CheckpointError) before missing ones
    (MissingModelError), each with the fetch command that repairs them. Nothing when all passed."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return
    missing = [c.name for c in bad if not c.installed]
    corrupt = [c.name for c in bad if c.installed]
    if corrupt:
        raise CheckpointError(
            f"{len(corrupt)} model(s) failed verification: {', '.join(corrupt)}",
            hint=f"fetch them again with `lipsyncctl models fetch {' '.join(corrupt)} --force`"
            + (f"; missing: `lipsyncctl models fetch {' '.join(missing)}`" if missing else ""),
        )
    raise MissingModelError(
        f"{len(missing)} model(s) not (fully) installed: {', '.join(missing)}",
        hint=f"run `lipsyncctl models fetch {' '.join(missing)}` on a machine that is online",
    )


def model_path(name: str, role: str | None = None) -> Path:
    """Where an installed model file lives (MissingModelError when it is not installed)."""
    from lipsyncctl.checkpoints.registry import load_registry

    return load_registry().resolve(name, role)
