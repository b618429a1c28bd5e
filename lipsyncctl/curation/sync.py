"""Clip stage ``sync`` of the curation job: official-scale LSE-C / offset of the aligned clip, offset correction.

The official ``preprocess/sync_av.py`` (LATENTSYNC.md §4 step 8, §5.1), reproduced on the ``align`` stage's
clip (the official step scores the affine-transformed clips):

1. Frames: every frame of the ALIGNED clip (``previous["align"]["aligned"]``, 25 fps, RGB). Audio: samples
   ``[first * 640, stop * 640)`` of the source's 16 kHz mono WAV, read exactly as PCM16
   (:func:`lipsyncctl.curation.stages.span_pcm`; the official scorer reads the int16 WAV too).
2. The official measurement (:class:`~lipsyncctl.scoring.official.OfficialScorer`: S3FD tracks, the official
   crop, SyncNet v2): ``lse_c`` (conf), ``lse_d``, ``offset`` (the official ``av_offset``, 25 fps frames).
   No track (no face above 0.9, shots under 50 frames): ``no-sync-track``, the scorer's reason as value.
3. Offset correction, when ``offset != 0``. **Sign** (syncnet_python's ``SyncNetInstance.evaluate`` and
   :mod:`lipsyncctl.scoring.lse`): ``dists[i, k]`` pairs video window ``i`` with audio window
   ``i + k - 15`` and ``av_offset = 15 - argmin k``, so the audio matching video frame ``i`` sits at audio
   frame ``i - offset``: a POSITIVE offset means the audio is EARLY by ``offset`` frames. The official fix
   ``ffmpeg -i in -itsoffset {offset/25} -i in -map 0:v -map 1:a -c copy`` puts ``-itsoffset`` on the
   audio input, i.e. DELAYS the audio by ``offset / 25`` s. Here the same, sample-accurately: the corrected
   clip's audio sample ``n`` is source sample ``first * 640 + n - offset * 640``, i.e. the read window moves
   by ``audio_shift_samples = -offset * 640``. Unlike the official stream copy (which leaves a gap of no
   audio at one end and an overhang at the other), the clip keeps exactly the span's length: the
   neighbouring source audio fills the window where it exists, silence only past the source's ends.
   The aligned clip's video stream is copied (no new video encode) with the shifted audio into
   ``DATA/synced/<source id>/<clip id>`` (same container; AAC, or PCM for ``curate.lossless``), atomically;
   the manifest's ``aligned`` then names this file (training reads it).
4. Confirmation: the corrected clip (the same frames, the shifted samples that were muxed) is scored again;
   both measurements are stored. The correction and its re-score do not depend on the thresholds, so a
   threshold change re-decides from the stored measurements without running a network (a clip that the
   thresholds reject anyway costs one more score).

Decision (:func:`decide`): ``no-sync-track``; ``sync-offset`` (value: the measured offset) when
``|offset| > sync_max_offset`` (official 6); then the confirmed measurement of a corrected clip (the first
one otherwise): ``low-sync`` (value: conf) below ``sync_min_conf`` (official 3), and
``sync-offset-unconfirmed`` (value: the re-scored offset) when the corrected clip re-scores ``|offset| > 1``.
The features stage reads the shifted span (``audio_shift_samples``).

Without ``syncnet-v2`` or ``sfd-face`` the job refuses to start (MissingModelError, exit 4, naming
``lipsyncctl models fetch syncnet-v2 sfd-face``) unless ``curate.skip_sync`` is set: the stage then
records ``skipped`` and keeps the clip unmeasured and uncorrected (the summary says so). The ``tiny`` preset
(``model.checkpoint: tiny``) uses seeded random weights in the official formats, loaded by the real loaders;
the random S3FD finds no face, so the stage records that measurement, does not correct, and KEEPS the clip
with a loud "tiny: not measured" summary (rejecting every clip ``no-sync-track`` would end every tiny run
here). The networks are loaded once per worker (``ClipContext.cache``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl.config import TINY, CurateOptions, ModelOptions
from lipsyncctl.curation.records import Decision
from lipsyncctl.curation.stages import SAMPLES_PER_FRAME

if TYPE_CHECKING:
    from lipsyncctl.curation.clipstages import ClipContext
    from lipsyncctl.scoring.official import OfficialScorer

NAME = "sync"
#: bump when the stage computes something different from the same inputs and settings
VERSION = 1
#: registry name -> role of the two networks (`lipsyncctl models fetch syncnet-v2 sfd-face`)
MODELS = {"syncnet-v2": "syncnet-eval", "sfd-face": "sfd-face"}
FETCH = "lipsyncctl models fetch syncnet-v2 sfd-face"
#: a corrected clip must re-score within this many frames of 0
CONFIRM_MAX_OFFSET = 1
SKIPPED_NOTE = ("sync skipped (curate.skip_sync): no SyncNet filter or offset correction ran; the official pipeline "
                "drops clips with LSE-C below 3 or an offset beyond 6 frames and corrects the others")


def settings(options: CurateOptions) -> dict[str, Any]:
    """What the measurements depend on (the thresholds are not: they only decide)."""
    if options.skip_sync:
        return {"skip": True}
    return {"scale": "official", "vshift": 15, "audio": "pcm" if options.lossless else "aac"}


def skipped(options: CurateOptions) -> bool:
    """The user skipped the stage: its weights are not needed (not resolved, not loaded)."""
    return options.skip_sync


def models(model: ModelOptions) -> dict[str, Path]:
    """``{"syncnet-v2": syncnet_v2.model, "sfd-face": sfd_face.pth}`` from the registry, or the seeded random
    stand-ins for the ``tiny`` preset (generated on first use). Never downloads.

    Raises:
        MissingModelError: one or both not installed (the hint names ``lipsyncctl models fetch syncnet-v2
        sfd-face``).
    """
    if model.checkpoint == TINY:
        from lipsyncctl.checkpoints.tiny_sync import ensure_tiny_sync

        return ensure_tiny_sync()
    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.errors import MissingModelError

    registry = load_registry()
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name, role in MODELS.items():
        try:
            found[name] = registry.resolve(name, role)
        except MissingModelError:
            missing.append(name)
    if missing:
        raise MissingModelError(
            f"the sync stage needs the official SyncNet scorer's weights: {', '.join(missing)} not installed",
            hint=f"run `{FETCH}` on a machine that is online, or set curate.skip_sync=true")
    return found


def run(ctx: ClipContext) -> dict[str, Any]:
    """Measure, correct and confirm one clip (module docstring), or record ``skipped``."""
    from lipsyncctl.checkpoints.tiny_sync import is_tiny
    from lipsyncctl.curation.stages import span_pcm

    options = ctx.options
    if options.skip_sync:
        return {"skipped": True}
    weights = {name: ctx.models.get(name) for name in MODELS}
    if any(p is None for p in weights.values()):  # the job resolves them before any work; a direct caller must too
        from lipsyncctl.errors import MissingModelError

        raise MissingModelError("the sync stage needs syncnet-v2 and sfd-face",
                                hint=f"run `{FETCH}`, or set curate.skip_sync=true")
    tiny = any(is_tiny(Path(p)) for p in weights.values() if p is not None)
    aligned = Path(ctx.previous["align"]["aligned"])
    # a pass over the clip each time the scorer reads it, never held (a 120 s piece at 512 px is 2.4 GB of frames)
    n = ctx.frames
    frames = functools.partial(span_frames, aligned, n)
    scorer = _scorer(ctx)
    pcm = span_pcm(ctx.audio, ctx.first, ctx.stop)                                   # 1.
    measured = scorer.score(frames, pcm, options.fps, count=n)                       # 2.
    data: dict[str, Any] = {"skipped": False, "tiny": tiny, "scale": measured.scale, "frames": n,
                            "measured": measured.to_dict(), "corrected": False, "audio_shift_samples": 0,
                            "synced": None, "confirmed": None}
    if tiny or not measured.measured or not measured.offset:
        ctx.output("synced", aligned.suffix).unlink(missing_ok=True)  # an earlier run's correction, now stale
        return data
    shift = audio_shift_samples(measured.offset)                                     # 3.
    shifted = span_pcm(ctx.audio, ctx.first, ctx.stop, shift=shift)
    synced = write_corrected(ctx, aligned, shifted)
    confirmed = scorer.score(frames, shifted, options.fps, count=n)                  # 4.
    return {**data, "corrected": True, "audio_shift_samples": shift, "synced": str(synced),
            "confirmed": confirmed.to_dict()}


def decide(data: Mapping[str, Any], options: CurateOptions) -> Decision | None:
    """``no-sync-track`` (value: why), ``sync-offset`` (value: the measured offset), then on the confirmed
    measurement of a corrected clip (else the measured one): ``low-sync`` (value: LSE-C) and
    ``sync-offset-unconfirmed`` (value: the re-scored offset, or why nothing was re-measured). With
    ``sync_confirm: official``, the official rule: ``low-sync`` on the measured confidence and no confirmation. A
    skipped stage and the tiny preset keep the clip."""
    if data.get("skipped") or data.get("tiny"):
        return None
    measured = data["measured"]
    if measured["offset"] is None:
        return Decision.rejected(NAME, "no-sync-track", measured["reason"] or "no face track")
    if abs(measured["offset"]) > options.sync_max_offset:
        return Decision.rejected(NAME, "sync-offset", measured["offset"])
    if options.sync_confirm == "official":
        if measured["lse_c"] < options.sync_min_conf:
            return Decision.rejected(NAME, "low-sync", round(float(measured["lse_c"]), 4))
        return None
    final = data["confirmed"] if data["corrected"] else measured
    if final["offset"] is None:
        return Decision.rejected(NAME, "sync-offset-unconfirmed", final["reason"] or "no face track")
    if final["lse_c"] < options.sync_min_conf:
        return Decision.rejected(NAME, "low-sync", round(float(final["lse_c"]), 4))
    if data["corrected"] and abs(final["offset"]) > CONFIRM_MAX_OFFSET:
        return Decision.rejected(NAME, "sync-offset-unconfirmed", final["offset"])
    return None


def outputs(data: Mapping[str, Any]) -> list[str]:
    """The corrected clip, when there is one."""
    return [data["synced"]] if data.get("synced") else []


def summary(data: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's fields: ``lse_c``/``lse_d`` (the confirmed ones after a correction), ``offset`` (the
    measured ``av_offset``), ``corrected``, ``sync_scale`` (``tiny`` for the random stand-ins); a corrected clip's ``aligned`` is the synced file
    (what training reads) and ``offset_after`` its re-scored offset."""
    from lipsyncctl.checkpoints.tiny_sync import TINY_NOTE

    if data.get("skipped"):
        return {"sync": "skipped", "sync_note": SKIPPED_NOTE, "corrected": False}
    measured = data["measured"]
    final = data["confirmed"] if data["corrected"] else measured
    out: dict[str, Any] = {"lse_c": final["lse_c"], "lse_d": final["lse_d"], "offset": measured["offset"],
                           "corrected": data["corrected"], "sync_scale": "tiny" if data.get("tiny") else data["scale"]}
    if data["corrected"]:
        out.update(aligned=data["synced"], offset_after=final["offset"],
                   audio_shift_samples=data["audio_shift_samples"])
    if data.get("tiny"):
        out.update(sync="tiny: not measured", sync_note=TINY_NOTE)
    elif measured["offset"] is None:
        out["sync_note"] = measured["reason"]
    return out


