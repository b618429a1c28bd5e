"""The pipelined renderer (issue 12): decode+align, the networks, paste and encode run concurrently, and the output
is the serial one byte for byte; an error or an interrupt in any stage stops the others, leaves no thread and no
file behind, and reaches the caller."""

from __future__ import annotations

import hashlib
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.errors import MediaError
from lipsyncctl.pipeline.clip import sync_clip
from lipsyncctl.runner.pipelined import QUEUE_SIZE as QUEUE_WINDOWS
from lipsyncctl.runner.pipelined import run_stages
from tests.sync_media import sample_frames, tiny_models, with_sets, write_clip, write_wav


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory):
    with tiny_models(tmp_path_factory.mktemp("models"), "inference.window=4") as env:
        yield env


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """14 frames (4 windows of 4) with frames 6-7 faceless: pass-through, cross-fades out and back in."""
    root = tmp_path_factory.mktemp("clip")
    frames = sample_frames(14, scale=0.75)
    for k in (6, 7):
        frames[k] = np.full_like(frames[k], 90)
    return {"video": write_clip(root / "v.mkv", frames, Fraction(25)), "audio": write_wav(root / "a.wav", 0.56)}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _render_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("render-", "stage-", "prefetch-", "faces-"))]


@pytest.mark.parametrize("sets", [pytest.param((), marks=pytest.mark.slow),  # h264 opt-in (12 s): determinism covers its bytes
                                  ("output.codec=ffv1", "output.matte=true", "faces.blend=multiband"),
                                  ("output.codec=ffv1", "inference.gpu_paste=true")],
                         ids=["h264", "ffv1-matte-multiband", "ffv1-gpu-paste"])
def test_pipelined_output_is_the_serial_one_byte_for_byte(tiny_env, clip, tmp_path: Path, sets) -> None:
    config, models = tiny_env
    ext = ".mkv" if sets else ".mp4"
    outs = {}
    for mode in ("false", "true"):
        out = tmp_path / mode / f"o{ext}"
        res = sync_clip(clip["video"], clip["audio"], out, with_sets(config, f"inference.pipelined={mode}", *sets),
                        networks=models)
        assert res.frames == 14 and res.no_face_frames == 2
        outs[mode] = out
    assert _digest(outs["true"]) == _digest(outs["false"])
    if "output.matte=true" in sets:
        assert _digest(outs["true"].with_name("o.matte.mkv")) == _digest(outs["false"].with_name("o.matte.mkv"))
    assert not _render_threads()


@pytest.mark.parametrize("where", ["decode", "paste", "encode"])
def test_a_failing_stage_leaves_nothing(tiny_env, clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        where: str) -> None:
    """A media error in the reading thread, a bug in the paste thread, an interrupt in the encoding thread:
    the caller gets it, the hidden folder and the partial outputs are gone."""
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.media.writer import VideoWriter
    from lipsyncctl.pipeline import render
    from lipsyncctl.pipeline.faces import StreamFrames

    config, models = tiny_env
    calls = {"n": 0}

    def fail_on_second(original, exc: BaseException):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise exc
            return original(*args, **kwargs)
        return wrapper

    if where == "decode":  # the render reads the face pass's frames (pipelined) or its own reader's
        for cls in (IndexedReader, StreamFrames):
            monkeypatch.setattr(cls, "read_sources", fail_on_second(cls.read_sources, MediaError("bad packet")))
        expected: type[BaseException] = MediaError
    elif where == "paste":
        monkeypatch.setattr(render.Renderer, "paste", fail_on_second(render.Renderer.paste, ValueError("bug")))
        expected = ValueError
    else:
        real_write = VideoWriter.write
        original = fail_on_second(real_write, KeyboardInterrupt())
        monkeypatch.setattr(VideoWriter, "write", lambda self, frame: original(self, frame))
        expected = KeyboardInterrupt
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(expected):
        sync_clip(clip["video"], clip["audio"], out_dir / "o.mp4", with_sets(config, "output.matte=true"),
                  networks=models)
    assert list(out_dir.iterdir()) == []
    assert not _render_threads()


