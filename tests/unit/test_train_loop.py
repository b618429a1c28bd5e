"""The training loop end to end on a curated folder (tiny random networks through the real loaders):
resume bit for bit (also after kill -9), worker-count independence, accumulation, the NaN guard, exports
that ``sync`` loads, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lipsyncctl import api, progress
from lipsyncctl.training import loop, runfolder
from tests.train_media import Curated, curated_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Curated:
    return curated_folder(tmp_path_factory.mktemp("train-loop"))


def losses(run: Path) -> list[float]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return [float(v) for _, name, v in rows if name == "loss"]


def weights(run: Path, name: str = "unet.safetensors") -> dict[str, torch.Tensor]:
    return load_file(run / "export" / name)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run_train(curated: Curated, out: Path, preset: str, *sets: str, resume: str | None = None) -> loop.TrainResult:
    cfg = api.resolve_train_config(preset, sets)
    return api.train(curated.data, out, cfg, resume=resume)


def resumed_tb_purge(run: Path) -> int | None:
    """The purge step a resume's TensorBoard writer of ``run`` gets (resumed from step 2: 3), read from a stand-in
    writer (the tensorboard package is the `train` extra's)."""
    import types

    class Writer:
        def __init__(self, folder: str, purge_step: int | None = None) -> None:
            self.purge_step = purge_step

        def close(self) -> None:
            pass

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
        probe = run.parent / "probe"
        probe.mkdir(exist_ok=True)
        shutil.copy(run / "metrics.csv", probe / "metrics.csv")  # (its rows past step 2 are dropped, as on resume)
        metrics = loop._Metrics(probe / "metrics.csv", probe / "tb", enabled=True, append=True, after=2)
    try:
        return metrics.tb.purge_step
    finally:
        metrics.close()


def test_resume_is_bit_exact_with_0_and_2_workers(curated: Curated, tmp_path: Path) -> None:
    straight = run_train(curated, tmp_path / "a", "tiny-stage1", "run.max_steps=4", "run.save_every=1",
                         "run.keep=2")
    assert straight.steps == 4 and straight.trainable["tensors"] > 0 and len(losses(tmp_path / "a")) == 4
    # the result lists the checkpoints --keep left, not those it removed
    assert [Path(c).name for c in straight.checkpoints] == ["step-000003", "step-000004"]
    run_train(curated, tmp_path / "b", "tiny-stage1", "run.max_steps=2", "run.save_every=2", "data.workers=2")
    cut_short = tmp_path / "b" / "checkpoints" / ".step-000009.tmp"  # a save of a killed run (of a later step)
    cut_short.mkdir()
    (cut_short / "model.safetensors").write_bytes(b"half")
    with progress.use_sink(progress.RecordingSink()) as sink:
        resumed = run_train(curated, tmp_path / "b", "tiny-stage1", "run.max_steps=4", "run.save_every=2",
                            "data.workers=2", resume="latest")
    assert resumed.start_step == 2 and resumed.steps == 2
    assert not cut_short.exists()  # (it stayed: only a save of its own step removed it)
    said = [e[1] for e in sink.events if e[0] == "message"]  # where it continues, not the init it replaced
    assert any(m.startswith("resume: ") and "step-000002 (step 2:" in m for m in said), said
    assert not any(m.startswith("init: ") for m in said)
    assert resumed.init_report == [f"resume: {tmp_path / 'b' / 'checkpoints' / 'step-000002'} (step 2)"]  # (--json)
    assert resumed_tb_purge(tmp_path / "b") == 3  # TensorBoard drops what a killed run logged past step 2, as the CSV
    assert losses(tmp_path / "b") == losses(tmp_path / "a")
    assert same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    # the export is what sync loads: official layout and our safetensors, through the strict loader
    from lipsyncctl.checkpoints.loaders import load_unet

    official = torch.load(tmp_path / "a" / "export" / "latentsync_unet.pt", weights_only=True)
    assert official["global_step"] == 4 and same(official["state_dict"], weights(tmp_path / "a"))
    load_unet(None, tmp_path / "a" / "export" / "unet.safetensors")
    # sync with a preset's unet_config (tiny: motion modules) builds the export as its header says (a stage-1 UNet)
    from lipsyncctl.pipeline.networks import ModelFiles, _load_unet

    files = ModelFiles(unet=tmp_path / "a" / "export" / "unet.safetensors", unet_config="tiny", whisper=Path("-"),
                       vae=Path("-"), is_tiny=False)
    with progress.use_sink(progress.RecordingSink()) as sink:
        unet, built, trained_mask = _load_unet(files, torch.device("cpu"), torch.float32)
    assert unet.config.use_motion_module is False and same(unet.state_dict(), weights(tmp_path / "a"))
    assert built == "tiny_stage1" and trained_mask == "mask.png"  # what --json's models say; the header's mask
    # the export's header says a mouth mask of its own; a render with another is warned about
    from lipsyncctl.training.state import weights_header

    assert weights_header("unet", unet.config, "x", 1, "/m/own.png")["mask"] == "/m/own.png"
    assert "mask" not in weights_header("unet", unet.config, "x", 1, "mask.png")
    from lipsyncctl.pipeline.networks import Networks, mask_warning

    nets = Networks(None, None, None, None, torch.device("cpu"), torch.float32, 64, files={"unet": "u.safetensors"},
                    trained_mask="mask.png")
    assert mask_warning(nets, "mask.png") is None
    assert mask_warning(nets, "/m/own.png") == ("u.safetensors was trained with the mouth mask mask.png; this render "
                                                "uses /m/own.png (--set model.mask=mask.png)")
    assert any(e[0] == "message" and "states its own architecture (tiny_stage1), not model.unet_config tiny" in e[1]
               for e in sink.events)
    # a resume under another stream is refused; an occupied run folder needs --resume or -y
    from lipsyncctl.errors import UsageError

    with pytest.raises(UsageError, match=r"another configuration \(optim.weight_decay 0.01 -> 0.1\)"):
        run_train(curated, tmp_path / "b", "tiny-stage1", "optim.weight_decay=0.1", resume="latest")
    with pytest.raises(UsageError, match="already holds"):
        run_train(curated, tmp_path / "b", "tiny-stage1")
    # the checkpoint itself says what it continues (resumed into another folder, RUN/train.yaml is not there)
    checkpoint = str(tmp_path / "b" / "checkpoints" / "step-000002")
    with pytest.raises(UsageError, match=r"another configuration \(optim.weight_decay 0.01 -> 0.1\)"):
        run_train(curated, tmp_path / "c", "tiny-stage1", "optim.weight_decay=0.1", resume=checkpoint)
    fewer = curated.data / "fewer.txt"  # other training clips: another sample stream
    fewer.write_text((curated.data / "train.txt").read_text().splitlines()[0] + "\n")
    with pytest.raises(UsageError, match="training clips are not the ones"):
        api.train(fewer, tmp_path / "c", api.resolve_train_config("tiny-stage1", ["run.max_steps=4"]), resume=checkpoint)
    fewer.unlink()
    with pytest.raises(UsageError, match="written by 2 process"):
        runfolder.check_resumable({"world_size": 2}, Path(checkpoint), api.resolve_train_config("tiny-stage1"), 1, "x",
                              "no")
    # the precision as resolved is the checkpoint's: `auto` resolving otherwise on another machine is refused
    from lipsyncctl.training import state

    assert state.load_checkpoint(Path(checkpoint), 0)[1]["precision"] == "no"
    with pytest.raises(UsageError, match="trained with mixed precision fp16, this run would use bf16") as err:
        runfolder.check_resumable({"precision": "fp16"}, Path(checkpoint), api.resolve_train_config("tiny-stage1"), 1,
                              "x", "bf16")
    assert "--mixed-precision fp16 on a GPU" in (err.value.hint or "")
    # checkpoints written before the precision was recorded: their GradScaler state says whether it was fp16
    tiny = api.resolve_train_config("tiny-stage1")
    with pytest.raises(UsageError, match="without fp16 loss scaling") as err:
        runfolder.check_resumable({"scaler": None}, Path(checkpoint), tiny, 1, "x", "fp16")  # bf16 auto of before
    assert "--mixed-precision bf16" in (err.value.hint or "")
    with pytest.raises(UsageError, match="mixed precision fp16, this run would use bf16"):
        runfolder.check_resumable({"scaler": {"scale": 1024.0}}, Path(checkpoint), tiny, 1, "x", "bf16")
    runfolder.check_resumable({"scaler": None}, Path(checkpoint), tiny, 1, "x", "no")  # a CPU run of before


def test_a_resume_refuses_clips_or_a_mask_whose_files_changed(curated: Curated, tmp_path: Path) -> None:
    """The same clip ids and lengths over other files (DATA re-curated from replaced footage), or the mask PNG
    edited in place, would continue a run on other data in silence: refused, naming which. A copy of DATA (other
    paths and mtimes, the same files) resumes."""
    import shutil

    from lipsyncctl.errors import UsageError
    from lipsyncctl.paths import DATA_DIR

    data, mask = tmp_path / "data", tmp_path / "m" / "mine.png"
    shutil.copytree(curated.data, data)
    mask.parent.mkdir()
    shutil.copy(DATA_DIR / "mask.png", mask)
    sets = ("run.max_steps=2", "run.save_every=1", f"data.mask={mask}")
    api.train(data, tmp_path / "run", api.resolve_train_config("tiny-stage1", sets))
    more = api.resolve_train_config("tiny-stage1", [*sets, "run.max_steps=3"])
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    os.utime(mask, (1, 1))  # touched, the same bytes: resumes
    resumed = api.train(copy, tmp_path / "run", more, resume="latest")
    assert resumed.steps == 1 and resumed.to_dict()["warnings"] == []  # the copy's own files: nothing to say
    more = api.resolve_train_config("tiny-stage1", [*sets, "run.max_steps=4"])
    original = mask.read_bytes()
    mask.write_bytes(original[:-12] + bytes(12))  # edited in place
    with pytest.raises(UsageError, match=r"the mouth mask .*mine.png is not the file .* trained with"):
        api.train(data, tmp_path / "run", more, resume="latest")
    mask.write_bytes(original)
    from lipsyncctl.training.data import read_clips

    video = read_clips(data).clips[0].video
    with video.open("ab") as f:  # another alignment of the same span: same id and length, other bytes
        f.write(b"\0" * 64)
    with pytest.raises(UsageError, match=r"the training clips' files are not the ones .* other content"):
        api.train(data, tmp_path / "run", more, resume="latest")


def test_a_warm_up_ramps_the_lr_and_a_resume_continues_it(curated: Curated, tmp_path: Path) -> None:
    sets = ("run.max_steps=4", "run.save_every=2", "optim.warmup_steps=4", "optim.lr=0.001")
    run_train(curated, tmp_path / "a", "tiny-stage1", *sets)
    rows = [line.split(",") for line in (tmp_path / "a" / "metrics.csv").read_text().splitlines()[1:]]
    assert [float(v) for _, name, v in rows if name == "lr"] == pytest.approx([0.00025, 0.0005, 0.00075, 0.001])
    run_train(curated, tmp_path / "b", "tiny-stage1", *sets[1:], "run.max_steps=2")
    run_train(curated, tmp_path / "b", "tiny-stage1", *sets, resume="latest")
    assert losses(tmp_path / "b") == losses(tmp_path / "a") and same(weights(tmp_path / "b"), weights(tmp_path / "a"))
    cfg = api.resolve_train_config("tiny-stage1")
    assert loop.lr_at(cfg, 0) == loop.lr_at(cfg, 10**6) == cfg.optim.lr  # official: constant, no warm-up
    # the lr may change on resume (a schedule changed on purpose): said, and each step's lr is in metrics.csv
    run_train(curated, tmp_path / "c", "tiny-stage1", *sets[1:], "run.max_steps=2")
    with progress.use_sink(progress.RecordingSink()) as sink:
        run_train(curated, tmp_path / "c", "tiny-stage1", *sets[:3], "optim.lr=0.002", resume="latest")
    assert any(e[1] == "resume: optim.lr 0.001 -> 0.002 from step 2 on" for e in sink.events if e[0] == "message")
    rows = [line.split(",") for line in (tmp_path / "c" / "metrics.csv").read_text().splitlines()[1:]]
    assert [float(v) for _, name, v in rows if name == "lr"] == pytest.approx([0.00025, 0.0005, 0.0015, 0.002])
    assert losses(tmp_path / "c")[:2] == losses(tmp_path / "a")[:2]


def test_a_second_train_into_a_live_run_folder_is_busy(curated: Curated, tmp_path: Path) -> None:
    """A requeued job while the first still runs (``--resume latest``) or ``-y`` into a live run trained beside it
    (both exit 0, the folder's checkpoints and metrics mixed, or wiped under the live run): the folder's lock refuses
    it (exit 6) before it touches anything; the held run's files stay."""
    import threading

    from lipsyncctl.errors import BusyError
    from lipsyncctl.runner.lock import folder_lock

    out = tmp_path / "run"
    run_train(curated, out, "tiny-stage1", "run.max_steps=2", "run.save_every=2")
    before = sorted(p.relative_to(out) for p in out.rglob("*") if ".lipsyncctl" not in p.parts)
    with folder_lock(out):  # the live run
        for extra in ({"resume": "latest"}, {"overwrite": True}):
            cfg = api.resolve_train_config("tiny-stage1", ["run.max_steps=4", "run.save_every=2"])
            with pytest.raises(BusyError) as err:
                api.train(curated.data, out, cfg, **extra)
            assert err.value.exit_code == 6 and "--shard" not in (err.value.hint or "")
        assert sorted(p.relative_to(out) for p in out.rglob("*") if ".lipsyncctl" not in p.parts) == before
        # --wait: waits for the live run, then resumes
        done: list[loop.TrainResult] = []
        waiter = threading.Thread(target=lambda: done.append(api.train(curated.data, out, cfg, resume="latest",
                                                                       wait=True)))
        waiter.start()
        waiter.join(1.5)
        assert waiter.is_alive() and not done
    waiter.join(120)
    assert done and done[0].start_step == 2 and done[0].steps == 2
    # Ctrl-C while waiting: nothing of this run started (the checkpoints there are the live run's)
    from lipsyncctl.errors import Interrupted
    from lipsyncctl.runner import lock as lock_mod

    def interrupted(*a, **k):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    with folder_lock(out), pytest.MonkeyPatch.context() as sleep:
        sleep.setattr(lock_mod.time, "sleep", interrupted)
        with pytest.raises(Interrupted, match="while waiting for the run writing to") as stopped:
            api.train(curated.data, out, cfg, resume="latest", wait=True)
    assert "nothing of this run had started" in (stopped.value.hint or "")
    # a rank of a group whose launching process holds the folder (train --gpus N) does not wait for itself
    from lipsyncctl.training.runfolder import RUN_HELD_ENV

    with folder_lock(out), pytest.MonkeyPatch.context() as env:
        env.setenv(RUN_HELD_ENV, str(out.absolute()))
        more = api.train(curated.data, out, api.resolve_train_config("tiny-stage1", ["run.max_steps=5",
                                                                                     "run.save_every=5"]),
                         resume="latest")
    assert more.start_step == 4 and more.steps == 1


def test_a_full_disk_at_a_checkpoint_says_so_and_leaves_nothing_half_written(curated: Curated, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk in a checkpoint's save was "internal error: ... unexpected pos" (torch's writer) and left the
    half-written checkpoint folder: a write error (exit 1) naming the checkpoint, the space free and about what it
    needs, the temporary folder removed, the checkpoints before it intact."""
    import errno

    from lipsyncctl.errors import WriteError
    from lipsyncctl.training import state

    real = state._atomic_torch_save

    def full_at_step_4(obj, path):  # type: ignore[no-untyped-def]
        if path.name == "state.pt" and "step-000004" in path.parent.name:
            path.with_name(".state.pt.partial").write_bytes(b"x" * 1000)
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5234496") from None
        return real(obj, path)

    monkeypatch.setattr(state, "_atomic_torch_save", full_at_step_4)
    with pytest.raises(WriteError) as err:
        run_train(curated, tmp_path / "run", "tiny-stage1", "run.max_steps=6", "run.save_every=2")
    message = err.value.message
    assert err.value.exit_code == 1 and "step-000004: cannot write it: No space left on device" in message, message
    assert "free there; it needs about" in message and "--resume latest" in (err.value.hint or "")
    assert "--keep 1" in (err.value.hint or "")  # keep 2: one fewer frees space (with --keep 1 it would not)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["step-000002"]  # no temporary folder left
    assert state.load_checkpoint(checkpoints / "step-000002", 0)[1]["step"] == 2
    # full at the first checkpoint: nothing to resume from, the same command starts again (it said --resume latest)
    with pytest.raises(WriteError) as err:
        run_train(curated, tmp_path / "first", "tiny-stage1", "run.max_steps=6", "run.save_every=4")
    assert "rerun the same command: nothing was checkpointed yet" in (err.value.hint or "")
    assert "--resume" not in (err.value.hint or "")


def test_a_failed_export_leaves_the_export_of_before_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from lipsyncctl.errors import WriteError
    from lipsyncctl.training import state

    net = torch.nn.Linear(2, 2)
    state.export_weights(tmp_path, model=net, kind="syncnet", arch={}, arch_name="x", step=1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "export").iterdir()}

    def full(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lipsyncctl.checkpoints.io.write_safetensors", full)
    with torch.no_grad():
        net.weight.add_(1.0)
    with pytest.raises(WriteError, match="No space left on device"):
        state.export_weights(tmp_path, model=net, kind="syncnet", arch={}, arch_name="x", step=2)
    assert {p.name: p.read_bytes() for p in (tmp_path / "export").iterdir()} == before  # step 1's pair, whole


def test_safetensors_write_failures_are_os_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """safetensors says a full disk in its own error type ("... (os error 28)"): an OSError with that errno, so
    every writer of weights reports it as a write failure."""
    import errno

    from lipsyncctl.checkpoints import io

    def full(*a, **k):  # type: ignore[no-untyped-def]
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(OSError) as err:
        io.write_safetensors(tmp_path / "w.safetensors", {"a": torch.zeros(2)})
    assert err.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())


def test_train_leaves_the_callers_random_state_alone_and_says_a_batch_larger_than_the_data(curated: Curated,
                                                                                          tmp_path: Path) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with progress.use_sink(progress.RecordingSink()) as sink:
        run_train(curated, tmp_path / "o", "tiny-stage1", "run.max_steps=1", "run.save_every=1", "data.batch_size=3")
    assert torch.equal(torch.get_rng_state(), before)
    said = [e[1] for e in sink.events if e[0] == "message"]
    assert any("a step draws 3 samples from 2 training clip(s)" in m for m in said), said


def test_auto_precision_is_the_official_fp16_on_a_gpu() -> None:
    """The official runs train in fp16 autocast + GradScaler (bf16 was `auto`'s choice on A100/H100: not the
    recipe); bf16 only when asked; none on the CPU."""
    assert loop.resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert loop.resolve_precision("auto", torch.device("cpu")) == "no"
    assert loop.resolve_precision("bf16", torch.device("cuda")) == "bf16"


def test_accumulation_matches_the_larger_batch(curated: Curated, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """2 micro-batches of 1 = a batch of 2: the same losses, and weights within 5 % of one AdamW step (lr) of each
    other. AdamW divides each gradient by its running size, so where a gradient is near 0 the float rounding of
    a sum in two parts moves the update by up to ~1.5 % of lr (measured: 1.5e-6 at lr 1e-4; a fixed 1e-6
    tolerance failed after a fresh install of the same pins); the first micro-batch alone moves it by 3e-4 (the control)."""
    a = run_train(curated, tmp_path / "a", "tiny-stage1", "run.max_steps=2", "data.batch_size=2")
    monkeypatch.chdir(tmp_path)  # -o given relative: the result (and --json) names it absolute
    b = run_train(curated, Path("b"), "tiny-stage1", "run.max_steps=2", "optim.grad_accum=2")
    assert b.run == str(tmp_path / "b") and all(Path(p).is_absolute() for p in b.export.values())
    assert a.losses["loss"] == pytest.approx(b.losses["loss"], rel=1e-5)
    tolerance = 0.05 * api.resolve_train_config("tiny-stage1").optim.lr
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=tolerance, rtol=0)
    run_train(curated, tmp_path / "c", "tiny-stage1", "run.max_steps=2")  # the first micro-batch only
    wc = weights(tmp_path / "c")
    assert max((wa[k] - wc[k]).abs().max().item() for k in wa) > 20 * tolerance


def test_loss_falls_when_overfitting_one_sample(curated: Curated, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsyncctl.training import sampling

    real = sampling.make_loader

    def one_sample(dataset, **kw):  # the same sample and draws every step
        batch = next(iter(real(dataset, **kw)))
        while True:
            yield batch

    monkeypatch.setattr(sampling, "make_loader", one_sample)
    run_train(curated, tmp_path / "o", "tiny-stage1", "run.max_steps=12", "optim.lr=0.003", "run.save_every=100")
    values = losses(tmp_path / "o")
    assert values[-1] < 0.7 * values[0] and min(values[-3:]) < min(values[:3]), values


def test_nan_step_is_skipped_on_every_rank_and_never_saved(curated: Curated, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop._micro_step
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, values = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), values) if calls["n"] == 2 else (loss, values)

    monkeypatch.setattr(loop, "_micro_step", poisoned)
    result = run_train(curated, tmp_path / "n", "tiny-stage1", "run.max_steps=3", "run.save_every=1")
    assert result.skipped_steps == 1
    for tensor in weights(tmp_path / "n").values():
        assert torch.isfinite(tensor).all()
    # N non-finite steps in a row stop the run; the checkpoints before stay intact
    monkeypatch.setattr(loop, "_micro_step", lambda *a, **k: (lambda lv: (lv[0] * float("nan"), lv[1]))(real(*a, **k)))
    with pytest.raises(loop.DivergedError):
        run_train(curated, tmp_path / "d", "tiny-stage1", "run.max_steps=5", "run.nan_abort_after=2")
    assert not (tmp_path / "d" / "export").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lipsyncctl", *args]


@pytest.mark.slow
def test_two_gloo_processes_match_one_at_twice_the_batch(curated: Curated, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    one = subprocess.run(_cli("--json", "train", "--preset", "tiny-stage1", "--data", str(curated.data), "-o",
                              str(tmp_path / "one"), "--max-steps", "2", "--batch-size", "2"),
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(_cli("train", "--preset", "tiny-stage1", "--data", str(curated.data), "-o",
                              str(tmp_path / "two"), "--max-steps", "2", "--batch-size", "1", "--nproc", "2"),
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Grad strides" not in two.stderr  # DDP's false alarm about 1x1 kernels is not shown
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)


@pytest.mark.slow  # opt-in (-m slow): keeps the default suite under 10 min
def test_cli_kill_9_then_resume_equals_uninterrupted(curated: Curated, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = ["train", "--preset", "tiny-stage1", "--data", str(curated.data), "--save-every", "1", "--max-steps", "4"]
    done = subprocess.run(_cli("--json", *base, "-o", str(tmp_path / "a")), env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["steps"] == 4 and report["export"]["official"].endswith("latentsync_unet.pt")
    proc = subprocess.Popen(_cli(*base, "-o", str(tmp_path / "b")), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (tmp_path / "b" / "checkpoints" / "step-000002").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = subprocess.run(_cli(*base, "-o", str(tmp_path / "b"), "--resume", "latest"), env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    # it says where it continues from, not the init file whose weights the checkpoint replaced
    assert re.search(r"^resume: .*step-00000[23] \(step [23]:", again.stderr, re.M), again.stderr
    assert "init: " not in again.stderr
    assert same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert losses(tmp_path / "b")[-2:] == losses(tmp_path / "a")[-2:]
    occupied = subprocess.run(_cli(*base, "-o", str(tmp_path / "b")), env=env, capture_output=True, text=True)
    assert occupied.returncode == 2 and "--resume latest" in occupied.stderr


def test_steps_the_fp16_scaler_skips_are_counted_and_a_collapsed_scale_stops_the_run() -> None:
    """fp16 + GradScaler: an overflowing step is skipped by the scaler (it was not counted, and the NaN guard
    never saw persistent NaN gradients); a scale under MIN_LOSS_SCALE means NaN at any scale: stop."""
    from types import SimpleNamespace

    def acc(skipped: bool, scale: float) -> SimpleNamespace:
        return SimpleNamespace(scaler=SimpleNamespace(get_scale=lambda: scale), optimizer_step_was_skipped=skipped)

    assert loop._scaler_skipped(acc(True, 2.0**15), 0) is True  # an overflow early in a run: counted, not fatal
    assert loop._scaler_skipped(acc(False, 2.0**16), 0) is False
    assert loop._scaler_skipped(SimpleNamespace(scaler=None, optimizer_step_was_skipped=False), 0) is False
    with pytest.raises(loop.DivergedError, match="loss scale fell to"):
        loop._scaler_skipped(acc(True, loop.MIN_LOSS_SCALE / 2), 41)


def test_lora_and_ema_train_resume_bit_exact_and_export_official_weights(curated: Curated, tmp_path: Path) -> None:
    """run.lora_rank and run.ema_decay (they had no test): the adapters start from the run's seed alone (not
    from what drew from the global generator before), a 2 + 2 resume equals 4 straight steps with the EMA
    restored, and the exports carry the official names with the adapters merged in."""
    import torch

    from lipsyncctl.checkpoints.loaders import load_unet
    from lipsyncctl.training.lora import add_lora
    from lipsyncctl.training.networks import build_unet

    cfg = api.resolve_train_config("tiny", ["run.lora_rank=4"])
    starts = []
    for draws in (0, 5):
        model = build_unet(cfg, cfg.run.seed)[0]
        torch.rand(draws)  # the global generator in another state
        add_lora(model, 4, cfg.model.trainable, seed=cfg.run.seed)
        starts.append({k: v.clone() for k, v in model.state_dict().items() if "lora_A" in k})
    assert starts[0] and same(starts[0], starts[1])
    sets = ("run.lora_rank=4", "run.ema_decay=0.5", "run.save_every=2", "run.validate_every=0")
    run_train(curated, tmp_path / "a", "tiny", "run.max_steps=4", *sets)
    run_train(curated, tmp_path / "b", "tiny", "run.max_steps=2", *sets)
    run_train(curated, tmp_path / "b", "tiny", "run.max_steps=4", *sets, resume="latest")
    assert losses(tmp_path / "b") == losses(tmp_path / "a")
    for name in ("export", "export-ema"):
        a = load_file(tmp_path / "a" / name / "unet.safetensors")
        assert same(a, load_file(tmp_path / "b" / name / "unet.safetensors"))
        assert not any("lora_" in k or "base_layer" in k for k in a)  # the official names, adapters merged
        load_unet(None, tmp_path / "a" / name / "unet.safetensors")  # what sync loads, strictly
    assert not same(weights(tmp_path / "a"), load_file(tmp_path / "a" / "export-ema" / "unet.safetensors"))


def test_a_resume_after_a_kill_logs_each_step_once_and_overwrite_clears_every_output(curated: Curated,
                                                                                      tmp_path: Path) -> None:
    """Steps a killed run logged after its last checkpoint run again on resume: their metrics rows are
    dropped first (they were in metrics.csv twice). A resume past max_steps is refused; -y removes every
    output of the old run (export-ema and validation were left)."""
    import shutil

    from lipsyncctl.errors import UsageError

    run_train(curated, tmp_path / "a", "tiny-stage1", "run.max_steps=4", "run.log_every=1")
    run_train(curated, tmp_path / "b", "tiny-stage1", "run.max_steps=3", "run.save_every=2", "run.log_every=1")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-000003")  # killed after logging step 3
    run_train(curated, tmp_path / "b", "tiny-stage1", "run.max_steps=4", "run.save_every=2", "run.log_every=1",
              resume="latest")
    assert losses(tmp_path / "b") == losses(tmp_path / "a") and len(losses(tmp_path / "a")) == 4
    with pytest.raises(UsageError, match="is at step 4, past run.max_steps 3"):
        run_train(curated, tmp_path / "b", "tiny-stage1", "run.max_steps=3", resume="latest")
    for stale in ("export-ema", "validation"):
        (tmp_path / "b" / stale).mkdir()
    cfg = api.resolve_train_config("tiny-stage1", ["run.max_steps=1"])
    api.train(curated.data, tmp_path / "b", cfg, overwrite=True)
    assert not (tmp_path / "b" / "export-ema").exists() and not (tmp_path / "b" / "validation").exists()


def test_the_held_out_loss_decodes_nothing(curated: Curated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation's loss is the recon MSE: its forwards run without the decode and the pixel terms (they ran, and
    were thrown away); training's run with them."""
    from lipsyncctl.training import step

    real, seen = step.unet_micro_step, []

    def recording(nets, batch, cfg, **kw):  # type: ignore[no-untyped-def]
        seen.append((torch.is_grad_enabled(), cfg.pixel_supervision))
        return real(nets, batch, cfg, **kw)

    monkeypatch.setattr(step, "unet_micro_step", recording)
    result = run_train(curated, tmp_path / "o", "tiny", "run.max_steps=1", "run.save_every=1", "run.validate_every=1",
                       "run.val_sync=false")
    assert result.validation.get("loss") is not None, result.validation
    assert (True, True) in seen and (False, False) in seen and (False, True) not in seen, seen


