"""Versioned deliveries of `sync --timeline` (:mod:`lipsyncctl.timeline.delivery`): each run that finishes a
language hands back ``OUT/<lang>/vNNN/`` as one set, renamed into place when complete, ``current`` pointing
at it. A rerun without ``--conform`` has no conform in its version and its report agrees; an interrupted
run (Ctrl-C in the second shot's render) leaves the previous version byte for byte and no temporaries;
``report.json`` lists exactly the files beside it; a rerun re-renders nothing. Two 8-frame shots, tiny
preset, rendered twice (once with the first seed, once with another after the interruption)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from lipsyncctl.media.atomic import TEMP_NAME
from tests.conftest import shared_path
from tests.timeline_media import clip, write_edit, write_sources

BASE = ["--preset", "tiny", "--steps", "1", "--handles", "1", "--set", "faces.detect_every=3"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("tldel")
    write_sources(root, shared_path("fixtures", "demo1_video.mp4"))
    edit = write_edit(root / "edit.otio", [clip("A1", "cam_a.mkv", 4, 8, available=(0, 40)),
                                           clip("A2", "cam_a.mkv", 20, 8, available=(0, 40))], name="del")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNCCTL_MODELS", str(root / "models"))
        yield {"root": root, "out": root / "out",
               "args": ["--timeline", str(edit), "--audio", f"de={shared_path('fixtures', 'demo1_audio.wav')}",
                        "-o", str(root / "out"), *BASE]}


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def _run_err(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    """:func:`_run`, with what it wrote on stderr (the error and its hint)."""
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", *args])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if out.strip() else {}, err


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if TEMP_NAME.match(p.name)]


def _check_version(info: dict, folder: Path) -> dict:
    """The version's report lists exactly its files, and every path of the result is inside it."""
    report = json.loads((folder / "report.json").read_text())
    assert report["files"] == sorted(_hashes(folder)), report["files"]
    assert report["version"] == folder.name == info["version"] and Path(info["folder"]) == folder
    for path in [info["report"], info["report_html"], *info["timelines"], *(s["output"] for s in info["shots"])]:
        assert Path(path).parent in (folder, folder / "shots") and Path(path).is_file(), path
    assert report["timelines"] == info["timelines"] and report["conform"] == info["conform"]
    assert [s["output"] for s in report["shots"]] == [s["output"] for s in info["shots"]]
    return report