def test_an_interrupt_after_the_render_leaves_no_output(tiny_env, clip, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The face pass's end and OUT.run.yaml come before the rename: Ctrl-C there leaves no OUT (a rerun of the same
    command then starts again, where a kept OUT without its record was refused as existing)."""
    from lipsyncctl.pipeline import clip as clip_module

    config, models = tiny_env

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(clip_module, "_write_run_yaml", interrupted)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(KeyboardInterrupt):
        sync_clip(clip["video"], clip["audio"], out_dir / "o.mp4", with_sets(config, "output.matte=true"),
                  networks=models)
    assert list(out_dir.iterdir()) == []
    monkeypatch.undo()
    result = sync_clip(clip["video"], clip["audio"], out_dir / "o.mp4", config, networks=models)
    assert result.output.is_file() and result.run_yaml is not None and result.run_yaml.is_file()


@pytest.mark.parametrize(("stage", "exc"), [("first", OSError("disk")), ("middle", KeyboardInterrupt()),
                                           ("last", KeyboardInterrupt()), ("last", RuntimeError("x"))])
def test_errors_and_interrupts_in_any_stage_reach_the_caller_and_stop_the_others(stage: str,
                                                                                  exc: BaseException) -> None:
    """Two stages over an endless source: whichever stage raises, the call raises that, the source
    stops being read and both threads are joined."""
    produced = []

    def endless():
        i = 0
        while True:
            if stage == "first" and i == 5:
                raise exc
            produced.append(i)
            yield i
            i += 1

    def middle(x: int) -> int:
        if stage == "middle" and x == 5:
            raise exc
        return x

    def last(x: int) -> None:
        if stage == "last" and x == 5:
            raise exc

    with pytest.raises(type(exc)):
        run_stages(endless(), [middle, last])
    assert not _render_threads()
    n = len(produced)
    time.sleep(0.1)
    assert len(produced) == n < 5 + 3 * QUEUE_WINDOWS + 3  # stopped, and never far ahead


def test_order_kept_and_the_source_never_runs_far_ahead() -> None:
    """Bounded queues: the first stage is at most a few items ahead of the last (memory flat in clip length)."""
    produced: list[int] = []
    done: list[int] = []
    lead: list[int] = []

    def source():
        for i in range(40):
            produced.append(i)
            lead.append(len(produced) - len(done))
            yield i

    def slow_last(x: int) -> None:
        time.sleep(0.005)
        done.append(x)

    run_stages(source(), [lambda x: x * 10, slow_last])
    assert done == [10 * i for i in range(40)]
    assert max(lead) <= 3 + 2 * QUEUE_WINDOWS
    assert not _render_threads()


@pytest.mark.parametrize("main", [0, 1, 2])
@pytest.mark.parametrize("failing", [None, 0, 1, 2])
def test_run_stages_keeps_order_and_state_and_raises_any_stage_error(main: int, failing: int | None) -> None:
    """Three stateful stages, any one in the calling thread: the serial result in order; an error in any stage
    reaches the caller with no thread left."""
    seen: list[int] = []
    count = [0, 0, 0]

    def stage(k: int):
        def fn(x: int) -> int:
            count[k] += 1  # state of this stage only
            if failing == k and count[k] == 7:
                raise ValueError(f"stage {k}")
            return x * 2 + count[k]
        return fn

    def last(x: int) -> None:
        count[2] += 1
        if failing == 2 and count[2] == 7:
            raise ValueError("stage 2")
        seen.append(x)

    if failing is None:
        run_stages(range(30), [stage(0), stage(1), last], main=main)
        assert seen == [(i * 2 + i + 1) * 2 + i + 1 for i in range(30)]
    else:
        with pytest.raises(ValueError, match=f"stage {failing}"):
            run_stages(range(30), [stage(0), stage(1), last], main=main)
        assert len(seen) < 7
    assert not _render_threads()


def test_prefetched_keeps_order_raises_the_source_error_in_place_and_stops_when_closed() -> None:
    """``prefetched``: the items in order, a bounded lead, the source's error raised after the items before
    it, and a consumer that stops early leaves no thread (the source is closed)."""
    from lipsyncctl.runner.pipelined import prefetched

    produced: list[int] = []
    closed: list[bool] = []

    def source(n: int, fail_at: int | None = None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise OSError("disk")
                produced.append(i)
                yield i
        finally:
            closed.append(True)

    got = []
    for x in prefetched(source(30), queue_size=2):
        time.sleep(0.002)
        assert len(produced) - len(got) <= 2 + 2  # queued + the one being put + the one yielded
        got.append(x)
    assert got == list(range(30)) and not _render_threads()
    got = []
    with pytest.raises(OSError, match="disk"):
        for x in prefetched(source(30, fail_at=7)):
            got.append(x)
    assert got == list(range(7)) and not _render_threads()
    produced.clear()
    closed.clear()
    it = prefetched(source(10**6))
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed == [True] and len(produced) < 10 and not _render_threads()


def test_windows_denoised_together_match_one_at_a_time(tiny_env, clip, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``inference.batch_windows=3`` over windows with 4, 2, 4 and 2 faces: the two 4-face windows share a
    UNet batch, the others run alone (the last group is short); the frames are those of one window at a time
    up to a larger batch's float noise, and pipelined = serial byte for byte."""
    import av

    from lipsyncctl.pipeline import denoise as denoise_module

    config, models = tiny_env
    batches: list[int] = []
    real = denoise_module.denoise
    monkeypatch.setattr(denoise_module, "denoise", lambda *a, **k: batches.append(len(k["latents"])) or real(*a, **k))
    outs = {}
    for name, sets in (("one", ()), ("three", ("inference.batch_windows=3",)),
                       ("three-serial", ("inference.batch_windows=3", "inference.pipelined=false"))):
        out = tmp_path / name / "o.mkv"
        res = sync_clip(clip["video"], clip["audio"], out, with_sets(config, "output.codec=ffv1", *sets),
                        networks=models)
        assert res.frames == 14 and res.no_face_frames == 2
        outs[name] = out
    assert _digest(outs["three"]) == _digest(outs["three-serial"])
    assert batches == [1, 1, 1, 1] + [2, 1, 1] * 2  # windows 0 and 2 together, 1 alone; then window 3

    def frames(path: Path) -> np.ndarray:
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)

    one, three = frames(outs["one"]), frames(outs["three"])
    assert one.shape == three.shape and np.abs(one - three).max() <= 2
    assert not _render_threads()


