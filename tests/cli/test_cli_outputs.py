"""Where `lipsyncctl sync -o` may write: a folder, a read-only place, a file in the way, and folders it
created itself when the run fails or is interrupted. Every bad destination fails before the face pass."""

from __future__ import annotations

import errno
import os
from fractions import Fraction
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from lipsyncctl.media.atomic import check_writable, output_folder
from tests.sync_media import sample_frames, write_clip, write_wav


@pytest.fixture
def media(tmp_path: Path) -> tuple[Path, Path]:
    return write_clip(tmp_path / "v.mkv", sample_frames(2, scale=0.75), Fraction(25)), write_wav(tmp_path / "a.wav", 0.08)


@pytest.fixture
def no_face_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the face pass ran for an output that cannot be written")

    monkeypatch.setattr("lipsyncctl.pipeline.faces.cached_clip_faces", must_not_run)


def _sync(media: tuple[Path, Path], out: Path) -> list[str]:
    return ["sync", "--video", str(media[0]), "--audio", str(media[1]), "-o", str(out), "--preset", "tiny"]


def test_output_is_an_existing_folder(media, models_dir: Path, tmp_path: Path, no_face_pass: None,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "renders"
    folder.mkdir()
    assert main(_sync(media, folder)) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "hint: give a file name" in err
    assert list(folder.iterdir()) == []


def test_file_in_the_way_fails_before_the_face_pass(media, models_dir: Path, tmp_path: Path, no_face_pass: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    assert main(_sync(media, blocker / "sub" / "o.mp4")) == 1
    assert f"error: a file is in the way of the output folder: {blocker}" in capsys.readouterr().err
    assert blocker.read_text() == "a file, not a folder"


def test_unwritable_folder_fails_before_the_face_pass(media, models_dir: Path, tmp_path: Path, no_face_pass: None,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # chmod cannot lock out root (tests may run as root): deny write access to that folder instead
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    assert main(_sync(media, locked / "new" / "o.mp4")) == 1
    err = capsys.readouterr().err
    # the folders to create are said with the output they are for (it named only the folder above them)
    assert f"cannot create the folders of {locked / 'new' / 'o.mp4'} here (permission denied): {locked}" in err
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize(("code", "said"), [(errno.EPERM, "operation not permitted"),
                                             (errno.ENOENT, "no file can be created there")])
def test_a_folder_that_takes_no_file_fails_before_any_work(media, models_dir: Path, tmp_path: Path,
                                                           no_face_pass: None, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], code: int,
                                                           said: str) -> None:
    """Permission bits say yes, creating a file says no (an immutable folder, /proc, root's view of either): exit 1
    naming the folder, at once (it failed after the render, on the hidden temporary's name, exit 5 for /proc)."""
    import tempfile

    locked = tmp_path / "immutable"
    locked.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # type: ignore[no-untyped-def]
        if dir is not None and Path(dir) == locked:
            raise OSError(code, os.strerror(code), str(Path(dir) / "probe"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert main(_sync(media, locked / "o.mp4")) == 1
    assert f"error: cannot write the output here ({said}): {locked}" in capsys.readouterr().err
    check_writable(locked / "o.mp4", probe=False)  # a dry run writes nothing, not even a probe
    check_writable(tmp_path / "o.mp4")
    assert not [p for p in (*tmp_path.iterdir(), *locked.iterdir()) if p.name.startswith(".")]  # no probe left


def test_check_writable_accepts_new_nested_folders(tmp_path: Path) -> None:
    check_writable(tmp_path / "a" / "b" / "o.mp4")
    check_writable(Path("relative.mp4"))  # the current folder
    assert not (tmp_path / "a").exists()


def test_a_dangling_link_in_the_way_fails_before_any_work(media, models_dir: Path, tmp_path: Path,
                                                          no_face_pass: None, capsys: pytest.CaptureFixture[str]) -> None:
    """-o out/o.mp4 where out is a link to nothing: said at once (it passed, and failed after the face pass)."""
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError):
        check_writable(tmp_path / "out" / "deeper" / "o.mp4")
    assert main(_sync(media, tmp_path / "out" / "o.mp4")) != 0
    assert "a link to nothing is in the way" in capsys.readouterr().err


def test_output_folder_removes_only_the_folders_it_made(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt), output_folder(tmp_path / "kept" / "new" / "deeper" / "o.mp4") as folder:
        assert folder.is_dir()
        raise KeyboardInterrupt
    assert list((tmp_path / "kept").iterdir()) == []
    with output_folder(tmp_path / "kept" / "ok" / "o.mp4") as folder:  # success keeps them
        (folder / "o.mp4").write_bytes(b"x")
    assert (tmp_path / "kept" / "ok" / "o.mp4").is_file()


def test_ctrl_c_removes_the_output_folders_it_created(media, models_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from lipsyncctl.pipeline.render import Renderer

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(Renderer, "generate", interrupted)
    out = tmp_path / "out" / "new" / "o.mp4"
    assert main(_sync(media, out)) == 130, capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prep_output_folder_is_a_file(media, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One usage error, not one 'FileExistsError' per clip."""
    blocker = tmp_path / "prepped"
    blocker.write_text("not a folder")
    assert main(["prep", str(media[0]), "-o", str(blocker)]) == 2
    out, err = capsys.readouterr()
    assert f"error: -o {blocker}: is a file, not a folder" in err and out == ""
    assert blocker.read_text() == "not a folder"


def test_prep_unwritable_output_folder(media, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    assert main(["prep", str(media[0]), "-o", str(locked / "prepped")]) == 1
    assert f"cannot create the folders of {locked / 'prepped'} here (permission denied): {locked}" in \
        capsys.readouterr().err
    assert main(["prep", str(media[0]), "-o", str(locked / "prepped"), "--dry-run",
                 "--allow-no-audio"]) == 0  # a dry run writes nothing


def test_end_before_start_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Wrong whatever the media (exit 2 before any file is opened), not 'bad input media' (5)."""
    rc = main(["sync", "-i", str(tmp_path / "v.mp4"), "-a", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o.mp4"),
               "--preset", "tiny", "--start", "0.8", "--end", "0.3"])
    assert rc == 2
    assert "error: --end 0.3 is not after --start 0.8" in capsys.readouterr().err


def test_start_past_the_clip_is_a_usage_error(odd_clip: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A --start at or past the clip's end is a wrong argument (2, like --segments ranges that leave the
    picture), not bad media (5); nothing is written."""
    video, audio = odd_clip
    out = tmp_path / "o.mp4"
    rc = main(["sync", "-i", str(video), "-a", str(audio), "-o", str(out), "--preset", "tiny", "--start", "5"])
    assert rc == 2
    assert "error: --start/--end select no frames (clip has 2 frames" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([video.name, audio.name])


@pytest.fixture
def odd_clip(tmp_path: Path) -> tuple[Path, Path]:
    """A 4:4:4 clip with odd sides (4:4:4 and RGB can store them; 4:2:0 cannot)."""
    frames = [f[:-1, :-1] for f in sample_frames(2, scale=0.75)]
    assert frames[0].shape[0] % 2 and frames[0].shape[1] % 2
    return (write_clip(tmp_path / "odd.mkv", frames, Fraction(25), pix_fmt="yuv444p"),
            write_wav(tmp_path / "a.wav", 0.08))


def test_odd_size_into_420_fails_before_the_face_pass(odd_clip, models_dir: Path, tmp_path: Path,
                                                      no_face_pass: None, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.mp4"
    assert main([*_sync(odd_clip, out), "--set", "output.pix_fmt=yuv420p"]) == 5
    err = capsys.readouterr().err
    assert f"error: {out}: the picture is" in err and "cannot store an odd side" in err  # names OUT, not a temp file
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "models", "odd.mkv"]


@pytest.mark.parametrize(("sets", "code", "words"), [
    (["inference.dtype=fp16"], 3, "inference.dtype fp16 is not supported on the CPU"),
    (["inference.cuda_graphs=true"], 4, "inference.cuda_graphs needs a CUDA GPU"),
])
def test_a_refused_dtype_or_tool_fails_before_the_face_pass(odd_clip, models_dir: Path, tmp_path: Path,
                                                            no_face_pass: None, sets: list[str], code: int,
                                                            words: str, capsys: pytest.CaptureFixture[str]) -> None:
    """What loading the networks would refuse is said in a second, not after minutes of face tracking."""
    out = tmp_path / "o.mkv"
    args = [*_sync(odd_clip, out), "--set", "inference.pipelined=false"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == code
    assert words in capsys.readouterr().err and not out.exists()


def test_a_face_point_outside_the_picture_fails_before_the_face_pass(odd_clip, models_dir: Path, tmp_path: Path,
                                                                    no_face_pass: None,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.mkv"
    assert main([*_sync(odd_clip, out), "--face-at", "5000,20"]) == 2
    assert "error: --face-at 5000,20 is outside the" in capsys.readouterr().err and not out.exists()


def test_odd_size_keeps_its_size_with_a_matte(odd_clip, models_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The matte is written in the output's pixel format (the source's 4:4:4), not the codec's 4:2:0 default,
    which failed after the whole render."""
    from lipsyncctl.media.probe import probe

    out = tmp_path / "o.mp4"
    assert main([*_sync(odd_clip, out), "--matte"]) == 0, capsys.readouterr().err
    src = probe(odd_clip[0]).video
    for path in (out, tmp_path / "o.matte.mp4"):
        v = probe(path).video
        assert (v.width, v.height, v.pix_fmt) == (src.width, src.height, "yuv444p")
    # The matte is an output like OUT: not replaced without -y; a -y take without --matte removes the old one
    (tmp_path / "o.mp4").unlink()
    assert main([*_sync(odd_clip, out), "--matte"]) == 2
    assert "o.matte.mp4: exists; refusing to replace it" in capsys.readouterr().err and not out.exists()
    assert main([*_sync(odd_clip, out), "--matte", "-y"]) == 0
    assert main([*_sync(odd_clip, out), "-y"]) == 0
    assert out.is_file() and not (tmp_path / "o.matte.mp4").exists()
    # a matte-named file the take's render did not write (a compositor's roto, an input named so) is not removed:
    # it was, whatever made it
    roto = tmp_path / "o.matte.mp4"
    roto.write_bytes(b"a roto matte of the compositor's")
    assert main([*_sync(odd_clip, out), "-y"]) == 0
    assert roto.read_bytes() == b"a roto matte of the compositor's"
    # nor one put in the place of a matte a take wrote (its record keeps the matte's size and first and last MiB)
    assert main([*_sync(odd_clip, out), "--matte", "-y"]) == 0
    roto.write_bytes(b"a roto matte of the compositor's")
    assert main([*_sync(odd_clip, out), "-y"]) == 0
    assert roto.read_bytes() == b"a roto matte of the compositor's"


def test_sigterm_cleans_up_like_ctrl_c(media, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`timeout`, `kill` and schedulers send SIGTERM: it left the hidden temporary folder behind."""
    import signal
    import time

    from lipsyncctl.pipeline.render import Renderer

    def terminated(*args, **kwargs):  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM was not turned into an interrupt")

    def not_handled(signum, frame):  # type: ignore[no-untyped-def]
        raise RuntimeError("SIGTERM reached the embedding process's handler")  # not pytest's death

    monkeypatch.setattr(Renderer, "generate", terminated)
    outer = signal.signal(signal.SIGTERM, not_handled)
    try:
        out = tmp_path / "out" / "o.mp4"
        assert main(_sync(media, out)) == 130, capsys.readouterr().err
        assert not (tmp_path / "out").exists()
        assert signal.getsignal(signal.SIGTERM) is not_handled  # restored for the embedding process
    finally:
        signal.signal(signal.SIGTERM, outer)


@pytest.mark.parametrize(("text", "rate"), [("25", Fraction(25)), ("29.97", Fraction(30000, 1001)),
                                            ("23.976", Fraction(24000, 1001)), ("59.94", Fraction(60000, 1001)),
                                            ("30000/1001", Fraction(30000, 1001)), ("12.5", Fraction(25, 2))])
def test_parse_rate_reads_decimal_rates_as_the_standard_ones(text: str, rate: Fraction) -> None:
    from lipsyncctl.media.rates import parse_rate

    assert parse_rate(text) == rate


def test_sync_fps_2997_is_ntsc_like_prep(media, models_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`sync --fps 29.97` wrote 2997/100 fps while `prep --fps 29.97` wrote 30000/1001."""
    import json

    from lipsyncctl.media.probe import probe

    out = tmp_path / "o.mp4"
    assert main(["--json", *_sync(media, out), "--fps", "29.97"]) == 0
    assert json.loads(capsys.readouterr().out)["fps"] == "30000/1001"
    assert probe(out).video.nominal_fps == Fraction(30000, 1001)


def _sigterm_self(marker: str, cache: dict, device: str | None) -> str:
    """A task (the runner's executor signature) that is sent SIGTERM while it runs; its cleanup notes itself."""
    import signal
    import time

    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return "SIGTERM ignored"
    finally:
        with open(marker, "a", encoding="utf-8") as f:
            f.write("cleaned up\n")


def test_timeline_worker_turns_sigterm_into_an_interrupt(tmp_path: Path) -> None:
    """`timeout`/`kill` signal the whole group: a spawned timeline worker died at once and left its shot's
    hidden temporary folder; now SIGTERM interrupts its task like Ctrl-C (the task's cleanup runs), and the
    worker then exits instead of starting the next queued task (issue 14.3)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from lipsyncctl.runner.workers import _init_worker, _work

    marker = tmp_path / "cleanup.txt"
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(None, 1)) as pool:
        first = pool.submit(_work, _sigterm_self, str(marker))
        second = pool.submit(_work, _sigterm_self, str(marker))
        exc = first.exception(timeout=60)
        assert isinstance(exc, BrokenProcessPool), exc
        assert isinstance(second.exception(timeout=60), BrokenProcessPool)
    assert marker.read_text() == "cleaned up\n"  # the first task cleaned up; the second never started


def test_an_output_name_held_by_a_link_to_nothing_is_there(media, models_dir: Path, tmp_path: Path,
                                                           no_face_pass: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A stale symbolic link in a delivery folder: the start's check followed it (nothing there), the whole clip was
    rendered, then the rename found the name taken ("another run wrote it", exit 2). It is there from the start."""
    out = tmp_path / "dangling.mp4"
    out.symlink_to(tmp_path / "nowhere" / "x.mp4")
    assert main(_sync(media, out)) == 2
    assert "dangling.mp4: a symbolic link to nothing (-> " in capsys.readouterr().err
    assert out.is_symlink() and not out.exists()