@pytest.fixture(scope="module")
def first(env):  # type: ignore[no-untyped-def]
    """The first run, with --conform: both shots rendered (module-scoped: stdout captured here)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--json", "-q", "sync", *env["args"], "--conform"])
    res = json.loads(buf.getvalue())
    assert rc == 0 and res["counts"]["rendered"] == 2, res
    v1 = env["out"] / "de" / "v001"
    return res, v1, _hashes(v1)


def test_first_delivery_is_one_consistent_set(env, first) -> None:  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    res, v1, _ = first
    info = res["languages"]["de"]
    report = _check_version(info, v1)
    assert Path(info["conform"]) == v1 / "edit.conform.mp4" and "edit.conform.mp4" in report["files"]
    assert os.readlink(env["out"] / "de" / "current") == "v001"
    # the relinked timeline points at the renders beside it (relative, as the input's URLs are)
    relinked = otio.adapters.read_from_file(str(v1 / "edit.otio"))
    urls = sorted(c.media_reference.target_url for c in relinked.find_clips() if c.name in ("A1", "A2"))
    assert urls == sorted(f"shots/{Path(s['output']).name}" for s in info["shots"])
    # the renders are the render cache's files, linked
    cache = env["out"] / ".lipsyncctl" / "renders"
    assert all(os.path.samefile(s["output"], cache / f"{s['key']}{Path(s['output']).suffix}") for s in info["shots"])


def test_rerun_without_conform_renders_nothing_and_has_no_conform(env, first,  # type: ignore[no-untyped-def]
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, v1, delivered = first
    lang = env["out"] / "de"
    rc, again = _run(env["args"], capsys)
    assert rc == 0 and again["counts"]["rendered"] == 0 and again["counts"]["reused"] == 2
    version = lang / again["languages"]["de"]["version"]
    assert version.name > "v001" and again["languages"]["de"]["conform"] is None
    report = _check_version(again["languages"]["de"], version)
    assert report["conform"] is None and not list(version.glob("*conform*"))
    assert os.readlink(lang / "current") == version.name and _hashes(v1) == delivered


def test_a_relinked_edit_fed_back_is_rendered_from_its_original_media(env, first,  # type: ignore[no-untyped-def]
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # the relinked .otio (as it comes back from the NLE) was rendered over its own renders, and the next version
    # named v001's renders as its "original media" (which `prune` then removed)
    import opentimelineio as otio

    from lipsyncctl.timeline.outputs import DEFAULT_KEY, is_render

    _, v1, delivered = first
    rc, again = _run([*env["args"][2:], "--timeline", str(v1 / "edit.otio")], capsys)
    assert rc == 0 and (again["counts"]["rendered"], again["counts"]["reused"]) == (0, 2)  # the first run's keys
    assert any("point at lipsyncctl renders (2 of de)" in w for w in again["warnings"]), again["warnings"]
    version = Path(again["languages"]["de"]["folder"])
    for item in otio.adapters.read_from_file(str(version / "edit.otio")).find_clips():
        if item.name in ("A1", "A2"):
            original = Path(item.media_references()[DEFAULT_KEY].target_url)
            assert original.name == "cam_a.mkv" and "v001" not in original.parts
    assert is_render(next((v1 / "shots").iterdir())) and not is_render(env["root"] / "cam_a.mkv")
    assert is_render(next((env["out"] / ".lipsyncctl" / "renders").iterdir()))
    assert _hashes(v1) == delivered


def test_another_edit_into_the_same_output_is_said(env, first, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    # reel 2 into reel 1's -o became reel 1's next version, unsaid: `prune --keep 1` then removed reel 1's deliveries
    import shutil

    other = shutil.copy(env["args"][1], env["root"] / "reel2.otio")
    rc, doc = _run(["--timeline", str(other), *env["args"][2:], "--dry-run"], capsys)
    assert rc == 0
    assert any("was made from edit.otio, this run's edit is reel2.otio" in w for w in doc["warnings"]), doc["warnings"]
    rc, doc = _run([*env["args"], "--dry-run"], capsys)
    assert rc == 0 and not any("was made from" in w for w in doc["warnings"])


def test_a_rerun_from_another_folder_or_by_a_relative_path_reuses_the_renders(  # type: ignore[no-untyped-def]
        env, first, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # the job records held each render's path as the run's working folder named it (`out/.lipsyncctl/...`): the
    # same command from another folder (a farm's job, a script's cd), or OUT by its absolute path, rendered every
    # shot again
    root = env["root"]

    def args(here: Path) -> list[str]:
        return ["--timeline", os.path.relpath(env["args"][1], here), "--audio", env["args"][3],
                "-o", os.path.relpath(env["out"], here), *BASE, "--seed", "13"]

    monkeypatch.chdir(root)
    rc, made = _run(args(root), capsys)  # a new seed: renders both, recorded from `out`
    assert rc == 0 and made["counts"]["rendered"] == 2
    for folder, given in ((root.parent, args(root.parent)), (root, [*env["args"], "--seed", "13"])):
        monkeypatch.chdir(folder)
        rc, again = _run(given, capsys)
        assert rc == 0 and (again["counts"]["rendered"], again["counts"]["reused"]) == (0, 2), folder
    records = [json.loads(p.read_text()) for p in (env["out"] / ".lipsyncctl" / "jobs").glob("*.json")]
    assert all(r["output"].startswith(".lipsyncctl/renders/") and r["output_in_out"] for r in records)


def test_interrupted_run_keeps_the_last_delivery(env, first, capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Another seed re-renders both shots: Ctrl-C in the second one's render, after the first finished."""
    from lipsyncctl.pipeline import clip as clip_module

    _, v1, delivered = first
    lang = env["out"] / "de"
    versions = {p.name: _hashes(p) for p in lang.iterdir() if p.is_dir() and not p.is_symlink()}
    current = os.readlink(lang / "current")
    calls = {"n": 0}
    real = clip_module.sync_clip

    def second_interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_module, "sync_clip", second_interrupted)
    rc, _ = _run([*env["args"], "--seed", "7", "--conform"], capsys)
    assert rc == 130 and calls["n"] == 2
    # every earlier delivery byte for byte, current unchanged, no temporaries anywhere
    assert {p.name: _hashes(p) for p in lang.iterdir() if p.is_dir() and not p.is_symlink()} == versions
    assert os.readlink(lang / "current") == current and not _temporaries(env["out"])
    assert _hashes(v1) == delivered

    # resumed: only the interrupted shot is rendered, into a new complete version
    monkeypatch.setattr(clip_module, "sync_clip", real)
    rc, third = _run([*env["args"], "--seed", "7", "--conform"], capsys)
    assert rc == 0 and third["counts"]["rendered"] == 1 and third["counts"]["reused"] == 1
    version = lang / third["languages"]["de"]["version"]
    report = _check_version(third["languages"]["de"], version)
    assert report["conform"] is not None and os.readlink(lang / "current") == version.name
    assert {p.name: _hashes(p) for p in lang.iterdir() if p.is_dir() and not p.is_symlink() and p != version} \
        == versions and not _temporaries(env["out"])