# --- the face pass beside the networks and the render (FaceStream, select: largest) ---------------------------


def test_the_face_stream_gives_the_whole_pass_records(tiny_env, clip) -> None:
    """Frame by frame (waiting for the look-ahead of the cross-fade) and as a whole, the stream's records are
    those of the face pass run before the render: the same matrices and the same float32 weights."""
    from lipsyncctl.media.probe import probe
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.pipeline.faces import FaceStream, track_clip_faces

    config, _ = tiny_env
    info = probe(clip["video"])
    grid = info.video.nominal_fps
    for first, count in ((0, 14), (3, 9)):  # the whole clip; a range that starts inside it and ends in the gap
        with IndexedReader(clip["video"], grid, info=info) as reader:
            whole = track_clip_faces(reader, first, count, grid, config.faces, 256)
        stream = FaceStream(clip["video"], info, first, count, grid, config.faces, 256).start()
        try:
            assert stream.first_face()
            records = [stream.at(k) for k in range(count)]
            done = stream.result()
        finally:
            stream.close()
        assert [m is None for m, _ in records] == [m is None for m in whole.matrices] == [
            first + k in (6, 7) for k in range(count)]
        for (m, w), wm, ww, dm in zip(records, whole.matrices, whole.weights, done.matrices, strict=True):
            assert w == float(ww)
            assert (m is None and wm is None and dm is None) or (np.array_equal(m, wm) and np.array_equal(dm, wm))
        assert np.array_equal(done.weights, whole.weights) and done.weights.dtype == np.float32
        assert 0 < min(w for _, w in records if w > 0) < 1  # the cross-fade around the gap is in it
    assert not _render_threads()


