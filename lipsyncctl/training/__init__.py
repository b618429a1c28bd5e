"""The training job: ``lipsyncctl train`` (LATENTSYNC.md §3): UNet stage 1/2 and StableSyncNet training.

Modules (one concern each; the loop reads top to bottom in :mod:`.loop`):

- :mod:`.config`    — ``TrainOptions``: the run settings (pydantic, strict) and the training presets
  (``lipsyncctl/presets/train/*.yaml``: stage1, stage2, stage2_efficient, stage1_512, stage2_512,
  syncnet_16_pixel_attn, ..., tiny, tiny-syncnet, 24 GB variants).
- :mod:`.data`      — the clips of a curated ``DATA/`` folder (or an official fileslist) and the
  index-driven datasets: sample ``k`` (a global counter) -> clip, start, reference window / negative.
- :mod:`.sampling`  — which global sample indices a (step, micro-step, rank) takes; per-sample generators.
- :mod:`.noise`     — mixed noise, ``add_noise``, one-step x0 (``golden/train/noise_sampling``).
- :mod:`.trainable` — the official trainable-name rules and their counts.
- :mod:`.perceptual`— LPIPS (own VGG16) and TREPA (VideoMAE-v2) loss terms.
- :mod:`.losses`    — the weighted UNet loss of one step and the SyncNet loss.
- :mod:`.state`     — full training state (save / resume bit for bit) and exports ``sync`` loads.
- :mod:`.memory`    — training VRAM estimate (``doctor --preset stage2``).
- :mod:`.loop`      — the training loop on accelerate.
"""
