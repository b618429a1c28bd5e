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