def test_the_face_pass_runs_beside_the_network_load(tiny_env, clip, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the pass has found a face the networks load while it goes on: a detector that cannot see past frame 8
    before the networks are loading still finishes (it would wait forever in a pass that runs first), and
    the output is the serial run's."""
    from lipsyncctl.pipeline import faces as face_pass
    from lipsyncctl.pipeline import networks as networks_mod

    config, _ = tiny_env
    loading = threading.Event()
    waited: list[bool] = []
    real_detector, real_load = face_pass._detector, networks_mod.load_networks

    class Gated:
        def __init__(self, inner) -> None:
            self.inner, self.name, self.seen = inner, inner.name, 0

        def detect_batch(self, frames):
            if self.seen >= 8:  # frames 8.. (tiny preset: detection on every frame)
                waited.append(loading.wait(30))
            self.seen += len(frames)
            return self.inner.detect_batch(frames)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(face_pass, "_detector", lambda options, device: Gated(real_detector(options, device)))
    monkeypatch.setattr(face_pass, "_release", lambda *args: None)  # the wrapper is no spare for other tests
    monkeypatch.setattr(networks_mod, "load_networks", lambda *a, **k: loading.set() or real_load(*a, **k))
    res = sync_clip(clip["video"], clip["audio"], tmp_path / "o.mkv", with_sets(config, "output.codec=ffv1"))
    assert len(waited) == 6 and all(waited) and res.no_face_frames == 2 and res.faces_found == 12
    assert res.stage_seconds["faces"] > 0
    monkeypatch.setattr(face_pass, "_detector", real_detector)
    serial = sync_clip(clip["video"], clip["audio"], tmp_path / "s.mkv",
                       with_sets(config, "output.codec=ffv1", "inference.pipelined=false"))
    assert _digest(tmp_path / "o.mkv") == _digest(tmp_path / "s.mkv") and serial.warnings == res.warnings
    assert not _render_threads()


def test_a_failing_face_pass_stops_the_render_and_leaves_nothing(tiny_env, clip, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A detector that fails after the first face was found (the render already running): the caller gets that
    error, the partial outputs and every thread are gone."""
    from lipsyncctl.pipeline import faces as face_pass

    config, models = tiny_env
    real_detector = face_pass._detector

    class Failing:
        def __init__(self, inner) -> None:
            self.inner, self.name, self.seen = inner, inner.name, 0

        def detect_batch(self, frames):
            self.seen += len(frames)
            if self.seen > 8:
                raise MediaError("detector fell over")
            return self.inner.detect_batch(frames)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(face_pass, "_detector", lambda options, device: Failing(real_detector(options, device)))
    monkeypatch.setattr(face_pass, "_release", lambda *args: None)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MediaError, match="detector fell over"):
        sync_clip(clip["video"], clip["audio"], out_dir / "o.mp4", config, networks=models)
    assert list(out_dir.iterdir()) == []
    assert not _render_threads()


def test_a_stopped_face_stream_says_so_and_leaves_no_thread(tiny_env, clip, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() before the end (what a failed render's caller does): the pass stops at its next frame, its
    threads are joined, and a late question gets an error rather than a wrong record."""
    from lipsyncctl.media.probe import probe
    from lipsyncctl.pipeline import faces as face_pass

    config, _ = tiny_env
    real_detector = face_pass._detector
    streams: list[face_pass.FaceStream] = []

    class Slow:  # past frame 8, each detection lasts until the pass is told to stop
        def __init__(self, inner) -> None:
            self.inner, self.name, self.seen = inner, inner.name, 0

        def detect_batch(self, frames):
            self.seen += len(frames)
            while self.seen > 8 and not streams[0]._stop.is_set():
                time.sleep(0.01)
            return self.inner.detect_batch(frames)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(face_pass, "_detector", lambda options, device: Slow(real_detector(options, device)))
    monkeypatch.setattr(face_pass, "_release", lambda *args: None)
    info = probe(clip["video"])
    grid = info.video.nominal_fps
    streams.append(face_pass.FaceStream(clip["video"], info, 0, 14, grid, config.faces, 256))
    stream = streams[0].start()
    assert stream.first_face() and stream.at(0)[0] is not None
    stream.close()
    assert not _render_threads() and len(stream._matrices) <= 8
    with pytest.raises(MediaError, match=r"was stopped after \d+ of 14 frames"):
        stream.at(13)
    stream.close()  # twice is harmless


# --- one decode: the render reads the frames the face pass decoded (FaceStream.reader) --------------------------


def _count_decoded(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Frames every IndexedReader yields (``pictures``; ``range`` and ``read`` go through it too), counted per call
    site: ``read`` = the frames the render decoded with its own reader (``read_sources``)."""
    from lipsyncctl.media.reader import IndexedReader

    counts = {"all": 0, "read": 0}
    real_pictures, real_read = IndexedReader.pictures, IndexedReader.read_sources

    def pictures(self, first, stop):
        for item in real_pictures(self, first, stop):
            counts["all"] += 1
            yield item

    def read(self, indices):
        out = real_read(self, indices)
        counts["read"] += len(out)
        return out

    monkeypatch.setattr(IndexedReader, "pictures", pictures)
    monkeypatch.setattr(IndexedReader, "read_sources", read)
    return counts


def test_the_render_reads_the_frames_the_face_pass_decoded(tiny_env, clip, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipelined, the clip is decoded once: the render takes every frame from the face pass (its own reader reads
    nothing) and the output is the serial run's, which decodes the clip twice. The pass is held at frame 4 until
    the render has begun to read, so that it keeps every frame (a pass that outruns the network load keeps only
    its first frames: the next test)."""
    from lipsyncctl.pipeline.faces import FaceStream

    config, models = tiny_env
    real_keep = FaceStream._keep

    def keep(self, index, image, frame):
        while index >= 4 and not self._reading:
            time.sleep(0.002)
        return real_keep(self, index, image, frame)

    monkeypatch.setattr(FaceStream, "_keep", keep)
    counts = _count_decoded(monkeypatch)
    sets = ("output.codec=ffv1",)
    sync_clip(clip["video"], clip["audio"], tmp_path / "p.mkv", with_sets(config, *sets), networks=models)
    assert counts == {"all": 14, "read": 0}
    counts.update(all=0, read=0)
    sync_clip(clip["video"], clip["audio"], tmp_path / "s.mkv", with_sets(config, *sets, "inference.pipelined=false"),
              networks=models)
    assert counts == {"all": 28, "read": 14}
    assert _digest(tmp_path / "p.mkv") == _digest(tmp_path / "s.mkv")
    assert not _render_threads()


def test_kept_frames_are_the_readers_and_stay_few(tiny_env, clip, monkeypatch: pytest.MonkeyPatch) -> None:
    """FaceStream.reader gives the frames an IndexedReader gives, for any request (forward windows, a repeated
    last frame, going back as a ping-pong does, indices past the selected range); the frames it did not keep
    come from the fallback reader; it holds a bounded number of frames whatever the clip's length."""
    from lipsyncctl.media.probe import probe
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.pipeline.faces import FaceStream

    config, _ = tiny_env
    info = probe(clip["video"])
    grid = info.video.nominal_fps
    with IndexedReader(clip["video"], grid, info=info) as ref:
        expected = dict(ref.range(0, 16))  # 14 frames, then the last one held
    requests = [[2, 3, 4], [5, 6, 7, 8], [8, 8, 9], [10, 11, 12, 13], [13, 13, 12, 11], [9, 8], [15, 14, 1]]
    fade = config.faces.crossfade_frames
    for free_run in (False, True):
        counts = _count_decoded(monkeypatch)
        most = [0]
        real_keep = FaceStream._keep

        def keep(self, index, image, frame, free_run=free_run, real_keep=real_keep, most=most):
            while not free_run and index >= 4 and not self._reading:  # the render reads before the pass runs on
                time.sleep(0.002)
            ok = real_keep(self, index, image, frame)
            most[0] = max(most[0], len(self._frames))
            return ok

        monkeypatch.setattr(FaceStream, "_keep", keep)
        stream = FaceStream(clip["video"], info, 2, 12, grid, config.faces, 256, keep=2).start()
        try:
            assert stream.first_face()
            if free_run:  # the pass ends before the render's first read: it kept frames 2 and 3 only
                stream._wait(lambda s=stream: s._next == 14)
                assert sorted(stream._frames) == [2, 3]
            with IndexedReader(clip["video"], grid, info=info) as fallback:
                frames = stream.reader(fallback)
                for want in requests:
                    got = frames.read(want)
                    assert set(got) == set(want)
                    assert all(np.array_equal(got[i], expected[i]) for i in want)
                    for i in want:
                        if 2 <= i < 14:
                            stream.at(i - 2)  # the render asks each frame's record after reading it
        finally:
            stream.close()
        # kept: from the last frame read to `keep` past it or the farthest frame asked for (a record's look-ahead:
        # fade + 1 past the frame read last; a window read: 4 past the last read), plus the tracker's own buffer
        assert most[0] <= max(2, fade + 1, 4) + config.faces.detect_every + 1 < 12
        if free_run:  # the render decoded what the pass did not keep, and what it went back to
            assert counts["read"] >= 12 - 2
        else:  # forward, everything came from the pass: only going back and past the range used the fallback
            assert counts["read"] == len({12, 11, 9, 8, 15, 14, 1})
        monkeypatch.undo()
    assert not _render_threads()


@pytest.mark.parametrize("policy", ["pingpong", "loop"])
def test_pipelined_loop_and_pingpong_match_the_serial_output(tiny_env, clip, tmp_path: Path, policy: str) -> None:
    """A dub longer than the picture: the render goes back over the source (the fallback reader), same bytes."""
    config, models = tiny_env
    root = tmp_path / "long"
    root.mkdir()
    audio = write_wav(root / "a.wav", 1.0)  # 25 frames over 14 source frames
    digests = []
    for mode in ("true", "false"):
        out = tmp_path / f"{mode}.mkv"
        res = sync_clip(clip["video"], audio, out, with_sets(config, "output.codec=ffv1", f"inference.pipelined={mode}",
                                                              f"sync.length_policy={policy}"), networks=models)
        assert res.frames == 25
        digests.append(_digest(out))
    assert digests[0] == digests[1]
    assert not _render_threads()


def test_a_face_pass_past_the_renders_last_read_finishes() -> None:
    """A pass beside the render that covers more frames than the render reads (it stopped early) does not wait for
    reads that never come: result() releases it (the run hung for good after its last frame)."""
    from lipsyncctl import config as cfg
    from lipsyncctl.media.probe import probe
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.pipeline.faces import FaceStream

    video = Path(__file__).resolve().parents[2] / "lipsyncctl" / "data" / "sample.mp4"
    info = probe(video)
    fps = info.video.nominal_fps  # type: ignore[union-attr]
    config = cfg.resolve("tiny")
    count = min(90, info.video.frame_count)  # type: ignore[union-attr]
    stream = FaceStream(video, info, 0, count, fps, config.faces, 256, keep=20).start()
    try:
        with IndexedReader(video, fps, info=info) as fallback:
            source = stream.reader(fallback)
            for lo in (0, 10):  # the render reads 20 frames, then stops
                source.read(range(lo, lo + 10))
                for k in range(lo, lo + 10):
                    stream.at(k)
            done = threading.Event()
            plan = []
            worker = threading.Thread(target=lambda: (plan.append(stream.result()), done.set()), daemon=True)
            worker.start()
            assert done.wait(60), f"result() still waiting; the pass is at frame {stream._next} of {count}"
        assert len(plan[0].matrices) == count
    finally:
        stream.close()
