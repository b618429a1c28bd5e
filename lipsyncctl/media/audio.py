"""Audio in and out: any format PyAV reads → float32 samples at a requested rate and channel count.

Sample arrays are float32 in [-1, 1]; mono is ``(n,)``, multi-channel is ``(n, channels)``.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from lipsyncctl.errors import MediaError
from lipsyncctl.media.atomic import atomic_output
from lipsyncctl.media.container import ffmpeg_reason, opened


def layout_name(channels: int) -> str:
    """ffmpeg's default layout for a channel count (1 → ``mono``, 2 → ``stereo``, 6 → ``5.1``)."""
    import av

    return av.AudioLayout(f"{int(channels)}c").name


def _audio_stream(container: Any, path: Path, index: int | None) -> Any:
    streams = list(container.streams.audio)
    if index is not None:
        streams = [s for s in streams if s.index == index]
    if not streams:
        raise MediaError(f"{path}: no audio stream" + (f" with index {index}" if index is not None else ""),
                         hint="use --allow-no-audio to process picture only, or pass a file with sound")
    return streams[0]


def declared_end(container: Any, stream: Any) -> Fraction | None:
    """Where the audio of ``stream`` ends, in seconds of the file's timeline, when the container states it
    exactly; None when it does not.

    An AAC encoder primes its first frame and pads its last one to 1024 samples: a 2.000 s dub at 48 kHz
    decodes to 94 frames = 2.005333 s. FFmpeg's decoder drops the priming (the ``skip_samples`` of the
    MP4 edit list, or of an MP3's LAME header) but keeps the end padding; the MP4/MOV edit list also
    gives the exact length, which FFmpeg reports as the stream's duration. So for the ISO base media
    family the length is ``start_time + duration``. Elsewhere the decoded length is already right (WAV,
    FLAC, MP3 with its LAME header, where FFmpeg trims both ends) or the header's duration is only an
    estimate (a raw ADTS ``.aac``), and None keeps every decoded sample. A file without an edit list
    declares its samples' total, which cuts nothing.
    """
    if not {"mov", "mp4", "m4a"} & set(container.format.name.split(",")) or not stream.duration:
        return None
    return (Fraction(stream.start_time or 0) + stream.duration) * Fraction(stream.time_base)


def check_not_cut_short(container: Any, stream: Any, decoded: int) -> None:
    """Raise :class:`MediaError` (exit 5) when a file holds less sound than its header says it has: a WAV whose data
    chunk runs past the end of the file, a FLAC whose STREAMINFO counts more samples than ``decoded`` (a copy or a
    transfer cut off; FFmpeg decodes what is there and says nothing). Other formats state no exact total."""
    name = str(container.name)
    rate = int(stream.codec_context.sample_rate) or 1
    declared: int | None = None
    fmt = set(container.format.name.split(","))
    if "wav" in fmt:
        declared = _wav_declared_samples(name)
    elif "flac" in fmt and stream.duration and Fraction(stream.time_base) == Fraction(1, rate):
        declared = int(stream.duration)
    if declared is not None and declared - decoded > rate // 1000:
        raise MediaError(f"{name}: the file is cut short: its sound ends at {decoded / rate:.3f} s, its header "
                         f"says {declared / rate:.3f} s", hint="copy or export the file again (an interrupted "
                         "transfer leaves a file like this)")


def _wav_declared_samples(path: str) -> int | None:
    """The samples a RIFF WAV's header says its data chunk holds, when the file is shorter than that chunk (None: it
    is not, or the header states no size, or it is an RF64)."""
    import struct

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                kind, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"fmt ":
                    fmt = f.read(min(length, 16))
                    block = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
                    f.seek(length - len(fmt) + (length & 1), os.SEEK_CUR)
                elif kind == b"data":
                    # (a writer that could not seek back states 0, or a large placeholder: 0x7FFFF000 SoX, 0x7FFFFFFF
                    # arecord, 0xFFFFFFFF others: no size stated)
                    if not block or not 0 < length < 0x7FFF0000 or f.tell() + length <= size:
                        return None
                    return length // block
                else:
                    f.seek(length + (length & 1), os.SEEK_CUR)
    except OSError:
        return None


