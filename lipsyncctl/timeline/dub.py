"""Dub audio per language: where it comes from, how a segment's piece is cut, and where the dialogue is.

Sources (``--audio`` / ``--audio-track``):
- ``--audio de.wav``: one file whose first sample plays at the timeline's first frame, moved by
  ``--audio-offset`` (seconds, or a timeline timecode like ``01:00:05:00`` where the file starts);
- ``--audio de=de.wav --audio fr=fr.wav``: one file per language (the label names the output folder);
- ``--audio-track NAME`` (or ``de=NAME``): an audio track inside the timeline, mixed from its clips.

A segment's audio is cut at its record range, sample accurate: frame ``f`` starts at sample
``floor(f * rate / fps)`` (:func:`lipsyncctl.media.timecode.samples_at`); outside the dub it is silence.
Speech detection uses silero-vad (its model ships in the wheel) on a 16 kHz mono copy.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl.errors import MediaError, UsageError
from lipsyncctl.media import timecode as tb
from lipsyncctl.media.rates import exact

if TYPE_CHECKING:
    from lipsyncctl.timeline.segments import Segment

_LANG = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
#: :data:`_LANG` as an error says it
LABEL_RULE = "a letter, then up to 31 letters, digits, - and _"
VAD_RATE = 16000


@dataclass
class DubTrack:
    """One language's dialogue on the timeline.

    Attributes:
        samples: float32 ``(channels, n)`` at ``rate``.
        start: timeline seconds (0 = the timeline's first frame) at which sample 0 plays.
    """

    language: str
    samples: np.ndarray
    rate: int
    start: Fraction
    source: str
    speech: list[tuple[float, float]] = field(default_factory=list)  # timeline seconds

    def cut(self, record_start: int, frames: int, fps: Fraction) -> np.ndarray:
        """The samples of record frames ``record_start .. record_start + frames - 1`` (``(ch, n)``),
        zero-padded where the dub has no sound."""
        s0 = tb.samples_at(record_start, fps, self.rate)
        return self.window(s0, tb.samples_at(record_start + frames, fps, self.rate) - s0)

    def window(self, first: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """``(ch, count)`` samples from timeline sample ``first`` (sample 0 = the timeline's first frame, at
        ``rate``), zero-padded where the dub has no sound. ``out``: a float32 ``(ch, count)`` array (a view
        into a longer one) to fill in place instead of a new one."""
        s0 = first - math.floor(self.start * self.rate)
        if out is None:
            out = np.zeros((self.samples.shape[0], count), dtype=np.float32)
        else:
            out[...] = 0
        lo, hi = max(s0, 0), min(s0 + count, self.samples.shape[1])
        if hi > lo:
            out[:, lo - s0 : hi - s0] = self.samples[:, lo:hi]
        return out


def parse_audio_specs(items: list[str]) -> list[tuple[str, Path]]:
    """``["de=de.wav", "fr.wav"]`` -> ``[("de", de.wav), ("fr", fr.wav)]`` (an unlabelled file is named by
    its stem). Raises UsageError on duplicate labels."""
    out: list[tuple[str, Path]] = []
    for item in items:
        label, sep, rest = item.partition("=")
        if sep and _LANG.match(label) and not Path(item).exists():
            if not rest.strip():  # `de=$DE_WAV` with the variable unset: "file not found: ." (the folder here)
                raise UsageError(f"--audio {item}: no file after the label",
                                 hint="a variable of the script calling lipsyncctl may be unset: --audio de=de.wav")
            out.append((label, Path(rest)))
        elif sep and not Path(item).exists():  # a label that is none (`../esc=de.wav`: "file not found" before)
            raise UsageError(f"--audio {item}: {label!r} is not a language label ({LABEL_RULE})",
                             hint="label each file: --audio de=de.wav (or give a file without a label)")
        elif _LANG.match(Path(item).stem):
            out.append((Path(item).stem, Path(item)))
        else:  # its name is the language folder: `...wav` delivered to OUT/../v001, `DE dub.wav` to `OUT/DE dub`
            raise UsageError(f"--audio {item}: its name {Path(item).stem!r} is not a language label ({LABEL_RULE}), "
                             "and it names the language's folder", hint=f"label it: --audio {shlex.quote('de=' + item)}")
    check_languages([lang for lang, _ in out])
    return out


def parse_track_specs(items: list[str]) -> list[tuple[str, str]]:
    """``["de=German", "Dub FR"]`` -> ``[("de", "German"), ("Dub_FR", "Dub FR")]``.

    Raises:
        UsageError: an unlabelled track whose name gives no label (``..``, ``1 st``: a label starts with a letter).
    """
    out = []
    for item in items:
        label, sep, rest = item.partition("=")
        if sep and _LANG.match(label):
            out.append((label, rest))
            continue
        named = re.sub(r"[^A-Za-z0-9_-]+", "_", item)
        if not _LANG.match(named):
            raise UsageError(f"--audio-track {item!r}: its name gives no language label ({LABEL_RULE}), and the "
                             "label names the language's folder", hint=f"label it: --audio-track {shlex.quote('de=' + item)}")
        out.append((named, item))
    return out


def check_languages(labels: list[str]) -> None:
    """The languages of a run (``--audio`` and ``--audio-track`` together) are distinct, also in case: ``de`` and
    ``DE`` are one folder on a case-insensitive volume (macOS, SMB and NTFS shares).

    Raises:
        UsageError: one is given twice.
    """
    folded = [label.casefold() for label in labels]
    if dup := sorted({label for label in labels if folded.count(label.casefold()) > 1}):
        raise UsageError(f"--audio: language {dup[0]!r} given twice (languages differing in case only are one folder "
                         "on many volumes)", hint="label each dub: --audio de=de.wav --audio-track fr=A2")


def parse_offset(value: str | None, fps: Fraction, global_start: int) -> Fraction:
    """``--audio-offset``: seconds after the timeline's first frame (``"1.5"``, ``"-0.5"``), or the
    timeline timecode at which the file starts (``"01:00:02:00"``; ``"01:00:02;00"`` is drop-frame at
    29.97/59.94, as the timeline's own start is read: it was counted non-drop, 3.6 s late per hour)."""
    if value is None or value == "":
        return Fraction(0)
    if ":" in value:
        parts = value.replace(";", ":").split(":")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise UsageError(f"--audio-offset {value!r}: expected seconds or HH:MM:SS:FF")
        # drop frame only where it exists: --audio-offset always took ';' for ':' at other rates
        text = value if fps in tb.DROP_FRAME_RATES else value.replace(";", ":")
        try:
            tb.check_drop_label(text, fps)
        except ValueError as exc:
            raise UsageError(f"--audio-offset {value!r}: {exc}", hint="give the timecode the edit shows, or seconds") \
                from None
        try:
            frames = tb.timecode_frames(text, fps)
        except ValueError as exc:
            raise UsageError(f"--audio-offset {value!r}: not a timecode at {float(fps):.3f} fps ({exc})") from None
        return Fraction(frames - global_start) / fps
    try:
        return exact(value)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--audio-offset {value!r}: expected seconds or HH:MM:SS:FF") from None


def load_dub_file(language: str, path: Path, start: Fraction = Fraction(0), *, folder: Path | None = None) -> DubTrack:
    """Decode a dub file at its own rate and channels (PyAV), from its own start (an MPEG-TS's first sample, not its
    time 0: :func:`~lipsyncctl.media.audio.own_start`), onto disk in ``folder``
    (:func:`~lipsyncctl.timeline.mediaio.spool_audio`: memory does not grow with the dub's length)."""
    from lipsyncctl.media.audio import own_start
    from lipsyncctl.timeline.mediaio import spool_audio

    if not path.is_file():
        raise MediaError(f"--audio {language}: file not found: {path}", hint="check the path")
    samples, rate = spool_audio(path, folder=folder, start=own_start(path))
    return DubTrack(language, samples, rate, start, str(path))


def load_dub_track(language: str, timeline: Any, name: str, resolver: Any, fps: Fraction,
                   rate: int = 48000, *, folder: Path | None = None) -> DubTrack:
    """Mix the clips of the timeline's audio track(s) called ``name`` into one stereo dub at ``rate``, on disk
    in ``folder`` (the mix and each clip's media decoded once: :func:`~lipsyncctl.timeline.mediaio.spool_audio`).

    Raises:
        UsageError: no audio track of that name. MediaError: a clip's media is missing.
    """
    import opentimelineio as otio

    from lipsyncctl.timeline.mediaio import scratch_mix, spool_audio

    audio_tracks = [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Audio]
    tracks = [t for t in audio_tracks if t.name == name]
    if not tracks and (number := re.fullmatch(r"[Aa](\d+)", name)) and 1 <= int(number[1]) <= len(audio_tracks):
        tracks = [audio_tracks[int(number[1]) - 1]]  # A2: the second audio track, as an NLE numbers them (FCP XML
        # and EDL tracks carry no name)
    if not tracks:
        names = [f"A{i} {t.name!r}" for i, t in enumerate(audio_tracks, 1)]
        raise UsageError(f"--audio-track {name!r}: no audio track of that name (or number, A1...)",
                         hint=f"audio tracks in the timeline: {', '.join(names) or '(none)'}")
    total = tb.samples_at(tb.to_frames(timeline.duration(), fps), fps, rate)
    mix = scratch_mix(2, total, folder)
    cache: dict[Path, np.ndarray] = {}
    for track in tracks:
        for i, child in enumerate(track):
            if not isinstance(child, otio.schema.Clip) or not child.enabled:
                continue
            ref = child.media_reference
            path = resolver.resolve(getattr(ref, "target_url", "")) if ref is not None else None
            if path is None:
                raise MediaError(f"--audio-track {name!r}: clip {child.name!r} has missing media",
                                 hint="relink it with --media-root or --relink")
            if path not in cache:
                cache[path] = spool_audio(path, rate=rate, channels=2, folder=folder)[0]
            audio = cache[path]
            rng = track.range_of_child_at_index(i)
            media_start = ref.available_range.start_time if ref.available_range is not None else None
            src = tb.seconds(child.trimmed_range().start_time) - (tb.seconds(media_start) if media_start else 0)
            s_src = math.floor(src * rate)
            d0 = tb.samples_at(tb.to_frames(rng.start_time, fps), fps, rate)
            d1 = tb.samples_at(tb.to_frames(rng.end_time_exclusive(), fps), fps, rate)
            n = max(0, min(d1 - d0, audio.shape[1] - s_src, total - d0))
            if n > 0 and s_src >= 0:
                mix[:, d0 : d0 + n] += audio[:, s_src : s_src + n]
    return DubTrack(language, mix, rate, Fraction(0), f"track:{name}")


def to_vad_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (linear interpolation: enough for speech detection)."""
    mono = samples.mean(axis=0) if samples.ndim == 2 else samples
    if rate == VAD_RATE:
        return mono.astype(np.float32)
    n = int(mono.shape[0] * VAD_RATE // rate)
    x = np.arange(n) * (rate / VAD_RATE)
    return np.interp(x, np.arange(mono.shape[0]), mono).astype(np.float32)


#: Speech is looked for in windows of this many seconds of the dub (one window's 16 kHz copy at a time: about
#: 250 MB of work arrays for a 48 kHz dub, whatever its length; a stretch of speech across a window's edge is
#: joined up again).
VAD_WINDOW_S = 300


def detect_speech(dub: DubTrack, *, threshold: float = 0.5, min_silence_ms: int = 300,
                  pad_ms: int = 60) -> list[tuple[float, float]]:
    """Speech stretches of ``dub`` in timeline seconds (silero-vad, window by window: :data:`VAD_WINDOW_S`);
    also stored on ``dub.speech``."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    try:
        model = load_silero_vad(onnx=True)
    except ImportError:  # onnxruntime missing: the TorchScript model ships too
        model = load_silero_vad(onnx=False)
    start = float(dub.start)
    window, pad = VAD_WINDOW_S * dub.rate, pad_ms / 1000
    speech: list[tuple[float, float]] = []
    for first in range(0, dub.samples.shape[1], window):
        audio = torch.from_numpy(to_vad_rate(dub.samples[:, first:first + window], dub.rate))
        stamps = get_speech_timestamps(audio, model, threshold=threshold, sampling_rate=VAD_RATE,
                                       min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms)
        at = start + first / dub.rate
        for i, stamp in enumerate(stamps):
            a, b = at + stamp["start"] / VAD_RATE, at + stamp["end"] / VAD_RATE
            if i == 0 and speech and speech[-1][1] >= at - pad and a <= at + pad:  # one stretch across the edge
                speech[-1] = (speech[-1][0], b)
            else:
                speech.append((a, b))
    dub.speech = speech
    return dub.speech


def audio_digest(samples: np.ndarray, rate: int) -> str:
    """sha256 of a cut (its float32 bytes and rate): part of a segment's content key."""
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    h.update(str(rate).encode())
    return h.hexdigest()


# ---- a shot's piece of the dub ------------------------------------------------------------------
# The render of a segment covers its media frames ``render_start .. +render_frames`` (handles included)
# at the media's rate; the dub is on the timeline's clock. These turn one into the other.

def offset_samples(seg: Segment, rate: int) -> int:
    """``seg``'s ``audio_offset`` option as whole samples at ``rate`` (the nearest; 0 without one): under
    its picture's timeline sample ``k`` plays the dub's timeline sample ``k - offset_samples``. The render
    (:func:`render_window`), the conform (:func:`lipsyncctl.timeline.outputs.conform_audio`) and the relinked
    dub track (:func:`lipsyncctl.timeline.outputs.dub_track`) all shift by this one number, so they agree
    sample for sample."""
    off = seg.options.audio_offset
    return round(exact(off) * rate) if off else 0


def shifted_spans(segments: list[Segment], fps: Fraction, rate: int) -> list[tuple[int, int, int, Segment]]:
    """``(first, end, shift, seg)`` for each lip-synced shot of ``segments`` whose ``audio_offset`` moves the
    dub by a sample or more, in record order: its record range as timeline samples ``[first, end)`` at
    ``rate`` (cut like :meth:`DubTrack.cut`) and :func:`offset_samples`. Record ranges never overlap."""
    out = []
    for seg in sorted(segments, key=lambda s: s.record_start):
        shift = offset_samples(seg, rate)
        if shift:
            first = tb.samples_at(seg.record_start, fps, rate)
            out.append((first, tb.samples_at(seg.record_start + seg.record_frames, fps, rate), shift, seg))
    return out


def record_cut(dub: DubTrack, seg: Segment, fps: Fraction) -> np.ndarray:
    """The sound of ``seg``'s record range as delivered (the conform's, the render's under its visible
    frames): :meth:`DubTrack.cut`, moved by the shot's ``audio_offset`` (:func:`offset_samples`)."""
    s0 = tb.samples_at(seg.record_start, fps, dub.rate)
    return dub.window(s0 - offset_samples(seg, dub.rate),
                      tb.samples_at(seg.record_start + seg.record_frames, fps, dub.rate) - s0)


def render_window(seg: Segment, fps: Fraction, rate: int) -> tuple[Fraction, int]:
    """``(t0, n)``: the timeline seconds of the dub under the render's first frame (its head handle), and
    how many samples at ``rate`` the render lasts (``floor`` at both ends, like every cut here). A shot's
    ``audio_offset`` option moves the window by whole samples (:func:`offset_samples`): the picture at ``t``
    gets the dub at ``t - audio_offset``, and ``n`` does not change."""
    t0 = Fraction(seg.record_start) / fps - Fraction(seg.handle_in) / seg.media_fps
    t0 -= Fraction(offset_samples(seg, rate), rate)
    s0 = math.floor(t0 * rate)
    s1 = math.floor((t0 + Fraction(seg.render_frames) / seg.media_fps) * rate)
    return t0, s1 - s0


def render_cut(dub: DubTrack, seg: Segment, fps: Fraction) -> np.ndarray:
    """The dub under the whole render of ``seg`` (handles included): float32 ``(channels, n)``."""
    t0, n = render_window(seg, fps, dub.rate)
    return dub.window(math.floor(t0 * dub.rate), n)


def speech_frames(dub: DubTrack, seg: Segment, fps: Fraction, pad: int) -> tuple[list[tuple[int, int]], float]:
    """Speech as render-local frame ranges ``[lo, hi)`` (each padded by ``pad`` frames, overlaps merged)
    and the share of the visible (non-handle) frames with speech."""
    t0, _ = render_window(seg, fps, dub.rate)
    ranges: list[tuple[int, int]] = []
    for a, b in dub.speech:
        lo = max(math.floor((exact(a) - t0) * seg.media_fps) - pad, 0)
        hi = min(math.ceil((exact(b) - t0) * seg.media_fps) + pad, seg.render_frames)
        if hi > lo:
            if ranges and lo <= ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], max(hi, ranges[-1][1]))
            else:
                ranges.append((lo, hi))
    vis_lo, vis_hi = seg.handle_in, seg.handle_in + seg.source_frames
    covered = sum(max(0, min(hi, vis_hi) - max(lo, vis_lo)) for lo, hi in ranges)
    return ranges, covered / max(seg.source_frames, 1)


def frame_complement(ranges: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """The frames ``0 .. total`` outside the sorted ``[lo, hi)`` ``ranges``."""
    out, pos = [], 0
    for lo, hi in ranges:
        if lo > pos:
            out.append((pos, lo))
        pos = max(pos, hi)
    if pos < total:
        out.append((pos, total))
    return out


def silence_outside(cut: np.ndarray, ranges: list[tuple[int, int]], media_fps: Fraction, rate: int) -> np.ndarray:
    """``cut`` ``(channels, n)`` with every sample outside the render-local frame ``ranges`` zeroed (what the
    model hears in ``non_dialogue=close`` mode: a closed mouth between lines)."""
    gated = np.zeros_like(cut)
    for lo, hi in ranges:
        s0, s1 = int(lo * rate / media_fps), int(hi * rate / media_fps)
        gated[:, s0:s1] = cut[:, s0:s1]
    return gated
