"""`lipsyncctl curate --dry-run`: the plan it prints is what the next run computes (stage by stage and span by
span), its decisions and spans are those the stored measurements give with the current thresholds, and it
writes nothing; missing weights are a warning there (the run itself stops with exit 4)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lipsyncctl import config as cfg
from lipsyncctl.cli.main import main
from lipsyncctl.curation.job import CurateResult, run_curation
from tests.curate_media import flat_frames, write_talking_clip

SOURCE_STAGES = ["probe", "normalize", "shots", "segments"]


def _clip(path: Path, frames: int, seed: int) -> Path:
    """A 64x64 25 fps clip with ``frames`` frames and seeded noise bursts as its sound."""
    rng = np.random.default_rng(seed)
    n = frames * 640
    envelope = np.repeat(rng.uniform(0.0, 1.0, n // 1600 + 1), 1600)[:n]
    return write_talking_clip(path, flat_frames(frames), audio=(0.3 * envelope * rng.standard_normal(n)).astype(np.float32))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # type: ignore[type-arg]
    """Two sources (6 s and 12 s: one span, then two of 5 and 7 s) and the features stage as the only clip stage (the
    others are tested on their own; the plan walks whichever stages there are)."""
    from lipsyncctl.curation import clipstages, job

    root = tmp_path_factory.mktemp("dry")
    raw = root / "raw"
    _clip(raw / "a.mp4", 150, seed=0)
    _clip(raw / "b.mp4", 300, seed=1)
    with pytest.MonkeyPatch.context() as mp:
        (root / "models").mkdir()
        mp.setenv("LIPSYNCCTL_MODELS", str(root / "models"))
        stage = clipstages.clip_stage("features")
        mp.setattr(clipstages, "CLIP_STAGES", (stage,))
        mp.setattr(job, "CLIP_STAGES", (stage,))
        yield {"raw": raw, "data": root / "data"}


def _plan(result: CurateResult) -> dict[str, list[str]]:
    return {Path(s.path).name: list(s.to_compute or []) for s in result.sources}


def _done(result: CurateResult) -> dict[str, list[str]]:
    return {Path(s.path).name: s.computed for s in result.sources}


def _decisions(result: CurateResult) -> tuple[dict, dict]:  # type: ignore[type-arg]
    return ({Path(s.path).name: (s.decision.to_dict(), s.clips, s.kept) for s in result.sources},
            {c.id: (c.first, c.stop, c.decision.to_dict()) for c in result.spans()})


def _plan_then_run(env: dict, *sets: str, **kw) -> tuple[CurateResult, CurateResult]:  # type: ignore[type-arg, no-untyped-def]
    config = cfg.resolve("tiny", list(sets))
    plan = run_curation([env["raw"]], env["data"], config, dry_run=True, **kw)
    return plan, run_curation([env["raw"]], env["data"], config, **kw)


def test_the_plan_of_every_state_is_what_the_run_then_computes(env) -> None:  # type: ignore[no-untyped-def]
    data = env["data"]
    # a new folder: every stage of every source, nothing decided yet, nothing written (not even the folder)
    plan = run_curation([env["raw"]], data, cfg.resolve("tiny"), dry_run=True, until="segments")
    assert not data.exists() and plan.dry_run and plan.ok and list(plan.spans()) == []
    assert {s.decision.to_dict()["verdict"] for s in plan.sources} == {"undecided"}
    assert {(s.decision.stage, s.decision.reason) for s in plan.sources} == {("probe", "new")}
    assert _plan(plan) == {"a.mp4": SOURCE_STAGES, "b.mp4": SOURCE_STAGES}
    full = run_curation([env["raw"]], data, cfg.resolve("tiny"), dry_run=True)
    assert _plan(full) == {"a.mp4": [*SOURCE_STAGES, "features"], "b.mp4": [*SOURCE_STAGES, "features"]}

    # stop after the source stages, then plan the rest: the features of each span kept
    plan, run = _plan_then_run(env, until="segments")
    assert _plan(plan) == _done(run)
    plan, run = _plan_then_run(env)
    assert _plan(plan) == _done(run) == {"a.mp4": ["features:0-150"],
                                         "b.mp4": ["features:0-125", "features:125-300"]}
    assert _decisions(plan) == _decisions(run)  # the stored measurements, decided as the run decides them

    # done: nothing to compute; the same decisions and counts as the run's
    plan, run = _plan_then_run(env)
    assert _plan(plan) == _done(run) == {"a.mp4": [], "b.mp4": []}
    assert _decisions(plan) == _decisions(run) and plan.counts() == run.counts()

    # --force segments: that stage and every later one, the reason said
    plan, run = _plan_then_run(env, force=("segments",))
    # (the spans are the segments' to find: the plan names the clip stages without them)
    assert _plan(plan) == {"a.mp4": ["segments", "features"], "b.mp4": ["segments", "features"]}
    assert _done(run) == {"a.mp4": ["segments", "features:0-150"],
                          "b.mp4": ["segments", "features:0-125", "features:125-300"]}
    assert {(s.decision.stage, s.decision.reason) for s in plan.sources} == {("segments", "--force")}

    # a threshold decides from the stored scores: nothing to compute, the new decision shown
    plan, run = _plan_then_run(env, "curate.min_seconds=8")
    assert _plan(plan) == _done(run) == {"a.mp4": [], "b.mp4": []}
    assert _decisions(plan) == _decisions(run)
    assert [*plan.sources][0].decision.to_dict()["reason"] == "too-short"
    assert plan.to_dict()["views_written"] is False  # (a dry run writes nothing; it said true)
    # the plan says its settings are not those the views were written with (as the run and `report` say it)
    assert [w for w in plan.warnings if w.startswith("settings differ")] == [
        w for w in run.warnings if w.startswith("settings differ")] != []
    plan = run_curation([env["raw"]], env["data"], cfg.resolve("tiny", ["curate.min_seconds=8"]), dry_run=True)
    assert not [w for w in plan.warnings if w.startswith("settings differ")]  # the views' own settings now

    # a changed source file: from the probe on
    before = os.stat(env["raw"] / "a.mp4")
    _clip(env["raw"] / "a.mp4", 175, seed=2)
    plan, run = _plan_then_run(env)
    assert next(s for s in plan.sources if s.path.endswith("a.mp4")).decision.reason == "the file changed"
    assert _plan(plan)["a.mp4"] == [*SOURCE_STAGES, "features"] and _plan(plan)["b.mp4"] == []
    assert _done(run)["a.mp4"] == [*SOURCE_STAGES, "features:0-175"] and before.st_size != 0


def test_the_dry_run_names_stages_by_span_and_says_missing_weights(env, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    # missing weights: a warning (the run would stop with exit 4), the plan all the same, nothing written
    code = main(["--json", "curate", str(env["raw"]), "-o", str(data), "--preset", "tiny",
                 "--set", "model.whisper=whisper-tiny", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0 and not data.exists()
    doc = json.loads(out)
    assert doc["dry_run"] and [s["to_compute"] for s in doc["sources"]] == [[*SOURCE_STAGES, "features"]] * 2
    assert doc["clips"] == [] and "manifest" not in doc  # the plan's spans (none known before the source stages)
    assert "a run would stop (exit 4)" in doc["warnings"][0] and "models fetch whisper-tiny" in err
    # the table: the decision to come and the stages a run computes, spans counted
    run_curation([env["raw"]], data, cfg.resolve("tiny"), until="segments")
    assert main(["curate", str(env["raw"]), "-o", str(data), "--preset", "tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing was run or written" in out and "to compute" in out
    assert "features (2 spans)" in out and "features (1 span)" in out
    assert "2/2 so far" in out and "1/1 so far" in out  # kept so far: the features stage may still reject them
    # an output the run could not write (a file in the way): said by the dry run too, exit 1 as the run
    (tmp_path / "afile").write_text("x")
    assert main(["curate", str(env["raw"]), "-o", str(tmp_path / "afile" / "data"), "--preset", "tiny",
                 "--dry-run"]) == 1
    assert "a file is in the way" in capsys.readouterr().err


def test_a_dry_run_makes_no_tiny_models(env, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.curation import clipstages, job

    # a stage whose tiny models are made on first use (the sync scorer's): a dry run leaves the folder as it was
    models = tmp_path / "fresh-models"
    models.mkdir()
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(models))
    stage = next(s for s in clipstages._registered() if s.name == "sync")
    monkeypatch.setattr(clipstages, "CLIP_STAGES", (stage,))
    monkeypatch.setattr(job, "CLIP_STAGES", (stage,))
    plan = run_curation([env["raw"]], tmp_path / "data", cfg.resolve("tiny"), dry_run=True)
    assert list(models.iterdir()) == [] and _plan(plan) == {n: [*SOURCE_STAGES, "sync"] for n in ("a.mp4", "b.mp4")}
    assert plan.warnings == []  # not missing: the run makes them


def test_an_older_probe_record_is_planned_as_the_run_refreshes_it(env) -> None:  # type: ignore[no-untyped-def]
    """A dataset curated before probes recorded the picture's start time: the run probes again (cheap) and keeps the
    later stages; the plan says just that (it said every stage was to run)."""
    run_curation([env["raw"]], env["data"], cfg.resolve("tiny"))
    record = next((env["data"] / ".lipsyncctl" / "records" / "sources").glob("*.json"))
    raw = json.loads(record.read_text())
    del raw["stages"]["probe"]["data"]["start_time"]
    record.write_text(json.dumps(raw))
    plan, run = _plan_then_run(env)
    name = Path(raw["path"]).name
    assert _plan(plan)[name] == _done(run)[name] == ["probe"]


def test_files_the_folder_walk_leaves_out_are_said(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """VoxCeleb-style trees hold other files (lists, metadata): counted and named once, in --json's warnings too."""
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(env["raw"], raw)
    (raw / "a.txt").write_text("utterance metadata")
    for dry in (True, False):
        result = run_curation([raw], tmp_path / "data", cfg.resolve("tiny"), dry_run=dry, until="probe")
        assert [w for w in result.warnings if "not media" in w] == [
            next(w for w in result.to_dict()["warnings"] if w.startswith("1 file(s) in the folders given are not "
                                                                        "media") and w.endswith("skipped: a.txt"))]


