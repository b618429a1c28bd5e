"""The data side of ``lipsyncctl train``: the clips of a curated DATA folder (and of its fileslist), the
counter-based sample stream (which indices a step takes, the epoch permutation, per-sample generators)
and the UNet / SyncNet items: windows by the official rules, pixels, mask, whisper chunks and mel windows
exactly as inference and the official loaders cut them, the same item whatever the worker count.

The DATA folder is curated once per session by the real job (tests/train_media.py: five sources, a
stand-in face alignment that writes frames whose red level is their source frame index)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsyncctl.errors import MediaError, UsageError
from lipsyncctl.training import data as td
from lipsyncctl.training import sampling
from tests.train_media import Curated, curated_folder, red_index

F = 16


@pytest.fixture(scope="session")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Curated:
    return curated_folder(tmp_path_factory.mktemp("train-data"))


@pytest.fixture(scope="session")
def unet_clips(curated: Curated) -> td.ClipSet:
    return td.read_clips(curated.data, kind="unet")


@pytest.fixture(scope="session")
def unet(unet_clips: td.ClipSet) -> td.UNetSamples:
    return td.UNetSamples(unet_clips.clips, seed=1247, num_frames=F, resolution=64)


@pytest.fixture(scope="session")
def syncnet(curated: Curated) -> td.SyncNetSamples:
    return td.SyncNetSamples(td.read_clips(curated.data, kind="syncnet").clips, seed=42, num_frames=F)


def _features(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _ids(clips: td.ClipSet) -> list[str]:
    return [c.id.split("-")[0] for c in clips.clips]


# ---- the clips ---------------------------------------------------------------------------------------

def test_read_clips_of_a_curated_folder(curated: Curated, unet_clips: td.ClipSet) -> None:
    assert _ids(unet_clips) == ["long", "mid"]                        # sorted by id
    assert {s.id.split("-")[0]: s.frames for s in unet_clips.skipped} == {"short": 40, "stub": 20}
    assert all("48" in s.reason and "official" in s.reason for s in unet_clips.skipped)
    long = unet_clips.clips[0]
    entry = curated.entry("long")
    assert (long.frames, long.fps, long.whisper_len, long.mel_len) == (100, 25, 200, 321)
    assert long.video == Path(entry["aligned"]) and long.features == Path(entry["features"])
    assert long.last_start(F) == 84  # a curated clip's audio covers every window
    sync = td.read_clips(curated.data, kind="syncnet")
    assert _ids(sync) == ["long", "mid", "short"] and [s.frames for s in sync.skipped] == [20]
    assert "32" in sync.skipped[0].reason
    assert _ids(td.read_clips(curated.data, "val")) == ["held"]
    # what was not curated as the official pipeline is counted, and said at the run's start
    assert unet_clips.gaps == {"aligned by stand-in (not insightface)": 2}
    assert unet_clips.gaps_note() == ("data: of 2 train clips, 2 aligned by stand-in (not insightface): not the "
                                      "official data pipeline (curate.yaml and manifest.jsonl say how each was made)")
    assert td.curation_gaps({"detector_official": True, "sync_scale": "official", "quality": 55.0,
                             "quality_official": True}) == []
    assert td.curation_gaps({"detector": "dlib", "detector_official": False, "sync": "skipped",
                             "quality": "skipped"}) == ["aligned by dlib (not insightface)",
                                                        "without the sync filter (skipped)",
                                                        "without the quality filter (skipped)"]
    assert td.curation_gaps({"sync_scale": "tiny", "quality_official": False}) == [
        "sync-filtered by the tiny stand-in scorer", "quality-filtered not as the official"]


def test_read_clips_of_its_fileslist(curated: Curated, unet_clips: td.ClipSet, tmp_path: Path) -> None:
    listed = td.read_clips(curated.data / "train.txt", kind="unet")
    assert listed.clips == unet_clips.clips and listed.skipped == unet_clips.skipped
    assert listed.source == curated.data / "train.txt"
    assert _ids(td.read_clips(curated.data / "train.txt", "val")) == ["held"]  # the manifest's held-out split
    # relative lines (as a hand-written list has them), one clip twice: read once
    rel = curated.data / "relative.txt"
    lines = [str(Path(e["aligned"]).relative_to(curated.data)) for e in curated.manifest if e["split"] == "train"]
    rel.write_text("\n".join([*lines, lines[0], ""]))
    try:
        assert td.read_clips(rel).clips == unet_clips.clips and not td.read_clips(rel).warnings
    finally:
        rel.unlink()
    # a val clip listed to train on is no longer held out: said (it was trained on and validated on in silence)
    mixed = curated.data / "mixed.txt"
    mixed.write_text((curated.data / "train.txt").read_text() + (curated.data / "val.txt").read_text())
    try:
        said = td.read_clips(mixed).warnings
        assert len(said) == 1 and re.search(r"1 clip\(s\) of the val split \(e.g. held-\S+\) are listed to train on", said[0])
    finally:
        mixed.unlink()


def test_a_moved_data_folder_still_reads(curated: Curated, unet_clips: td.ClipSet, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(curated.data, moved, ignore=shutil.ignore_patterns(".lipsyncctl", "audio"))
    for name in ("manifest.jsonl", "train.txt"):  # the old location is gone
        (moved / name).write_text((moved / name).read_text().replace(str(curated.data), "/gone/away/data"))
    for source in (moved, moved / "train.txt"):
        clips = td.read_clips(source)
        assert [c.id for c in clips.clips] == [c.id for c in unet_clips.clips]
        assert all(c.video.is_relative_to(moved) and c.features.is_relative_to(moved) for c in clips.clips)


def test_a_copied_data_folder_reads_its_own_files(curated: Curated, unet_clips: td.ClipSet, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of DATA (to local scratch, or edited) read the original's files while they were there (the manifest's
    absolute paths won): its own are read; a file the copy lacks is read from the original, said."""
    from lipsyncctl import progress

    copy = tmp_path / "copy"
    shutil.copytree(curated.data, copy, ignore=shutil.ignore_patterns(".lipsyncctl", "audio"))
    clips = td.read_clips(copy)
    assert [c.id for c in clips.clips] == [c.id for c in unet_clips.clips]
    assert all(c.video.is_relative_to(copy) and c.features.is_relative_to(copy) for c in clips.clips)
    assert all(c.video.is_relative_to(curated.data) for c in td.read_clips(curated.data).clips)  # the original's
    monkeypatch.chdir(tmp_path)  # a relative --data: its files are its own, nothing said
    with progress.use_sink(progress.RecordingSink()) as quiet:
        relative = td.read_clips(Path("copy"))
    assert all(c.features.absolute().is_relative_to(copy) for c in relative.clips)
    assert not [e for e in quiet.events if e[0] == "message"]
    Path(str(clips.clips[0].features)).unlink()

    with progress.use_sink(progress.RecordingSink()) as sink:
        partial = td.read_clips(copy)
    assert partial.clips[0].features.is_relative_to(curated.data) and partial.clips[1].features.is_relative_to(copy)
    said = [e[1] for e in sink.events if e[0] == "message"]
    assert any("1 file(s) of the train clips read from outside" in m and str(partial.clips[0].features) in m for m in said), said
    assert len(partial.warnings) == 1 and progress.WARNING_PREFIX + partial.warnings[0] in said  # for --json too
    assert relative.warnings == ()
    with progress.use_sink(progress.RecordingSink()) as rank:  # another rank of a group: the result has it, unsaid
        assert td.read_clips(copy, warn=False).warnings == partial.warnings
    assert not [e for e in rank.events if e[0] == "message"]


