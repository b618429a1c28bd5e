"""SyncNet v2 (`S`) and the LSE-C / LSE-D evaluation: manifest layout and golden vector 6a."""

from __future__ import annotations

import json
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsyncctl.audio.mfcc import mfcc, num_mfcc_frames
from lipsyncctl.errors import MediaError
from lipsyncctl.nets.syncnet_eval import SyncNetEval
from lipsyncctl.scoring import SyncDistances, distance_table, lse_scores, sync_distances
from lipsyncctl.scoring import lse as lse_module
from lipsyncctl.scoring.lse import eval_frame_indices
from tests.conftest import SHARED

GOLDEN = SHARED / "golden"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    with wave.open(str(_need(GOLDEN / "whisper_input_3s.wav"))) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(_need(GOLDEN / "syncnet_eval_outputs.safetensors"))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    import hashlib

    import cv2

    strip = cv2.imread(str(_need(GOLDEN / "syncnet_eval_frames.png")))  # BGR, as consumed
    arr = np.ascontiguousarray(strip.reshape(75, 224, 224, 3))
    expected = json.loads((GOLDEN / "syncnet_eval.json").read_text())["inputs"]["frames"]
    assert (
        hashlib.sha256(arr.tobytes()).hexdigest()
        == expected["sha256_of_consumed_uint8_array_75x224x224x3_BGR_C_order"]
    )
    return arr


@pytest.fixture(scope="module")
def model() -> SyncNetEval:
    from safetensors.torch import load_file

    weights = load_file(_need(GOLDEN / "syncnet_eval_weights_fp16.safetensors"))
    net = SyncNetEval()
    # fp16 on disk -> float32; num_batches_tracked stay int64
    net.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, strict=True
    )
    return net.eval()


def test_meta_build_matches_manifest():
    manifest = json.loads(_need(SHARED / "reference" / "syncnet_v2_eval.json").read_text())
    with torch.device("meta"):
        net = SyncNetEval(manifest["config"]["num_layers_in_fc_layers"])
    state = net.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == manifest["tensors"]
    assert list(state) == list(manifest["tensors"])
    assert sum(p.numel() for p in net.parameters()) == manifest["num_parameters"]
    assert sum(v.numel() for v in state.values()) == manifest["num_state_dict_elements"]
    buffers = sorted(n for n, _ in net.named_buffers())
    assert buffers == sorted(manifest["persistent_buffers"])
    with torch.device("meta"):
        assert net.forward_lip(torch.empty(2, 3, 5, 224, 224)).shape == (2, 1024)
        assert net.forward_aud(torch.empty(2, 1, 13, 20)).shape == (2, 1024)