def truncate_frame(frame: Any, samples: int) -> Any:
    """The first ``samples`` samples of audio ``frame`` (a new frame of the same format, layout and rate)."""
    import av

    data = frame.to_ndarray()
    planar = frame.format.is_planar
    cut = data[:, :samples] if planar else data[:, : samples * len(frame.layout.channels)]
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(cut), format=frame.format.name, layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    return out


def iter_audio_frames(container: Any, stream: Any, *, rate: int, channels: int, fmt: str = "flt",
                      frame_size: int | None = None, start: float = 0.0,
                      native: list[Any] | None = None) -> Iterator[tuple[Fraction, Any]]:
    """Decode ``stream`` and yield ``(time_of_first_sample, resampled av.AudioFrame)`` from ``start`` on,
    up to the end the container declares (:func:`declared_end`: no encoder padding).

    ``native``: a list that receives ``[samples, rate, time]`` once the iteration ends: the samples decoded at
    the stream's own rate up to the declared end (what :func:`audio_length` counts, for ``start`` 0 and read to
    the end), that rate, and the time of the first one decoded (seconds of the file's timeline, a Fraction).

    Seeks near ``start`` first (a keyframe before it); callers trim by the reported time. Frames are in
    ``fmt``: packed (``flt``, ``s16``: ``frame.to_ndarray()`` is ``(1, n * channels)``, interleaved, so
    ``.reshape(-1, channels)`` gives this module's ``(n, channels)``) or planar (``fltp``: ``(channels, n)``).
    """
    import av

    stream.thread_type = "AUTO"
    tb = Fraction(stream.time_base)
    end = declared_end(container, stream)
    if start > 0:
        # Seek a little early: AAC/MP3 frames overlap, so the first decoded frame after a seek is wrong.
        container.seek(max(0, int((Fraction(start) - Fraction(1, 4)) / tb)), stream=stream, backward=True)
    resampler = av.AudioResampler(format=fmt, layout=layout_name(channels), rate=rate,
                                  frame_size=frame_size)
    t0: Fraction | None = None
    produced = 0
    limit: int | None = None  # samples at ``rate`` from t0 to the declared end

    def resampled(frame: Any) -> Iterator[tuple[Fraction, Any]]:
        nonlocal produced
        for out in resampler.resample(frame):
            if limit is not None and produced + out.samples > limit:
                out = truncate_frame(out, limit - produced) if limit > produced else None
            if out is None:
                return
            yield (t0 or Fraction(0)) + Fraction(produced, rate), out
            produced += out.samples

    decoded = 0
    try:
        for frame in container.decode(stream):
            if t0 is None:
                t0 = Fraction(frame.pts) * tb if frame.pts is not None else Fraction(0)
                limit = None if end is None else max(0, round((end - t0) * rate))
            decoded += frame.samples
            yield from resampled(frame)
            if limit is not None and produced >= limit:
                return  # the resampler lags its input: everything up to the declared end is decoded
        yield from resampled(None)
        if start <= 0:  # the whole sound was decoded: as much as its header promised?
            check_not_cut_short(container, stream, decoded)
    finally:
        if native is not None:
            own = int(stream.codec_context.sample_rate)
            native[:] = [decoded if end is None else min(decoded, max(0, round((end - (t0 or 0)) * own))), own,
                         t0 or Fraction(0)]


def read_audio_and_length(path: str | Path, rate: int, channels: int, *,
                          stream_index: int | None = None, folder: str | Path | None = None,
                          start: Fraction | float = 0) -> tuple[np.ndarray, int, int]:
    """``(read_audio(path, rate, channels, start=start), samples, own_rate)`` from one decode of the file: the
    samples at ``rate`` from ``start`` seconds of the file's timeline on (silence first where the stream starts
    later), and how many samples that sound has at the stream's own rate (:func:`audio_length`'s count, from
    ``start``), and that rate. ``stream_index``: the container's index of the audio stream to read (None: the
    first); ``folder``: see :func:`read_audio`."""
    native: list[Any] = []
    samples = read_audio(path, rate, channels, native=native, stream_index=stream_index, folder=folder,
                         start=float(start))
    decoded, own, first = native
    return samples, max(0, decoded + round((first - Fraction(start)) * own)), own


def loudest_channel(path: str | Path, *, stream_index: int | None = None, start: Fraction | float = 0) -> float:
    """The peak (0..1) of the loudest channel of ``path``'s sound from ``start`` on, each channel on its own (at 16 kHz;
    streamed)."""
    peak = 0.0
    for chunk in iter_audio(path, 16000, None, start=float(start), stream_index=stream_index):
        if len(chunk):
            peak = max(peak, float(np.abs(chunk).max()))
    return peak