# ---------------------------------------------------------------------------------------------------
# The correction


def audio_shift_samples(offset: int) -> int:
    """Where the corrected clip's audio starts in the source, relative to the span's first sample:
    ``-offset * 640`` (a positive ``av_offset`` = early audio, delayed by ``offset`` frames like the official
    ``-itsoffset {offset/25}`` on the audio input; see the module docstring)."""
    return -int(offset) * SAMPLES_PER_FRAME


def write_corrected(ctx: ClipContext, aligned: Path, pcm: np.ndarray) -> Path:
    """``DATA/synced/<source id>/<clip id><aligned suffix>``: the aligned clip's video stream copied, with
    ``pcm`` (int16 ``(n,)``, 16 kHz, exactly the span's length) as its audio; written atomically."""
    from lipsyncctl.media.mux import mux_audio

    out = ctx.output("synced", aligned.suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    # / 32768: exact in float32, and the PCM encoder's * 32768 gives the int16 samples back bit for bit
    samples = pcm.astype(np.float32) / np.float32(32768.0)
    return mux_audio(aligned, samples, out, rate=ctx.options.audio_rate,
                     codec="pcm" if ctx.options.lossless else "aac", duration=ctx.frames / ctx.options.fps,
                     pad=True, inputs=(ctx.source,))


def span_frames(path: Path, count: int) -> Iterator[np.ndarray]:
    """The ``count`` frames of the aligned clip ``path``, RGB uint8 ``(H, W, 3)``, one at a time.

    Raises:
        MediaError: it holds fewer.
    """
    from lipsyncctl.errors import MediaError
    from lipsyncctl.media.reader import VideoReader

    got = 0
    with VideoReader(path) as reader:
        for frame in reader:
            if got == count:
                return
            yield frame.image
            got += 1
    if got < count:
        raise MediaError(f"{path}: {got} decodable frame(s) of the span's {count}",
                         hint="rerun with --force align to write the clip again")


def _scorer(ctx: ClipContext) -> OfficialScorer:
    """The worker's official scorer (:meth:`ClipContext.network`), float32."""
    import torch

    from lipsyncctl.checkpoints.loaders import load_syncnet_eval
    from lipsyncctl.checkpoints.sfd import load_sfd_face
    from lipsyncctl.faces.detect_sfd import SfdFaceDetector
    from lipsyncctl.scoring.official import OfficialScorer

    syncnet_file, sfd_file = Path(ctx.models["syncnet-v2"]), Path(ctx.models["sfd-face"])

    def load(device: str) -> OfficialScorer:
        syncnet = load_syncnet_eval(syncnet_file, device=device, dtype=torch.float32).eval()
        return OfficialScorer(SfdFaceDetector(load_sfd_face(sfd_file, device=device, dtype=torch.float32)),
                              syncnet, sfd_file)

    return ctx.network(f"{NAME}.scorer", [syncnet_file, sfd_file], load)
