"""The prep job on real media: the shared HEVC fixture (2 s of it) and clips generated here.

Assertions are on the probed outputs (rate, CFR, frame count, duration, audio rate/channels/length,
rotation), the frames they show, and the files left on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.config import PrepOptions
from lipsyncctl.errors import UsageError
from lipsyncctl.media.audio import read_audio
from lipsyncctl.media.probe import probe
from lipsyncctl.media.reader import VideoReader
from lipsyncctl.preparation import output_size, prep
from tests import mediagen as mg

FAST = PrepOptions(encoder_preset="ultrafast")
AAC_FRAME_S = 1024 / 16000


def _check_output(path: Path, fps: Fraction, frames: int, size: tuple[int, int], audio: bool = True) -> None:
    info = probe(path)
    v = info.video
    assert v is not None
    assert v.fps == fps and not v.is_vfr, (v.fps, v.is_vfr)
    assert v.frame_count == frames
    assert v.duration == pytest.approx(float(frames / fps), abs=1e-3)
    assert v.rotation == 0 and (v.width, v.height) == size
    if audio:
        (a,) = info.audio
        assert (a.codec, a.sample_rate, a.channels) == ("aac", 16000, 1)
        assert a.duration == pytest.approx(float(frames / fps), abs=AAC_FRAME_S)
    else:
        assert not info.audio


def _expected_indices(src: Path, fps: Fraction, n: int) -> list[int]:
    """Conform rule on the source's stored timestamps: output k shows the last source frame at or
    before k/fps (1 ms tolerance for timestamp rounding)."""
    with VideoReader(src) as reader:
        stamps = [f.time for f in reader]
    return [max([0] + [i for i, t in enumerate(stamps) if t <= Fraction(k) / fps + Fraction(1, 1000)])
            for k in range(n)]


def _tree(folder: Path) -> dict[str, tuple[int, int, str]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fixture_two_seconds(shared: Path, tmp_path: Path) -> None:
    """1080x1920 HEVC 25 fps + AAC 44.1 kHz stereo -> H.264 25 fps CFR, 16 kHz mono muxed + WAV."""
    fixture = shared / "fixtures" / "demo1_video.mp4"
    result = prep([fixture], tmp_path, FAST, start=3.0, duration=2.0)
    (item,) = result.items
    assert item.status == "done", item.reason
    assert item.output == tmp_path / "demo1_video.mp4" and item.wav == tmp_path / "demo1_video.wav"
    _check_output(item.output, Fraction(25), 50, (1080, 1920))
    assert probe(item.output).video.color == probe(fixture).video.color  # type: ignore[union-attr]
    wav = probe(item.wav)
    assert (wav.audio[0].sample_rate, wav.audio[0].channels) == (16000, 1)
    samples = read_audio(item.wav, 16000, 1)
    assert len(samples) == 32000
    # The sidecar is the source's sound from 3.0 s on (mono mix, resampled).
    source = read_audio(fixture, 16000, 1, start=3.0, duration=2.0)
    assert np.abs(samples - source).max() < 0.01
    # The picture is the source's frames 75..124 (same rate): compare a frame's pixels.
    with VideoReader(item.output) as out, VideoReader(fixture) as src:
        out.seek(frame=10)
        src.seek(frame=85)
        diff = np.abs(next(iter(out)).image.astype(int) - next(iter(src)).image.astype(int)).mean()
    assert diff < 4.0
    assert (json.loads(item.manifest.read_text())["input"]["size"] == fixture.stat().st_size)


@pytest.mark.parametrize(
    ("name", "src_fps", "frames", "kwargs"),
    [("a23976.mp4", Fraction(24000, 1001), 36, {}),
     ("a2997.mkv", Fraction(30000, 1001), 45, {"time_base": Fraction(1, 1000)}),
     ("a5994.mov", Fraction(60000, 1001), 90, {"audio_rate": 48000})],
)
def test_odd_rates_to_25_and_source(tmp_path: Path, name: str, src_fps: Fraction, frames: int, kwargs: dict) -> None:
    src = mg.make_clip(tmp_path / name, fps=src_fps, frames=frames, **kwargs)
    seconds = frames / src_fps
    result = prep([src], tmp_path / "out25", FAST)
    item = result.items[0]
    assert item.status == "done", item.reason
    n25 = round(seconds * 25)
    _check_output(item.output, Fraction(25), n25, (96, 64))
    # each output frame shows the last source frame at or before its time
    with VideoReader(item.output) as reader:
        shown = [mg.read_index(f.image) for f in reader]
    assert shown == _expected_indices(src, Fraction(25), n25)
    if src_fps > 25:
        assert len(set(shown)) == n25  # frames dropped, none repeated
    else:
        assert set(shown) == set(range(frames))  # frames repeated, none dropped

    same = prep([src], tmp_path / "outsrc", FAST.model_copy(update={"fps": "source"})).items[0]
    assert same.status == "done", same.reason
    _check_output(same.output, src_fps, frames, (96, 64))
    with VideoReader(same.output) as reader:
        assert [mg.read_index(f.image) for f in reader] == list(range(frames))


def test_vfr_phone_footage(tmp_path: Path) -> None:
    times = mg.vfr_times(60, rate=30, seed=3)
    src = mg.make_clip(tmp_path / "phone.mp4", fps=30, times=times, audio_rate=48000)
    assert probe(src).video.is_vfr  # type: ignore[union-attr]
    for fps_opt, fps in (("25", Fraction(25)), ("source", Fraction(30000, 1001)), ("30", Fraction(30))):
        item = prep([src], tmp_path / fps_opt, FAST.model_copy(update={"fps": fps_opt})).items[0]
        assert item.status == "done", item.reason
        assert item.source_vfr and any("variable frame rate" in w for w in item.warnings)
        duration = probe(src).video.duration  # type: ignore[union-attr]
        n = round(Fraction(duration).limit_denominator(10**6) * fps)
        _check_output(item.output, fps, n, (96, 64))
        with VideoReader(item.output) as reader:
            shown = [mg.read_index(f.image) for f in reader]
        assert shown == _expected_indices(src, fps, n)


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotation_applied_and_cleared(tmp_path: Path, rotation: int) -> None:
    src = mg.make_clip(tmp_path / f"rot{rotation}.mov", rotation=rotation, frames=10, size=(96, 64))
    item = prep([src], tmp_path / "out", FAST).items[0]
    assert item.status == "done", item.reason
    _check_output(item.output, Fraction(25), 10, (96, 64))  # upright size, no tag
    with VideoReader(item.output, apply_rotation=False) as reader:
        images = [f.image for f in reader]
    assert all(mg.has_marker_top_left(img) for img in images)
    assert [mg.read_index(img) for img in images] == list(range(10))


def test_scale_max_size_and_prores(tmp_path: Path) -> None:
    src = mg.make_clip(tmp_path / "big.mp4", frames=5, size=(320, 180))
    half = prep([src], tmp_path / "half", FAST, scale="0.5").items[0]
    _check_output(half.output, Fraction(25), 5, (160, 90))
    capped = prep([src], tmp_path / "cap", FAST.model_copy(update={"max_size": 100})).items[0]
    _check_output(capped.output, Fraction(25), 5, (100, 56))
    pr = prep([src], tmp_path / "pr", FAST.model_copy(update={"codec": "prores_hq"})).items[0]
    assert pr.output.suffix == ".mov"
    assert probe(pr.output).video.pix_fmt == "yuv422p10le"  # type: ignore[union-attr]
    assert output_size(1080, 1920, scale="-1x720") == (406, 720)  # 405 rounds up to even
    assert output_size(1920, 1080, max_size=1280) == (1280, 720)
    # an odd cap is never passed by rounding up to even (201 gave 202), and what 4:2:0 changes of a size asked for is
    # said (only a source's own odd size was)
    assert output_size(256, 256, max_size=201) == (200, 200) and output_size(320, 240, max_size=201) == (200, 150)
    assert output_size(256, 256, max_size=201, even=False) == (201, 201)
    odd = prep([src], tmp_path / "odd", FAST.model_copy(update={"max_size": 201})).items[0]
    _check_output(odd.output, Fraction(25), 5, (200, 114))
    assert "201x113 rounded to 200x114 (even sides for yuv420p)" in odd.warnings
    assert not any("rounded" in w for w in capped.warnings + half.warnings)
    with pytest.raises(UsageError):
        prep([src], tmp_path / "bad", FAST, scale="huge")


#: what each of sync's codec names writes when prep asks for yuv420p (the default): (extension, stream
#: codec, pixel format); the encoders that cannot store 4:2:0 fall back to the codec's own format.
PREP_CODECS = {
    "h264": (".mp4", "h264", "yuv420p"), "h265": (".mp4", "hevc", "yuv420p"),
    "prores_hq": (".mov", "prores", "yuv422p10le"), "prores_4444": (".mov", "prores", "yuv444p10le"),
    "dnxhr_hq": (".mov", "dnxhd", "yuv422p"), "ffv1": (".mkv", "ffv1", "yuv420p"),
}


def test_prep_codecs_are_the_sync_codecs() -> None:
    from lipsyncctl.config import VIDEO_CODECS

    assert set(PREP_CODECS) == set(VIDEO_CODECS)


@pytest.mark.parametrize("codec", sorted(PREP_CODECS))
def test_prep_encodes_every_sync_codec(codec: str, tmp_path: Path) -> None:
    ext, stream_codec, pix_fmt = PREP_CODECS[codec]
    src = mg.make_clip(tmp_path / "in.mp4", frames=3, size=(256, 144))  # DNxHR needs 256x120 at least
    plan = prep([src], tmp_path / "plan", FAST.model_copy(update={"codec": codec}), dry_run=True).items[0]
    assert plan.status == "planned" and plan.output.name == "in" + ext
    item = prep([src], tmp_path / "out", FAST.model_copy(update={"codec": codec})).items[0]
    assert item.status == "done", item.reason
    assert item.output == tmp_path / "out" / ("in" + ext)
    v = probe(item.output).video
    assert v is not None and (v.codec, v.pix_fmt) == (stream_codec, pix_fmt)
    _check_output(item.output, Fraction(25), 3, (256, 144))


def test_an_all_intra_source_does_not_make_an_all_intra_output(tmp_path: Path) -> None:
    """Every frame of a ProRes (or FFV1, MJPEG) source is a keyframe; the decoder's frames say so, and x264 took that
    as a request to start a GOP at each one (an all-intra H.264, several times the size). The GOP is the encoder's."""
    import av

    src = mg.make_clip(tmp_path / "intra.mkv", codec="ffv1", frames=12, size=(96, 64))
    item = prep([src], tmp_path / "out", FAST).items[0]
    assert item.status == "done", item.reason
    with av.open(str(item.output)) as c:
        keys = [p.is_keyframe for p in c.demux(video=0) if p.size]
    assert len(keys) == 12 and keys[0] and sum(keys) == 1