def test_a_curated_dataset_in_the_inputs_gives_no_sources(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A dataset curated earlier inside RAW (`-o RAW/data256`, or `-o RAW` itself): its aligned clips were curated as
    new sources by the next run into another DATA (faces of faces, the same speakers on both sides of the split); a
    folder that holds curate records gives its own files only, and is named."""
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(env["raw"], raw)
    run_curation([raw], raw / "data256", cfg.resolve("tiny"), until="probe")
    aligned = raw / "data256" / "aligned" / "a-1"
    aligned.mkdir(parents=True)
    shutil.copy(raw / "a.mp4", aligned / "a-1_000000-000125.mp4")  # as an aligned clip lies there
    (raw / "speaker").mkdir()
    shutil.copy(raw / "b.mp4", raw / "speaker" / "c.mp4")
    run_curation([raw / "speaker"], raw / "speaker", cfg.resolve("tiny"), until="probe")  # -o RAW/speaker itself
    (raw / "speaker" / "aligned").mkdir()
    shutil.copy(raw / "b.mp4", raw / "speaker" / "aligned" / "c-1_000000-000125.mp4")
    for given in ([raw], [f"{raw}/**/*.mp4"]):  # a folder, and a pattern (its matches inside one were taken)
        result = run_curation(given, tmp_path / "data", cfg.resolve("tiny"), dry_run=True, until="probe")
        assert sorted(Path(s.path).relative_to(raw).as_posix() for s in result.sources) == [
            "a.mp4", "b.mp4", "speaker/c.mp4"], given
        said = [w for w in result.warnings if "curated dataset" in w]
        assert len(said) == 1 and said[0].startswith("2 curated dataset folder(s) in the inputs: their subfolders")
        assert "data256" in said[0]


def test_an_output_folder_holding_files_curate_did_not_write_is_refused(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`-o` a LatentSync data root of one's own (its train.txt, curate did not write): the run replaced train.txt,
    report.json and curate.yaml without a word. Refused before any work, the files untouched; a folder holding other
    files only, and a dataset curate made, are written as before."""
    from lipsyncctl.errors import UsageError

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.txt").write_text("/my/fileslist.mp4\n")
    (mine / "notes.md").write_text("x")
    for dry in (True, False):
        with pytest.raises(UsageError, match=r"holds train.txt that curate did not write") as err:
            run_curation([env["raw"] / "a.mp4"], mine, cfg.resolve("tiny"), until="probe", dry_run=dry)
        assert err.value.exit_code == 2
    assert (mine / "train.txt").read_text() == "/my/fileslist.mp4\n" and not (mine / ".lipsyncctl").exists()
    (mine / "train.txt").unlink()
    assert run_curation([env["raw"] / "a.mp4"], mine, cfg.resolve("tiny"), until="probe").ok
    assert run_curation([env["raw"] / "a.mp4"], mine, cfg.resolve("tiny"), until="probe").ok  # its own views now


def test_two_files_differing_by_extension_are_two_sources(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`x.mp4` beside `x.mov` (a clip and its re-export) stopped the whole run: "one source id", with a hint to give the
    folder that holds them, which was given. Each keeps its extension in its id."""
    import shutil

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(env["raw"] / "a.mp4", raw / "x.mp4")
    shutil.copy(env["raw"] / "a.mp4", raw / "x.mov")
    shutil.copy(env["raw"] / "b.mp4", raw / "y.mp4")
    result = run_curation([raw], tmp_path / "data", cfg.resolve("tiny"), until="probe", dry_run=True)
    assert sorted(Path(s.path).name for s in result.sources) == ["x.mov", "x.mp4", "y.mp4"]
    assert len({s.id for s in result.sources}) == 3
    # a re-export dropped beside a curated clip: the clip keeps its id (it changed, and the run was refused)
    (raw / "x.mov").unlink()
    done = run_curation([raw], tmp_path / "data", cfg.resolve("tiny"), until="probe")
    x_id = next(s.id for s in done.sources if s.path.endswith("x.mp4"))
    shutil.copy(env["raw"] / "a.mp4", raw / "x.mov")
    again = run_curation([raw], tmp_path / "data", cfg.resolve("tiny"), until="probe")
    ids = {Path(s.path).name: (s.id, s.computed) for s in again.sources}
    assert ids["x.mp4"] == (x_id, []) and ids["x.mov"][0] != x_id and ids["x.mov"][1] == ["probe"]


def test_a_source_gone_when_its_turn_comes_failed_not_rejected(env, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A file listed at the start and gone when its turn came (a mount's hiccup) was rejected `unreadable`, exit 0: no
    property of its media. It failed (exit 1, retried by the next run, which curates it when it is back)."""
    import shutil

    from lipsyncctl.curation import job

    raw = tmp_path / "raw"
    shutil.copytree(env["raw"], raw)
    real = job.execute_source

    def vanishing(task, *args, **kwargs):  # type: ignore[no-untyped-def]
        if task.path.endswith("b.mp4"):
            shutil.move(task.path, tmp_path / "away.mp4")
        return real(task, *args, **kwargs)

    monkeypatch.setattr(job, "execute_source", vanishing)
    gone = run_curation([raw], tmp_path / "data", cfg.resolve("tiny"), until="probe")
    b = next(s for s in gone.sources if s.path.endswith("b.mp4"))
    assert b.decision.verdict == "failed" and "the file was gone when its turn came" in (b.decision.error or "")
    assert gone.failures == 1 and not gone.ok
    monkeypatch.undo()
    shutil.move(tmp_path / "away.mp4", raw / "b.mp4")
    back = run_curation([raw], tmp_path / "data", cfg.resolve("tiny"), until="probe")
    assert back.ok and next(s for s in back.sources if s.path.endswith("b.mp4")).decision.verdict == "kept"
