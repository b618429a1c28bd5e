"""A lip-sync pipeline object: a run configuration and its loaded networks, reused for many clips.

Like whisper's ``load_model(...).transcribe(...)`` or a diffusers pipeline: load once, call many times::

    import lipsyncctl

    pipe = lipsyncctl.LipSyncPipeline.from_registry("latentsync-1.6", device="cuda")
    for clip, dub in pairs:
        result = pipe(clip, dub, out / clip.name)          # -> SyncResult

The networks are loaded when the object is made; every call runs :func:`~lipsyncctl.pipeline.clip.sync_clip`
with them. Settings that do not change the networks (steps, guidance, faces, output codec...) can differ
per call (``sets``); a call that would need other networks is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lipsyncctl.errors import ConfigError

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.pipeline.clip import SyncResult
    from lipsyncctl.pipeline.networks import Networks



class LipSyncPipeline:
    """A resolved :class:`~lipsyncctl.config.Config` and the :class:`~lipsyncctl.pipeline.networks.Networks`
    it names (UNet, whisper encoder, VAE, DDIM scheduler), on one device in one dtype."""

    def __init__(self, config: Config, networks: Networks) -> None:
        self.config = config
        self.networks = networks

    @classmethod
    def from_config(cls, config: Config) -> LipSyncPipeline:
        """Load the networks ``config.model`` names (never downloads: a missing file is a
        :class:`~lipsyncctl.errors.MissingModelError` with the ``models fetch`` command)."""
        from lipsyncctl.pipeline.networks import load_networks
        from lipsyncctl.runner.devices import reproducible_cpu_math

        reproducible_cpu_math()  # before the first matrix product: the same bytes as the CLI and lipsyncctl.sync
        return cls(config, load_networks(config))

    @classmethod
    def from_preset(cls, preset: str | Path = "latentsync-1.5", *, sets: Iterable[str] = (),
                    device: str | None = None, dtype: str | None = None) -> LipSyncPipeline:
        """A preset (name or YAML path) with ``--set``-style overrides, e.g. ``sets=["inference.steps=10"]``."""
        from lipsyncctl import config as cfg

        return cls.from_config(cfg.resolve(str(preset), cfg.set_items(sets),
                                           {"inference.device": device, "inference.dtype": dtype}))

    @classmethod
    def from_registry(cls, name: str, *, sets: Iterable[str] = (), device: str | None = None,
                      dtype: str | None = None) -> LipSyncPipeline:
        """The model ``name`` of the registry (``latentsync-1.5``, ``latentsync-1.6``; or ``tiny``, the tiny random
        networks' preset) with its official settings: the preset of the same name where there is one, else the
        defaults with ``model.checkpoint = name``."""
        from lipsyncctl import config as cfg
        from lipsyncctl.checkpoints.registry import load_registry

        if name in cfg.list_presets():
            return cls.from_preset(name, sets=sets, device=device, dtype=dtype)
        load_registry().get(name)  # unknown -> MissingModelError listing the known models
        return cls.from_config(cfg.resolve(None, [f"model.checkpoint={name}", *cfg.set_items(sets)],
                                           {"inference.device": device, "inference.dtype": dtype}))

    def __call__(self, video: str | Path, audio: str | Path, output: str | Path, *,
                 start: float | None = None, end: float | None = None,
                 frames: tuple[int, int] | None = None, sets: Iterable[str] = (), overwrite: bool = False,
                 face_cache: str | Path | None = None) -> SyncResult:
        """Lip-sync one clip with the loaded networks (:func:`lipsyncctl.api.sync`'s arguments but ``networks``, which are
        these, and ``delivery``, a timeline's).

        ``sets`` override settings for this call only (``["faces.select=id", "faces.track_id=2"]``);
        overriding the model, device or dtype raises :class:`ConfigError` (make another pipeline).
        """
        from lipsyncctl.pipeline.clip import sync_clip

        config = self.configured(sets)
        return sync_clip(Path(video), Path(audio), Path(output), config, start=start, end=end, frames=frames,
                         networks=self.networks, overwrite=overwrite,
                         face_cache=Path(face_cache) if face_cache is not None else None)

    def configured(self, sets: Iterable[str] = ()) -> Config:
        """This pipeline's configuration with per-call overrides (not of the networks' settings)."""
        from lipsyncctl import config as cfg

        sets = cfg.set_items(sets)
        if not sets:
            return self.config
        from lipsyncctl.pipeline.networks import network_settings, same_dtype

        config = cfg.resolve(self.config.to_dict(), sets)
        before, after = network_settings(self.config), network_settings(config)
        for name, value in before.items():
            if after[name] != value and not (name == "inference.dtype" and same_dtype(self.networks, after[name])):
                raise ConfigError(f"{name} cannot change per call: this pipeline's networks are loaded",
                                  hint="make another pipeline (LipSyncPipeline.from_preset(..., sets=[...]))")
        return config

    def __repr__(self) -> str:
        n = self.networks
        return (f"LipSyncPipeline(unet={n.files.get('unet_config')!r}, resolution={n.resolution}, "
                f"device={str(n.device)!r}, dtype={str(n.dtype).removeprefix('torch.')!r})")

