"""The training data: the clips of a curated ``DATA/`` folder and the index-driven datasets of UNet and
SyncNet training (LATENTSYNC.md §3.2-3.4).

Clips (:func:`read_clips`): the kept spans of ``DATA/manifest.jsonl`` (``lipsyncctl curate``) of one split,
or the clips of an official fileslist (``train.txt``: one aligned clip per line) looked up in the manifest
beside it, which names each clip's features file (``whisper`` ``(L, 5, 384)`` float32 and the Wav2Lip ``mel``
``(80, T)`` float64 of the clip's audio; :mod:`lipsyncctl.curation.features`). Sorted by id; clips too
short for the kind of training are returned in :attr:`ClipSet.skipped` with the reason. The manifest is read a
line at a time (twice, from one open file; more where a fileslist line is matched by its file or the manifest is
not by id) and the clips are appended to columns as they are read
(:class:`~lipsyncctl.training.clips.ClipTable`): the host memory of a million-clip dataset is about 250 MB (~300 MB
while it is read: 40k clips measured at 237 and 290 B a clip), shared by the data-loader workers, not a copy per
worker.

Samples: item ``k`` of a dataset is a function of ``(seed, k)`` only (:mod:`lipsyncctl.training.sampling`):
its clip comes from the epoch permutation, its windows from :func:`~.sampling.sample_generator`. The rules
are the official ones, drawn directly from the allowed sets (no redraw loops):

- **Audio-valid starts** ``s`` (gt / SyncNet audio window ``[s, s + F)``): ``0 <= s <= last_start``, the
  largest ``s`` with ``s + F <= frames``, the mel window columns ``(80 s) // 25 .. + C`` inside the mel
  (``C = ceil(3.2 F)``: 52 for 16 frames; :func:`~lipsyncctl.audio.wav2lip_mel.mel_window`) and the centre
  whisper feature of the window's last frame inside the features (``2 (s + F - 1) <= L - 1``; the ±2-frame
  context is clamped at the clip's ends exactly as at inference). The official loaders draw ``s`` over
  ``[0, frames - F]`` and redraw a start whose mel window is short; for a curated clip (``L = 2 frames``,
  ``T = 1 + 3.2 frames``) every start fits and the rules agree.
- **UNet** (``unet_dataset.py``; golden ``train/unet_dataset_item``): clips of at least ``3 F`` frames (48);
  ``s`` uniform over the audio-valid starts, the reference start ``q`` uniform over
  ``[0, frames - F]`` with ``q <= s - F`` or ``q >= s + F`` (non-overlapping windows of the same clip).
  ``gt`` = frames ``[s, s + F)``, ``masked = gt * mask`` and ``mask`` the official fixed mask
  (``lipsyncctl/data/mask.png``: **1 = keep** (white), 0 = regenerated (black), so the mouth region of
  ``masked`` is 0, mid-grey), ``ref`` = frames ``[q, q + F)`` unmasked, ``whisper`` the chunks of frames
  ``[s, s + F)`` (:func:`~lipsyncctl.audio.features.feature_chunks`, the inference slicing), ``mel`` at ``s``.
- **SyncNet** (``syncnet_dataset.py``, rule in golden ``train/syncnet_train.json``): clips of at least
  ``2 F`` frames (32; 50 for ``syncnet_25_pixel``); ``s`` uniform over the audio-valid starts, a negative start
  ``w`` uniform over ``[0, frames - F]`` minus ``{s}`` (overlap allowed), ``y ~ Bernoulli(0.5)``; the mel
  window is always at ``s``, the frames at ``s`` (``y = 1``) or ``w`` (``y = 0``). Latent-space runs
  (``syncnet_16_latent``) get the whole pixel frames here; the step VAE-encodes them
  (:func:`lipsyncctl.training.step.syncnet_visual_input`).

Pixels: frames decoded by index (only the ``2 F`` / ``F`` frames needed), resized to the training
resolution when the clip has another size (bicubic with antialias on uint8, as torchvision's ``Resize``
on the official uint8 frames), ``(u / 255 - 0.5) / 0.5`` float32.
"""

from __future__ import annotations

import contextlib
import json
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lipsyncctl import paths
from lipsyncctl.audio.features import chunk_indices
from lipsyncctl.audio.wav2lip_mel import window_start
from lipsyncctl.errors import MediaError, UsageError
from lipsyncctl.faces.mask import mouth_mask, prepare_masked_images
from lipsyncctl.training.clips import ClipTable, ClipTableBuilder, TrainClip, last_start, mel_columns
from lipsyncctl.training.sampling import ClipOrder, sample_generator