def test_validation_without_val_clips_is_said(curated: Curated, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """run.validate_every on data whose val split is empty logged nothing and said nothing: a warning now."""
    from lipsyncctl import progress
    from lipsyncctl.training import data as train_data

    real = train_data.read_clips

    def no_val(data, *, split, **kw):  # type: ignore[no-untyped-def]
        clips = real(data, split=split, **kw)
        return dataclasses.replace(clips, clips=[]) if split == "val" else clips

    monkeypatch.setattr(train_data, "read_clips", no_val)
    with progress.use_sink(progress.RecordingSink()) as sink:
        result = run_train(curated, tmp_path / "o", "tiny-stage1", "run.max_steps=2", "run.save_every=2",
                           "run.validate_every=2", "run.val_sync=false")
    said = [e[1] for e in sink.events if e[0] == "message" and e[1].startswith(progress.WARNING_PREFIX)]
    assert any("run.validate_every 2:" in w and "has no val clips" in w for w in said), said
    assert result.validation == {}


def test_without_the_train_extra_lora_is_exit_4_and_tensorboard_is_said(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A lean install (no `train` extra): run.lora_rank was a ModuleNotFoundError traceback, and the TensorBoard
    events were left out without a word."""
    from lipsyncctl.errors import MissingToolError
    from lipsyncctl.training.lora import add_lora

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(MissingToolError, match="run.lora_rank needs the peft package") as err:
        add_lora(torch.nn.Linear(2, 2), 4, ())
    assert err.value.exit_code == 4 and "lipsyncctl[train]" in (err.value.hint or "")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with progress.use_sink(progress.RecordingSink()) as sink:
        metrics = loop._Metrics(tmp_path / "metrics.csv", tmp_path / "tb", enabled=True, append=False)
    assert metrics.tb is None
    assert any("no TensorBoard events" in e[1] and "lipsyncctl[train]" in e[1] for e in sink.events if e[0] == "message")


def test_a_trained_syncnet_is_a_unet_runs_sync_loss(curated: Curated, tmp_path: Path) -> None:
    """What the README says of a SyncNet run's export: its official-layout file is the sync loss of a UNet run."""
    sn = run_train(curated, tmp_path / "sn", "tiny-syncnet", "run.max_steps=2", "run.save_every=2")
    assert sorted(Path(p).name for p in sn.export.values()) == ["stable_syncnet.pt", "syncnet.safetensors"]
    unet = run_train(curated, tmp_path / "u", "tiny", "run.max_steps=1", "run.validate_every=0",
                     f"model.syncnet={sn.export['official']}")  # (by hand, 2026-12-07: the safetensors, the same loss)
    assert unet.losses["sync"] > 0


def test_a_data_loader_worker_killed_from_outside_is_said_as_such(curated: Curated, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An official preset's batch on a small machine: the OOM killer took a loader worker and the run ended in
    "internal error ... report the traceback"; it says what happened and how to use less memory (exit 1), whichever
    of torch's two messages it comes as and wherever the loop was (torch raises it from its SIGCHLD handler)."""
    from lipsyncctl.errors import JobFailedError

    cfg = api.resolve_train_config("tiny-stage1", ["run.max_steps=2", "data.batch_size=2"])
    for said in ("DataLoader worker (pid(s) 12918) exited unexpectedly",
                 "DataLoader worker (pid 12918) is killed by signal: Killed. "):
        def killed(*args: object, said: str = said, **kwargs: object) -> None:
            raise RuntimeError(said)

        monkeypatch.setattr(loop, "_micro_step", killed)  # in the middle of a step, not at a batch
        with pytest.raises(JobFailedError, match="data-loader worker process died .*out-of-memory killer") as err:
            loop.train(cfg, data=curated.data, out=tmp_path / "run", overwrite=True)
        assert err.value.exit_code == 1 and f"--batch-size below {cfg.data.batch_size}" in (err.value.hint or "")
    one = api.resolve_train_config("tiny-stage1", ["run.max_steps=2"])  # a batch of 1: no smaller one to offer
    with pytest.raises(JobFailedError) as err:
        loop.train(one, data=curated.data, out=tmp_path / "run", overwrite=True)
    assert "--batch-size" not in (err.value.hint or "") and "--workers below 1" in (err.value.hint or "")
    # a worker a SIGTERM (or SIGINT) ended was stopped as the run is (a process group's signal: `timeout`, a
    # scheduler): an interrupt, exit 130, with the way on (it was exit 1, blaming memory)
    from lipsyncctl.errors import Interrupted

    def stopped(*args: object, **kwargs: object) -> None:  # (a worker killed before its handler was in place)
        raise RuntimeError("DataLoader worker (pid 8413) is killed by signal: Terminated. ")

    monkeypatch.setattr(loop, "_micro_step", stopped)
    with pytest.raises(Interrupted) as err:
        api.train(curated.data, tmp_path / "run", cfg, overwrite=True)
    assert err.value.exit_code == 130 and "rerun the same command" in (err.value.hint or "")
    monkeypatch.setattr(loop, "_micro_step", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("CUDA error")))
    with pytest.raises(RuntimeError, match="CUDA error"):
        loop.train(cfg, data=curated.data, out=tmp_path / "run", overwrite=True)


def test_a_refused_overwrite_keeps_the_run_and_a_resume_from_before_sets_later_checkpoints_aside(
        curated: Curated, tmp_path: Path) -> None:
    """-y replaces a run only once every check of the new one has passed (a wrong --data removed a finished run,
    then stopped with exit 5); -y with --resume is refused (it was ignored); a resume from an earlier checkpoint
    moves the later ones aside (--resume latest took the abandoned branch's step after an interrupt)."""
    from lipsyncctl.errors import MediaError, UsageError
    from lipsyncctl.training import state

    run = tmp_path / "a"
    run_train(curated, run, "tiny-stage1", "run.max_steps=4", "run.save_every=2", "run.keep=5")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    cfg = api.resolve_train_config("tiny-stage1", ["run.max_steps=1"])
    with pytest.raises(MediaError):
        api.train(tmp_path / "nodata", run, cfg, overwrite=True)
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    with pytest.raises(UsageError, match="--resume and --overwrite/-y"):
        api.train(curated.data, run, cfg, resume="latest", overwrite=True)
    with progress.use_sink(progress.RecordingSink()) as sink:
        run_train(curated, run, "tiny-stage1", "run.max_steps=3", "run.save_every=2", "run.keep=5",
                  "optim.lr=0.00005", resume=str(run / "checkpoints" / "step-000002"))
    assert 4 not in [n for n, _ in state.list_checkpoints(run)]
    assert [p.name for p in (run / "set-aside").glob("*/step-*")] == ["step-000004"]
    assert any("later checkpoints of the run before (step 4) moved to" in str(e[1]) for e in sink.events
               if e[0] == "message")
    # each logged step is a line of the log with its loss (only metrics.csv and TensorBoard had it)
    lines = [str(e[1]) for e in sink.events if e[0] == "message" and str(e[1]).startswith("step ")]
    assert len(lines) == 1 and re.match(r"step 3/3: loss [0-9.e+-]+, lr 5e-05, [0-9.e+-]+ samples/s$", lines[0])
    assert loop.step_line(4, 9, {"loss": 1.5, "recon": 1.25, "sync": 0.5}, 1e-4, 2.0) == \
        "step 4/9: loss 1.5 (recon 1.25, sync 0.5), lr 0.0001, 2 samples/s"


@pytest.mark.slow  # opt-in (-m slow)
def test_sigterm_to_the_process_group_with_loader_workers_is_an_interrupt(curated: Curated, tmp_path: Path) -> None:
    """`timeout` or a scheduler signals the whole group: the loader workers get SIGTERM too, and leave as on Ctrl-C;
    the run ends interrupted (130), not as a worker killed from outside (1)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_cli("--progress", "lines", "train", "--preset", "tiny-stage1", "--data", str(curated.data),
                                 "-o", str(tmp_path / "r"), "--max-steps", "400", "--workers", "2"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not (tmp_path / "r" / "metrics.csv").is_file() or "loss" not in (tmp_path / "r" / "metrics.csv").read_text():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "out-of-memory" not in err


def test_a_loader_workers_sigterm_ends_it_as_ctrl_c_and_a_second_one_at_once(tmp_path: Path) -> None:
    """A data-loader worker (its init: sampling._one_thread) leaves on SIGTERM as on Ctrl-C (torch's worker loop
    ends quietly, the run says interrupted, 130), and a second SIGTERM, to one stuck in C code, ends it at once."""
    code = ("import os, signal, time\n"
            "from lipsyncctl.training import sampling\n"
            "sampling._one_thread(0)\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(5)\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted', signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(5)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "interrupted True" and done.returncode == -signal.SIGTERM, done.stderr


def test_a_trainable_part_naming_no_parameter_is_said_before_the_networks_load(curated: Curated, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in model.trainable was said once the networks had loaded (minutes for the full UNet), and the memory
    estimate (doctor --preset) counted nothing trained in silence. Both check the architecture first now."""
    from lipsyncctl.errors import ConfigError
    from lipsyncctl.training import networks
    from lipsyncctl.training.memory import estimate_training_memory

    monkeypatch.setattr(networks, "load_train_networks", lambda *a, **k: pytest.fail("loaded before the check"))
    sets = ("model.trainable=[motion_modules.,atention.]",)
    with pytest.raises(ConfigError, match="model.trainable: 'atention.' matches no parameter of the model"):
        run_train(curated, tmp_path / "r", "tiny", *sets)
    with pytest.raises(ConfigError, match="'atention.' matches no parameter"):
        estimate_training_memory(api.resolve_train_config("tiny", list(sets)))
    assert not (tmp_path / "r").exists()
