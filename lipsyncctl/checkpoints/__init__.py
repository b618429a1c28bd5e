"""Checkpoints: reading official files, strict loading, the model registry, fetch/verify/convert.

Modules (import them directly; this package imports nothing heavy):

- :mod:`~lipsyncctl.checkpoints.loaders`: ``load_unet(config, checkpoint, device, dtype)``,
  ``load_whisper_encoder(path, ...)``, ``load_vae(path_or_folder, ...)``,
  ``load_stable_syncnet(config, path, ...)``, ``load_syncnet_eval(path, ...)``, ``check_checkpoint``.
- :mod:`~lipsyncctl.checkpoints.io`: ``read_checkpoint`` (weights-only, mmap, container unwrapping),
  ``read_safetensors`` (zero-copy), ``write_safetensors`` (atomic, JSON header).
- :mod:`~lipsyncctl.checkpoints.keys`: ``compare_state_dict`` / ``check_state_dict`` -> ``KeyReport``.
- :mod:`~lipsyncctl.checkpoints.materialize`: ``build_empty`` (meta parameters), ``load_into`` (assign).
- :mod:`~lipsyncctl.checkpoints.registry`: ``load_registry()`` -> ``Registry`` (``get``, ``resolve``),
  ``LocalState`` (``<models dir>/local.yaml``), ``model_status``.
- :mod:`~lipsyncctl.checkpoints.fetch` (the only downloader), :mod:`~lipsyncctl.checkpoints.verify`,
  :mod:`~lipsyncctl.checkpoints.convert`, :mod:`~lipsyncctl.checkpoints.info`.
"""
