"""`lipsyncctl sync --timeline` over OTIO bundles (.otioz zip, .otiod folder) built with OTIO's own
adapters, whose media exist only inside the bundle: the plan finds them there, a tiny render (1 step,
a few frames) writes the relinked timeline back as a self-contained bundle of the same kind, the input
bundle is left as it was, and the extracted copy of an .otioz is gone after the run."""

from __future__ import annotations

import hashlib
import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from tests.sync_media import SAMPLE_DUB, decode_rgb, sample_frames, write_clip

FPS = Fraction(25)
BASE = ["--preset", "tiny", "--steps", "1", "--handles", "1", "--set", "faces.detect_every=3"]
#: name -> (record start, frames, source start in file frames, handles rendered) of the lip-synced shots
SHOTS = {"C1": (0, 5, 2, (1, 1)), "C2": (8, 4, 10, (1, 1))}


def _tr(start: int, duration: int):  # type: ignore[no-untyped-def]
    import opentimelineio as otio

    return otio.opentime.TimeRange(otio.opentime.RationalTime(start, 25), otio.opentime.RationalTime(duration, 25))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``edit.otioz`` and ``edit.otiod`` written by OTIO from an edit over two generated clips (absolute
    URLs); the clips are then deleted, so the bundles hold the only copies. Edit at 25 fps, 18 frames:
    C1 (cam 2-7) | gap 3 | C2 (cam 10-14) | OFF (other 0-5, lipsync: false)."""
    import opentimelineio as otio

    root = tmp_path_factory.mktemp("bundle")
    src = root / "src"
    src.mkdir()
    cam = write_clip(src / "cam.mkv", sample_frames(16, scale=0.6), FPS)
    other = write_clip(src / "other.mkv", sample_frames(6, scale=0.6, first=40), FPS)
    tl = otio.schema.Timeline(name="bundled")
    track = otio.schema.Track(name="V1")
    for name, url, start, frames, meta in (("C1", cam, 2, 5, None), ("C2", cam, 10, 4, None),
                                           ("OFF", other, 0, 5, {"lipsync": False})):
        if name == "C2":
            track.append(otio.schema.Gap(source_range=_tr(0, 3)))
        ref = otio.schema.ExternalReference(target_url=url.as_uri(), available_range=_tr(0, 16 if url == cam else 6))
        track.append(otio.schema.Clip(name=name, media_reference=ref, source_range=_tr(start, frames), metadata=meta))
    tl.tracks.append(track)
    for suffix in (".otioz", ".otiod"):
        otio.adapters.write_to_file(tl, str(root / f"edit{suffix}"))
    shutil.rmtree(src)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNCCTL_MODELS", str(root / "models"))
        yield {"root": root, "otioz": root / "edit.otioz", "otiod": root / "edit.otiod", "timeline": tl}


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["--json", "-q", "sync", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def _snapshot(path: Path) -> dict[str, tuple[int, int, str]]:
    """Every file of a bundle (zip or folder): relative name -> (size, mtime, sha256)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): (p.stat().st_size, p.stat().st_mtime_ns,
                                               hashlib.sha256(p.read_bytes()).hexdigest()) for p in files}


def _check_plan(res: dict, bundle: Path) -> None:
    segs = {s["name"]: s for s in res["plan"]["segments"]}
    assert set(segs) == set(SHOTS)
    for name, (rec, frames, src, handles) in SHOTS.items():
        s = segs[name]
        assert (s["record"]["start"], s["record"]["frames"], s["source"]["start"]) == (rec, frames, src)
        assert s["handles"] == list(handles) and s["render"] == {"start": src - handles[0], "frames": frames + 2}
        assert s["url"] == "media/cam.mkv" and Path(s["media"]).name == "cam.mkv"
        if bundle.suffix == ".otiod":
            assert Path(s["media"]) == (bundle / "media" / "cam.mkv").resolve()
        else:  # extracted into a private folder that is removed when the job ends
            assert not Path(s["media"]).exists()
    assert [k["name"] for k in res["plan"]["skipped"]] == ["OFF"]