if TYPE_CHECKING:
    from lipsyncctl.training.config import TrainConfig

MANIFEST = "manifest.jsonl"
#: clips shorter than this many windows of ``num_frames`` are skipped (official: 3 x 16 = 48 for the UNet,
#: 2 x 16 = 32 for SyncNet)
MIN_WINDOWS = {"unet": 3, "syncnet": 2}
_RERUN = "rerun `lipsyncctl curate RAW... -o DATA`: it recomputes missing clips and features"
#: a file of DATA that is there but cannot be read: curate takes a file that is there for done
_DAMAGED = "delete that file, then rerun `lipsyncctl curate RAW... -o DATA`: it recomputes missing clips and features"

@dataclass(frozen=True)
class SkippedClip:
    id: str
    frames: int
    reason: str


@dataclass(frozen=True)
class ClipSet:
    """The usable clips of one split (sorted by id) and the ones skipped, with reasons."""

    clips: Sequence[TrainClip]  # a ClipTable from read_clips: columns, not a Python object per clip
    skipped: tuple[SkippedClip, ...]
    source: Path
    split: str
    kind: str
    num_frames: int
    #: how the usable clips were curated where it is not the official data pipeline: what -> how many clips
    #: (:func:`curation_gaps`)
    gaps: dict[str, int] = field(default_factory=dict)
    #: what reading them said as a warning (files read from outside the folder)
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.clips)

    def content_hash(self) -> str:
        """What the clips' files hold (:meth:`ClipTable.content_hash`): a resume compares it."""
        return ClipTable.of(self.clips).content_hash()

    def gaps_note(self) -> str | None:
        """``data: 12 of 40 clips aligned by a non-official detector, ...`` or None (the official pipeline)."""
        if not self.gaps:
            return None
        said = ", ".join(f"{n} {what}" for what, n in self.gaps.items())
        return (f"data: of {len(self.clips)} {self.split} clips, {said}: not the official data pipeline "
                "(curate.yaml and manifest.jsonl say how each was made)")


def curation_gaps(entry: Mapping[str, Any]) -> list[str]:
    """Where a manifest entry's clip was not made as the official data pipeline makes it: aligned by another
    detector than insightface, sync not measured (skipped, or the tiny stand-in scorer), the quality filter skipped
    or not official."""
    gaps = []
    if entry.get("detector_official") is False:
        gaps.append(f"aligned by {entry.get('detector') or 'another detector'} (not insightface)")
    if entry.get("sync") == "skipped":
        gaps.append("without the sync filter (skipped)")
    elif entry.get("sync_scale") == "tiny":
        gaps.append("sync-filtered by the tiny stand-in scorer")
    if entry.get("quality") == "skipped":
        gaps.append("without the quality filter (skipped)")
    elif entry.get("quality_official") is False:
        gaps.append("quality-filtered not as the official")
    return gaps


# ---- the clips ---------------------------------------------------------------------------------------