def _one_line(exc: pytest.ExceptionInfo[UsageError]) -> UsageError:
    assert "\n" not in exc.value.message and exc.value.hint
    return exc.value


def test_a_missing_or_damaged_features_file_is_bad_media_naming_it(curated: Curated, tmp_path: Path) -> None:
    """Missing, exit 5 as a damaged file is (it was 2, a usage error, where a truncated one was 5: a script could not
    tell a damaged dataset from a typo); damaged, the hint says to delete it first (curate takes a file that is
    there for done, so "rerun curate" went round in a loop)."""
    copy = tmp_path / "data"
    shutil.copytree(curated.data, copy, ignore=shutil.ignore_patterns(".lipsyncctl", "audio"))
    manifest = copy / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace(str(curated.data), str(copy)))
    features = Path(curated.entry("mid")["features"].replace(str(curated.data), str(copy)))
    good = features.read_bytes()
    features.write_bytes(good[:100])  # (its shapes from the file, not the manifest: read when the clips are)
    with pytest.raises(MediaError, match="is unreadable") as exc:
        td._feature_lengths({}, features, "mid")
    assert exc.value.exit_code == 5 and exc.value.hint.startswith("delete that file, then rerun `lipsyncctl curate")
    features.unlink()
    with pytest.raises(MediaError) as exc:
        td.read_clips(copy)
    err = _one_line(exc)
    assert curated.entry("mid")["id"] in err.message and features.name in err.message and "is missing" in err.message
    assert err.hint.startswith("rerun `lipsyncctl curate") and err.exit_code == 5
    # a kept clip whose curate run stopped before the features stage
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**e, "features": None}) + "\n" for e in lines))
    with pytest.raises(UsageError, match="has no features"):
        td.read_clips(copy)


