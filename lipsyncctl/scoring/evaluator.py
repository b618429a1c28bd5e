"""The evaluation SyncNet (``syncnet-v2``, LSE-C / LSE-D) loaded through the strict loader, with the
provenance of its weights.

The weights' sha256 is compared with what is known about them (the registry's published hash, else the
hash recorded on this machine when they were fetched), so a report can say plainly when scores come from
weights that are not verified official ones. Never downloads: not installed = None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipsyncctl.errors import LipsyncError

EVAL_MODEL = "syncnet-v2"


@dataclass
class EvalSyncNet:
    """The evaluation SyncNet loaded for QC and the provenance of its weights.

    ``verification``: ``official`` (sha256 = the registry's published hash), ``recorded`` (= the hash
    recorded on this machine when the file was fetched or verified; no published hash to compare with),
    ``unknown`` (no hash known at all) or ``mismatch`` (differs from the known hash).
    """

    model: Any
    path: Path
    sha256: str
    verification: str
    expected_sha256: str | None = None
    recorded_source: str | None = None

    @property
    def verified(self) -> bool:
        """True only when the file is byte-identical to the published official weights."""
        return self.verification == "official"

    def note(self) -> str:
        """One plain sentence about where the scores come from (for the report)."""
        if self.verification == "official":
            return f"{EVAL_MODEL} weights verified: sha256 matches the registry's official hash."
        if self.verification == "recorded":
            return (f"{EVAL_MODEL} weights NOT verified as the official ones: no official hash is published; "
                    f"the file matches the hash recorded when it was installed from {self.recorded_source}.")
        if self.verification == "mismatch":
            return (f"{EVAL_MODEL} weights are NOT the official ones (sha256 {self.sha256[:12]}... differs from "
                    f"{(self.expected_sha256 or '')[:12]}...): the scores are not comparable to published "
                    "LSE-C/LSE-D values.")
        return (f"{EVAL_MODEL} weights NOT verified as the official ones: neither the registry nor a "
                f"`lipsyncctl models fetch` record knows the sha256 of {self.path}; treat the scores with caution.")

    def to_dict(self) -> dict[str, Any]:
        return {"model": EVAL_MODEL, "path": str(self.path), "sha256": self.sha256, "verified": self.verified,
                "verification": self.verification, "expected_sha256": self.expected_sha256, "note": self.note()}


def load_eval_syncnet(device: Any = "cpu", models_dir: Path | None = None) -> EvalSyncNet | None:
    """The evaluation SyncNet through the real loader if its weights are installed, else None (never
    downloads). Hashes the file (about 50 MB) to tell official weights from others."""
    from lipsyncctl.checkpoints.fetch import sha256_file
    from lipsyncctl.checkpoints.loaders import load_syncnet_eval
    from lipsyncctl.checkpoints.registry import LocalState, expected_sha256, load_registry

    registry = load_registry()
    try:
        path = registry.resolve(EVAL_MODEL, models_dir=models_dir)
    except LipsyncError:
        return None
    model = load_syncnet_eval(path, device=device)
    entry = registry.get(EVAL_MODEL)
    f = entry.files[0]
    state = LocalState.load(models_dir)
    known, origin = expected_sha256(entry, f, state)
    digest = sha256_file(path, f"hash {EVAL_MODEL}")
    rec = state.get(entry.name, f.path)
    if known is None:
        verification = "unknown"
    elif digest != known:
        verification = "mismatch"
    else:
        verification = "official" if origin == "registry" else "recorded"
    return EvalSyncNet(model, path, digest, verification, known, rec.source if rec else None)