def read_clips(data: str | Path, split: str = "train", *, kind: str = "unet", num_frames: int = 16,
               warn: bool = True) -> ClipSet:
    """The clips of a curated ``DATA`` folder (the kept spans of ``split``) or of a fileslist ``.txt``
    inside one (its clips for ``split="train"``; another ``split`` reads that split of the manifest beside
    it, the held-out clips of the same dataset). ``kind`` (``unet``/``syncnet``) and ``num_frames`` decide
    which clips are too short (:data:`MIN_WINDOWS`). Its warnings are in the result; ``warn`` also shows them as they
    are found (a training group's main process does, its other ranks read the same clips in silence).

    Raises:
        UsageError: no curated manifest; a listed clip not in it or not kept; a clip without its aligned
            video or features file (each names the clip and says how to fix it).
    """
    if kind not in MIN_WINDOWS:
        raise ValueError(f"kind must be one of {sorted(MIN_WINDOWS)}, got {kind!r}")
    path = Path(data)
    if path.is_dir():
        root, listed = path, None
    elif path.is_file() and path.suffix == ".txt":
        root, listed = path.parent, path
    elif path.exists():
        raise UsageError(f"{path}: neither a curated DATA folder nor a fileslist (.txt)",
                         hint="give the folder written by `lipsyncctl curate RAW... -o DATA`, or DATA/train.txt")
    else:  # a missing input: exit 5, as in every command
        from lipsyncctl.errors import MediaError

        raise MediaError(f"{path}: no such folder or fileslist", hint="run `lipsyncctl curate RAW... -o DATA` first")
    manifest = root / MANIFEST
    if not manifest.is_file():
        where = f"{path}: no {MANIFEST} here" if listed is None else f"{path}: no curated {MANIFEST} beside it"
        raise UsageError(f"{where} (training reads each clip's features from it)",
                         hint="run `lipsyncctl curate RAW... -o DATA` first, and train on DATA or DATA/train.txt")
    builder, skipped = ClipTableBuilder(), []
    gaps: dict[str, int] = {}
    here, outside, first_outside = root.absolute(), 0, None
    held_out, first_held = 0, ""  # a fileslist's clips of the val split (trained on: no longer held out)
    with manifest.open(encoding="utf-8") as f:  # one open file for both passes: a curate renaming a new manifest
        chosen = _listed_entries(listed, f, manifest, root) if listed is not None and split == "train" else \
            _last_of_each_id(f, manifest, lambda e: e.get("split") == split and _verdict(e) == "kept")
        for entry in _entries_at(f, manifest, chosen):  # in place meanwhile is not read half old, half new
            clip = _clip(entry, root, manifest)
            if listed is not None and split == "train" and entry.get("split") == "val":
                held_out, first_held = held_out + 1, first_held or clip.id
            reason = _too_short(clip.frames, clip.whisper_len, clip.mel_len, clip.fps, kind, num_frames)
            if reason is not None:
                skipped.append(SkippedClip(clip.id, clip.frames, reason))
                continue
            builder.append(clip)  # one manifest line and one clip in memory at a time
            for gap in curation_gaps(entry):
                gaps[gap] = gaps.get(gap, 0) + 1
            for file in (clip.video, clip.features):
                if not file.absolute().is_relative_to(here):
                    outside, first_outside = outside + 1, first_outside or file
    warnings = []
    from lipsyncctl import progress

    if held_out:  # the held-out loss and the sync validation would measure clips the model trains on
        warnings.append(f"{listed}: {held_out} clip(s) of the val split (e.g. {first_held}) are listed to train "
                        "on: they are no longer held out, and a validation measures clips the model has seen (list "
                        "DATA/train.txt's clips only, or curate with another curate.val_fraction)")
        if warn:
            progress.warning(warnings[-1])
    if outside:  # a copy of DATA that lacks some of its files reads the original's: said, not silent
        warnings.append(f"{outside} file(s) of the {split} clips read from outside {root} (the manifest's "
                        f"paths; the copy here lacks them), e.g. {first_outside}")
        if warn:
            progress.warning(warnings[-1])
    clips = builder.build().sorted_by_id()
    skipped.sort(key=lambda c: c.id)
    return ClipSet(clips, tuple(skipped), listed or root, split, kind, num_frames, gaps, tuple(warnings))