def test_mfcc_matches_python_speech_features(samples, outputs):
    ours = mfcc(samples).T
    assert ours.shape == (13, 299) == tuple(outputs["mfcc"].shape)
    assert num_mfcc_frames(samples.size) == 299
    np.testing.assert_allclose(ours, outputs["mfcc"].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch_size", [20, 7])
def test_the_streamed_measurement_is_the_golden_one(model, frames, samples, outputs, batch_size):
    """SyncStream, fed a crop at a time (a track of any length in flat memory): the same windows through the network
    in the same batches, so the mean distances are sync_distances' up to the float32 order of their sum, and the
    golden scores come out; it holds at most a batch of crops and the audio embeddings its windows pair with."""
    from lipsyncctl.errors import MediaError
    from lipsyncctl.scoring.lse import SyncStream

    full = sync_distances(model, frames, samples, batch_size=batch_size)
    stream = SyncStream(model, samples, len(frames), batch_size=batch_size)
    held = 0
    for crop in frames:
        stream.feed(crop)
        held = max(held, len(stream.pending), len(stream.audio) // 2)
    got = stream.finish()
    torch.testing.assert_close(got.mean_dists, full.mean_dists, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.mean_dists, outputs["mean_dists"], atol=1e-4, rtol=0)
    assert got.offset == full.offset == 0
    assert got.min_dist == pytest.approx(float(outputs["min_dist"]), abs=1e-4)
    assert got.conf == pytest.approx(float(outputs["conf"]), abs=1e-4)
    assert held <= batch_size + 15 and len(stream.pending) < batch_size + 4
    short = SyncStream(model, samples, len(frames), batch_size=batch_size)
    for crop in frames[:30]:
        short.feed(crop)
    with pytest.raises(MediaError, match="the face track ended early: 30 crops of the 74"):
        short.finish()


@pytest.mark.parametrize("block", [1, 7, 100])
def test_the_mfcc_in_blocks_is_the_whole_signals(samples, outputs, block):
    """The MFCC is computed in blocks of frames (bounded work arrays for an hour of sound): each frame reads its own
    samples and the one before, so any blocking gives the whole signal's values (up to the matrix products' order of
    sums), and float samples scaled block by block give the int16 ones'."""
    whole = mfcc(samples, block=10**9)
    np.testing.assert_allclose(mfcc(samples, block=block), whole, rtol=0, atol=1e-9)
    as_float = samples.astype(np.float32) / 32768.0
    np.testing.assert_allclose(mfcc(as_float, scale=32768.0, block=block), whole, rtol=0, atol=1e-9)
    np.testing.assert_allclose(whole.T, outputs["mfcc"].numpy(), rtol=0, atol=1e-6)


def test_golden_sync_distances(model, frames, samples, outputs):
    result = sync_distances(model, frames, samples)
    assert result.im_feat.shape == result.cc_feat.shape == (70, 1024)
    torch.testing.assert_close(result.im_feat, outputs["im_feat"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(result.cc_feat, outputs["cc_feat"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(result.dists, outputs["dists"], atol=1e-4, rtol=0)
    torch.testing.assert_close(result.mean_dists, outputs["mean_dists"], atol=1e-4, rtol=0)
    assert result.min_dist == pytest.approx(float(outputs["min_dist"]), abs=1e-4)
    assert result.conf == pytest.approx(float(outputs["conf"]), abs=1e-4)
    assert result.offset == int(outputs["av_offset"]) == 0
    # the public one-call API gives the same numbers (float audio path included)
    scores = lse_scores(model, frames, samples.astype(np.float32) / 32768.0, Fraction(25))
    assert scores.lse_d == pytest.approx(result.min_dist, abs=1e-4)
    assert scores.lse_c == pytest.approx(result.conf, abs=1e-4)
    assert scores.offset == 0


def test_load_official_copies_by_name(model):
    from safetensors.torch import load_file

    weights = load_file(GOLDEN / "syncnet_eval_weights_fp16.safetensors")
    old_style = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    fresh = SyncNetEval()
    missing = fresh.load_official_state_dict(old_style)
    assert len(missing) == 14 and all(m.endswith("num_batches_tracked") for m in missing)
    for name, value in fresh.state_dict().items():
        if name in old_style:
            assert value.dtype == torch.float32
            assert torch.equal(value, model.state_dict()[name])
    with pytest.raises(KeyError):
        fresh.load_official_state_dict({"module.netcnnaud.0.weight": weights["netcnnaud.0.weight"]})
    with pytest.raises(ValueError):
        fresh.load_official_state_dict({"netcnnaud.0.bias": torch.zeros(3)})


def test_distance_table_matches_pairwise_loop():
    gen = torch.Generator().manual_seed(0)
    im, cc = torch.randn(9, 16, generator=gen), torch.randn(9, 16, generator=gen)
    table = distance_table(im, cc, vshift=3)
    padded = torch.nn.functional.pad(cc, (0, 0, 3, 3))
    for i in range(9):
        ref = torch.nn.functional.pairwise_distance(im[[i]].repeat(7, 1), padded[i : i + 7])
        torch.testing.assert_close(table[i], ref)


@pytest.mark.parametrize("delay", [-4, 0, 3])
def test_offset_sign_convention(delay):
    # audio window j matches video window i = j + delay: the audio is `delay` frames early
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(60, 32, generator=gen)
    im = base[10:50]
    cc = base[10 + delay : 50 + delay]
    table = distance_table(im, cc, vshift=15)
    result = SyncDistances(im, cc, table, table.mean(0), vshift=15)
    assert result.offset == delay
    assert result.conf > 1 and result.min_dist < 0.2 * float(result.mean_dists.median())


def test_other_frame_rates_pick_nearest_frames(monkeypatch, samples):
    assert eval_frame_indices(10, 25) == list(range(10))
    assert eval_frame_indices(10, Fraction(50)) == [0, 2, 4, 6, 8]
    picks = eval_frame_indices(300, Fraction(30000, 1001))
    assert len(picks) == int(300 * 25 / (30000 / 1001))
    times = np.array(picks) / (30000 / 1001) - np.arange(len(picks)) / 25
    assert np.abs(times).max() <= 0.5 / (30000 / 1001) + 1e-9
    seen = {}

    def fake(model, frames, audio, **kw):
        seen["frames"] = [frames[i] for i in range(len(frames))]
        im = torch.zeros(4, 8)
        return SyncDistances(im, im, distance_table(im, im, 2), torch.arange(5.0), 2)

    monkeypatch.setattr(lse_module, "sync_distances", fake)
    clip = np.arange(150)[:, None, None, None] * np.ones((1, 2, 2, 3), dtype=np.uint8)
    lse_scores(None, clip, samples, Fraction(50))
    assert [int(f[0, 0, 0]) for f in seen["frames"]] == list(range(0, 150, 2))


def test_too_short_clip_raises(model):
    with pytest.raises(MediaError, match="too short"):
        sync_distances(model, np.zeros((5, 224, 224, 3), np.uint8), np.zeros(16000, np.int16))
