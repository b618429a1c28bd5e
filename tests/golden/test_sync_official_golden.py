"""The official-scale sync measurement against the golden vectors.

- ``golden/train/sync_crop``: ``SyncNetDetector.crop_video`` run unchanged on a 30-frame box track:
  smoothed ``s/x/y``, every crop window and every 224x224 crop must match exactly.
- ``golden/syncnet_eval`` (an invariant): the 75 stored 224x224 crops are placed in a larger frame at
  the spot where the official crop of a constant 160 px box takes them back unchanged (2.8 s = 224 px,
  so the resize is an identity); :class:`OfficialScorer` with that box as its detector must then give
  the stored LSE-C / LSE-D / offset of the golden SyncNet weights: frames -> scene detection -> track ->
  crop -> audio cut -> SyncNet -> aggregation, end to end.
"""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from lipsyncctl.scoring.official import OfficialScorer, crop_frame, smooth_track
from tests.conftest import shared_path


def test_crop_video_golden_exact() -> None:
    import cv2
    from safetensors.numpy import load_file

    data = load_file(shared_path("golden", "train", "sync_crop.safetensors"))
    meta = json.loads(shared_path("golden", "train", "sync_crop.json").read_text())
    frames = cv2.imread(str(shared_path("golden", "train", "sync_crop_frames.png"))).reshape(30, 256, 256, 3)
    expected = cv2.imread(str(shared_path("golden", "train", "sync_crop_out.png"))).reshape(30, 224, 224, 3)
    w = smooth_track(data["bboxes"])
    for name in ("s", "x", "y"):
        assert np.array_equal(getattr(w, name), data[name]), name
    for i, geo in enumerate(meta["outputs"]["per_frame_geometry"]):
        pad, r0, r1, c0, c1 = w.window(i)
        assert (pad, [r0, r1], [c0, c1]) == (geo["bsi"], geo["rows"], geo["cols"]), i
        assert np.array_equal(crop_frame(frames[i], w, i), expected[i]), f"crop {i}"


class _FixedBox:
    """A detector that finds one face with the same box in every frame."""

    def __init__(self, box: tuple[float, float, float, float]) -> None:
        self.box = np.array([[*box, 0.99]])

    def detect_faces(self, rgb: np.ndarray) -> np.ndarray:
        return self.box.copy()


def test_official_scorer_end_to_end_reproduces_the_golden_scores() -> None:
    import cv2
    import torch
    from safetensors.torch import load_file

    from lipsyncctl.nets.syncnet_eval import SyncNetEval

    crops = cv2.imread(str(shared_path("golden", "syncnet_eval_frames.png"))).reshape(75, 224, 224, 3)  # BGR
    with wave.open(str(shared_path("golden", "whisper_input_3s.wav"))) as f:
        audio = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    out = load_file(shared_path("golden", "syncnet_eval_outputs.safetensors"))
    net = SyncNetEval()
    weights = load_file(shared_path("golden", "syncnet_eval_weights_fp16.safetensors"))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    # crop rows [cy - s, cy + 1.8 s), cols [cx - 1.4 s, cx + 1.4 s) with s = 80 -> 224 x 224 at (20, 40)
    top, left, s = 20, 40, 80.0
    cy, cx = top + s, left + 1.4 * s
    box = (cx - s, cy - s, cx + s, cy + s)
    canvas = np.full((75, 300, 320, 3), 90, np.uint8)
    canvas[:, top:top + 224, left:left + 224] = crops
    w = smooth_track(np.tile(box, (75, 1)))
    assert np.array_equal(crop_frame(canvas[0], w, 0), crops[0])  # the geometry takes the crop back exactly
    rgb = [f[..., ::-1] for f in canvas]
    result = OfficialScorer(_FixedBox(box), net).score(rgb, audio)  # type: ignore[arg-type]
    assert result.scale == "official" and len(result.tracks) == 1
    (track,) = result.tracks
    assert (track.first, track.frames) == (0, 75)
    assert result.offset == int(out["av_offset"][0]) == 0
    assert result.lse_c == pytest.approx(float(out["conf"][0]), abs=1e-4)
    assert result.lse_d == pytest.approx(float(out["min_dist"][0]), abs=1e-4)
    assert torch.is_tensor(out["conf"])
    # the same clip as a stream (a decoder over a shot): read twice, at most a few frames alive at a time,
    # the very same scores
    import weakref

    opened, alive, most = [0], [0], [0]

    def gone() -> None:
        alive[0] -= 1

    def stream():  # type: ignore[no-untyped-def]
        opened[0] += 1
        for frame in canvas:
            rgb = np.ascontiguousarray(frame[..., ::-1])
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            weakref.finalize(rgb, gone)
            yield rgb

    streamed = OfficialScorer(_FixedBox(box), net).score(stream, audio, count=75)  # type: ignore[arg-type]
    assert streamed == result and opened[0] == 2 and most[0] <= 3