def _combed(path: Path, frames: int, order: str) -> Path:
    """A 1080i-like clip: a bar moving right, the bottom field 6 px further on than the top (combing), FFV1."""
    from lipsyncctl.media.writer import VideoWriter

    with VideoWriter(path, 25, codec="ffv1", pix_fmt="yuv420p", field_order=order) as writer:
        for i in range(frames):
            image = np.zeros((96, 128, 3), np.uint8)
            image[:, 8 * i:8 * i + 24] = 255
            image[1::2] = np.roll(image[1::2], 6, axis=1)
            writer.write(image)
    assert probe(path).video.field_order == order  # type: ignore[union-attr]
    return path


def _comb(image: np.ndarray) -> float:
    """Mean difference between neighbouring rows: large where the two fields of a frame disagree."""
    return float(np.abs(np.diff(image.astype(np.int16), axis=0)).mean())


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_an_interlaced_source_is_deinterlaced_for_the_model(tmp_path: Path, mode: str) -> None:
    """``auto`` (the default): bwdif, one progressive frame per frame, same count and times; ``off``: the fields
    kept whole (combed), and said either way."""
    src = _combed(tmp_path / "i.mkv", 8, "tt")
    options = PrepOptions(encoder_preset="ultrafast", fps="source", deinterlace=mode,  # type: ignore[arg-type]
                          allow_no_audio=True)
    item = prep([src], tmp_path / "out", options).items[0]
    assert item.status == "done", item.reason
    said = [w for w in item.warnings if "interlaced, top field first" in w]
    assert len(said) == 1 and ("deinterlaced (bwdif" in said[0]) == (mode == "auto")
    with VideoReader(item.output) as reader:
        frames = [f.image for f in reader]
    with VideoReader(src) as reader:
        source = [f.image for f in reader]
    assert len(frames) == len(source) == 8
    combs = [_comb(f) for f in frames]
    assert min(_comb(f) for f in source) > 20
    assert (max(combs) < 5) if mode == "auto" else (min(combs) > 20), combs
    # off: coded and tagged interlaced in the source's order, as sync writes it (it was tagged progressive)
    assert probe(item.output).video.field_order in ((None, "progressive") if mode == "auto" else ("tt",))  # type: ignore[union-attr]
    if mode == "off":  # a codec that codes no fields says so
        h265 = prep([src], tmp_path / "h265", options.model_copy(update={"codec": "h265"})).items[0]
        assert any("h265 codes them progressive, so its fields are not tagged" in w for w in h265.warnings)
        assert probe(h265.output).video.field_order in (None, "progressive")  # type: ignore[union-attr]


