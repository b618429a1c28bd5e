"""What `sync --timeline` says when the edit or its media cannot be found: a folder given as the timeline, a file
of a format no adapter reads (naming the formats read), and media missing at a relative path (naming where it
was looked for)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsyncctl.errors import MediaError
from lipsyncctl.timeline.source import ADAPTERS_BY_SUFFIX, MediaResolver, read_timeline
from tests.timeline_media import clip, write_edit


def test_a_folder_is_not_a_timeline(tmp_path: Path) -> None:
    (tmp_path / "tl").mkdir()
    with pytest.raises(MediaError) as caught:
        read_timeline(tmp_path / "tl")
    assert caught.value.message == f"{tmp_path / 'tl'} is a folder, not a timeline file"
    assert ", ".join(ADAPTERS_BY_SUFFIX) in caught.value.hint


def test_a_format_no_adapter_reads_names_those_read(tmp_path: Path) -> None:
    edit = tmp_path / "edit.txt"
    edit.write_text("001  AX  V  C  00:00:00:00 00:00:01:00 00:00:00:00 00:00:01:00\n", encoding="utf-8")
    with pytest.raises(MediaError) as caught:
        read_timeline(edit)
    assert caught.value.message == f"{edit}: .txt is not a timeline format read here"
    assert caught.value.hint == f"export the edit as one of {', '.join(ADAPTERS_BY_SUFFIX)}"
    assert "NoKnownAdapter" not in caught.value.message


def test_the_cli_exits_5_for_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lipsyncctl.cli.main import main

    (tmp_path / "tl").mkdir()
    (tmp_path / "de.wav").write_bytes(b"")
    rc = main(["sync", "--timeline", str(tmp_path / "tl"), "--audio", f"de={tmp_path / 'de.wav'}",
               "-o", str(tmp_path / "out"), "--preset", "tiny", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 5 and "is a folder, not a timeline file" in err and ".otio, .otioz" in err, err


def test_missing_media_says_where_it_was_looked_for(tmp_path: Path) -> None:
    from lipsyncctl.timeline.segments import plan_timeline

    edit = write_edit(tmp_path / "tl" / "edit.otio", [clip("sh010", "in/clip.mp4", 0, 8)])
    plan = plan_timeline(read_timeline(edit), MediaResolver(edit.parent, media_root=tmp_path / "media"))
    (skip,) = plan.skipped
    looked = [edit.parent / "in" / "clip.mp4", tmp_path / "media" / "in" / "clip.mp4", tmp_path / "media" / "clip.mp4"]
    assert skip.reason == f"missing media: in/clip.mp4 (looked for {', '.join(map(str, looked))})"


def test_a_missing_media_path_with_dot_dot_is_said_normalised(tmp_path: Path) -> None:
    from lipsyncctl.timeline.segments import plan_timeline

    edit = write_edit(tmp_path / "tl" / "edit.otio", [clip("sh010", "../in/missing.mp4", 0, 8)])
    (skip,) = plan_timeline(read_timeline(edit), MediaResolver(edit.parent)).skipped
    assert skip.reason == f"missing media: ../in/missing.mp4 (looked for {tmp_path / 'in' / 'missing.mp4'})"