#: Samples :func:`read_audio` keeps in memory when it is given a folder: more go to a file mapped from there
#: (2 minutes at 16 kHz, 7.7 MB of float32 mono).
SPILL_SAMPLES = 16000 * 120


def read_audio(path: str | Path, rate: int | None, channels: int | None, *,
               start: float = 0.0, duration: float | None = None, stream_index: int | None = None,
               native: list[Any] | None = None, folder: str | Path | None = None) -> np.ndarray:
    """Decode the audio of ``path`` to float32, resampled to ``rate`` Hz and ``channels`` channels, whole:
    :func:`iter_audio`'s chunks joined.

    ``folder``: a sound of more than :data:`SPILL_SAMPLES` samples (a film's) goes on, as it is decoded, into an
    unnamed file there, mapped read-only (:func:`gather_samples`): memory then does not grow with its length.
    None holds it in memory.

    Returns ``(n,)`` for mono, ``(n, channels)`` otherwise. Raises :class:`MediaError` if the file has no
    audio stream or cannot be decoded.
    """
    chunks = iter_audio(path, rate, channels, start=start, duration=duration, stream_index=stream_index,
                        native=native)
    samples = gather_samples(chunks, folder=folder, keep=SPILL_SAMPLES if folder is not None else None)
    return samples[:, 0] if samples.shape[1] == 1 else samples


def gather_samples(chunks: Iterable[np.ndarray], *, folder: str | Path | None = None,
                   keep: int | None = None) -> np.ndarray:
    """``(n, channels)`` float32 ``chunks`` joined into one array: in memory while there are at most ``keep``
    samples (None: always), past that in an unnamed temporary file in ``folder`` (None: the system's temporary
    folder), written as they come and mapped read-only: an hour of 48 kHz stereo costs disk, not 1.4 GB of
    memory. The file has no name from the start, so nothing is left behind, whatever happens. An empty
    stream gives ``(0, channels)``."""
    held: list[np.ndarray] = []
    have = 0
    raw = None
    try:
        for chunk in chunks:
            if raw is None and (keep is None or have + len(chunk) <= keep):
                held.append(chunk)
            else:
                if raw is None:
                    raw = _unnamed_file(folder)
                    for block in held:
                        _write_scratch(raw, block, folder)
                    held = []
                _write_scratch(raw, chunk, folder)
            have += len(chunk)
        if raw is None:
            if not held:
                return np.zeros((0, 1), np.float32)
            return np.concatenate(held) if len(held) != 1 else np.ascontiguousarray(held[0])
        raw.flush()
        return np.memmap(raw, dtype=np.float32, mode="r", shape=(have, chunk.shape[1]))
    finally:
        if raw is not None:
            raw.close()  # the mapping outlives the closed file


def _write_scratch(raw: Any, samples: np.ndarray, folder: str | Path | None) -> None:
    try:
        raw.write(np.ascontiguousarray(samples, np.float32).tobytes())
    except OSError as exc:
        _scratch_failed(folder, exc, written=raw.tell())


def _scratch_failed(folder: str | Path | None, exc: OSError, *, written: int = 0, needed: int | None = None) -> NoReturn:
    """Raise for a write failure under a scratch file of ``folder`` (None: the system's temporary folder): a full
    disk, a read-only or failing one as a :class:`~lipsyncctl.errors.WriteError` naming the folder and its free
    space; anything else as it is."""
    import tempfile

    from lipsyncctl.media.atomic import WRITE_ERRNOS, write_error

    if exc.errno not in WRITE_ERRNOS:
        raise exc
    temporary = Path(tempfile.gettempdir())
    where = Path(folder) if folder is not None else temporary
    hint = ("free some space there, or point TMPDIR at a folder with room, and rerun" if where == temporary
            else "free some space there (or write the output elsewhere) and rerun")
    raise write_error(where, exc, written=written, needed=needed, hint=hint,
                      what="a scratch file of a long sound (unnamed)") from exc