def test_run_whose_every_render_fails_delivers_no_version(env, first,  # type: ignore[no-untyped-def]
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk (here: every render raises WriteError) fails every shot: no version, ``current`` unchanged,
    and the error says what happened (no --min-sync was given) without a placeholder path."""
    from lipsyncctl.errors import WriteError
    from lipsyncctl.pipeline import clip as clip_module

    lang = env["out"] / "de"
    before = {p.name: _hashes(p) for p in lang.iterdir() if p.is_dir() and not p.is_symlink()}
    current = os.readlink(lang / "current")

    def disk_full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise WriteError("shot.mp4: no space left on device (12 KB free)")

    monkeypatch.setattr(clip_module, "sync_clip", disk_full)
    rc, res, err = _run_err([*env["args"], "--seed", "5"], capsys)
    assert rc == 1 and res["counts"]["failed"] == 2, res
    assert res["languages"]["de"]["version"] is None and "no version delivered" in res["languages"]["de"]["not_delivered"]
    assert {p.name: _hashes(p) for p in lang.iterdir() if p.is_dir() and not p.is_symlink()} == before
    assert os.readlink(lang / "current") == current and not _temporaries(env["out"])
    assert "2 shot(s) failed: de/" in err and "min-sync" not in err and "OUT/LANG" not in err, err
    assert f"still names {current}" in err and "no space left on device" in err, err


def test_run_with_a_failed_shot_delivers_it_reported(env, first,  # type: ignore[no-untyped-def]
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """One shot of two fails: the version is delivered with the failure in its report, and the error's hint
    names that report."""
    from lipsyncctl.errors import WriteError
    from lipsyncctl.pipeline import clip as clip_module

    calls = {"n": 0}
    real = clip_module.sync_clip

    def first_fails(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise WriteError("shot.mp4: no space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_module, "sync_clip", first_fails)
    rc, res, err = _run_err([*env["args"], "--seed", "11"], capsys)
    info = res["languages"]["de"]
    assert rc == 1 and res["counts"]["failed"] == 1 and info["version"] is not None, res
    assert os.readlink(env["out"] / "de" / "current") == info["version"]
    report = json.loads(Path(info["report"]).read_text())
    assert report["files"] == sorted(_hashes(Path(info["folder"]))) and report["summary"]["failed"] == 1 and report["verdict"] == "failed"
    assert "1 shot(s) failed: de/" in err and f"see {info['report_html']}" in err and "min-sync" not in err, err
    assert res["counts"]["to_render"] == 0 and res["counts"]["rendered"] == 1  # what is left: nothing


def test_interrupted_delivery_leaves_no_version(env, first, capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the report is written (everything else of the version is there already)."""
    from lipsyncctl.timeline import report

    lang = env["out"] / "de"
    before = {p.name: _hashes(p) for p in lang.iterdir() if p.is_dir() and not p.is_symlink()}
    current = os.readlink(lang / "current")

    def broken_html(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "render_html", broken_html)
    rc, _ = _run(env["args"], capsys)
    assert rc == 130
    assert {p.name: _hashes(p) for p in lang.iterdir() if p.is_dir() and not p.is_symlink()} == before
    assert os.readlink(lang / "current") == current and not _temporaries(env["out"])


def test_next_version_and_pointer_without_symlinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.timeline import delivery

    assert delivery.next_version(tmp_path / "none") == "v001"
    (tmp_path / "v002").mkdir()
    (tmp_path / ".v007.~abcd-1-12345678").mkdir()  # a version being built by another run
    (tmp_path / "v1").mkdir()
    assert delivery.next_version(tmp_path) == "v008"

    def no_symlinks(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    assert delivery.point_current(tmp_path, "v002") == tmp_path / "LATEST"
    assert delivery.current_version(tmp_path) == "v002"
    assert not list(tmp_path.glob(".current*")) and not list(tmp_path.glob(".LATEST*"))


def test_the_languages_of_a_run_are_delivered_together(tmp_path: Path) -> None:
    """An interrupt while the second language was written left the first one delivered, its `current` moved, with
    exit 130 (a farm treating 130 as "nothing changed" was wrong about it): every language's version is renamed into
    place at the end, or none."""
    from lipsyncctl.timeline import delivery

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with delivery.delivering() as together:
            with delivery.building(out / "de", together=together) as de:
                (de.tmp / "edit.otio").write_text("de")
            assert not (out / "de" / "v001").exists() and delivery.current_version(out / "de") is None
            with delivery.building(out / "fr", together=together) as fr:
                (fr.tmp / "edit.otio").write_text("fr")
                raise KeyboardInterrupt  # while the second language is written
    assert sorted(p.name for p in out.rglob("*")) == ["de", "fr"]  # no version, no pointer, no temporary
    with delivery.delivering() as together:
        for lang in ("de", "fr"):
            with delivery.building(out / lang, together=together) as d:
                (d.tmp / "edit.otio").write_text(lang)
        assert not any((out / lang / "v001").exists() for lang in ("de", "fr"))
    assert all((out / lang / "current" / "edit.otio").read_text() == lang for lang in ("de", "fr"))