def test_the_deinterlace_setting_redoes_interlaced_outputs_only(tmp_path: Path) -> None:
    """Changing prep.deinterlace redoes the outputs of interlaced sources and leaves progressive ones up to date;
    a manifest written before the setting existed counts as ``off`` for an interlaced source (probed to tell)."""
    _combed(tmp_path / "in" / "i.mkv", 4, "bb")
    mg.make_clip(tmp_path / "in" / "p.mp4", frames=4)
    out = tmp_path / "out"

    def run(mode: str) -> dict[str, str]:
        options = PrepOptions(encoder_preset="ultrafast", deinterlace=mode, allow_no_audio=True)  # type: ignore[arg-type]
        return {i.input.name: i.status for i in prep([tmp_path / "in"], out, options).items}

    assert run("auto") == {"i.mkv": "done", "p.mp4": "done"}
    assert run("auto") == {"i.mkv": "skipped", "p.mp4": "skipped"}
    assert run("off") == {"i.mkv": "done", "p.mp4": "skipped"}
    for name in ("i", "p"):  # as an older version wrote them: no field order, no setting
        manifest = out / f"{name}.prep.json"
        data = json.loads(manifest.read_text())
        del data["summary"]["field_order"], data["summary"]["deinterlace"]
        manifest.write_text(json.dumps(data))
    older = {name: (out / f"{name}.prep.json").read_text() for name in ("i", "p")}
    options = PrepOptions(encoder_preset="ultrafast", deinterlace="off", allow_no_audio=True)
    assert [i.status for i in prep([tmp_path / "in"], out, options, dry_run=True).items] == ["skipped", "skipped"]
    assert {name: (out / f"{name}.prep.json").read_text() for name in ("i", "p")} == older  # a dry run writes nothing
    assert run("off") == {"i.mkv": "skipped", "p.mp4": "skipped"}
    # ... and the answer of the probe is kept, so a later run reads it instead of probing every clip again
    assert {name: json.loads((out / f"{name}.prep.json").read_text())["summary"]["field_order"]
            for name in ("i", "p")} == {"i": "bb", "p": "progressive"}
    assert run("auto") == {"i.mkv": "done", "p.mp4": "skipped"}


def test_a_bff_source_is_deinterlaced_too(tmp_path: Path) -> None:
    src = mg.make_clip(tmp_path / "i.mp4", frames=4, options={"x264-params": "bff=1"})
    item = prep([src], tmp_path / "out", FAST).items[0]
    assert item.status == "done", item.reason
    assert any("interlaced, bottom field first" in w and "deinterlaced" in w for w in item.warnings)
    assert len(list(VideoReader(item.output))) == 4