def iter_audio(path: str | Path, rate: int | None, channels: int | None, *,
               start: float = 0.0, duration: float | None = None, stream_index: int | None = None,
               native: list[Any] | None = None, pad: bool = False) -> Iterator[np.ndarray]:
    """The audio of ``path`` as float32 ``(n, channels)`` chunks at ``rate`` Hz, streamed (a decoder frame's
    worth at a time).

    ``None`` keeps the source's rate / channel count. Sample 0 is the sound at ``start`` seconds of the
    file's timeline (silence comes first if the stream starts later); at most ``duration`` seconds come
    out, and with ``pad`` exactly that many (silence after the end of the sound). ``native``: see
    :func:`iter_audio_frames` (with ``start`` 0 and no ``duration``: :func:`audio_length`'s count).
    Raises :class:`MediaError` if the file has no audio stream or cannot be decoded.
    """
    import av

    path = Path(path)
    with opened(path) as container:
        stream = _audio_stream(container, path, stream_index)
        ctx = stream.codec_context
        rate = int(rate or ctx.sample_rate)
        channels = int(channels or ctx.layout.nb_channels)
        want = None if duration is None else int(round(duration * rate))
        emitted = 0
        skip: int | None = None  # samples before ``start`` still to drop, once the first frame's time is known
        try:
            for t, frame in iter_audio_frames(container, stream, rate=rate, channels=channels, start=start,
                                              native=native):
                data = frame.to_ndarray().reshape(-1, channels)  # packed 'flt': (1, n*ch)
                if skip is None:
                    offset = int(round((float(t) - start) * rate))
                    for block in silence(offset if want is None else min(offset, want), channels):
                        emitted += len(block)
                        yield block
                    skip = max(0, -offset)
                if skip:
                    dropped = min(skip, len(data))
                    data, skip = data[dropped:], skip - dropped
                if want is not None:
                    data = data[: want - emitted]
                if len(data):
                    emitted += len(data)
                    yield np.ascontiguousarray(data, dtype=np.float32)
                if want is not None and emitted >= want:
                    break
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: audio cannot be decoded ({ffmpeg_reason(exc)})") from exc
    if pad and want is not None:
        for block in silence(want - emitted, channels):
            emitted += len(block)
            yield block
    if emitted == 0:
        yield np.zeros((0, channels), np.float32)  # the caller learns the channel count


#: Samples per block of :func:`silence` (and of other streamed sound made here): 1 s at 64 kHz, 0.5 MB stereo.
BLOCK = 65536


def silence(samples: int, channels: int) -> Iterator[np.ndarray]:
    """``samples`` of silence as float32 ``(n, channels)`` blocks of at most :data:`BLOCK` samples."""
    zeros = np.zeros((min(max(samples, 0), BLOCK), channels), np.float32)
    for first in range(0, max(samples, 0), BLOCK):
        yield zeros[: min(BLOCK, samples - first)]