def test_unknown_fileslist_paths_and_missing_manifests_are_said(curated: Curated, tmp_path: Path) -> None:
    stray = curated.data / "stray.txt"
    stray.write_text(f"{curated.entry('long')['aligned']}\n/elsewhere/speaker/00001.mp4\n")
    try:
        with pytest.raises(UsageError) as exc:
            td.read_clips(stray)
        err = _one_line(exc)
        assert "stray.txt:2" in err.message and "00001.mp4" in err.message and "curate" in err.hint
    finally:
        stray.unlink()
    (tmp_path / "list.txt").write_text(f"{curated.entry('long')['aligned']}\n")
    for bad in (tmp_path / "list.txt", tmp_path, tmp_path / "nothing"):
        with pytest.raises(UsageError if bad.exists() else MediaError) as exc:  # missing: bad input (5)
            td.read_clips(bad)
        assert "lipsyncctl curate" in _one_line(exc).hint


# ---- the sample stream -----------------------------------------------------------------------------------

def _step(step: int, *, batch: int, world: int, accum: int) -> list[list[int]]:
    """Per rank, the indices of every micro-step of ``step``."""
    return [[k for m in range(accum) for k in sampling.batch_indices(step, m, r, batch=batch, world=world,
                                                                      accum=accum)] for r in range(world)]


@pytest.mark.parametrize("step", [0, 1, 7])
def test_batch_indices_partition_a_step_whatever_the_split(step: int) -> None:
    for b in (1, 2, 3):
        whole = _step(step, batch=2 * b, world=1, accum=1)[0]
        assert whole == list(range(step * 2 * b, (step + 1) * 2 * b))
        assert sorted(sum(_step(step, batch=b, world=2, accum=1), [])) == whole      # world 2 x B == 1 x 2B
        assert _step(step, batch=b, world=1, accum=2)[0] == whole                    # accum 2 x B == 2B
    assert sorted(sum(_step(step, batch=1, world=2, accum=2), [])) == _step(step, batch=4, world=1, accum=1)[0]
    assert list(sampling.batch_indices(3, 1, 1, batch=2, world=2, accum=2)) == [3 * 8 + 6, 3 * 8 + 7]
    with pytest.raises(ValueError):
        sampling.batch_indices(0, 2, 0, batch=1, world=1, accum=2)


def test_index_batches_resume_at_the_exact_position() -> None:
    from itertools import islice

    full = list(islice(iter(sampling.IndexBatches(0, 1, 2, 3, accum=2)), 12))
    resumed = list(islice(iter(sampling.IndexBatches(4, 1, 2, 3, accum=2)), 4))
    assert resumed == full[8:12]
    assert full[0] == [3, 4, 5] and full[1] == [9, 10, 11]  # rank 1 of world 2, micro-steps 0 and 1


def test_sample_generators_are_stable_and_independent() -> None:
    def draw(seed: int, k: int, stream: int = 0) -> list[float]:
        return torch.rand(4, generator=sampling.sample_generator(seed, k, stream=stream)).tolist()

    assert draw(1247, 5) == draw(1247, 5)
    assert len({tuple(draw(1247, k)) for k in range(50)}) == 50
    assert draw(1247, 5) != draw(1248, 5) and draw(1247, 5) != draw(1247, 5, stream=1)
    assert sampling.stable_seed(1247, 5) == sampling.stable_seed(1247, 5) != sampling.stable_seed(1247, 6)