def _manifest_lines(f: TextIO, manifest: Path, lines: Sequence[int] | None = None
                    ) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, entry)`` of each line of the open manifest ``f`` (of ``lines`` only, ascending: the others
    are not parsed), from its start, a line at a time."""
    f.seek(0)
    wanted = iter(lines) if lines is not None else None
    next_wanted = next(wanted, None) if wanted is not None else None
    for n, line in enumerate(f, 1):
        if wanted is not None:
            if next_wanted is None:
                return
            if n < next_wanted:
                continue
            next_wanted = next(wanted, None)
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{manifest}:{n}: not a JSON line ({exc.msg})", hint=_RERUN) from exc
        if not isinstance(entry, dict) or "id" not in entry:
            raise UsageError(f"{manifest}:{n}: not a manifest line (no id)", hint=_RERUN)
        yield n, entry


def _last_of_each_id(f: TextIO, manifest: Path, wanted: Callable[[dict[str, Any]], bool]) -> Sequence[int]:
    """The line numbers of the wanted entries, ascending, the last one of an id written twice. Curate writes the
    manifest by id, so an id written twice is on adjacent lines and one id is kept in memory (8 bytes a line
    chosen); a manifest in another order is read again with every id kept."""
    lines: array[int] = array("q")
    previous: str | None = None
    for n, e in _manifest_lines(f, manifest):
        if not wanted(e):
            continue
        cid = str(e["id"])
        if previous is not None and cid < previous:
            last = {str(e["id"]): n for n, e in _manifest_lines(f, manifest) if wanted(e)}
            return array("q", sorted(last.values()))
        if cid == previous:
            lines[-1] = n
        else:
            lines.append(n)
        previous = cid
    return lines


def _entries_at(f: TextIO, manifest: Path, lines: Sequence[int]) -> Iterator[dict[str, Any]]:
    """The manifest's entries at ``lines`` (ascending), in the file's order (a second pass of the same open file)."""
    return (e for _, e in _manifest_lines(f, manifest, lines))


def _verdict(entry: Mapping[str, Any]) -> str:
    decision = entry.get("decision") or {}
    return str(decision.get("verdict", "")) if isinstance(decision, Mapping) else ""


def _listed_entries(listed: Path, f: TextIO, manifest: Path, root: Path) -> list[int]:
    """The manifest lines of a fileslist's clips, matched by the path as written, else the file it points to, else
    the clip id (the aligned file's stem), so a moved DATA folder still reads; the last line of an id written twice.
    The manifest's lines are kept only where they match (it kept four maps of every line, each path resolved:
    ~1.5 KB and 90 us a line); its aligned paths are resolved only where their file name is that of a file a listed
    line not matched as written points to (curate's own names: a link of another name in the manifest is not)."""
    texts = [(k, line.strip()) for k, line in enumerate(listed.read_text(encoding="utf-8").splitlines(), 1)
             if line.strip()]
    wanted_texts, wanted_ids = {t for _, t in texts}, {Path(t).stem for _, t in texts}
    by_text: dict[str, int] = {}
    by_id: dict[str, int] = {}
    said: dict[int, tuple[str, str]] = {}  # line -> (id, verdict), of the lines matched
    for n, e in _manifest_lines(f, manifest):
        cid, aligned = str(e["id"]), str(e.get("aligned") or "")
        if aligned and aligned in wanted_texts:
            by_text[aligned], said[n] = n, (cid, _verdict(e))
        if cid in wanted_ids:
            by_id[cid], said[n] = n, (cid, _verdict(e))
    files: dict[str, Path] = {}  # listed text -> the file it points to (the lines not matched as written)
    for _, t in texts:
        if t not in by_text and (found := locate(t, root)) is not None:
            files[t] = found.resolve()
    by_file: dict[Path, int] = {}
    if files:
        names = {p.name for p in files.values()}
        targets = set(files.values())
        for n, e in _manifest_lines(f, manifest):
            aligned = str(e.get("aligned") or "")
            if aligned and Path(aligned).name in names and (found := locate(aligned, root)) is not None \
                    and found.resolve() in targets:
                by_file[found.resolve()], said[n] = n, (str(e["id"]), _verdict(e))
    chosen: dict[str, int] = {}
    for k, text in texts:
        n = by_text.get(text) or (by_file.get(files[text]) if text in files else None) or by_id.get(Path(text).stem)
        if n is None:
            raise UsageError(f"{listed}:{k}: {text} is not a clip of {manifest}",
                             hint="run `lipsyncctl curate` first: training needs each clip's features, which "
                             "the manifest beside the fileslist names; list only clips of that DATA folder")
        cid, verdict = said[n]
        if verdict != "kept":
            raise UsageError(f"{listed}:{k}: clip {cid} was {verdict or 'not decided'} by curate",
                             hint="train on DATA/train.txt as curate wrote it, or remove the line")
        chosen[cid] = n
    return sorted(chosen.values())


def locate(text: str, root: Path) -> Path | None:
    """The file a manifest or fileslist path names, under ``root`` first: as written when it is there, else the
    longest tail of it found under ``root`` (curate writes absolute paths under ``DATA``; a relative ``-o``, a moved
    folder or a copy of ``DATA`` leaves a prefix that no longer applies: a copy's own files are read, not the
    original's), else as written when it exists elsewhere. None when nothing matches."""
    p = Path(text)
    absolute = root.absolute()
    if p.is_absolute() and p.is_relative_to(absolute) and p.is_file():
        return p
    parts = [q for q in p.parts if q != p.anchor]
    for i in range(len(parts)):
        candidate = root.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate
    return p if p.is_absolute() and p.is_file() else None


def _clip(entry: Mapping[str, Any], root: Path, manifest: Path) -> TrainClip:
    cid = str(entry["id"])
    files: dict[str, Path] = {}
    for key in ("aligned", "features"):
        text = entry.get(key)
        if not text:
            raise UsageError(f"{manifest}: clip {cid} has no {key} (the curate run stopped before that stage)",
                             hint="finish the curate run: `lipsyncctl curate RAW... -o DATA` without --until "
                             "(it reuses what is done)")
        found = locate(str(text), root)
        if found is None:
            what = "aligned clip" if key == "aligned" else "features file"  # (missing input media: 5, as damaged)
            raise MediaError(f"clip {cid}: its {what} {text} is missing", hint=_RERUN)
        files[key] = found
    whisper_len, mel_len = _feature_lengths(entry, files["features"], cid)
    frames = entry.get("frames")
    if not isinstance(frames, int):
        from lipsyncctl.media.probe import probe

        video = probe(files["aligned"]).video
        if video is None:
            raise MediaError(f"clip {cid}: {files['aligned']} has no video stream", hint=_DAMAGED)
        frames = video.frame_count
    size = entry.get("resolution")
    return TrainClip(cid, files["aligned"], files["features"], int(frames), whisper_len, mel_len,
                     size=int(size) if isinstance(size, int) else None)


def _feature_lengths(entry: Mapping[str, Any], path: Path, cid: str) -> tuple[int, int]:
    """``(L, T)`` from the manifest's shapes, else from the file's header."""
    w, m = entry.get("whisper_shape"), entry.get("mel_shape")
    if isinstance(w, list) and isinstance(m, list) and len(w) == 3 and len(m) == 2:
        return int(w[0]), int(m[1])
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return int(f.get_slice("whisper").get_shape()[0]), int(f.get_slice("mel").get_shape()[1])
    except (SafetensorError, OSError, KeyError) as exc:
        raise MediaError(f"clip {cid}: features file {path} is unreadable ({exc})", hint=_DAMAGED) from exc


def _too_short(frames: int, whisper_len: int, mel_len: int, fps: int, kind: str, num_frames: int,
               last: int | None = None) -> str | None:
    """Why a clip of these counts gives no ``kind`` sample of ``num_frames`` frames, or None (``last``: its last
    audio-valid start, when already known)."""
    need = MIN_WINDOWS[kind] * num_frames
    if frames < need:
        return (f"too short: {frames} frames, {kind} samples need {need} "
                f"({MIN_WINDOWS[kind]} x {num_frames} frames, official)")
    if (last if last is not None else last_start(frames, whisper_len, mel_len, fps, num_frames)) < 0:
        return (f"no audio window: its features (whisper {whisper_len}, mel {mel_len} columns) "
                f"cover no {num_frames}-frame window")
    return None


# ---- the datasets --------------------------------------------------------------------------------------

def larger_val_fraction(data: str | Path) -> float | None:
    """A ``curate.val_fraction`` larger than the one DATA was split with (its ``curate.yaml``; the default where
    it cannot be read), for a hint: twice it, at least 0.2, at most the schema's 0.5; None when it is 0.5 already."""
    from lipsyncctl.curation.rebuild import views_config

    now = views_config(Path(data) if Path(data).is_dir() else Path(data).parent).curate.val_fraction
    larger = min(0.5, max(0.2, round(2 * now, 2)))
    return larger if larger > now else None


def val_hint(data: str | Path) -> str:
    """How to give DATA a val split: a larger ``curate.val_fraction`` (:func:`larger_val_fraction`), or another
    ``curate.split_seed`` where it cannot grow."""
    larger = larger_val_fraction(data)
    return (f"`lipsyncctl curate report DATA --set curate.val_fraction={larger}`" if larger is not None else
            "`lipsyncctl curate report DATA --set curate.split_seed=1` (another split)")


def _none_kept(clips: ClipSet) -> UsageError:
    """The refusal of a split without a kept clip, saying which case it is (DATA's manifest read again, counted):
    every kept span in the other split, spans not decided yet, every span rejected, or no span at all."""
    from collections import Counter

    root = clips.source if clips.source.is_dir() else clips.source.parent
    counts: Counter[tuple[str, str]] = Counter()
    with contextlib.suppress(OSError), open(root / MANIFEST, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                counts[(str(entry.get("split")), _verdict(entry))] += 1
    kept_elsewhere = sum(n for (split, verdict), n in counts.items() if verdict == "kept" and split != clips.split)
    if counts[(clips.split, "kept")]:  # (kept in this split, yet none read: not a case this can tell)
        kept_elsewhere = 0
    undecided = sum(n for (_, verdict), n in counts.items() if verdict not in ("kept", "rejected", "failed"))
    what = f"{clips.source}: no kept clip in the {clips.split} split"
    if kept_elsewhere:
        other = "val" if clips.split == "train" else "train"
        return UsageError(f"{what} ({kept_elsewhere} kept, all in {other})",
                          hint="split DATA again (no stage runs): `lipsyncctl curate report DATA --set "
                               "curate.split_seed=1` (another seed) or a smaller curate.val_fraction, or curate more "
                               "footage" if clips.split == "train" else f"split DATA again: {val_hint(clips.source)}, or curate more "
                               "footage")
    if undecided:
        return UsageError(f"{what} ({undecided} span(s) not decided yet: the curate run stopped early)",
                          hint="finish the curate run: `lipsyncctl curate RAW... -o DATA` without --until (it reuses "
                               "what is done)")
    if counts:
        return UsageError(f"{what} (every span of it rejected or failed)",
                          hint="curate's report.html says why each span was rejected: loosen a threshold and rerun "
                               "`lipsyncctl curate report DATA`, or curate more footage")
    return UsageError(f"{what} (DATA holds no span)", hint="curate footage with a face and speech into DATA")


def make_dataset(cfg: TrainConfig, clips: ClipSet) -> UNetSamples | SyncNetSamples:
    """The dataset of ``cfg.kind`` over ``clips`` (seed, frames, resolution from ``cfg``).

    Raises:
        UsageError: no usable clip."""
    if not clips.clips and not clips.skipped:  # (a too-short clip would be skipped: there is none at all)
        raise _none_kept(clips)
    if not clips.clips:
        first = clips.skipped[0]
        raise UsageError(f"{clips.source}: no clip of the {clips.split} split is long enough for {clips.kind} "
                         f"samples of {clips.num_frames} frames ({len(clips.skipped)} skipped; e.g. {first.id}, "
                         f"{first.frames} frames: {first.reason})",
                         hint="fewer frames a sample (--set data.num_frames=N), or curate longer footage")
    _check_size(clips, cfg.model.resolution)
    if cfg.kind == "unet":
        return UNetSamples(clips.clips, seed=cfg.run.seed, num_frames=cfg.data.num_frames,
                           resolution=cfg.model.resolution, mask=cfg.data.mask)
    # latent-space runs crop the latents, not the pixels (official: the lower half after the VAE encode)
    return SyncNetSamples(clips.clips, seed=cfg.run.seed, num_frames=cfg.data.num_frames,
                          resolution=cfg.model.resolution, lower_half=cfg.data.lower_half and not cfg.data.latent_space)


def _check_size(clips: ClipSet, resolution: int) -> None:
    """Refuse clips aligned smaller than the training ``resolution``: scaled up, they would train a 512 px model on
    blurred 256 px faces (the one thing LatentSync 1.6 changed) without a word. A clip whose manifest does not say
    its size (curated before it did) is probed, the first one only (one curate run aligns every clip at one size)."""
    table = ClipTable.of(clips.clips)
    sizes = set(table.sizes)
    if None in sizes:
        from lipsyncctl.media.probe import probe

        first = next(c for c in table if c.size is None)
        video = probe(first.video).video
        sizes.discard(None)
        if video is not None:
            sizes.add(min(video.width, video.height))
    small = min((s for s in sizes if s is not None), default=None)
    if small is not None and small < resolution:
        raise UsageError(f"{clips.source}: clips aligned at {small} px, smaller than the training resolution "
                         f"{resolution} px (scaled up, the model would learn blurred faces)",
                         hint=f"curate at the training size (`lipsyncctl curate RAW... -o DATA --set "
                         f"curate.resolution={resolution}`; the latentsync-1.6 preset does), or train at "
                         f"--set model.resolution={small}")


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack the items' tensors along a new batch dimension (``index`` -> ``(B,)``); other values
    (the clip ids) become lists."""
    if not items:
        raise ValueError("an empty batch")
    return {key: torch.stack([it[key] for it in items]) if isinstance(items[0][key], torch.Tensor)
            else [it[key] for it in items] for key in items[0]}


class _ClipSamples(Dataset[dict[str, Any]]):
    """Shared parts: the clips, the sample -> clip order, frame and feature reading. Holds only paths and
    numbers (picklable); every item opens its files itself, so it works in any data-loader worker."""

    kind = "unet"

    def __init__(self, clips: Iterable[TrainClip], *, seed: int, num_frames: int, resolution: int) -> None:
        self.clips: ClipTable = ClipTable.of(clips).sorted_by_id()
        if not self.clips:
            raise UsageError("no clip is long enough to train on",
                             hint="curate more or longer footage (see the skipped clips of the run's result)")
        last_starts = np.empty(len(self.clips), dtype=np.int64)  # a column, as the table's (module clips)
        for pos, (frames, whisper_len, mel_len, fps, _) in enumerate(self.clips.counts.tolist()):
            last_starts[pos] = last_start(frames, whisper_len, mel_len, fps, num_frames)  # no clip object made
            reason = _too_short(frames, whisper_len, mel_len, fps, self.kind, num_frames, last=int(last_starts[pos]))
            if reason is not None:
                raise ValueError(f"clip {self.clips[pos].id}: {reason} (read_clips skips such clips)")
        self.seed, self.num_frames, self.resolution = int(seed), int(num_frames), int(resolution)
        self.order = ClipOrder(self.seed, len(self.clips))
        self.last_starts = last_starts

    @property
    def n_clips(self) -> int:
        return len(self.clips)

    def clip_of(self, index: int) -> tuple[int, TrainClip]:
        pos = self.order.clip_of(index)
        return pos, self.clips[pos]

    def read_pixels(self, clip: TrainClip, starts: Sequence[int]) -> Tensor:
        """Frames ``[a, a + F)`` for each start ``a``, concatenated: uint8 ``(len(starts) F, 3, res, res)``."""
        from lipsyncctl.media.reader import IndexedReader

        wanted = [a + t for a in starts for t in range(self.num_frames)]
        try:
            with IndexedReader(clip.video, Fraction(clip.fps)) as reader:
                got = reader.read(wanted)
        except MediaError as exc:
            raise MediaError(f"clip {clip.id}: {exc.message}", hint=_DAMAGED) from exc
        frames = torch.from_numpy(np.stack([got[i] for i in wanted])).permute(0, 3, 1, 2)
        return resize_u8(frames, self.resolution)

    def read_audio(self, clip: TrainClip, start: int, *, whisper: bool) -> tuple[Tensor | None, Tensor]:
        """The whisper chunks of frames ``[start, start + F)`` ``(F, 50, 384)`` float32 (when ``whisper``)
        and the mel window at ``start`` ``(1, 80, C)`` float32, read as slices of the features file."""
        from safetensors import SafetensorError, safe_open


        f_, columns = self.num_frames, mel_columns(self.num_frames)
        try:
            with safe_open(str(clip.features), framework="pt") as f:
                chunks = None
                if whisper:
                    idx = chunk_indices(clip.whisper_len, f_, clip.fps, start=start)
                    lo, hi = int(idx.min()), int(idx.max())
                    part = f.get_slice("whisper")[lo:hi + 1]
                    chunks = part[idx - lo].reshape(f_, -1, part.shape[-1]).float()
                c0 = window_start(start, clip.fps)
                mel = f.get_slice("mel")[:, c0:c0 + columns].float().unsqueeze(0)
        except (SafetensorError, OSError, KeyError) as exc:
            raise MediaError(f"clip {clip.id}: cannot read its features {clip.features} ({exc})",
                             hint=_DAMAGED) from exc
        if mel.shape[-1] != columns:
            raise MediaError(f"clip {clip.id}: the mel of {clip.features} has {clip.mel_len} columns, not the "
                             f"{c0 + columns} of the window at frame {start}", hint=_DAMAGED)
        return chunks, mel


class UNetSamples(_ClipSamples):
    """UNet training samples (module docstring). ``dataset[k]``: a dict of

    - ``gt`` ``(F, 3, H, W)`` float32 in [-1, 1]: frames ``[start, start + F)``
    - ``masked`` ``(F, 3, H, W)`` float32: ``gt * mask`` (float64 product, as the official loader)
    - ``mask`` ``(1, H, W)`` float32, 1 = keep, 0 = mouth region (the official ``mask.png``)
    - ``ref`` ``(F, 3, H, W)`` float32 in [-1, 1]: frames ``[ref_start, ref_start + F)``, unmasked
    - ``whisper`` ``(F, 50, 384)`` float32, ``mel`` ``(1, 80, C)`` float32 (C = 52 for 16 frames)
    - ``index``, ``start``, ``ref_start``: int64 scalars; ``clip``: the clip id.

    ``H = W = resolution``; ``mask``: a bundled mask name or a PNG path."""

    kind = "unet"

    def __init__(self, clips: Iterable[TrainClip], *, seed: int, num_frames: int = 16, resolution: int = 256,
                 mask: str = paths.OFFICIAL_MASK) -> None:
        super().__init__(clips, seed=seed, num_frames=num_frames, resolution=resolution)
        self.mask = mask

    def windows(self, index: int) -> tuple[int, int, int]:
        """``(clip position, start, ref_start)`` of sample ``index`` (no file is read)."""
        pos, clip = self.clip_of(index)
        f_, last_ref = self.num_frames, clip.frames - self.num_frames
        g = sample_generator(self.seed, index)
        s = _uniform(self.last_starts[pos] + 1, g)
        # q over [0, last_ref] with |q - s| >= F, drawn from the allowed set directly: [0, s - F] then
        # [s + F, last_ref] (official: redraw while s - F < q < s + F)
        below, above = max(0, s - f_ + 1), max(0, last_ref - (s + f_) + 1)
        u = _uniform(below + above, g)
        return pos, s, (u if u < below else s + f_ + (u - below))

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        pos, s, q = self.windows(index)
        clip = self.clips[pos]
        pixels = self.read_pixels(clip, (s, q))
        f_ = self.num_frames
        gt, masked, masks = prepare_masked_images(pixels[:f_], mouth_mask(self.resolution, self.mask))
        whisper, mel = self.read_audio(clip, s, whisper=True)
        return {"gt": gt, "masked": masked, "mask": masks[0].clone(), "ref": to_pixels(pixels[f_:]), "whisper": whisper,
                "mel": mel, "index": torch.tensor(index), "start": torch.tensor(s), "ref_start": torch.tensor(q),
                "clip": clip.id}


class SyncNetSamples(_ClipSamples):
    """StableSyncNet training samples (module docstring). ``dataset[k]``: a dict of

    - ``frames`` ``(3F, H, W)`` float32 in [-1, 1]: frames ``[frame_start, + F)`` stacked ``(f c)``;
      ``H = resolution / 2`` (rows ``res/2 ..``) with ``lower_half``, else ``resolution``; ``W = resolution``
    - ``mel`` ``(1, 80, C)`` float32: the window at ``start``
    - ``label`` float32 scalar: 1 when ``frame_start == start``, else 0
    - ``index``, ``start``, ``frame_start``: int64 scalars; ``clip``: the clip id."""

    kind = "syncnet"

    def __init__(self, clips: Iterable[TrainClip], *, seed: int, num_frames: int = 16, resolution: int = 256,
                 lower_half: bool = True) -> None:
        super().__init__(clips, seed=seed, num_frames=num_frames, resolution=resolution)
        self.lower_half = lower_half

    def windows(self, index: int) -> tuple[int, int, int]:
        """``(clip position, start, frame_start)`` of sample ``index`` (no file is read)."""
        pos, clip = self.clip_of(index)
        g = sample_generator(self.seed, index)
        s = _uniform(self.last_starts[pos] + 1, g)
        w = _uniform(clip.frames - self.num_frames, g)  # any other start: [0, frames - F] minus {s}
        w = w + 1 if w >= s else w
        positive = _uniform(2, g) == 1
        return pos, s, (s if positive else w)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        pos, s, a = self.windows(index)
        clip = self.clips[pos]
        frames = to_pixels(self.read_pixels(clip, (a,))).flatten(0, 1)  # (f c) h w
        if self.lower_half:
            frames = frames[:, self.resolution // 2:]
        _, mel = self.read_audio(clip, s, whisper=False)
        return {"frames": frames, "mel": mel, "label": torch.tensor(float(a == s)), "index": torch.tensor(index),
                "start": torch.tensor(s), "frame_start": torch.tensor(a), "clip": clip.id}


def _uniform(n: int, g: torch.Generator) -> int:
    """Uniform over ``0 .. n - 1`` from ``g`` (one ``torch.randint`` draw)."""
    if n < 1:
        raise ValueError("nothing to draw from")
    return int(torch.randint(0, n, (1,), generator=g).item())


def resize_u8(frames: Tensor, size: int) -> Tensor:
    """uint8 ``(N, 3, h, w)`` -> ``(N, 3, size, size)``: bicubic with antialias, rounded and clamped back to
    uint8 (torchvision ``Resize((size, size), BICUBIC, antialias=True)`` on uint8 tensors, the official
    loaders' transform); the frames themselves when they already have that size."""
    import torch.nn.functional as F

    if tuple(frames.shape[-2:]) == (size, size):
        return frames
    out = F.interpolate(frames.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp_(0, 255).round_().to(torch.uint8)


def to_pixels(frames: Tensor | np.ndarray) -> Tensor:
    """uint8 -> float32 ``(u / 255 - 0.5) / 0.5`` in [-1, 1] (official ``Normalize([0.5], [0.5])``)."""
    return (torch.as_tensor(frames).to(torch.float32) / 255.0 - 0.5) / 0.5


__all__ = ["ClipSet", "ClipTable", "SkippedClip", "SyncNetSamples", "TrainClip", "UNetSamples", "collate", "curation_gaps", "locate",
           "make_dataset", "mel_columns", "read_clips", "resize_u8", "to_pixels"]