def reblock(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """``(n, channels)`` ``chunks`` of any lengths as blocks of exactly ``size`` samples (the last one shorter)."""
    held: list[np.ndarray] = []
    have = 0
    for chunk in chunks:
        while len(chunk):
            take = min(size - have, len(chunk))
            held.append(chunk[:take])
            have += take
            chunk = chunk[take:]
            if have == size:
                yield np.concatenate(held) if len(held) > 1 else held[0]
                held, have = [], 0
    if have:
        yield np.concatenate(held) if len(held) > 1 else held[0]


def own_start(path: str | Path) -> Fraction:
    """Where the timeline of a file given as a sound of its own (a dub, not a clip's sound) starts: the earliest
    start of its streams, FFmpeg's zero (an MPEG-TS starts at 1.4 s or any time; a WAV at 0), never before 0. A
    stream of it that starts later begins, read from here (:func:`iter_audio`'s ``start``), with silence."""
    with opened(Path(path)) as container:
        start = container.start_time  # microseconds (AV_TIME_BASE)
    return Fraction(max(0, start), 1_000_000) if start else Fraction(0)


def spool_audio(path: str | Path, rate: int | None = None, channels: int | None = None, *,
                folder: str | Path | None = None, start: Fraction | float = 0) -> tuple[np.ndarray, int]:
    """``(samples, rate)``: the whole audio of ``path`` (from ``start`` of its timeline, as :func:`read_audio` gives
    it) decoded once into an unnamed temporary file in ``folder`` (None: the system's temporary folder) and mapped
    read-only, ``(n, channels)`` float32 (:func:`gather_samples`): random access to an hour of 48 kHz stereo
    without 1.4 GB of memory."""

    if rate is None or channels is None:
        with opened(path) as container:
            ctx = _audio_stream(container, Path(path), None).codec_context
            rate, channels = int(rate or ctx.sample_rate), int(channels or ctx.layout.nb_channels)
    return gather_samples(iter_audio(path, rate, channels, start=float(start)), folder=folder, keep=0), rate


def scratch_samples(samples: int, channels: int, *, folder: str | Path | None = None) -> np.ndarray:
    """A writable float32 ``(samples, channels)`` array of zeros backed by an unnamed temporary file in
    ``folder``: a long mix, or a film's whisper features, built in place without holding it in memory. Its room is
    reserved on the disk first (without writing it, where the file system can): a full disk is then a
    :class:`~lipsyncctl.errors.WriteError` here, not a crash (SIGBUS) when the mapping is written.

    Raises:
        WriteError: no room for it in ``folder`` (or another write failure there)."""

    if samples <= 0:
        return np.zeros((0, channels), np.float32)
    size = samples * channels * 4
    with _unnamed_file(folder) as raw:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(raw.fileno(), 0, size)
            else:  # pragma: no cover - not Linux: a sparse file
                raw.truncate(size)
        except OSError as exc:
            _scratch_failed(folder, exc, needed=size)
        return np.memmap(raw, dtype=np.float32, mode="r+", shape=(samples, channels))


def _unnamed_file(folder: str | Path | None) -> Any:
    """A temporary file in ``folder`` (made if missing; None: the system's temporary folder) with no name from the
    start: nothing is left behind whatever happens; a mapping of it outlives the closed file."""
    import tempfile

    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile(dir=folder)


def audio_length(path: str | Path, stream_index: int | None = None) -> tuple[int, int]:
    """``(samples, rate)``: how many samples the audio decodes to at its own rate (streamed, nothing kept).

    Exact where a header's duration is not (AAC priming, VBR MP3); an AAC encoder's end padding is not
    counted where the container declares the length (:func:`declared_end`). Raises :class:`MediaError` if
    the file has no audio stream or cannot be decoded."""
    import av

    path = Path(path)
    with opened(path) as container:
        stream = _audio_stream(container, path, stream_index)
        stream.thread_type = "AUTO"
        rate = int(stream.codec_context.sample_rate)
        end = declared_end(container, stream)
        samples = 0
        first: Fraction | None = None
        try:
            for frame in container.decode(stream):
                if first is None and frame.pts is not None:
                    first = Fraction(frame.pts) * Fraction(stream.time_base)
                samples += frame.samples
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: audio cannot be decoded ({ffmpeg_reason(exc)})") from exc
        if end is not None:
            samples = min(samples, max(0, round((end - (first or Fraction(0))) * rate)))
        return samples, rate


def write_wav(path: str | Path, samples: np.ndarray | Iterable[np.ndarray], rate: int, *,
              inputs: tuple = ()) -> Path:
    """Write float samples as 16-bit PCM WAV, atomically. Returns ``path``. The package's one WAV writer.

    Layout, as everywhere in :mod:`lipsyncctl.media`: ``(n,)`` mono or ``(n, channels)`` (sample-major,
    what :func:`read_audio` returns); a channel-major ``(channels, n)`` array (the timeline's dub cuts) is
    passed transposed. ``samples`` may also be an iterable of such arrays (:func:`iter_audio`'s chunks),
    written as they come. Values are clipped to [-1, 1]. ``inputs``: files never to overwrite."""
    path = Path(path)
    chunks = iter([samples]) if isinstance(samples, np.ndarray) else iter(samples)
    with atomic_output(path, inputs=inputs) as tmp:
        with wave.open(str(tmp), "wb") as out:
            out.setsampwidth(2)
            out.setframerate(int(rate))
            channels = None
            for chunk in chunks:
                data = np.asarray(chunk, dtype=np.float32)
                if data.ndim == 1:
                    data = data[:, None]
                if data.ndim != 2 or (channels is not None and data.shape[1] != channels):
                    raise ValueError(f"expected (n,) or (n, channels) samples, got shape {data.shape}")
                if channels is None:
                    channels = data.shape[1]
                    out.setnchannels(channels)
                out.writeframes((np.clip(data, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes())
            if channels is None:
                out.setnchannels(1)
    return path
