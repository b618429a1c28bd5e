"""curate: the probe decodes only the first frame; the shots pass (the one full decode before alignment) is
the decode check of every later frame, and a picture that stops decoding rejects its source as
``unreadable`` at ``shots`` with the frame, exit 0 (a rejection, not a failure). Inputs stay unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import pytest

from lipsyncctl import config as cfg
from lipsyncctl.curation import stages
from lipsyncctl.curation.job import run_curation
from tests.mediagen import make_clip

BAD_FRAME = 100


def _corrupt_clip(folder: Path) -> Path:
    """6 s of PNG frames in a .mov with audio; frame 100's bytes overwritten in place (same size, so the
    container and its index are intact and the probe passes)."""
    good = make_clip(folder / "good.mov", fps=25, frames=150, codec="png", pix_fmt="rgb24", audio_rate=16000)
    with av.open(str(good)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    pos, size = packets[BAD_FRAME]
    data = bytearray(good.read_bytes())
    data[pos + size // 4: pos + size // 4 + 64] = b"\xff" * 64
    bad = folder / "bad frame.mov"
    bad.write_bytes(bytes(data))
    good.unlink()
    return bad


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _corrupt_clip(tmp_path_factory.mktemp("raw"))


def test_the_fixture_really_stops_decoding_at_that_frame(corrupt: Path) -> None:
    decoded = 0
    with pytest.raises(av.error.FFmpegError), av.open(str(corrupt)) as c:
        for _ in c.decode(video=0):
            decoded += 1
    assert decoded == BAD_FRAME


def test_probe_decodes_only_the_first_frame(corrupt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.media import reader

    def no_reader(*args: object, **kwargs: object) -> None:
        raise AssertionError("the probe stage opened a frame reader")

    monkeypatch.setattr(reader, "IndexedReader", no_reader)
    facts = stages.probe_source(corrupt, cfg.resolve("tiny").curate)
    assert facts["problem"] is None and facts["grid_frames"] == 150


def test_shots_pass_reports_the_frame_that_does_not_decode(corrupt: Path) -> None:
    got = stages.detect_shots(corrupt, 150, cfg.resolve("tiny").curate)
    assert got["problem"] == "unreadable"
    assert got["value"].startswith(f"frame {BAD_FRAME} does not decode (")


def test_a_source_that_stops_decoding_is_rejected_at_shots(corrupt: Path, tmp_path: Path) -> None:
    before = hashlib.sha256(corrupt.read_bytes()).hexdigest()
    result = run_curation([corrupt], tmp_path / "data", cfg.resolve("tiny"))
    (source,) = result.sources
    d = source.decision
    assert (d.verdict, d.stage, d.reason) == ("rejected", "shots", "unreadable")
    assert str(d.value).startswith(f"frame {BAD_FRAME}")
    assert result.ok and list(result.spans()) == []
    assert "segments" not in source.computed  # the source's stages end there
    assert hashlib.sha256(corrupt.read_bytes()).hexdigest() == before
    again = run_curation([corrupt], tmp_path / "data", cfg.resolve("tiny"))
    assert [*again.sources][0].computed == [] and [*again.sources][0].decision == d  # stored, not re-decoded