@pytest.mark.parametrize(("codec", "pix_fmt", "kept"), [("h265", "yuv420p10le", True), ("prores_hq", "yuv422p10le", False)])
def test_hdr10_metadata_is_carried_or_said(tmp_path: Path, codec: str, pix_fmt: str, kept: bool) -> None:
    """prep of a HDR10 master: an H.265 (or H.264) output carries its mastering display and light level beside the
    colour tags; a ProRes one keeps the tags, and prep says the metadata is not written."""
    from lipsyncctl.media.probe import ColorInfo
    from lipsyncctl.media.writer import VideoWriter

    hdr = ColorInfo("bt2020", "smpte2084", "bt2020nc", "tv",
                    "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)", "1000,400")
    src = tmp_path / "hdr.mkv"
    with VideoWriter(src, 25, codec="h265", pix_fmt="yuv420p10le", color=hdr, preset="ultrafast") as writer:
        for i in range(3):
            writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    options = PrepOptions(codec=codec, pix_fmt=pix_fmt, encoder_preset="ultrafast", allow_no_audio=True)
    item = prep([src], tmp_path / "out", options).items[0]
    assert item.status == "done", item.reason
    color = probe(item.output).video.color  # type: ignore[union-attr]
    assert (color.transfer, color.hdr10) == ("smpte2084", kept)
    assert kept == (color.mastering == hdr.mastering and color.light_level == hdr.light_level)
    assert len([w for w in item.warnings if "HDR10" in w]) == (0 if kept else 1)


def test_prep_prores_alias(tmp_path: Path) -> None:
    src = mg.make_clip(tmp_path / "in.mp4", frames=3, size=(96, 64))
    options = PrepOptions(codec="prores", encoder_preset="ultrafast")  # the name prep used to take
    assert options.codec == "prores_hq"
    item = prep([src], tmp_path / "out", options).items[0]
    assert item.status == "done" and item.output.suffix == ".mov"
    assert probe(item.output).video.profile == "HQ"  # type: ignore[union-attr]


