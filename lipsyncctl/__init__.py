"""lipsyncctl: lip-sync dubbing from the command line (a re-implementation of LatentSync 1.5/1.6).

The public API, one import away (loaded lazily, so ``import lipsyncctl`` and ``lipsyncctl --help`` stay
free of torch, diffusers and PyAV)::

    import lipsyncctl

    config = lipsyncctl.resolve_config("latentsync-1.5", ["inference.steps=10"])
    result = lipsyncctl.sync("in.mp4", "new.wav", "out.mp4", config)            # one clip -> SyncResult

    pipe = lipsyncctl.LipSyncPipeline.from_registry("latentsync-1.6")          # networks loaded once
    for clip, dub in pairs:
        pipe(clip, dub, f"out/{clip}")

    job = lipsyncctl.timeline_job("edit.otio", "out/", audio=["de=de.wav"])
    lipsyncctl.sync_timeline(job, config)                                        # -> TimelineResult
    lipsyncctl.score(["out.mp4"]).clips[0].lse_c                                  # LSE-C of a clip (syncnet-v2)
    lipsyncctl.prep(["raw/"], "prepped/")                                        # -> PrepResult
    lipsyncctl.doctor(config)                                                    # -> DoctorResult

Everything else (:mod:`lipsyncctl.api` lists it) is reachable as ``lipsyncctl.api.<name>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: the names ``import lipsyncctl`` gives, each resolved from :mod:`lipsyncctl.api` on first use
__all__ = ["LipSyncPipeline", "curate", "curate_forget", "curate_report", "doctor", "load_pipeline", "prep", "resolve_config",
           "resolve_train_config", "score", "sync", "sync_batch", "sync_timeline", "timeline_job", "train"]

if TYPE_CHECKING:
    from lipsyncctl.api import (
        LipSyncPipeline,
        curate,
        curate_forget,
        curate_report,
        doctor,
        load_pipeline,
        prep,
        resolve_config,
        resolve_train_config,
        score,
        sync,
        sync_batch,
        sync_timeline,
        timeline_job,
        train,
    )


def __getattr__(name: str) -> Any:
    if name == "api":  # (`import lipsyncctl; lipsyncctl.api.list_models()`: the module docstring's promise)
        import importlib

        return importlib.import_module("lipsyncctl.api")
    if name in __all__:
        from lipsyncctl import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lipsyncctl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
