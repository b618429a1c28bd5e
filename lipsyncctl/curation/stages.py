"""The per-source stages of the curation job: probe, normalize, shots, segments (LATENTSYNC.md §4, 1-4).

Each stage function takes what the earlier ones measured and returns its own measurements as a plain
dict (stored in the source record by the job); it raises :class:`~lipsyncctl.errors.MediaError` when the
source cannot be processed. Decisions are made elsewhere (:mod:`lipsyncctl.curation.decide`).

Inputs are only read: never modified, moved or deleted (the official pipeline deletes unreadable files).
The 25 fps picture is never re-encoded here: every later stage reads the source through the 25 fps grid
(:class:`~lipsyncctl.media.reader.IndexedReader`, prep's conform rule), so the aligned clip is the only
new lossy encode (the official pipeline makes up to four).
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.audio import MODEL_AUDIO_RATE, MODEL_FPS
from lipsyncctl.config import CurateOptions
from lipsyncctl.curation.spans import exact_segments, official_segments, shot_spans
from lipsyncctl.errors import DecodeError
from lipsyncctl.media.rates import exact

#: samples of the model's audio per frame of its rate (640: every stage's audio arithmetic uses it)
SAMPLES_PER_FRAME = MODEL_AUDIO_RATE // MODEL_FPS


def probe_source(path: Path, options: CurateOptions) -> dict[str, Any]:
    """Stage 1: PyAV probe (headers, the packet index or a packet scan: a truncated file fails here)
    and a decode of the first frame.

    The rest of the picture is decoded once, by the shots stage, which is the decode check of every
    later frame (:func:`detect_shots`): checking the last frame here would decode a file with one key
    frame a second time. Returns the facts later stages need; ``problem`` names what makes the source
    unusable (``no-video``, ``no-audio``) or is None; a source with several audio streams records how many and
    which one is its sound (``curate.audio_stream``; ``no-audio`` when it lacks that stream). Raises MediaError when
    the file cannot be read.
    """
    from lipsyncctl.media.probe import probe

    info = probe(path)
    facts: dict[str, Any] = {"format": info.format_name, "size_bytes": info.size_bytes,
                             "duration": info.duration, "has_audio": info.has_audio}
    if info.video is None:
        return {**facts, "problem": "no-video"}
    v = info.video
    fps = Fraction(options.fps)
    frames = grid_frames(v.frame_count, exact(v.duration), v.nominal_fps, v.is_vfr, fps)
    facts |= {"width": v.display_size[0], "height": v.display_size[1], "codec": v.codec, "start_time": v.start_time,
              "field_order": v.field_order,
              "fps": f"{v.fps.numerator}/{v.fps.denominator}", "vfr": v.is_vfr, "grid_frames": frames,
              "conform": "none" if (v.fps == fps and not v.is_vfr) else f"{options.fps} fps grid"}
    if info.has_audio:
        from lipsyncctl.media.probe import pick_audio_stream

        if options.audio_stream >= len(info.audio):  # the file's own fact under this setting: a rejection
            return {**facts, "problem": "no-audio",
                    "value": f"no stream {options.audio_stream} (curate.audio_stream): {len(info.audio)} audio stream(s)"}
        a, several = pick_audio_stream(path, info, options.audio_stream, "curate.audio_stream")
        facts |= {"audio_codec": a.codec, "audio_rate": a.sample_rate, "audio_channels": a.channels}
        if several:  # which one is the speech is a guess: the run lists these sources (its warnings)
            facts |= {"audio_streams": len(info.audio), "audio_stream": options.audio_stream, "audio_index": a.index}
    if frames < 1:
        return {**facts, "problem": "no-video"}
    return {**facts, "problem": None if info.has_audio else "no-audio"}


def grid_frames(frame_count: int, duration: Fraction, nominal_fps: Fraction, is_vfr: bool, fps: Fraction) -> int:
    """Frames of a video on a constant ``fps`` grid: its frame count when it already is CFR at ``fps``,
    else its duration times ``fps`` (rounded)."""
    if not is_vfr and nominal_fps == fps:
        return frame_count
    return max(0, round(duration * fps))


def normalize_audio(path: Path, dest: Path, options: CurateOptions, start: float = 0.0,
                    stream_index: int | None = None) -> dict[str, Any]:
    """Stage 2: the 16 kHz mono audio every later stage uses, written once (``dest``, 16-bit WAV). Its
    sample 0 is the sound at ``start`` seconds of the file's timeline: the picture's start time, where grid
    frame 0 is (prep's rule; MPEG-TS sources start at about 1.4 s). ``stream_index``: the container's index of
    the audio stream to read (the probe's ``audio_index``; None: the first audio stream)."""
    from lipsyncctl.media.audio import iter_audio, write_wav

    count = 0

    def counted() -> Iterator[np.ndarray]:  # streamed: an hour-long source is never held
        nonlocal count
        for chunk in iter_audio(path, options.audio_rate, 1, start=start, stream_index=stream_index):
            count += len(chunk)
            yield chunk

    write_wav(dest, counted(), options.audio_rate, inputs=(path,))
    return {"audio": str(dest), "audio_samples": count, "audio_frames": count // SAMPLES_PER_FRAME}


class ShotCuts:
    """PySceneDetect's adaptive detector with the official parameters (threshold ``options.shot_threshold`` = 2,
    min scene 0.6 s) over the frames of one source in order, each downscaled as PySceneDetect's own frame
    source does (to a width of about 256, bilinear). A cut is reported :attr:`lag` frames after its frame."""

    def __init__(self, size: tuple[int, int], options: CurateOptions) -> None:
        from scenedetect import AdaptiveDetector
        from scenedetect.scene_manager import compute_downscale_factor

        self.fps = float(options.fps)
        self._detector = AdaptiveDetector(adaptive_threshold=options.shot_threshold,
                                          min_scene_len=max(1, round(options.min_scene_seconds * options.fps)))
        self.lag = self._detector.window_width
        width, height = size
        self._factor = compute_downscale_factor(max(width, height))
        self._size = (max(1, round(width / self._factor)), max(1, round(height / self._factor)))

    def feed(self, index: int, rgb: np.ndarray) -> list[int]:
        """Frame ``index``; the cuts (frames that start a shot) found so far by it."""
        import cv2
        from scenedetect import FrameTimecode

        # resize, then reverse the channels: the same pixels as resizing the BGR frame (channels are
        # resized independently), without OpenCV copying a full-size negative-stride view first
        small = cv2.resize(rgb, self._size, interpolation=cv2.INTER_LINEAR) if self._factor > 1 else rgb
        bgr = np.ascontiguousarray(small[..., ::-1])
        return [cut.frame_num for cut in self._detector.process_frame(FrameTimecode(index, fps=self.fps), bgr)]

    def finish(self, frames: int) -> list[int]:
        """The cuts left after the last of ``frames`` frames."""
        from scenedetect import FrameTimecode

        return [cut.frame_num for cut in self._detector.post_process(FrameTimecode(frames, fps=self.fps)) or []]


def detect_shots(path: Path, frames: int, options: CurateOptions) -> dict[str, Any]:
    """Stage 3: shot cuts (:class:`ShotCuts`) on the 25 fps grid.

    Returns ``{"cuts": [...], "shots": [[first, stop], ...]}``: spans, not split files; a clip without a
    cut is one shot (``start_in_scene``). This is the one full decode of the source before the aligned
    clips are made, so it is also the decode check (the probe decodes only the first frame): a frame that
    fails to decode, or a stream that ends more than one frame before the probed length, returns
    ``{"problem": "unreadable", "value": why}`` instead (the decision: rejected at ``shots``).
    """
    from lipsyncctl.media.reader import IndexedReader

    cuts: list[int] = []
    with IndexedReader(path, Fraction(options.fps), deinterlace=options.deinterlace == "auto") as reader:
        shots = ShotCuts(reader.size, options)
        try:
            for i, rgb in progress.track(reader.range(0, frames), "shots", total=frames):
                cuts += shots.feed(i, rgb)
        except DecodeError as exc:
            return unreadable(exc, reader, options)
        if (problem := short_stream(reader, frames)) is not None:
            return problem
    return shots_data(cuts + shots.finish(frames), frames)


def shots_data(cuts: list[int], frames: int) -> dict[str, Any]:
    """The shots stage's result for these cuts."""
    return {"cuts": sorted(set(cuts)), "shots": [list(s) for s in shot_spans(cuts, frames)]}


def unreadable(exc: DecodeError, reader: Any, options: CurateOptions) -> dict[str, Any]:
    """The shots stage's result for a picture that stopped decoding (the failed source frame, on the grid)."""
    import av

    from lipsyncctl.media.container import ffmpeg_reason

    at = int(Fraction(exc.frame) / reader.video.nominal_fps * options.fps)
    cause = exc.__cause__
    why = ffmpeg_reason(cause) if isinstance(cause, av.error.FFmpegError) else str(exc)
    return {"problem": "unreadable", "value": f"frame {at} does not decode ({why})"}


def short_stream(reader: Any, frames: int) -> dict[str, Any] | None:
    """The shots stage's result when the stream ended more than one frame before ``frames``, else None."""
    last = reader.last_decoded
    if last is not None and last < frames - 2:
        return {"problem": "unreadable", "value": f"decodes {last + 1} of {frames} frames"}
    return None


def keyframe_indices(path: Path, fps: Fraction) -> list[int]:
    """Grid indices (at ``fps``) of the video's key frames, from its packets (no decoding)."""
    import av

    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        start = stream.start_time or 0
        for pkt in c.demux(stream):
            if pkt.is_keyframe and pkt.pts is not None:
                out.append(round((pkt.pts - start) * stream.time_base * fps))
    return sorted(set(out))


def cut_segments(shots: list[list[int]], options: CurateOptions,
                 keyframes: list[int] | None = None) -> dict[str, list[list[int]]]:
    """Stage 4: every shot cut into training segments (:mod:`lipsyncctl.curation.spans`): frame-exact
    ``segment_seconds`` pieces, or with ``segments: official`` the key-frame lengths of the official
    stream copy. Returns ``{"pieces": [[first, stop, shot_first, shot_stop], ...]}``: every frame of
    every shot is in one piece (a shot shorter than a segment is one piece), so every span of the source
    gets a decision; which are too short is decided from these numbers (:mod:`.decide`), not here."""
    seg = round(options.segment_seconds * options.fps)
    pieces: list[list[int]] = []
    for first, stop in shots:
        spans = (official_segments((first, stop), seg, keyframes or []) if options.segments == "official"
                 else exact_segments((first, stop), seg))
        pieces += [[a, b, first, stop] for a, b in spans]
    return {"pieces": pieces}


def span_pcm(path: Path, first: int, stop: int, shift: int = 0) -> np.ndarray:
    """Samples ``[first * 640 + shift, stop * 640 + shift)`` of the 16 kHz mono PCM16 WAV ``path`` as int16
    ``(n,)``, zero-padded before its start and past its end (read exactly; divide by 32768 for the official
    float samples). ``shift``: the sync stage's ``audio_shift_samples`` (0: the span's own audio)."""
    want = (stop - first) * SAMPLES_PER_FRAME
    start = first * SAMPLES_PER_FRAME + shift
    lead = min(max(-start, 0), want)  # samples before the file's start
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit samples")
        channels = wav.getnchannels()
        wav.setpos(min(max(start, 0), wav.getnframes()))
        pcm = np.frombuffer(wav.readframes(want - lead), dtype="<i2").reshape(-1, channels)[:, 0]
    return np.pad(pcm.astype(np.int16), (lead, want - lead - pcm.size))