@pytest.mark.parametrize("kind", ["otioz", "otiod"])
def test_bundle_dry_run_finds_media_inside(bundles, kind: str, capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, res = _run(["--timeline", str(bundles[kind]), "--audio", f"de={SAMPLE_DUB}", "-o", str(out), *BASE,
                    "--dry-run"], capsys)
    assert rc == 0 and res["dry_run"] and res["counts"]["to_render"] == 2, res
    _check_plan(res, bundles[kind])
    assert not out.exists()  # a dry run writes nothing (an .otioz is extracted into the system temp folder)


@pytest.mark.parametrize("kind", ["otioz", pytest.param("otiod", marks=pytest.mark.slow)])  # otiod opt-in: 11 s
def test_bundle_render_writes_a_self_contained_bundle(bundles, kind: str, capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    import opentimelineio as otio

    bundle = bundles[kind]
    before = _snapshot(bundle)
    out = tmp_path / "out"
    args = ["--timeline", str(bundle), "--audio", f"de={SAMPLE_DUB}", "-o", str(out), *BASE, "--codec", "ffv1"]
    rc, res = _run(args, capsys)
    assert rc == 0 and res["counts"]["rendered"] == 2 and res["failed"] == [], res
    _check_plan(res, bundle)
    info = res["languages"]["de"]
    written = out / "de" / "v001" / bundle.name
    assert [Path(p) for p in info["timelines"]] == [out / "de" / "v001" / "edit.otio", written]
    assert not (out / ".lipsyncctl" / "work").exists()  # the extracted .otioz is removed with the work folder
    assert not [p.name for p in (out / "de").iterdir() if p.name.startswith(".")]  # no temporaries left

    # re-read the output bundle with OTIO: same record ranges, every media reference inside the bundle
    if kind == "otioz":
        root = tmp_path / "unzipped"
        root.mkdir()
        relinked = otio.adapters.read_from_file(str(written), extract_to_directory=str(root))
    else:
        root, relinked = written, otio.adapters.read_from_file(str(written))
    clips = {c.name: c for t in relinked.video_tracks() for c in t.find_clips()}
    source = {c.name: c for c in bundles["timeline"].find_clips()}
    assert set(clips) == set(source)
    (dub,) = [t for t in relinked.audio_tracks() if t.name == "Dub de"]  # the dub, embedded too
    assert dub[-1].media_reference.target_url == f"media/{Path(SAMPLE_DUB).name}"
    assert (root / dub[-1].media_reference.target_url).read_bytes() == Path(SAMPLE_DUB).read_bytes()
    shots = {s["name"]: s for s in info["shots"]}
    for name, c in clips.items():
        assert c.range_in_parent() == source[name].range_in_parent() and c.source_range == source[name].source_range
        for ref in c.media_references().values():
            assert ref.target_url.startswith("media/") and (root / ref.target_url).is_file(), ref.target_url
        if name in SHOTS:
            assert c.active_media_reference_key == "lipsync_de"
            assert c.media_references()["DEFAULT_MEDIA"].target_url == "media/cam.mkv"
            rendered = root / c.media_reference.target_url
            assert rendered.name == Path(shots[name]["output"]).name
            assert rendered.read_bytes() == Path(shots[name]["output"]).read_bytes()
            assert len(decode_rgb(rendered)) == shots[name]["rendered_frames"] == SHOTS[name][1] + 2
            assert c.media_reference.available_range.duration.to_frames() == SHOTS[name][1] + 2
        else:
            assert c.active_media_reference_key == "DEFAULT_MEDIA" and c.media_reference.target_url == "media/other.mkv"
    assert _snapshot(bundle) == before  # the input bundle is untouched
    # the report's sources: an .otioz's are named inside it, not linked into the run's extraction (removed)
    report = json.loads((out / "de" / "v001" / "report.json").read_text())
    for shot in (s for s in report["shots"] if s["name"] in SHOTS):
        if kind == "otioz":
            assert shot["source"] == f"{bundle}: media/cam.mkv" and shot["source_href"] is None
        else:
            assert (out / "de" / "v001" / shot["source_href"]).resolve().is_file()
    # the loose .otio beside the bundle: an .otiod's originals are reached from the version folder (they were named
    # relative to the bundle's root: offline there); an .otioz's stay named inside it
    loose = otio.adapters.read_from_file(str(out / "de" / "v001" / "edit.otio"))
    for c in (c for t in loose.video_tracks() for c in t.find_clips()):
        url = c.media_references()["DEFAULT_MEDIA"].target_url
        if kind == "otiod":
            assert (out / "de" / "v001" / url).resolve().is_file(), url
        else:
            assert url.startswith("media/")

    # rerun: the shots are reused (stable media fingerprints, also through an .otioz extraction) and the
    # output bundle is replaced by a new one
    rc, again = _run(args, capsys)
    assert rc == 0 and again["counts"]["rendered"] == 0 and again["counts"]["reused"] == 2, again
    assert written.exists() and not [p.name for p in (out / "de").iterdir() if p.name.startswith(".")]
    assert Path(again["languages"]["de"]["timelines"][1]) == out / "de" / "v002" / bundle.name  # a new version
    assert _snapshot(bundle) == before


def test_output_inside_an_otiod_is_refused(bundles, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    before = _snapshot(bundles["otiod"])
    out = bundles["otiod"] / "out"
    rc, _ = _run(["--timeline", str(bundles["otiod"]), "--audio", f"de={SAMPLE_DUB}", "-o", str(out), *BASE],
                 capsys)
    assert rc == 2 and not out.exists()  # refusing to write into an input: a usage error
    assert _snapshot(bundles["otiod"]) == before


def test_missing_otiod_folder_is_a_media_error(tmp_path: Path) -> None:
    from lipsyncctl.errors import MediaError
    from lipsyncctl.timeline.source import read_timeline

    (tmp_path / "empty.otiod").mkdir()
    with pytest.raises(MediaError, match="content.otio"):
        read_timeline(tmp_path / "empty.otiod")


def test_reading_an_otioz_touches_no_file_outside_its_folder(tmp_path: Path) -> None:
    """A member named ``../../x`` is extracted inside the folder (zipfile cleans its name), but the times were set
    at the raw name: a file outside (an input whose time prep and the render keys read) had its time changed."""
    import os
    import zipfile

    import opentimelineio as otio

    from lipsyncctl.timeline.bundle import extract_otioz

    victim = tmp_path / "victim.txt"
    victim.write_text("user data")
    os.utime(victim, (1_700_000_000, 1_700_000_000))
    bundle = tmp_path / "evil.otioz"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("version.txt", "1.0.0")
        zf.writestr("content.otio", otio.adapters.write_to_string(otio.schema.Timeline(name="x"), "otio_json"))
        zf.writestr(zipfile.ZipInfo("../../victim.txt", date_time=(1999, 1, 1, 0, 0, 0)), "payload")
    into = tmp_path / "a" / "b"
    into.mkdir(parents=True)
    extract_otioz(bundle, into)
    assert victim.stat().st_mtime == 1_700_000_000 and victim.read_text() == "user data"
