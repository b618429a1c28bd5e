"""`lipsyncctl sync --batch LIST.csv`: many clips, each with its own dub, the networks loaded once; a failed clip
does not stop the others; a rerun skips the finished ones; a bad list is a usage error naming its line."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl.cli.main import main
from tests.sync_media import decode_rgb, sample_frames, write_clip, write_wav


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two clips of a real face and their dubs under ``tmp_path/in``; the list goes beside them."""
    src = tmp_path / "in"
    src.mkdir()
    frames = sample_frames(6, scale=0.75)
    write_clip(src / "a.mkv", frames, Fraction(25))
    write_clip(src / "b clip.mkv", frames[::-1], Fraction(25))
    write_wav(src / "a.wav", 0.24)
    write_wav(src / "b.wav", 0.08)
    return src


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    rc = main(["--json", "sync", *args])
    out, err = capsys.readouterr()
    return rc, json.loads(out), err


def test_a_batch_loads_the_networks_once_and_goes_on_past_a_failed_clip(
        folder: Path, models_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.media.atomic import human_bytes
    from lipsyncctl.pipeline import networks

    loads = []
    real = networks.load_networks
    monkeypatch.setattr(networks, "load_networks", lambda *a, **k: loads.append(1) or real(*a, **k))
    (folder / "list.csv").write_text(
        "video,audio,output,start,end\n"
        "a.mkv,a.wav,out/a.mkv,,\n"
        "# a comment line\n"
        "missing.mkv,a.wav,out/missing.mkv,,\n"
        '"b clip.mkv",b.wav,out/b.mkv,0.04,\n')
    args = ["--batch", str(folder / "list.csv"), "--preset", "tiny", "--codec", "ffv1", "--length-policy", "cut"]
    rc, res, err = _run(capsys, *args)
    assert rc == 1 and res["ok"] is False and res["counts"] == {"done": 2, "planned": 0, "skipped": 0, "busy": 0, "failed": 1}
    a, missing, b = res["items"]
    assert (a["line"], a["status"], a["frames"]) == (2, "done", 6)
    assert (missing["line"], missing["status"]) == (4, "failed") and "not found" in missing["reason"]
    assert (b["status"], b["frames"], b["start"]) == ("done", 2, 0.04)  # 0.08 s of dub from the clip's 2nd frame
    assert len(decode_rgb(folder / "out" / "a.mkv")) == 6 and len(decode_rgb(folder / "out" / "b.mkv")) == 2
    assert (folder / "out" / "a.run.yaml").is_file() and not (folder / "out" / "missing.mkv").exists()
    assert len(loads) == 1  # once for the batch, not once a clip
    assert "1 of 3 clip(s) failed: line 4" in err and "[3/3] b clip.mkv" in err
    assert "[1/3] a.mkv: rendering a.mkv -> " in err and "a.mkv: [1/3]" not in err  # (its prefix was doubled)
    assert "warning: line 5: the audio (0.080 s) is shorter" in err  # a row's warning names its row
    assert err.count("NOT lip-synced") == 1  # one for the whole batch
    # a rerun does only what is left; -y redoes the rest too; what a killed re-render of a row left beside its
    # output (a dead pid's hidden temporary, its lock file) goes with the rerun that skips the row (it went to delivery)
    from lipsyncctl.media.atomic import host_tag

    dead = folder / "out" / f".a.~{host_tag()}-999999999-deadbeef.part.mkv"
    dead.write_bytes(b"half a render")
    (folder / "out" / ".a.run.yaml.lock").write_text("")
    rc, res, _ = _run(capsys, *args)
    assert rc == 1 and res["counts"] == {"done": 0, "planned": 0, "skipped": 2, "busy": 0, "failed": 1}
    assert not dead.exists() and not (folder / "out" / ".a.run.yaml.lock").exists()
    assert res["items"][0]["reason"] == "the output exists"  # made by these inputs and settings
    # other settings: still skipped, and said (the output's run.yaml names what made it)
    rc, res, err = _run(capsys, *args, "--steps", "3")
    assert rc == 1 and res["counts"]["skipped"] == 2
    assert res["items"][0]["reason"] == ("the output exists, made with other inputs or settings: inference.steps 2 "
                                         "(this run: 3)") and "-y" in res["items"][0]["hint"]
    assert "skipped (the output exists, made with other inputs or settings: inference.steps 2" in err
    (folder / "other.csv").write_text("video,audio,output\na.mkv,b.wav,out/a.mkv\n")  # another dub, same output
    rc, res, _ = _run(capsys, "--batch", str(folder / "other.csv"), *args[2:])
    assert rc == 0 and res["items"][0]["reason"] == (f"the output exists, made with other inputs or settings: audio "
                                                     f"{folder / 'a.wav'} (this row: {folder / 'b.wav'})")
    # the same dub copied again (another mtime, the same bytes): the same input
    (folder / "a.wav").write_bytes((folder / "a.wav").read_bytes())
    rc, res, _ = _run(capsys, *args)
    assert res["items"][0]["reason"] == "the output exists"
    # another dub delivered under its name: said (it was "the output exists", the old take kept in silence)
    (folder / "a.wav").write_bytes((folder / "b.wav").read_bytes())
    rc, res, _ = _run(capsys, *args)
    assert res["items"][0]["reason"] == (f"the output exists, made with other inputs or settings: audio "
                                         f"{folder / 'a.wav'} changed since (another file under its name)")
    rc, res, _ = _run(capsys, *args, "-y")
    assert rc == 1 and res["counts"] == {"done": 2, "planned": 0, "skipped": 0, "busy": 0, "failed": 1}
    # an output emptied or cut short after its render (a copy that failed, a full disk) is no finished dub: the row
    # fails, saying so (it was skipped as "the output exists", exit 0 where it was the only row); a touch is not a change
    import os

    os.utime(folder / "out" / "b.mkv")
    rc, res, _ = _run(capsys, *args)
    assert res["counts"] == {"done": 0, "planned": 0, "skipped": 2, "busy": 0, "failed": 1}
    whole = (folder / "out" / "a.mkv").stat().st_size
    (folder / "out" / "a.mkv").write_bytes(b"")
    rc, res, err = _run(capsys, *args)
    assert rc == 1 and res["counts"] == {"done": 0, "planned": 0, "skipped": 1, "busy": 0, "failed": 2}
    assert res["items"][0]["status"] == "failed" and res["items"][0]["reason"] == (
        f"the output is not the file its render wrote (0 B; the render wrote {human_bytes(whole)}): emptied, cut "
        "short or replaced since") and "-y" in res["items"][0]["hint"]
    assert "a.mkv: failed (the output is not the file its render wrote" in err
    rc, res, _ = _run(capsys, *args, "-y")
    assert res["items"][0]["status"] == "done" and (folder / "out" / "a.mkv").stat().st_size == whole


def test_a_dry_run_probes_the_inputs_and_writes_nothing(folder: Path, models_dir: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.pipeline import networks

    monkeypatch.setattr(networks, "load_networks", lambda *a, **k: pytest.fail("a dry run loads no networks"))
    (folder / "done.mkv").write_bytes(b"an earlier output")
    (folder / "list.csv").write_text("video,audio,output,face_at,start\na.mkv,a.wav,out/a.mkv,,\na.wav,a.wav,out/x.mkv,,\n"
                                     "a.mkv,b.wav,done.mkv,,\na.mkv,a.wav,out/far.mkv,\"99999,5\",\n"
                                     "a.mkv,a.wav,out/late.mkv,,9\n")
    rc, res, _ = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", "--dry-run")
    assert rc == 1 and [i["status"] for i in res["items"]] == ["planned", "failed", "skipped", "failed", "failed"]
    assert "no video stream" in res["items"][1]["reason"]
    assert "--face-at 99999,5 is outside the" in res["items"][3]["reason"]  # as the run would say at once
    assert "select no frames" in res["items"][4]["reason"]  # a start past the clip's end (it was "planned")
    assert not (folder / "out").exists() and (folder / "done.mkv").read_bytes() == b"an earlier output"


@pytest.mark.parametrize(("text", "message"), [
    ("video,audio\na.mkv,a.wav\n", "no output column (line 1)"),
    ("video,audio,output,speed\n", "unknown column 'speed'"),
    ("video,audio,outpt\n", "unknown column 'outpt' (did you mean 'output'?)"),
    ("video,audio,output,Video\n", "column 'video' twice"),
    ("video,audio,output\n", "no clips under the header"),
    ("video,audio,output\na.mkv,,o.mkv\n", "line 2: no audio"),
    ("video,audio,output,start,end\na.mkv,a.wav,o.mkv,2,1\n", "line 2: end 1 is not after start 2"),
    ("video,audio,output,start\na.mkv,a.wav,o.mkv,soon\n", "line 2: start 'soon' is not a number"),
    ("video,audio,output\na.mkv,a.wav,o.mkv\nb.mkv,b.wav,./o.mkv\n", "lines 2 and 3 write the same output"),
    # a proxy and a master of one shot: they share o.run.yaml, and the second failed after the first rendered
    ("video,audio,output\na.mkv,a.wav,o.mp4\nb.mkv,b.wav,o.mkv\n", "which share one record (o.run.yaml)"),
    ("video,audio,output\na.mkv,a.wav,o.mkv\no.mkv,b.wav,p.mkv\n", "o.mkv, which line 3 reads as its video"),
    ("video,audio,output\na.mkv,a.wav,a.mkv\n", "a.mkv, which line 2 reads as its video"),
])
def test_a_bad_list_is_a_usage_error_naming_its_line(folder: Path, text: str, message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "list.csv").write_text(text)
    rc, res, err = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny")
    assert rc == 2 and message in res["error"]["message"], err
    assert not (folder / "o.mkv").exists()


def test_a_missing_list_is_exit_5_like_a_missing_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, res, _ = _run(capsys, "--batch", str(tmp_path / "none.csv"), "--preset", "tiny")
    assert rc == 5 and "no such file" in res["error"]["message"]
    (tmp_path / "bin.csv").write_bytes(b"video,audio,output\n\xff\xfe\x00bad\n")
    rc, res, _ = _run(capsys, "--batch", str(tmp_path / "bin.csv"), "--preset", "tiny")
    assert rc == 2 and "not UTF-8 text (line 2: byte 0xff" in res["error"]["message"]


def test_a_list_in_utf_16_is_read_and_one_in_a_code_page_names_its_line(folder: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # Excel's "Unicode text" (UTF-16 with its mark) failed as "not a CSV list: 'utf-8' codec can't decode byte 0xff
    # in position 0", and its "CSV" in Windows-1252 with a byte offset
    text = "video,audio,output\na.mkv,a.wav,out/é.mkv\n"
    (folder / "u16.csv").write_bytes(text.encode("utf-16"))
    rc, res, err = _run(capsys, "--batch", str(folder / "u16.csv"), "--preset", "tiny", "--dry-run")
    assert rc == 0 and [Path(i["output"]).name for i in res["items"]] == ["é.mkv"], err
    (folder / "cut.csv").write_bytes(text.encode("utf-16") + b"\x00")  # cut short: said as UTF-16, its line
    rc, res, _ = _run(capsys, "--batch", str(folder / "cut.csv"), "--preset", "tiny")
    assert rc == 2 and "not UTF-16 text (line 3: " in res["error"]["message"]
    (folder / "cp.csv").write_bytes(text.encode("cp1252"))
    rc, res, _ = _run(capsys, "--batch", str(folder / "cp.csv"), "--preset", "tiny")
    assert rc == 2 and "not UTF-8 text (line 2: byte 0xe9; a spreadsheet's 'CSV' in the system's code page" \
        in res["error"]["message"] and "CSV UTF-8" in res["error"]["hint"]


def test_per_clip_flags_are_columns_of_the_list(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "list.csv").write_text("video,audio,output\na.mkv,a.wav,o.mkv\n")
    for extra in (["--video", "a.mkv"], ["--start", "1"], ["-o", "x.mkv"], ["--timeline", "e.otio"]):
        rc, res, _ = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", *extra)
        assert rc == 2 and "not with --batch" in res["error"]["message"], extra
        assert ("columns of the list" in res["error"]["hint"]) == (extra[0] != "--timeline"), extra
    # the timeline's own flags are not columns: their hint says whose they are
    for extra, hint in ((["--handles", "2"], "--handles is a --timeline option"), (["--timeline", "e.otio"], "two modes"),
                        (["--min-sync", "3"], "lipsyncctl score OUT... --min-sync N")):
        rc, res, _ = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", *extra)
        assert rc == 2 and hint in res["error"]["hint"], (extra, res)


def test_the_python_api(folder: Path, models_dir: Path) -> None:
    """The README's Python API line: ``lipsyncctl.sync_batch("dubs.csv", config)``."""
    import lipsyncctl

    (folder / "list.csv").write_text("video,audio,output\na.mkv,a.wav,out/a.mkv\n")
    config = lipsyncctl.resolve_config("tiny", ["output.codec=ffv1"])
    result = lipsyncctl.sync_batch(folder / "list.csv", config)
    assert result.ok and [i.status for i in result.items] == ["done"] and result.items[0].frames == 6


_THREE = ("video,audio,output\n"
          "a.mkv,a.wav,out/a.mkv\n"
          "missing.mkv,a.wav,out/missing.mkv\n"
          '"b clip.mkv",b.wav,out/b.mkv\n')


def test_two_worker_processes_render_what_one_process_renders(folder: Path, models_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "list.csv").write_text(_THREE)
    args = ["--batch", str(folder / "list.csv"), "--preset", "tiny", "--codec", "ffv1", "--length-policy", "cut"]
    rc, res, err = _run(capsys, *args, "--jobs", "2")
    assert rc == 1 and res["counts"] == {"done": 2, "planned": 0, "skipped": 0, "busy": 0, "failed": 1}, err
    assert [i["status"] for i in res["items"]] == ["done", "failed", "done"]  # the list's order, not the finish order
    assert "starting 2 worker processes" in err and "[3/3] b clip.mkv -> " in err
    assert "not found" in res["items"][1]["reason"]
    pooled = {n: decode_rgb(folder / "out" / n) for n in ("a.mkv", "b.mkv")}
    rc, res, _ = _run(capsys, *args, "-y")  # the same rows in this process
    assert res["counts"]["done"] == 2
    for name, frames in pooled.items():  # a worker has 1 torch thread of the 2 cores: a rare pixel moves by one level
        here = decode_rgb(folder / "out" / name)  # (README, reproducible renders)
        assert len(here) == len(frames) and all(np.abs(x.astype(int) - y).max() <= 1 for x, y in zip(frames, here, strict=True))
    # a rerun whose rows left to do all miss a file starts no worker (it took 9.5 s to say so, not 2)
    rc, res, err = _run(capsys, *args, "--jobs", "2")
    assert rc == 1 and res["counts"] == {"done": 0, "planned": 0, "skipped": 2, "busy": 0, "failed": 1}, err
    assert "starting 2 worker processes" not in err and "[2/3] missing.mkv -> " in err and "not found" in err


def test_shards_split_the_rows_between_array_jobs(folder: Path, models_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "list.csv").write_text(_THREE)
    lines = []
    for i in range(2):
        rc, res, _ = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", "--dry-run",
                          "--shard", f"{i}/2")
        assert res["shard"] == f"{i}/2"  # as --shard is written, and as timeline and curate say it
        lines.append([item["line"] for item in res["items"]])
    assert sorted(lines[0] + lines[1]) == [2, 3, 4] and not set(lines[0]) & set(lines[1])
    rc, res, _ = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", "--shard", "2/2")
    assert rc == 2 and "--shard" in res["error"]["message"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_missing_model_stops_the_batch_before_any_clip(folder: Path, models_dir: Path, jobs: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "list.csv").write_text(_THREE)
    rc, res, err = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", "--jobs", jobs,
                        "--set", f"model.checkpoint={folder / 'none.pt'}")
    assert rc == 4 and "none.pt" in res["error"]["message"], err
    assert "starting 2 worker" not in err and not (folder / "out").exists()


def test_an_interrupt_keeps_the_finished_clips_and_a_rerun_does_the_rest(
        folder: Path, models_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.pipeline import clip

    real = clip.sync_clip

    def interrupted_on_b(video: Path, *args: object, **kwargs: object) -> object:
        if video.name.startswith("b"):
            raise KeyboardInterrupt
        return real(video, *args, **kwargs)

    monkeypatch.setattr(clip, "sync_clip", interrupted_on_b)
    (folder / "list.csv").write_text(_THREE)
    args = ["--batch", str(folder / "list.csv"), "--preset", "tiny", "--codec", "ffv1", "--length-policy", "cut"]
    rc, res, err = _run(capsys, *args)
    assert rc == 130 and "error: interrupted: 1 of 2 clip(s) to render finished (kept)" in err  # (the missing one
    # failed before any render)
    # --json: the rows so far beside the error (it was the error alone: a script could not tell what finished)
    assert res["ok"] is False and res["error"]["exit_code"] == 130
    assert res["counts"]["done"] == 1 and [i["status"] for i in res["items"]] == ["done", "failed"]
    assert (folder / "out" / "a.mkv").is_file() and not (folder / "out" / "b.mkv").exists()
    monkeypatch.setattr(clip, "sync_clip", real)
    rc, res, _ = _run(capsys, *args)
    assert [i["status"] for i in res["items"]] == ["skipped", "failed", "done"]
    monkeypatch.setattr(clip, "sync_clip", interrupted_on_b)  # a row skipped as done is counted apart
    for made in (folder / "out").glob("b.*"):
        made.unlink()
    rc, res, err = _run(capsys, *args)
    assert rc == 130 and "0 of 1 clip(s) to render finished (kept), 1 skipped as done before" in err


def test_an_output_folder_the_batch_made_goes_when_it_is_left_empty(
        folder: Path, models_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """With --jobs 2, two rows of one new folder raced on an interrupt (the row that made it removed it before the
    other's temporaries were gone; the other did not count it as its own): the empty folder stayed. The batch
    removes the output folders it made that are left empty, however it ends."""
    from lipsyncctl.pipeline import clip

    def made_then_interrupted(video: Path, audio: Path, output: Path, *args: object, **kwargs: object) -> object:
        Path(output).parent.mkdir(parents=True, exist_ok=True)  # (as another row's render left it)
        raise KeyboardInterrupt

    monkeypatch.setattr(clip, "sync_clip", made_then_interrupted)
    (folder / "list.csv").write_text("video,audio,output\na.mkv,a.wav,new/deep/a.mkv\n")
    rc, _, _ = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny")
    assert rc == 130 and not (folder / "new").exists()


@pytest.mark.slow  # opt-in (-m slow): a local Ray instance takes ~20 s to start on 2 cores
def test_the_rows_on_a_local_ray_instance(folder: Path, models_dir: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    (folder / "list.csv").write_text(_THREE)
    try:
        rc, res, err = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", "--codec", "ffv1",
                            "--length-policy", "cut", "--backend", "ray")
    finally:
        ray.shutdown()
    assert rc == 1 and [i["status"] for i in res["items"]] == ["done", "failed", "done"], err
    assert len(decode_rgb(folder / "out" / "a.mkv")) == 6 and len(decode_rgb(folder / "out" / "b.mkv")) == 2


@pytest.mark.parametrize("text", [
    'video,audio,output,start,end\na.mkv,a.wav,out/a.mkv,0.5,\n"b, take 2.mkv",b.wav,out/b.mkv,,12\n',
    "# from a spreadsheet set to German\nVideo;Audio;Output;Start;End\na.mkv;a.wav;out/a.mkv;0,5;\n"
    "b, take 2.mkv;b.wav;out/b.mkv;;12\n",
    "video\taudio\toutput\tstart\tend\na.mkv\ta.wav\tout/a.mkv\t0.5\t\nb, take 2.mkv\tb.wav\tout/b.mkv\t\t12\n",
])
def test_commas_semicolons_or_tabs_separate_the_cells(tmp_path: Path, text: str) -> None:
    """A spreadsheet where the decimal mark is a comma exports ``;`` between cells and ``0,5`` for a half second."""
    from lipsyncctl.pipeline.batch import read_batch

    (tmp_path / "list.csv").write_text(text, encoding="utf-8")
    rows = read_batch(tmp_path / "list.csv")
    assert [(r.video.name, r.audio.name, r.output.name, r.start, r.end) for r in rows] == [
        ("a.mkv", "a.wav", "a.mkv", 0.5, None), ("b, take 2.mkv", "b.wav", "b.mkv", None, 12.0)]


def test_a_rows_face_and_set_columns_apply_to_that_row_only(folder: Path, models_dir: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    (folder / "list.csv").write_text('video,audio,output,face,face_at,set\n'
                                     'a.mkv,a.wav,out/a.mkv,0,,inference.steps=2 faces.blend=multiband\n'
                                     'a.mkv,a.wav,out/b.mkv,,"200, 300",\n'
                                     'a.mkv,a.wav,out/c.mkv,,,\n')
    rc, res, err = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", "--codec", "ffv1",
                        "--length-policy", "cut")
    assert rc == 0 and res["counts"]["done"] == 3, err
    assert res["items"][0]["options"] == {"inference.steps": 2, "faces.blend": "multiband", "faces.select": "id",
                                          "faces.track_id": 0}
    run = {n: yaml.safe_load((folder / "out" / f"{n}.run.yaml").read_text())["config"] for n in "abc"}
    assert (run["a"]["inference"]["steps"], run["a"]["faces"]["blend"], run["a"]["faces"]["select"]) == (
        2, "multiband", "id")
    assert (run["b"]["faces"]["select"], run["b"]["faces"]["point"]) == ("point", [200.0, 300.0])
    assert (run["c"]["inference"]["steps"], run["c"]["faces"]["select"]) == (
        run["b"]["inference"]["steps"], "largest")  # the run's own settings


@pytest.mark.parametrize(("cells", "code", "message"), [
    ("0,1 2,", 2, "line 2: give either face or face_at"),
    ("one,,", 2, "line 2: face 'one' is not a face track id"),
    (',"1,2,3",', 2, "line 2: face_at '1,2,3' is not X,Y"),
    (",,inference.steps=0", 3, "line 2"),
    (",,no.such=1", 3, "line 2"),
    (",,inference.steps", 3, "line 2: set: --set 'inference.steps': expected KEY=VALUE"),  # (named no line)
])
def test_a_bad_face_or_set_cell_stops_the_batch_before_any_work(folder: Path, cells: str, code: int, message: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "list.csv").write_text(f"video,audio,output,face,face_at,set\na.mkv,a.wav,out/a.mkv,{cells}\n")
    rc, res, err = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny")
    assert rc == code and message in res["error"]["message"], err
    assert not (folder / "out").exists()


def test_a_list_on_standard_input(folder: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``generate-list | lipsyncctl sync --batch -``: paths relative to the working folder."""
    import io

    monkeypatch.chdir(folder)
    monkeypatch.setattr("sys.stdin", io.StringIO("video,audio,output\na.mkv,a.wav,out/a.mkv\nnone.mkv,a.wav,o.mkv\n"))
    rc, res, _ = _run(capsys, "--batch", "-", "--preset", "tiny", "--dry-run")
    assert rc == 1 and res["batch"] == "-" and [i["status"] for i in res["items"]] == ["planned", "failed"]
    assert Path(res["items"][0]["video"]) == folder / "a.mkv" and not (folder / "out").exists()
    # its bytes decoded as a file's: UTF-16 with its mark (Excel's "Unicode text") was read in the locale's
    # encoding, "unknown column '\x00a\x00u...'"
    wide = io.TextIOWrapper(io.BytesIO("video\taudio\toutput\na.mkv\ta.wav\tout/a.mkv\n".encode("utf-16")))
    monkeypatch.setattr("sys.stdin", wide)
    rc, res, _ = _run(capsys, "--batch", "-", "--preset", "tiny", "--dry-run")
    assert rc == 0 and [i["status"] for i in res["items"]] == ["planned"]
    monkeypatch.setattr("sys.stdin", None)  # `<&-`: an internal error (reading None)
    rc, res, _ = _run(capsys, "--batch", "-", "--preset", "tiny", "--dry-run")
    assert rc == 2 and res["error"]["message"] == "--batch -: standard input is closed"


def test_a_missing_device_stops_the_batch_before_any_row(folder: Path, models_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """--gpus on a machine without them: exit 4 before a row is looked at (it stopped at the first render)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has the GPU the test asks for")
    (folder / "list.csv").write_text(_THREE)
    rc, res, err = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", "--gpus", "0")
    assert rc == 4 and res["error"]["message"] == "--gpus 0: this machine has 0 CUDA GPU(s) visible", err
    assert "[1/3]" not in err and not (folder / "out").exists()
    # a dry run (perhaps on another machine than the run's) plans the rows (exit 1: row 2's file is missing)
    assert _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", "--gpus", "0", "--dry-run")[0] == 1


def test_an_output_that_cannot_hold_the_codec_stops_the_batch_before_any_clip(folder: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "list.csv").write_text("video,audio,output,set\na.mkv,a.wav,out/a.mkv,\n"
                                     "a.mkv,a.wav,out/b.mp4,output.codec=prores\n")
    rc, res, err = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny")
    assert rc == 3 and "line 3: " in res["error"]["message"] and "'.mp4'" in res["error"]["message"], err
    assert not (folder / "out").exists()  # not even the first row, which could have been written


def test_a_recorded_input_is_the_same_file_from_any_working_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A row whose output's run.yaml names its inputs from another working folder (relative there), or by their
    absolute paths (as sync records them now), is the same row: "the output exists", not "made with other inputs"."""
    import yaml

    from lipsyncctl import config as cfg
    from lipsyncctl.pipeline.batch import BatchRow, _skip_reason

    config = cfg.resolve("tiny")
    (tmp_path / "b dir").mkdir()
    for name in ("clip é.mp4", "dub.wav", "other.wav"):
        (tmp_path / "b dir" / name).write_bytes(b"media")
    out = tmp_path / "b dir" / "out.mp4"
    out.write_bytes(b"an output")

    def recorded(video: str, audio: str) -> tuple[str, str]:
        (tmp_path / "b dir" / "out.run.yaml").write_text(yaml.safe_dump(
            {"inputs": {"video": video, "audio": audio}, "config": config.to_dict()}), encoding="utf-8")
        row = BatchRow(2, Path("b dir/clip é.mp4"), Path("b dir/dub.wav"), Path("b dir/out.mp4"))
        return _skip_reason(row, config)[1:]

    monkeypatch.chdir(tmp_path)
    assert recorded(str(tmp_path / "b dir" / "clip é.mp4"), str(tmp_path / "b dir" / "dub.wav"))[0] == \
        "the output exists"
    other = str(tmp_path / "b dir" / "other.wav")
    assert recorded(str(tmp_path / "b dir" / "clip é.mp4"), other)[0] == \
        f"the output exists, made with other inputs or settings: audio {other} (this row: b dir/dub.wav)"
    monkeypatch.chdir(tmp_path / "b dir")  # the same files named from the folder a run started in
    row = BatchRow(2, Path("clip é.mp4"), Path("dub.wav"), Path("out.mp4"))
    assert _skip_reason(row, config)[1] == "the output exists, made with other inputs or settings: audio " \
        f"{other} (this row: dub.wav)"
    recorded(str(tmp_path / "b dir" / "clip é.mp4"), str(tmp_path / "b dir" / "dub.wav"))
    assert _skip_reason(row, config)[:2] == ("skipped", "the output exists")


def test_settings_that_do_not_change_the_output_are_not_other_settings(tmp_path: Path) -> None:
    """An output made before a default that does not touch it changed (sync.sequence_fps 25 -> auto for a video
    input), or on another device, or with another prep/curate section, is the same output; the steps are not."""
    import yaml

    from lipsyncctl import config as cfg
    from lipsyncctl.pipeline.batch import BatchRow, _skip_reason

    config = cfg.resolve("tiny")
    for name in ("v.mp4", "a.wav", "o.mp4"):
        (tmp_path / name).write_bytes(b"x")
    row = BatchRow(2, tmp_path / "v.mp4", tmp_path / "a.wav", tmp_path / "o.mp4")

    def made_with(*sets: str) -> str:
        made = cfg.resolve("tiny", list(sets)).to_dict()
        (tmp_path / "o.run.yaml").write_text(yaml.safe_dump(
            {"inputs": {"video": str(row.video), "audio": str(row.audio)}, "config": made}), encoding="utf-8")
        return _skip_reason(row, config)[1]

    assert made_with("sync.sequence_fps=25", "inference.device=cpu", "prep.crf=30", "curate.min_seconds=3") == \
        "the output exists"
    assert made_with("inference.steps=3") == \
        "the output exists, made with other inputs or settings: inference.steps 3 (this run: 2)"
    # a setting that came later (the mouth mask): an output of before, whose run.yaml lacks it, was made at its
    # default; this run's other mask is said (it said only "the output exists")
    before = cfg.resolve("tiny").to_dict()
    del before["model"]["mask"]
    (tmp_path / "o.run.yaml").write_text(yaml.safe_dump(
        {"inputs": {"video": str(row.video), "audio": str(row.audio)}, "config": before}), encoding="utf-8")
    assert _skip_reason(row, config)[1] == "the output exists"
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"png")
    assert _skip_reason(row, cfg.resolve("tiny", [f"model.mask={mine}"]))[1] == \
        f"the output exists, made with other inputs or settings: model.mask 'mask.png' (this run: '{mine}')"
    made_with(f"model.mask={mine}")  # the other way round: made with a mask, rerun at the default
    assert _skip_reason(row, config)[1] == \
        f"the output exists, made with other inputs or settings: model.mask '{mine}' (this run: 'mask.png')"
    (tmp_path / "o.run.yaml").unlink()  # a file at the output that no render made (a foreign or truncated one)
    assert _skip_reason(row, config) == ("skipped", "the output exists, without the o.run.yaml record a render writes beside "
                                         "it (not made by lipsyncctl?)",
                                         "check it, or pass --overwrite/-y to render it")


def test_rows_another_run_has_are_busy_or_skipped_not_failed(folder: Path, models_dir: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two overlapping runs of one list (a rerun started early, a shard on the same folder): a row the other run made
    meanwhile (its take in place at the end) is skipped, saying so; one it is still rendering (its lock) is busy, and
    the run ends busy (exit 6, "ok": false): its output is not there yet (it was skipped, exit 0, and a script went on
    to deliver missing files). Both runs exited 1 calling those rows failed before."""
    from lipsyncctl.errors import BusyError
    from lipsyncctl.media.atomic import taken_error
    from lipsyncctl.pipeline import clip

    real_sync_clip = clip.sync_clip

    def other_run(video: Path, audio: Path, output: Path, *args: object, **kwargs: object) -> object:
        if video.name.startswith("a"):
            raise BusyError(f"{output}: another run (pid 4242) is writing this output")
        raise taken_error(output)

    monkeypatch.setattr(clip, "sync_clip", other_run)
    (folder / "list.csv").write_text("video,audio,output\na.mkv,a.wav,out/a.mkv\n\"b clip.mkv\",b.wav,out/b.mkv\n")
    rc, res, err = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny")
    assert rc == 6 and res["ok"] is False, err
    assert res["counts"] == {"done": 0, "planned": 0, "skipped": 1, "busy": 1, "failed": 0}, err
    assert res["items"][0]["reason"].startswith("another run is rendering it now (")
    assert "pid 4242" in res["items"][0]["reason"]  # who holds it
    assert res["items"][1]["reason"] == "another run made it meanwhile (left as it is)"
    assert "busy: another run is rendering it now" in err and "failed:" not in err  # each row's line says so
    assert "1 of 2 clip(s) another run is still rendering: line 2" in err
    # made before this row's turn, after the rows were listed: skipped as an output there (it failed: exists)
    from lipsyncctl import config as cfg
    from lipsyncctl.pipeline.batch import BatchTask, execute_row, read_batch

    monkeypatch.setattr(clip, "sync_clip", lambda video, audio, output, *a, **k: pytest.fail("rendered"))
    row = read_batch(folder / "list.csv")[0]
    row.output.parent.mkdir(exist_ok=True)
    row.output.write_bytes(b"the other run's take")
    outcome = execute_row(BatchTask(row, cfg.resolve("tiny", []), False, 1, 2), {}, None)
    assert outcome.item.status == "skipped" and outcome.item.reason.startswith("the output exists")
    # made while this row's networks loaded (after the look above): skipped too (it failed: "exists; refusing")
    from lipsyncctl.pipeline import networks

    row.output.unlink()
    monkeypatch.setattr(clip, "sync_clip", real_sync_clip)
    monkeypatch.setattr(networks, "cached_networks", lambda cache, config: row.output.write_bytes(b"its take"))
    outcome = execute_row(BatchTask(row, cfg.resolve("tiny", []), False, 1, 2), {}, None)
    assert outcome.item.status == "skipped" and outcome.item.reason.startswith("the output exists"), outcome.item
    assert row.output.read_bytes() == b"its take"
    # its matte alone (a run killed between the two renames) is no output made: the row fails, naming it
    import dataclasses

    from lipsyncctl.pipeline.output import matte_path

    row.output.unlink()
    matted = cfg.resolve("tiny", ["output.matte=true", "output.codec=ffv1"])
    row = dataclasses.replace(row, output=row.output.with_suffix(".mkv"))
    matte_path(row.output).write_bytes(b"a matte")
    monkeypatch.setattr(networks, "cached_networks", lambda cache, config: None)
    outcome = execute_row(BatchTask(row, matted, False, 1, 2), {}, None)
    assert outcome.item.status == "failed" and "exists; refusing to replace it" in outcome.item.reason, outcome.item


def test_a_row_whose_worker_died_leaves_no_partial_output(tmp_path: Path) -> None:
    """A worker killed from outside (the OOM killer) left its row's hidden partial output until a later run; the
    parent, which reports the row lost, removes it (the temporaries of a pid that is gone), and nothing else."""
    import subprocess
    import sys

    from lipsyncctl.pipeline.batch import BatchRow, BatchTask, _lost_row
    from tests.conftest import REPO

    out = tmp_path / "out" / "x2.mp4"
    out.parent.mkdir()
    code = (f"from lipsyncctl.media.atomic import temp_path; p = temp_path({str(out)!r}); p.write_text('partial'); "
            "print(p)")
    partial = Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  cwd=REPO).stdout.strip())  # written by a process that is gone now
    other = out.parent / "x3.mp4"
    other.write_text("a finished render of another row")
    lock = out.parent / ".x2.run.yaml.lock"  # the dead worker's lock file: released by the kernel, left behind
    lock.write_text("{}")
    assert partial.exists() and partial.name.startswith(".")
    task = BatchTask(BatchRow(3, tmp_path / "v.mp4", tmp_path / "a.wav", out), None, False, 3, 3)  # type: ignore[arg-type]
    outcome = _lost_row(task, "its worker process died running it")
    assert outcome.item.status == "failed" and not partial.exists() and not lock.exists() and other.exists()
    from lipsyncctl.runner.lock import clear_output_lock, output_lock

    with output_lock(out.parent / "x3.run.yaml"):  # a live run's lock stays
        assert not clear_output_lock(out.parent / "x3.run.yaml") and (out.parent / ".x3.run.yaml.lock").exists()


def test_a_row_whose_output_cannot_be_written_fails_before_any_work(folder: Path, models_dir: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An output under a read-only mount (here: a file where its folder should be) failed as "an internal error:
    please report it", after its networks had loaded, and the dry run planned it. It fails at once, as `sync -o` does,
    with the path and permissions hint, in the dry run too."""
    from lipsyncctl.pipeline import networks

    (folder / "blocker").write_text("a file, not a folder")
    (folder / "list.csv").write_text("video,audio,output\na.mkv,a.wav,blocker/x.mp4\n")
    monkeypatch.setattr(networks, "load_networks", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    for dry in (["--dry-run"], []):
        rc, res, _ = _run(capsys, "--batch", str(folder / "list.csv"), "--preset", "tiny", *dry)
        (item,) = res["items"]
        assert rc == 1 and item["status"] == "failed", res
        assert "a file is in the way of the output folder" in item["reason"]
        assert item["hint"] == "check the path and permissions"