def test_a_file_another_prep_is_writing_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two overlapping preps into one folder: a file the other is writing (its output's lock) is skipped, said;
    both did every file and replaced each other's (exit 0)."""
    from lipsyncctl.runner.lock import output_lock

    src = mg.make_clip(tmp_path / "in.mp4", frames=3, size=(96, 64))
    (tmp_path / "out").mkdir()
    with output_lock(tmp_path / "out" / "in.mp4"):  # as the other run holds it
        item = prep([src], tmp_path / "out", FAST).items[0]
    assert item.status == "skipped" and "another run is preparing it now" in (item.reason or "")
    assert not (tmp_path / "out" / "in.mp4").exists()
    assert prep([src], tmp_path / "out", FAST).items[0].status == "done"  # once that run is gone
    # a run that found it to do, then waited for the lock while the other made it: skipped, not done again
    from lipsyncctl.preparation import job as prep_job

    real = prep_job._up_to_date
    looks: list[bool] = []

    def first_says_to_do(*args: object, **kwargs: object) -> bool:  # the look before the lock, before the other ended
        looks.append(True)
        return len(looks) > 1 and real(*args, **kwargs)

    monkeypatch.setattr(prep_job, "_up_to_date", first_says_to_do)
    again = prep([src], tmp_path / "out", FAST).items[0]
    assert again.status == "skipped" and "another run made it meanwhile" in (again.reason or "")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["in.mp4", "in.prep.json", "in.wav"]


def test_a_file_prep_did_not_make_is_not_replaced_without_force(tmp_path: Path) -> None:
    """A user's own file with an output's name (no NAME.prep.json beside it) was replaced, exit 0: that item fails
    now, naming it (a dry run says so too); --force replaces it; prep's own outputs are redone as before."""
    src = mg.make_clip(tmp_path / "a.mp4", frames=3, size=(96, 64))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.wav").write_bytes(b"my own recording")
    for dry in (True, False):
        item = prep([src], out, FAST, dry_run=dry).items[0]
        assert item.status == "failed" and item.reason == f"{out / 'a.wav'}: exists, and prep did not make it (no " \
            "a.prep.json beside it)" and "--force" in item.hint
    assert (out / "a.wav").read_bytes() == b"my own recording" and not (out / "a.mp4").exists()
    assert prep([src], out, FAST, force=True).items[0].status == "done"
    assert (out / "a.wav").read_bytes() != b"my own recording" and (out / "a.prep.json").exists()
    assert prep([src], out, PrepOptions(encoder_preset="ultrafast", crf=30)).items[0].status == "done"  # its own


def test_a_prep_killed_before_its_manifest_leaves_outputs_its_rerun_redoes(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after its outputs were renamed into place, before NAME.prep.json: the rerun redoes them (a manifest
    saying a run was writing them was put first), not "prep did not make it"; a failure with nothing in place leaves
    no manifest; a manifest that lists other files does not make a user's file prep's."""
    import json

    from lipsyncctl.errors import MediaError
    from lipsyncctl.preparation import job as prep_job

    src = mg.make_clip(tmp_path / "a.mp4", frames=3, size=(96, 64))
    out = tmp_path / "out"

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(prep_job, "_write_manifest", killed)
        with pytest.raises(KeyboardInterrupt):
            prep([src], out, FAST)
    assert (out / "a.mp4").exists() and json.loads((out / "a.prep.json").read_text()) == {"pending": True}
    assert prep([src], out, FAST).items[0].status == "done"
    # a failure before anything is in place leaves nothing
    other = mg.make_clip(tmp_path / "b.mp4", frames=3, size=(96, 64))

    def broken(*args: object, **kwargs: object) -> None:
        raise MediaError("b.mp4: decoding failed")

    with monkeypatch.context() as m:
        m.setattr(prep_job, "_write_outputs", broken)
        assert prep([other], out, FAST).items[0].status == "failed"
    assert not (out / "b.prep.json").exists() and not (out / "b.mp4").exists()
    # a manifest beside a user's file, listing other files: the file is still not prep's
    (out / "c.wav").write_bytes(b"mine")
    (out / "c.prep.json").write_text(json.dumps({"outputs": {str(out / "c.mp4"): 1}}))
    item = prep([mg.make_clip(tmp_path / "c.mp4", frames=3, size=(96, 64))], out, FAST).items[0]
    assert item.status == "failed" and "c.prep.json beside it lists no such file" in item.reason


def test_no_audio_fails_unless_allowed(tmp_path: Path) -> None:
    src = mg.make_clip(tmp_path / "mute.mp4", frames=10, audio_rate=None)
    item = prep([src], tmp_path / "a", FAST).items[0]
    assert item.status == "failed" and "no audio stream" in (item.reason or "")
    assert "--allow-no-audio" in (item.hint or "")
    assert not (tmp_path / "a" / "mute.mp4").exists()
    ok = prep([src], tmp_path / "b", FAST.model_copy(update={"allow_no_audio": True})).items[0]
    assert ok.status == "done" and ok.wav is None
    _check_output(ok.output, Fraction(25), 10, (96, 64), audio=False)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["mute.mp4", "mute.prep.json"]


def test_batch_with_broken_files_tree_mirroring_and_idempotence(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "day1").mkdir(parents=True)
    (raw / "day2" / "cam").mkdir(parents=True)
    mg.make_clip(raw / "day1" / "a.mp4", frames=10)
    mg.make_clip(raw / "day2" / "cam" / "b.mkv", fps=Fraction(30000, 1001), frames=12, time_base=Fraction(1, 1000),
                 audio_rate=48000)
    mg.make_empty(raw / "day1" / "empty.mp4")
    mg.make_garbage(raw / "day1" / "garbage.mov")
    mg.make_truncated(raw / "day1" / "a.mp4", raw / "day2" / "cut.mp4", 0.5)
    (raw / "notes.txt").write_text("not media, not picked up from a directory")
    before = _tree(raw)
    out = tmp_path / "out"

    result = prep([raw], out, FAST, jobs=2)
    status = {str(i.input.relative_to(raw)): i.status for i in result.items}
    assert status == {"day1/a.mp4": "done", "day1/empty.mp4": "failed", "day1/garbage.mov": "failed",
                      "day2/cam/b.mkv": "done", "day2/cut.mp4": "failed"}
    assert not result.ok and result.counts()["failed"] == 3
    for item in result.failed:
        assert item.reason and str(item.input) in item.reason
    assert "empty file" in next(i.reason for i in result.items if i.input.name == "empty.mp4")  # type: ignore[operator]
    _check_output(out / "day2" / "cam" / "b.mp4", Fraction(25), 10, (96, 64))
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert made == ["day1/a.mp4", "day1/a.prep.json", "day1/a.wav",
                    "day2/cam/b.mp4", "day2/cam/b.prep.json", "day2/cam/b.wav"]  # nothing partial, no temps
    assert _tree(raw) == before  # inputs untouched

    again = prep([raw], out, FAST)
    assert {i.input.name: i.status for i in again.items if i.status != "failed"} == {"a.mp4": "skipped",
                                                                                     "b.mkv": "skipped"}
    assert next(i for i in again.items if i.input.name == "a.mp4").frames == 10
    stamp = _tree(out)
    assert prep([raw / "day1" / "a.mp4"], out / "day1", FAST, force=True).items[0].status == "done"
    os.utime(raw / "day2" / "cam" / "b.mkv", ns=(1, 1))  # an edited input is redone
    assert prep([raw / "day2/cam/b.mkv"], out / "day2" / "cam", FAST).items[0].status == "done"
    changed = prep([raw / "day2/cam/b.mkv"], out / "day2" / "cam", FAST.model_copy(update={"crf": 30}))
    assert changed.items[0].status == "done"  # other options: redone
    assert set(_tree(out)) == set(stamp)


def test_dry_run_writes_nothing_and_globs(tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("s1.mov", "s2.mov", "s3.mp4"):
        mg.make_clip(shots / name, frames=5)
    result = prep([str(shots / "*.mov")], tmp_path / "out", FAST, dry_run=True)
    assert [(i.input.name, i.status, i.output.name, i.frames) for i in result.items] == [
        ("s1.mov", "planned", "s1.mp4", 5), ("s2.mov", "planned", "s2.mp4", 5)]
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError):
        prep([str(shots / "*.webm")], tmp_path / "out", FAST)



def test_files_a_folder_walk_leaves_out_are_said(tmp_path: Path) -> None:
    """A folder's files without a media extension were skipped without a word (a camera card's .MXF sidecars, a
    notes file, a format the table lacks): one warning counts and names them; hidden files stay unsaid."""
    from lipsyncctl import progress
    from lipsyncctl.media.inputs import LeftOut, collect_inputs

    shots = tmp_path / "shots"
    (shots / "b").mkdir(parents=True)
    mg.make_clip(shots / "s1.mov", frames=5)
    for name in ("notes.txt", "b/take.xyz", ".DS_Store"):
        (shots / name).write_text("x")
    others = LeftOut()
    assert [p.name for p, _ in collect_inputs([shots], tmp_path / "out", others=others)] == ["s1.mov"]
    assert others.count == 2 and [p.name for p in others.first] == ["notes.txt", "take.xyz"]
    note = others.note()
    assert note is not None and note.startswith("2 file(s) in the folders given are not media") \
        and note.endswith("skipped: notes.txt, take.xyz") and ".mov" in note
    assert LeftOut().note() is None
    many = LeftOut()
    for k in range(1000):  # a count and the first names, not a list of every file
        many.add(Path(f"meta{k}.txt"))
    assert len(many.first) == 3 and str(many.note()).startswith("1000 file(s)") and str(many.note()).endswith(", ...")
    with progress.use_sink(progress.RecordingSink()) as sink:
        result = prep([shots], tmp_path / "out", FAST, dry_run=True)
    assert [e[1] for e in sink.events if e[0] == "message"] == [progress.WARNING_PREFIX + note]
    assert result.warnings == [note] and result.to_dict()["warnings"] == [note]


def test_name_collisions_and_never_in_place(tmp_path: Path) -> None:
    d = tmp_path / "clips"
    d.mkdir()
    mg.make_clip(d / "take.mov", frames=4)
    mg.make_clip(d / "take.mp4", frames=6)
    result = prep([d], tmp_path / "out", FAST)
    assert sorted(i.output.name for i in result.items) == ["take_mov.mp4", "take_mp4.mp4"]
    assert all(i.status == "done" for i in result.items)
    # output directory == input directory: take.mp4 would be overwritten -> refused before any work (exit 2)
    before = _tree(d)
    with pytest.raises(UsageError, match="overwrite an input"):
        prep([d / "take.mp4"], d, FAST)
    assert _tree(d) == before
    # an output folder inside the input folder is not walked
    nested = prep([d], d / "prepped", FAST)
    assert len(nested.items) == 2 and all(i.status == "done" for i in nested.items)
    assert len(prep([d], d / "prepped", FAST).items) == 2


def test_interrupt_leaves_no_partial_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.media import writer as writer_mod

    src = mg.make_clip(tmp_path / "long.mp4", frames=30)
    out = tmp_path / "out"
    real_write = writer_mod.VideoWriter.write

    def write(self, frame):  # type: ignore[no-untyped-def]
        if self.frames_written == 12:
            raise KeyboardInterrupt
        return real_write(self, frame)

    monkeypatch.setattr(writer_mod.VideoWriter, "write", write)
    with pytest.raises(KeyboardInterrupt):
        prep([src], out, FAST)
    assert not out.exists()  # the folder it created is removed too, as it is empty
    (out / "mine").mkdir(parents=True)  # folders that existed before stay, empty or not
    with pytest.raises(KeyboardInterrupt):
        prep([src], out / "mine" / "new" / "deeper", FAST, jobs=2)
    assert [p.relative_to(out) for p in out.rglob("*")] == [Path("mine")]
    monkeypatch.undo()
    (tmp_path / "keep").mkdir()
    mute = mg.make_clip(tmp_path / "mute.mp4", frames=3, audio_rate=None)
    assert prep([mute], tmp_path / "keep" / "made", FAST).items[0].status == "failed"
    assert list((tmp_path / "keep").iterdir()) == []  # every clip failed: no empty -o folder left


def test_progress_per_file_and_overall(tmp_path: Path) -> None:
    from lipsyncctl import progress

    a = mg.make_clip(tmp_path / "a.mp4", frames=6)
    b = mg.make_clip(tmp_path / "b.mp4", frames=4)
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        prep([a, b], tmp_path / "out", FAST, jobs=2)
    starts = {e[1]: e for e in sink.events if e[0] == "start"}
    overall = next(e for e in starts.values() if e[2] == "prep")
    assert overall[3] == 2
    per_file = {e[2]: e for e in starts.values() if e[2] != "prep"}
    assert {d: e[3] for d, e in per_file.items()} == {"prep a.mp4": 6, "prep b.mp4": 4}
    assert all(e[4] == overall[1] for e in per_file.values())  # nested under the overall task
    advanced = {tid: sum(e[2] for e in sink.events if e[0] == "advance" and e[1] == tid) for tid in starts}
    assert advanced[overall[1]] == 2 and sorted(advanced[e[1]] for e in per_file.values()) == [4, 6]


def test_image_sequence_video_only(tmp_path: Path) -> None:
    pattern = mg.make_image_sequence(tmp_path / "frames", frames=8)
    item = prep([pattern], tmp_path / "out", FAST.model_copy(update={"allow_no_audio": True})).items[0]
    assert item.status == "done", item.reason
    assert item.output == tmp_path / "out" / "img.mp4"
    _check_output(item.output, Fraction(25), 8, (96, 64), audio=False)
    # its stated rate: kept with --fps source; changing it redoes the output, the same rate finds it up to date
    at24 = FAST.model_copy(update={"allow_no_audio": True, "sequence_fps": "24", "fps": "source"})
    item = prep([pattern], tmp_path / "out24", at24).items[0]
    assert item.status == "done", item.reason
    _check_output(item.output, Fraction(24), 8, (96, 64), audio=False)
    assert prep([pattern], tmp_path / "out24", at24).items[0].status == "skipped"
    again = prep([pattern], tmp_path / "out24", at24.model_copy(update={"sequence_fps": "30"})).items[0]
    assert again.status == "done"
    _check_output(again.output, Fraction(30), 8, (96, 64), audio=False)


@pytest.mark.parametrize("fps_opt", ["source", "25"])
def test_start_between_frames_shows_the_frame_on_screen(tmp_path: Path, fps_opt: str) -> None:
    """--start 0.05 s on 30 fps footage falls inside frame 1 (0.033..0.067 s): output frame k shows what
    is on screen at 0.05 + k/fps; the frame on screen at the cut is neither skipped nor the next one doubled."""
    src = mg.make_clip(tmp_path / "a30.mp4", fps=30, frames=30)
    item = prep([src], tmp_path / fps_opt, FAST.model_copy(update={"fps": fps_opt}), start=0.05).items[0]
    assert item.status == "done", item.reason
    fps = Fraction(30) if fps_opt == "source" else Fraction(25)
    with VideoReader(item.output) as reader:
        shown = [mg.read_index(f.image) for f in reader]
    expected = [int((Fraction(1, 20) + Fraction(k) / fps) * 30) for k in range(len(shown))]
    assert shown == expected and shown[:3] == [1, 2, 3]


def test_start_between_frames_starts_the_sound_with_the_frame_kept_at_its_rate(tmp_path: Path) -> None:
    """--start 0.05 on 30 fps footage kept at 30: the picture starts on frame 1 (on screen from 1/30 s), and so does
    the sound now (it started at 0.05 s, 17 ms ahead of its picture; sync's own sound starts with the frame)."""
    src = mg.make_clip(tmp_path / "a30.mp4", fps=30, frames=30, audio_rate=16000, audio_channels=1)
    item = prep([src], tmp_path / "out", FAST.model_copy(update={"fps": "source"}), start=0.05).items[0]
    assert item.status == "done", item.reason
    got = read_audio(item.wav, 16000, 1)[:4000]

    def match(at: float) -> float:
        want = read_audio(src, 16000, 1, start=at)[:4000]
        return float(np.corrcoef(got, want)[0, 1])

    assert match(1 / 30) > 0.99 > match(0.05)


def test_anamorphic_footage_comes_out_in_square_pixels(tmp_path: Path) -> None:
    """72x64 stored pixels of aspect 4:3 are a 96x64 picture: prep resamples it to 96x64 square pixels (said in a
    warning), every frame kept."""
    import cv2

    src = mg.make_clip(tmp_path / "hdv.mp4", frames=10, size=(72, 64), sample_aspect=Fraction(4, 3))
    info = probe(src).video
    assert info is not None and info.sample_aspect == Fraction(4, 3) and info.square_size == (96, 64)
    item = prep([src], tmp_path / "out", FAST).items[0]
    assert item.status == "done", item.reason
    assert any("anamorphic" in w and "resampled to 96x64 square pixels" in w for w in item.warnings)
    _check_output(item.output, Fraction(25), 10, (96, 64))
    assert probe(item.output).video.sample_aspect == 1  # type: ignore[union-attr]
    with VideoReader(item.output) as reader:  # squeezed back to the stored grid, each frame reads its index
        assert [mg.read_index(cv2.resize(f.image, (72, 64), interpolation=cv2.INTER_AREA)) for f in reader] == \
            list(range(10))


@pytest.mark.parametrize(("start", "fps", "codec", "audio", "expected"), [
    (0.0, "source", "prores_hq", True, "10:00:00:00"),   # ProRes MOV, muxed with its sound
    (0.4, "30", "h264", True, "10:00:00:12"),            # --start skips 10 frames at 25 fps: 12 at 30 fps
    (0.0, "source", "h264", False, "10:00:00:00"),       # video only: the timecode is stamped on the file
])
def test_the_source_timecode_and_reel_are_carried(tmp_path: Path, start: float, fps: str, codec: str, audio: bool,
                                                  expected: str) -> None:
    """A prepped clip keeps the source's timecode (at its first frame and the output's rate) and reel name, as
    sync's outputs do, so an editor can relink it; it was dropped."""
    from lipsyncctl.media.mux import stamp_timecode

    src = stamp_timecode(mg.make_clip(tmp_path / "tc.mov", frames=25, audio_rate=48000 if audio else None),
                         "10:00:00:00", reel="A001")
    options = FAST.model_copy(update={"fps": fps, "codec": codec, "allow_no_audio": not audio})
    (item,) = prep([src], tmp_path / "out", options, start=start).items
    assert item.status == "done", item.reason
    info = probe(item.output)
    assert (info.timecode, info.reel, bool(info.audio)) == (expected, "A001" if item.output.suffix == ".mov" else None,
                                                             audio)
    # an .mp4 cannot hold the reel name: said (it was dropped without a word)
    lost = [w for w in item.warnings if "reel name A001 is not carried" in w]
    assert len(lost) == (item.output.suffix != ".mov") and all(".mov, .mkv can" in w for w in lost)


def test_a_walk_skips_the_output_folder_and_takes_a_file_once(tmp_path: Path) -> None:
    """The output folder is not walked into, however it is reached (by name, or as the target of the -o link);
    a file given twice (by the folder and by name, by a link, by another spelling) is one input; a missing one is
    kept as written. The walk resolved every folder and file, component by component (a folder of 20k sources
    took 9.6 s, now 2.7 s)."""
    import os

    from lipsyncctl.media.inputs import collect_inputs

    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    (raw / "out" / "x").mkdir(parents=True)
    for name in ("a/1.mp4", "2.mp4", "out/3.mp4", "out/x/4.mp4"):
        (raw / name).write_bytes(b"")
    (raw / "link.mp4").symlink_to(raw / "2.mp4")
    os.link(raw / "2.mp4", raw / "a" / "hard.mp4")  # a hard link is a file of its own name: another input

    def names(inputs: list[str | Path], out: Path) -> list[str]:
        return [str(p.relative_to(tmp_path)) if p.is_absolute() else str(p) for p, _ in collect_inputs(inputs, out)]

    assert names([raw], raw / "out") == ["raw/2.mp4", "raw/a/1.mp4", "raw/a/hard.mp4"]  # link.mp4 is 2.mp4 again
    os.symlink(raw / "out", tmp_path / "o")  # -o given as a link to the folder
    assert names([raw], tmp_path / "o") == ["raw/2.mp4", "raw/a/1.mp4", "raw/a/hard.mp4"]
    assert names([raw, raw / "a" / "1.mp4", raw / "a" / ".." / "2.mp4", raw / "a" / "hard.mp4", "gone.mp4"],
                 tmp_path / "new") == ["raw/2.mp4", "raw/a/1.mp4", "raw/a/hard.mp4", "raw/out/3.mp4",
                                       "raw/out/x/4.mp4", "gone.mp4"]
    assert names([str(raw / "**" / "*.mp4")], raw / "out") == ["raw/2.mp4", "raw/a/1.mp4", "raw/a/hard.mp4"]
    assert names([raw / "out"], raw / "out") == ["raw/out/3.mp4"]  # inside it: its own files, none of its folders


def test_a_file_whose_name_reads_as_a_pattern_is_that_file(tmp_path: Path) -> None:
    """Editors' names: `take[1].mp4` was read as a glob class ("the pattern matches no file", exit 2, the whole run
    stopped) and `shot%03d.mp4` as an image sequence ("no image matches"): a path that exists is that file; a pattern
    that is no file still expands."""
    from lipsyncctl.media.container import is_image_sequence
    from lipsyncctl.media.inputs import collect_inputs

    src = mg.make_clip(tmp_path / "base.mp4", frames=3)
    (tmp_path / "in").mkdir()
    for name in ("take[1].mp4", "shot%03d.mp4"):
        shutil.copy(src, tmp_path / "in" / name)
    (tmp_path / "in" / "take1.mp4").write_bytes(src.read_bytes())
    for name in ("take[1].mp4", "shot%03d.mp4"):
        path = tmp_path / "in" / name
        assert collect_inputs([str(path)], tmp_path / "out") == [(path, Path(name).with_suffix(""))]
    assert not is_image_sequence(tmp_path / "in" / "shot%03d.mp4") and is_image_sequence(tmp_path / "in" / "f%03d.png")
    assert [p.name for p, _ in collect_inputs([str(tmp_path / "in" / "take[1]*.mp4")], tmp_path / "out")] == [
        "take1.mp4"]  # a pattern that is no file: a glob, as before
    shots = tmp_path / "shots[v2]"  # a folder, and a sequence in it, whose names read as globs
    shots.mkdir()
    shutil.copy(src, shots / "take.mp4")
    for k in (1, 2):
        (shots / f"f_{k:04d}.png").write_bytes(b"")
    assert [p.name for p, _ in collect_inputs([str(shots)], tmp_path / "out")] == ["take.mp4"]
    assert collect_inputs([str(shots / "f_%04d.png")], tmp_path / "out") == [(shots / "f_%04d.png", Path("f"))]
    done = prep([tmp_path / "in" / "take[1].mp4", tmp_path / "in" / "shot%03d.mp4"], tmp_path / "out", FAST)
    assert [i.status for i in done.items] == ["done", "done"], [i.reason for i in done.items]


def test_a_picture_dnxhr_cannot_code_fails_before_any_work_naming_why(tmp_path: Path) -> None:
    """DNxHR codes pictures of at least 256x120: a smaller one failed at its first encoded frame, naming a hidden
    temporary file and blaming the input (sync: after the networks had loaded and a window was rendered)."""
    from lipsyncctl import config as cfg
    from lipsyncctl.errors import MediaError
    from lipsyncctl.pipeline.output import check_frame_size

    src = mg.make_clip(tmp_path / "small.mp4", frames=3, size=(240, 240))
    item = prep([src], tmp_path / "out", FAST.model_copy(update={"codec": "dnxhr_hq"})).items[0]
    assert item.status == "failed" and "prepared at 240x240; dnxhr codes pictures of at least 256x120" in item.reason
    assert ".~" not in item.reason
    options = cfg.resolve("tiny", ["output.codec=dnxhr_hq"]).output
    with pytest.raises(MediaError, match=r"out.mov: the picture is 240x240; dnxhr codes pictures of at least 256x120"):
        check_frame_size(tmp_path / "out.mov", options, "yuv420p", (240, 240))
    check_frame_size(tmp_path / "out.mov", options, "yuv420p", (257, 120))  # (no parity rule: 257 is coded)
