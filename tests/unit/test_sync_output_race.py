"""Two runs of one output at once: the take of the run that finishes first stays, the other fails as if the output had
been there at its start (exit 2), leaving nothing of its own; with ``overwrite`` the later one replaces it, as asked."""

from __future__ import annotations

import errno
import os
from fractions import Fraction
from pathlib import Path

import pytest

from lipsyncctl.errors import UsageError
from lipsyncctl.media.atomic import move_new
from tests.sync_media import sample_frames, tiny_models, write_clip, write_wav


def test_move_new_never_replaces_and_falls_back_without_hard_links(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_text("new")
    move_new(src, dst)
    assert dst.read_text() == "new" and not src.exists()
    src.write_text("newer")
    with pytest.raises(UsageError, match="another run wrote it"):
        move_new(src, dst)
    assert dst.read_text() == "new" and src.read_text() == "newer"  # both left as they were

    def no_links(*args: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)  # FAT, some network shares
    with pytest.raises(UsageError):
        move_new(src, dst)
    move_new(src, tmp_path / "c")
    assert (tmp_path / "c").read_text() == "newer" and not src.exists()


def test_an_output_another_run_made_meanwhile_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.pipeline import render
    from lipsyncctl.pipeline.clip import sync_clip

    dub = write_wav(tmp_path / "dub.wav", 0.24, rate=16000)
    video = write_clip(tmp_path / "v.mkv", sample_frames(6, scale=0.75), Fraction(25))
    out = tmp_path / "o.mp4"
    real = render.Renderer.render

    def other_run_finishes_first(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out.write_bytes(b"the other run's take")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(render.Renderer, "render", other_run_finishes_first)
    with tiny_models(tmp_path / "models") as (config, models):
        with pytest.raises(UsageError, match="another run wrote it while this one worked"):
            sync_clip(video, dub, out, config, networks=models)
        assert out.read_bytes() == b"the other run's take"
        assert not (tmp_path / "o.run.yaml").exists()  # its record is not written over the other take's either
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dub.wav", "models", "o.mp4", "v.mkv"]
        res = sync_clip(video, dub, out, config, networks=models, overwrite=True)  # -y: replaced, as asked
    assert res.frames == 6 and out.stat().st_size > 100 and (tmp_path / "o.run.yaml").exists()


def test_a_second_run_of_an_output_being_written_is_refused_at_once(tmp_path: Path) -> None:
    """While a run writes OUT (it holds the lock of OUT's record, ``.o.run.yaml.lock``: ``o.mp4`` and ``o.mkv`` share
    ``o.run.yaml``), another run of OUT, or of ``o.mkv``, exits 6 naming it, before any face or network work; the lock
    file is gone once the first run ends, and a killed run's file blocks nobody."""
    import subprocess
    import sys

    from lipsyncctl.errors import BusyError
    from lipsyncctl.pipeline.clip import run_yaml_path, sync_clip
    from lipsyncctl.runner.lock import output_lock

    dub = write_wav(tmp_path / "dub.wav", 0.24, rate=16000)
    video = write_clip(tmp_path / "v.mkv", sample_frames(6, scale=0.75), Fraction(25))
    out = tmp_path / "o.mp4"
    with tiny_models(tmp_path / "models") as (config, models):
        lock = tmp_path / ".o.run.yaml.lock"
        with output_lock(run_yaml_path(out), what=out):  # the first run, writing
            assert lock.is_file()
            for other in (out, tmp_path / "o.mkv"):
                with pytest.raises(BusyError, match="another run is writing this output") as busy:
                    sync_clip(video, dub, other, config, networks=models)
                # o.mkv's refusal names what it shares with the run writing o.mp4 (it said o.mkv was being written)
                assert f"{other}: another run is writing this output or another of its record o.run.yaml" in \
                    busy.value.message and "(the outputs named o with any extension share it)" in (busy.value.hint or "")
        assert not lock.exists() and not out.exists()
        # a run killed while it held the lock leaves its file; the kernel let go of the lock, so it blocks nothing
        code = ("import os; from lipsyncctl.runner.lock import output_lock\n"
                f"with output_lock({str(run_yaml_path(out))!r}): os._exit(9)")
        subprocess.run([sys.executable, "-c", code], check=False)
        assert lock.is_file()
        assert sync_clip(video, dub, out, config, networks=models).frames == 6
        assert not lock.exists()
        # o.mkv beside it would take o.mp4's record: refused, even with -y (-y replaces o.mkv, not o.mp4's record)
        for overwrite in (False, True):
            with pytest.raises(UsageError, match="is the record of .*o.mp4, another output of this name"):
                sync_clip(video, dub, tmp_path / "o.mkv", config, networks=models, overwrite=overwrite)
        assert "o.mp4" in (tmp_path / "o.run.yaml").read_text() and not (tmp_path / "o.mkv").exists()
        out.unlink()  # that output gone: its record may be replaced
        assert sync_clip(video, dub, tmp_path / "o.mkv", config, networks=models).frames == 6