def test_the_permutation_covers_every_clip_once_per_epoch() -> None:
    order = sampling.ClipOrder(seed=3, n_clips=7)
    epochs = [[order.clip_of(e * 7 + i) for i in range(7)] for e in range(4)]
    assert all(sorted(e) == list(range(7)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1                      # a new order each epoch
    assert sampling.epoch_of(20, 7) == 2 and sampling.clip_of(3, 20, 7) == epochs[2][6]
    assert epochs[2] == sampling.epoch_permutation(3, 2, 7).tolist()


def _fake_clip(frames: int) -> td.TrainClip:
    """A clip that is never opened (window draws read no file)."""
    return td.TrainClip(f"c{frames:03d}", Path("none.mkv"), Path("none.safetensors"), frames, 2 * frames,
                        1 + 640 * frames // 200)


def test_reference_windows_never_overlap_and_reach_both_sides() -> None:
    clips = [_fake_clip(n) for n in (48, 49, 50, 63, 100)]
    ds = td.UNetSamples(clips, seed=1247, num_frames=F, resolution=64)
    below = above = 0
    seen: dict[int, set[int]] = {}
    for k in range(3000):
        pos, s, q = ds.windows(k)
        frames = ds.clips[pos].frames
        assert 0 <= s <= frames - F and 0 <= q <= frames - F and abs(q - s) >= F, (k, s, q)
        below, above = below + (q < s), above + (q > s)
        seen.setdefault(pos, set()).add(s)
    assert below > 500 and above > 500
    assert all(seen[p] == set(range(ds.clips[p].frames - F + 1)) for p in seen)  # every start is drawn
    with pytest.raises(ValueError, match="48"):  # the dataset keeps its contract without read_clips
        td.UNetSamples([_fake_clip(47)], seed=0, num_frames=F)


def test_starts_stay_where_the_audio_covers_the_window() -> None:
    short_audio = td.TrainClip("x", Path("x"), Path("y"), 100, whisper_len=120, mel_len=150)
    # whisper: 2 (s + 15) <= 119 -> s <= 44; mel: (80 s) // 25 + 52 <= 150 -> s <= 30
    assert short_audio.last_start(F) == 30
    ds = td.SyncNetSamples([short_audio], seed=0, num_frames=F)
    starts = {ds.windows(k)[1] for k in range(400)}
    assert max(starts) == 30 and min(starts) == 0
    assert td.mel_columns(16) == 52 and td.mel_columns(5) == 16


def test_syncnet_labels_are_half_positive_and_negatives_start_elsewhere() -> None:
    ds = td.SyncNetSamples([_fake_clip(32), _fake_clip(80)], seed=42, num_frames=F)
    draws = [ds.windows(k) for k in range(400)]
    positives = [d for d in draws if d[1] == d[2]]
    assert 0.42 < len(positives) / 400 < 0.58
    assert all(0 <= a <= ds.clips[p].frames - F for p, _, a in draws)
    assert any(abs(a - s) < F for _, s, a in draws if a != s)  # negatives may overlap the positive window


# ---- the items ---------------------------------------------------------------------------------------

def test_unet_item_shapes_values_and_windows(unet: td.UNetSamples) -> None:
    from lipsyncctl.audio.features import feature_chunks
    from lipsyncctl.audio.wav2lip_mel import mel_window
    from lipsyncctl.faces.mask import mouth_mask

    item = unet[1]
    s, q = int(item["start"]), int(item["ref_start"])
    assert (int(item["index"]), s, q) == (1, *unet.windows(1)[1:])
    assert item["clip"] == unet.clips[unet.windows(1)[0]].id
    shapes = {k: tuple(v.shape) for k, v in item.items() if isinstance(v, torch.Tensor)}
    assert shapes == {"gt": (F, 3, 64, 64), "masked": (F, 3, 64, 64), "mask": (1, 64, 64), "ref": (F, 3, 64, 64),
                      "whisper": (F, 50, 384), "mel": (1, 80, 52), "index": (), "start": (), "ref_start": ()}
    assert all(item[k].dtype == torch.float32 for k in ("gt", "masked", "mask", "ref", "whisper", "mel"))
    assert float(item["gt"].min()) >= -1 and float(item["gt"].max()) <= 1
    assert red_index(item["gt"]) == list(range(s, s + F)) and red_index(item["ref"]) == list(range(q, q + F))
    # the official mask: 1 keeps (white), 0 is the mouth; masked = gt * mask, the mouth at 0 (mid-grey)
    mask = torch.from_numpy(mouth_mask(64))
    assert torch.equal(item["mask"][0], mask.float())
    assert torch.equal(item["masked"], (item["gt"].double() * mask).float())
    assert float(item["masked"][:, :, 40:56, 16:48].abs().max()) == 0.0 and float(item["mask"][0, 10].min()) == 1
    full = _features(unet.clips[unet.windows(1)[0]].features)
    assert torch.equal(item["whisper"], feature_chunks(full["whisper"], F, start=s))  # inference's slicing
    assert torch.equal(item["mel"][0], torch.from_numpy(mel_window(full["mel"].numpy(), s)).float())


def test_frames_at_the_clip_size_are_not_resampled(unet_clips: td.ClipSet) -> None:
    ds = td.UNetSamples(unet_clips.clips, seed=1247, num_frames=F, resolution=256)
    item = ds[0]
    from tests.train_media import pattern

    s = int(item["start"])
    want = td.to_pixels(torch.from_numpy(np.stack([pattern(s + t) for t in range(F)])).permute(0, 3, 1, 2))
    assert torch.equal(item["gt"], want)  # lossless clip, identity resize: the exact pixels
    small = td.resize_u8(torch.from_numpy(pattern(7)).permute(2, 0, 1)[None], 64)
    assert small.dtype == torch.uint8 and int(small[0, 0].min()) == int(small[0, 0].max()) == 7


def test_the_same_index_gives_the_same_item_and_datasets_pickle(unet: td.UNetSamples) -> None:
    a, b = unet[5], pickle.loads(pickle.dumps(unet))[5]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def test_syncnet_items(syncnet: td.SyncNetSamples, curated: Curated) -> None:
    from lipsyncctl.audio.wav2lip_mel import mel_window

    draws = {k: syncnet.windows(k) for k in range(40)}
    pos = next(k for k, (_, s, a) in draws.items() if s == a)
    neg = next(k for k, (_, s, a) in draws.items() if s != a)
    for k in (pos, neg):
        item = syncnet[k]
        s, a = int(item["start"]), int(item["frame_start"])
        assert (s, a) == draws[k][1:] and float(item["label"]) == float(k == pos)
        assert item["frames"].shape == (3 * F, 128, 256) and item["label"].dtype == torch.float32
        frames = item["frames"].unflatten(0, (F, 3))
        assert red_index(frames) == list(range(a, a + F))          # the frames at s (positive) or elsewhere
        mel = _features(syncnet.clips[draws[k][0]].features)["mel"].numpy()
        assert torch.equal(item["mel"][0], torch.from_numpy(mel_window(mel, s)).float())  # the audio stays at s
    full = td.SyncNetSamples(syncnet.clips, seed=42, num_frames=F, lower_half=False)[pos]["frames"]
    assert full.shape == (3 * F, 256, 256) and torch.equal(full[:, 128:], syncnet[pos]["frames"])


def test_workers_give_the_same_batches(unet: td.UNetSamples) -> None:
    from itertools import islice

    def batches(workers: int) -> list[dict]:  # type: ignore[type-arg]
        loader = sampling.make_loader(unet, start_step=2, rank=1, world=2, batch=1, accum=1, workers=workers)
        return list(islice(iter(loader), 3))

    inline, pooled = batches(0), batches(2)
    assert [b["index"].tolist() for b in inline] == [[5], [7], [9]]
    for x, y in zip(inline, pooled, strict=True):
        assert x["clip"] == y["clip"]
        assert all(torch.equal(x[k], y[k]) for k in x if isinstance(x[k], torch.Tensor))
    assert inline[0]["gt"].shape == (1, F, 3, 64, 64) and inline[0]["mask"].shape == (1, 1, 64, 64)


def test_make_dataset_follows_the_training_config(curated: Curated) -> None:
    from lipsyncctl.training.config import resolve_train_config

    cfg = resolve_train_config("tiny")
    ds = td.make_dataset(cfg, td.read_clips(curated.data, kind=cfg.kind, num_frames=cfg.data.num_frames))
    assert isinstance(ds, td.UNetSamples) and (ds.seed, ds.resolution, ds.num_frames) == (1247, 64, 16)
    cfg = resolve_train_config("tiny-syncnet")
    ds = td.make_dataset(cfg, td.read_clips(curated.data, kind=cfg.kind))
    assert isinstance(ds, td.SyncNetSamples) and (ds.seed, ds.resolution, ds.lower_half) == (42, 256, True)
    with pytest.raises(UsageError, match="no clip of the train split is long enough") as err:
        td.make_dataset(cfg, td.read_clips(curated.data, kind="syncnet", num_frames=64))
    assert re.search(r"skipped; e.g. \S+, \d+ frames: ", err.value.message)  # why, not "the result lists it"
    assert "data.num_frames" in (err.value.hint or "")
    # a split with no kept clip at all is said as such (it was said as "not long enough (0 skipped)")
    empty = dataclasses.replace(td.read_clips(curated.data, kind=cfg.kind), clips=(), skipped=())
    with pytest.raises(UsageError, match="no kept clip in the train split") as err:
        td.make_dataset(cfg, empty)
    assert "curate report" in (err.value.hint or "")


@pytest.mark.parametrize(("lines", "said", "hint"), [
    ([("val", "kept"), ("val", "kept"), ("train", "rejected")], "(2 kept, all in val)", "curate.split_seed=1"),
    ([("train", "undecided"), ("train", "rejected")], "(1 span(s) not decided yet: the curate run stopped early)",
     "without --until"),
    ([("train", "rejected"), ("val", "failed")], "(every span of it rejected or failed)", "loosen a threshold"),
    ([], "(DATA holds no span)", "curate footage"),
])
def test_a_train_split_without_a_kept_clip_says_which_case_it_is(tmp_path: Path, lines: list[tuple[str, str]],
                                                                  said: str, hint: str) -> None:
    """Every kept clip in val (a handful of sources split by their hash), or spans not decided yet (--until): the
    hint said to loosen a threshold, though nothing was rejected."""
    from lipsyncctl.training.config import resolve_train_config

    (tmp_path / "manifest.jsonl").write_text("".join(
        json.dumps({"id": f"c{i}", "split": split, "decision": {"verdict": verdict}}) + "\n"
        for i, (split, verdict) in enumerate(lines)))
    empty = td.ClipSet(clips=(), skipped=(), source=tmp_path, split="train", kind="unet", num_frames=16)
    with pytest.raises(UsageError) as err:
        td.make_dataset(resolve_train_config("tiny"), empty)
    assert err.value.message == f"{tmp_path}: no kept clip in the train split {said}" and hint in err.value.hint


def test_the_no_val_clips_hint_names_a_larger_fraction_than_datas(tmp_path: Path) -> None:
    """It named curate.val_fraction=0.05, the default: following it changed nothing."""
    assert td.larger_val_fraction(tmp_path) == 0.2  # (no curate.yaml: the default's)
    (tmp_path / "curate.yaml").write_text("curate:\n  val_fraction: 0.3\n")
    assert td.larger_val_fraction(tmp_path / "train.txt") == 0.5
    (tmp_path / "curate.yaml").write_text("curate:\n  val_fraction: 0.5\n")  # (the schema's most: another split)
    assert td.larger_val_fraction(tmp_path) is None and "curate.split_seed=1" in td.val_hint(tmp_path)


def test_the_training_mask_is_the_configs(curated: Curated, tmp_path: Path) -> None:
    """``data.mask`` (official data.mask_image_path): the samples' mask and masked frames follow it; a mask that is
    not there stops the run before the data is read (exit 4)."""
    import cv2

    from lipsyncctl.errors import MissingModelError
    from lipsyncctl.faces.mask import mouth_mask
    from lipsyncctl.training.config import resolve_train_config
    from lipsyncctl.training.networks import resolve_files

    half = np.full((256, 256, 3), 255, np.uint8)
    half[128:] = 0  # the whole lower half regenerated
    path = tmp_path / "lower_half.png"
    cv2.imwrite(str(path), half)
    clips = td.read_clips(curated.data, kind="unet")
    cfg = resolve_train_config("tiny", [f"data.mask={path}"])
    item = td.make_dataset(cfg, clips)[0]
    want = torch.from_numpy(mouth_mask(64, str(path))).float()
    assert torch.equal(item["mask"][0], want) and float(want[40:].max()) == 0.0
    assert torch.equal(item["masked"][:, :, 40:], torch.zeros_like(item["masked"][:, :, 40:]))
    default = td.make_dataset(resolve_train_config("tiny"), clips)[0]
    assert not torch.equal(default["mask"], item["mask"])
    with pytest.raises(MissingModelError, match="mouth mask not found: /.*/nosuch.png"):  # relative: made absolute
        resolve_files(resolve_train_config("tiny", ["data.mask=nosuch.png", "model.init=none"]))
    # the default name is the bundled official mask, whatever the current folder holds; ./mask.png is the path
    from lipsyncctl import paths
    from lipsyncctl.faces.mask import mask_path

    cv2.imwrite(str(tmp_path / "mask.png"), half)
    with pytest.MonkeyPatch.context() as cwd:
        cwd.chdir(tmp_path)
        assert mask_path("mask.png") == paths.DATA_DIR / "mask.png"
        assert mask_path("./mask.png").resolve() == (tmp_path / "mask.png").resolve()
        # a relative setting is the file in the folder it was given in (a resume from elsewhere names the same file)
        assert resolve_train_config("tiny", ["data.mask=mine.png"]).data.mask == str(tmp_path / "mine.png")
        assert resolve_train_config("tiny", ["data.mask=mask.png"]).data.mask == "mask.png"  # the bundled name


def test_clips_smaller_than_the_training_resolution_are_refused(curated: Curated) -> None:
    """A 512 px run (LatentSync 1.6) on clips curated at 256 px trained on scaled-up, blurred faces without a word:
    refused, naming both sizes and how to curate at the training size; the size is the manifest's (or, in a
    manifest written before it said it, the first clip's probed frames)."""
    import dataclasses

    from lipsyncctl.training.config import resolve_train_config

    clips = td.read_clips(curated.data, kind="unet")
    assert {c.size for c in clips.clips} == {256}  # from the manifest
    cfg = resolve_train_config("tiny", ["model.resolution=512"])
    with pytest.raises(UsageError, match="aligned at 256 px, smaller than the training resolution 512") as err:
        td.make_dataset(cfg, clips)
    assert "curate.resolution=512" in (err.value.hint or "")
    unsaid = dataclasses.replace(clips, clips=tuple(dataclasses.replace(c, size=None) for c in clips.clips))
    with pytest.raises(UsageError, match="aligned at 256 px"):
        td.make_dataset(cfg, unsaid)
    assert td.make_dataset(resolve_train_config("tiny", ["model.resolution=256"]), unsaid).resolution == 256


class _Broken(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __getitem__(self, index: int) -> dict:  # type: ignore[type-arg]
        from lipsyncctl.errors import MediaError

        raise MediaError(f"clip c{index}: its aligned clip is unreadable", hint="rerun curate on its source")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_clip_that_cannot_be_read_keeps_its_message_and_hint_from_any_worker(workers: int) -> None:
    """torch's loader re-raised a worker's error as a new one whose message was the worker's traceback and
    whose hint was the class default: the sample comes back as an ItemError and the loop raises its error."""
    loader = sampling.make_loader(_Broken(), start_step=0, rank=0, world=1, batch=2, accum=1, workers=workers)
    item = next(iter(loader))
    assert isinstance(item, sampling.ItemError)
    error = item.error()
    assert (type(error).__name__, str(error), error.hint) == (
        "MediaError", "clip c0: its aligned clip is unreadable", "rerun curate on its source")


def _clip_row(k: int) -> td.TrainClip:
    size = None if k % 7 == 3 else 256
    return td.TrainClip(f"vox-{k:07d}-é", Path(f"/data/vox2/aligned/id{k:05d}/clip-{k:07d}.mp4"),
                        Path(f"/data/vox2/features/id{k:05d}/clip-{k:07d}.safetensors"), 48 + k % 90, 2 * (48 + k),
                        1 + 16 * (48 + k) // 5, size=size)


def test_clip_table_holds_the_same_clips_in_columns() -> None:
    from lipsyncctl.training.clips import ClipTable

    rows = [_clip_row(k) for k in range(300)]
    table = ClipTable(rows)
    assert len(table) == 300 and list(table) == rows and table[-1] == rows[-1] and table[5] == rows[5]
    assert table[10:13] == ClipTable(rows[10:13]) and table != ClipTable(rows[:-1])
    assert table[7].id == rows[7].id and table.sizes == [256, None] and table.counts[:, 0].tolist() == [c.frames for c in rows]
    with pytest.raises(IndexError):
        table[300]
    with pytest.raises(ValueError):  # a read-only view: the workers' shared pages are never written
        table.counts[0, 0] = 1
    # about 200 bytes a clip with VoxCeleb-like paths, not the ~1.3 KB of a Python object per clip
    assert table.nbytes < 200 * len(table), table.nbytes
    assert pickle.loads(pickle.dumps(table)) == table  # a spawned loader worker gets it in one pickle
    # the hash a resume compares is the one runs of before saved: sorted (id, frames) pairs as JSON
    import hashlib

    shuffled = [rows[k] for k in np.random.default_rng(0).permutation(300)]
    before = hashlib.sha256(json.dumps(sorted((c.id, c.frames) for c in rows)).encode()).hexdigest()[:16]
    assert table.by_id() and not ClipTable(shuffled).by_id()
    assert table.ids_frames_hash() == ClipTable(shuffled).ids_frames_hash() == before


def test_a_dataset_over_a_table_draws_as_over_the_clips(unet_clips: td.ClipSet) -> None:
    from lipsyncctl.training.clips import ClipTable

    assert isinstance(unet_clips.clips, ClipTable)
    rows = [_clip_row(k) for k in range(40)]
    a = td.UNetSamples(ClipTable(rows[::-1]), seed=5, num_frames=F, resolution=64)  # sorted by id on the way in
    b = td.UNetSamples(rows, seed=5, num_frames=F, resolution=64)
    assert a.clips == b.clips and a.clips.by_id()
    assert [a.windows(k) for k in range(200)] == [b.windows(k) for k in range(200)]
    assert all(isinstance(v, int) for v in a.windows(3))


def test_a_table_keeps_undecodable_names_and_a_builder_holds_no_clip_objects() -> None:
    """A path the OS gave as undecodable bytes (a Latin-1 folder name: lone surrogates in Python) round-trips (it
    raised UnicodeEncodeError: an internal error of train); rows appended one at a time build the same table."""
    from lipsyncctl.training.clips import ClipTable, ClipTableBuilder

    odd = td.TrainClip("caf\udce9-000000-000100", Path("/data/caf\udce9/a.mp4"), Path("/data/f.safetensors"), 100, 200,
                       321)
    rows = [_clip_row(1), odd, _clip_row(0)]
    builder = ClipTableBuilder()
    for row in rows:
        builder.append(row)
    table = builder.build()
    assert list(table) == rows and table == ClipTable(rows) and len(ClipTableBuilder().build()) == 0
    ordered = table.sorted_by_id()
    assert ordered.by_id() and [c.id for c in ordered] == sorted(c.id for c in rows) and ordered.sorted_by_id() is ordered
    assert table.counts.tolist()[1] == [100, 200, 321, 25, -1] and not table.counts.flags.writeable


def test_a_manifest_replaced_while_it_is_read_is_read_as_it_was(curated: Curated, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """read_clips reads the manifest twice (the lines to take, then those lines): a curate renaming a new manifest
    into place between the two passes made the second read other entries at those line numbers. Both passes read
    the one file opened."""
    import os

    data = tmp_path / "data"
    shutil.copytree(curated.data, data)
    before = td.read_clips(data)
    lines = (data / "manifest.jsonl").read_text().splitlines()
    real, swapped = td._verdict, []

    def verdict(entry: dict) -> str:  # type: ignore[type-arg]
        if not swapped:  # during the first pass: another curate's views land
            swapped.append(True)
            (data / "manifest.new").write_text("".join(line + "\n" for line in reversed(lines)))
            os.replace(data / "manifest.new", data / "manifest.jsonl")
        return real(entry)

    monkeypatch.setattr(td, "_verdict", verdict)
    assert td.read_clips(data).clips == before.clips and swapped


def test_an_id_written_twice_is_read_once_as_its_last_line_in_any_order(curated: Curated, unet_clips: td.ClipSet,
                                                                       tmp_path: Path) -> None:
    """Curate writes the manifest by id, so read_clips keeps one id in memory and a line number a clip (it kept every
    id); an id written twice takes its last line, adjacent or not, and a manifest in another order reads the same."""
    data = tmp_path / "data"
    shutil.copytree(curated.data, data)
    lines = (data / "manifest.jsonl").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if json.loads(line)["id"].startswith("long"))
    again = json.dumps({**json.loads(lines[at]), "frames": 90})

    def frames(manifest: list[str]) -> dict[str, int]:
        (data / "manifest.jsonl").write_text("\n".join(manifest) + "\n")
        return {c.id: c.frames for c in td.read_clips(data).clips}

    before = {c.id: c.frames for c in unet_clips.clips}
    assert frames(lines) == before
    twice = {**before, json.loads(lines[at])["id"]: 90}
    assert frames([*lines[:at + 1], again, *lines[at + 1:]]) == twice  # adjacent: the later line
    assert frames([*lines, again]) == twice                           # not adjacent: read in the other way
    assert frames(lines[::-1]) == before                              # another order: the same clips


def test_a_fileslist_line_naming_a_clip_under_another_name_is_matched_by_its_file(curated: Curated,
                                                                                   unet_clips: td.ClipSet,
                                                                                   tmp_path: Path) -> None:
    """A line that is neither a path of the manifest nor named by a clip id (a link of another name) is matched by
    the file it points to: the manifest's aligned files are resolved for such lines only."""
    data = tmp_path / "data"
    shutil.copytree(curated.data, data, symlinks=True)
    long = next(c for c in unet_clips.clips if c.id.startswith("long"))
    (data / "links").mkdir()
    (data / "links" / "first take.mp4").symlink_to(data / Path(long.video).relative_to(curated.data))
    others = [str(c.video) for c in unet_clips.clips if c is not long]
    (data / "mine.txt").write_text("\n".join(["links/first take.mp4", *others]) + "\n")
    assert [c.id for c in td.read_clips(data / "mine.txt").clips] == [c.id for c in unet_clips.clips]
    (data / "nothing.txt").write_text("links/none.mp4\n")
    with pytest.raises(UsageError, match=r"nothing.txt:1: links/none.mp4 is not a clip of"):
        td.read_clips(data / "nothing.txt")
    # the file a line points to comes before the name it has: a link named as another clip reads the clip it is
    mid = next(c for c in unet_clips.clips if c.id.startswith("mid"))
    (data / "links" / f"{mid.id}.mp4").symlink_to(data / Path(long.video).relative_to(curated.data))
    (data / "named.txt").write_text(f"links/{mid.id}.mp4\n")
    assert [c.id for c in td.read_clips(data / "named.txt").clips] == [long.id]
    # one clip listed as written and again by a path that is gone: the second is its id, read once
    (data / "twice.txt").write_text(f"{long.video}\n/elsewhere/gone/{long.id}.mp4\n")
    assert [c.id for c in td.read_clips(data / "twice.txt").clips] == [long.id]
