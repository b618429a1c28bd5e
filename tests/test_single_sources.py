"""One fact in one place: each test pins a table or rule that used to be written twice.

The codec -> container table (``media.writer.CODECS``). Every user of a fact reads the one source; these tests check the
users agree with it and pin the numbers that must not move.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from lipsyncctl import config as cfg
from lipsyncctl.errors import ConfigError
from lipsyncctl.media.writer import CODECS, output_extension
from lipsyncctl.pipeline import output

# ----------------------------------------------------------------------------------------------
# Codec -> container


def _schema_codecs(options: type) -> set[str]:
    return set(typing.get_args(options.model_fields["codec"].annotation))


def test_every_schema_codec_has_containers_in_the_one_table() -> None:
    assert set(output.OUTPUT_CODECS) == _schema_codecs(cfg.OutputOptions)
    for name, oc in output.OUTPUT_CODECS.items():
        assert output.containers(name) == CODECS[oc.writer_codec].containers
        assert output.default_extension(name) == output_extension(oc.writer_codec)
    assert _schema_codecs(cfg.PrepOptions) <= set(CODECS)
    for spec in CODECS.values():
        assert spec.containers and all(e.startswith(".") and e == e.lower() for e in spec.containers)


def test_default_extensions_are_unchanged() -> None:
    # Shot file names (and the timeline's content keys) and prep's output names depend on these.
    assert {c: output.default_extension(c) for c in output.OUTPUT_CODECS} == {
        "h264": ".mp4", "h265": ".mp4", "prores_hq": ".mov", "prores_4444": ".mov", "dnxhr_hq": ".mov",
        "ffv1": ".mkv"}
    assert {c: output_extension(c) for c in _schema_codecs(cfg.PrepOptions)} == {
        "h264": ".mp4", "h265": ".mp4", "prores": ".mov", "ffv1": ".mkv"}


@pytest.mark.parametrize("codec", sorted(output.OUTPUT_CODECS))
def test_check_output_follows_the_table(codec: str, tmp_path: Path) -> None:
    options = cfg.OutputOptions(codec=codec)
    for ext in output.containers(codec):
        output.check_output(tmp_path / f"out{ext.upper()}", options)  # case-insensitive
    with pytest.raises(ConfigError, match=codec):
        output.check_output(tmp_path / "out.webm", options)


def test_module_doc_lists_the_table() -> None:
    lines = [ln.split() for ln in (output.__doc__ or "").splitlines()]
    for codec in output.OUTPUT_CODECS:
        (row,) = [ln for ln in lines if ln and ln[0] == f"``{codec}``"]
        assert tuple(w for w in row if w.startswith(".")) == output.containers(codec)


def test_timeline_shots_use_the_table() -> None:
    import lipsyncctl.timeline.job as job

    assert not hasattr(job, "_EXT")
    assert job.default_extension is output.default_extension
