"""The official sync measurement's geometry and rules (:mod:`lipsyncctl.scoring.official`,
:mod:`lipsyncctl.scoring.facetrack`): crop windows on synthetic box tracks (exact numbers), the median
filter's zero padding, track building (IoU link, gap <= 25 with linear interpolation, > 50 detections,
> 100 px, short shots skipped), scene cuts, and the per-clip aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from lipsyncctl.scoring.facetrack import Detection, box_iou, scene_spans, shot_tracks, track_faces
from lipsyncctl.scoring.official import (
    SCALE_APPROXIMATE,
    SCALE_OFFICIAL,
    SyncScores,
    TrackSync,
    aggregate,
    crop_frame,
    smooth_track,
)


def test_crop_window_is_the_2_8s_square_from_centre_minus_s() -> None:
    boxes = np.tile([100.0, 50.0, 200.0, 170.0], (20, 1))  # 100 wide, 120 high: s = 60, centre (150, 110)
    boxes[10] = [0.0, 0.0, 400.0, 400.0]  # one outlier: the median filter removes it
    w = smooth_track(boxes)
    assert w.s.tolist() == [60.0] * 20 and w.x.tolist() == [150.0] * 20 and w.y.tolist() == [110.0] * 20
    # pad = int(1.8 * 60) = 108; rows [110 + 108 - 60, 110 + 108 + 108) = [158, 326); cols [258 - 84, 258 + 84)
    assert w.window(10) == (108, 158, 326, 174, 342)
    assert 326 - 158 == 342 - 174 == 168 == round(2.8 * 60)


def test_median_filter_is_zero_padded() -> None:
    s = np.arange(80.0, 50.0, -2.0)  # 15 shrinking half-sizes: 80, 78, ..., 52
    boxes = np.stack([100 - s, 100 - s, 100 + s, 100 + s], axis=1)
    w = smooth_track(boxes)
    # frame 0: window = 6 zeros + s[0..6]; the 7th smallest of the 13 is s[6] = 68, not 80
    assert w.s[0] == 68.0 and w.s[7] == s[7]
    # the last frame: s[8..14] + 6 zeros -> the 7th smallest is the smallest of the seven, s[14] = 52;
    # the frame before: s[7..14] + 5 zeros -> the 2nd smallest of the eight, 54 (not its own 54 by chance: s[13])
    assert w.s[-1] == 52.0 and w.s[-2] == 54.0
    assert w.x[0] == 100.0  # 6 zeros + 7 x 100 -> still 100


def test_crop_pixels_pad_110_and_resize_224() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    w = smooth_track(np.tile([10.0, 10.0, 90.0, 90.0], (13, 1)))  # s = 40, centre (50, 50)
    pad, r0, r1, c0, c1 = w.window(0)
    assert (pad, r0, r1, c0, c1) == (72, 82, 194, 66, 178)  # 112 x 112 = 2.8 x 40
    crop = crop_frame(image, w, 0)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # rows 82..172 of the padded frame are the image (90 of 112), then 22 rows of padding; 6 columns each side
    assert (crop[:170, 20:204] == 200).all() and (crop[190:, :] == 110).all()
    assert (crop[50, :10] == 110).all() and (crop[50, -10:] == 110).all()


def _dets(frames: range | list[int], box: tuple[float, float, float, float], step: float = 0.0) -> list[Detection]:
    return [Detection(f, (box[0] + step * f, box[1], box[2] + step * f, box[3]), 0.99) for f in frames]


def _by_frame(dets: list[Detection], n: int) -> list[list[Detection]]:
    out: list[list[Detection]] = [[] for _ in range(n)]
    for d in dets:
        out[d.frame].append(d)
    return out


BOX = (100.0, 100.0, 260.0, 260.0)  # 160 px


def test_track_bridges_gaps_up_to_25_frames_with_linear_boxes() -> None:
    frames = [*range(0, 20), *range(45, 60)]  # 45 - 19 = 26 > 25: the track ends at frame 19
    assert track_faces(_by_frame(_dets(frames, BOX), 60)) == []  # split: 20 + 15 detections, both too short
    frames = [*range(0, 30), *range(54, 80)]  # 54 - 29 = 25: bridged
    (t,) = track_faces(_by_frame(_dets(frames, BOX, step=1.0), 80))
    assert t.frames.tolist() == list(range(80)) and t.first == 0 and len(t) == 80
    # interpolated between frame 29 (x1 = 129) and 54 (x1 = 154): linear, so x1 = 100 + f everywhere
    assert np.allclose(t.boxes[:, 0], 100 + np.arange(80)) and (t.boxes[:, 1] == 100).all()


def test_track_needs_more_than_50_detections_and_100_px() -> None:
    assert track_faces(_by_frame(_dets(range(50), BOX), 50)) == []  # exactly 50: dropped (official: > min_track)
    assert len(track_faces(_by_frame(_dets(range(51), BOX), 51))) == 1
    small = (0.0, 0.0, 100.0, 100.0)  # mean size 100: not above 100
    assert track_faces(_by_frame(_dets(range(60), small), 60)) == []
    assert len(track_faces(_by_frame(_dets(range(60), (0.0, 0.0, 101.0, 60.0)), 60))) == 1  # max(w, h) > 100


def test_iou_links_faces_and_two_faces_make_two_tracks() -> None:
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    other = (600.0, 100.0, 760.0, 260.0)
    dets = _by_frame(_dets(range(60), BOX) + _dets(range(60), other), 60)
    tracks = track_faces(dets)
    assert len(tracks) == 2 and {round(t.boxes[0, 0]) for t in tracks} == {100, 600}
    # a jump to a box with IoU <= 0.5 starts a new track: 30 + 30 detections, both too short
    jump = _dets(range(30), BOX) + _dets(range(30, 60), (180.0, 100.0, 340.0, 260.0))  # IoU 80/240
    assert track_faces(_by_frame(jump, 60)) == []


def test_shots_shorter_than_50_frames_are_skipped() -> None:
    dets = _by_frame(_dets(range(130), BOX), 130)
    tracks, skipped = shot_tracks(dets, [(0, 45), (45, 130)])
    assert skipped == [(0, 45)]
    (t,) = tracks
    assert t.first == 45 and len(t) == 85
    assert dets[50] and dets[50][0].frame == 50  # the caller's detections are not consumed


def test_scene_cuts_with_content_detector_defaults() -> None:
    dark = np.zeros((64, 600, 3), np.uint8)  # 600 wide: PySceneDetect 0.6.1 keeps every 2nd pixel
    light = np.full((64, 600, 3), 230, np.uint8)
    assert scene_spans([dark] * 30 + [light] * 30, 60) == [(0, 30), (30, 60)]
    assert scene_spans([dark] * 10 + [light] * 50, 60) == [(0, 60)]  # a cut before 15 frames is suppressed
    assert scene_spans([dark] * 40, 40) == [(0, 40)]


def test_aggregation_is_the_official_one() -> None:
    def track(c: float, d: float, o: int) -> TrackSync:
        return TrackSync(0, 60, d, c, o)

    r = aggregate([track(4.0, 7.0, 3), track(5.0, 9.0, 4)])
    assert (r.scale, r.lse_c, r.lse_d, r.offset, r.measured) == (SCALE_OFFICIAL, 4.5, 8.0, 3, True)  # int(3.5)
    assert aggregate([track(1, 1, -3), track(1, 1, -4)]).offset == -3  # truncated toward zero
    assert aggregate([track(1, 1, 1), track(1, 1, 2), track(1, 1, -4)]).offset == 0  # int(-1/3)
    empty = aggregate([])
    assert not empty.measured and empty.lse_c is None and empty.offset is None and empty.reason
    d = SyncScores(SCALE_APPROXIMATE, (track(2.0, 8.0, 1),)).to_dict()
    assert d["scale"] == "approximate (not official)" and d["lse_c"] == 2.0 and len(d["tracks"]) == 1


class _FixedBox:
    def __init__(self, box: tuple[float, float, float, float] | None) -> None:
        self.box = box

    def detect_faces(self, rgb: np.ndarray) -> np.ndarray:
        return np.array([[*self.box, 0.99]]) if self.box else np.empty((0, 5))


def test_short_clips_and_faceless_clips_are_not_scored_and_say_why() -> None:
    from lipsyncctl.scoring.official import OfficialScorer

    frames = [np.full((240, 240, 3), 120, np.uint8)] * 49
    short = OfficialScorer(_FixedBox((20.0, 20.0, 200.0, 200.0)), syncnet=None).score(frames, np.zeros(49 * 640))  # type: ignore[arg-type]
    assert short.scale == SCALE_OFFICIAL and not short.measured and short.lse_c is None
    assert "shorter than 50 frames" in (short.reason or "") and short.skipped_shots == ((0, 49),)
    faceless = OfficialScorer(_FixedBox(None), syncnet=None).score(frames * 2, np.zeros(98 * 640))  # type: ignore[arg-type]
    assert not faceless.measured and "no face track" in (faceless.reason or "") and faceless.skipped_shots == ()
    # 30 fps input is taken to the 25 fps grid first: 59 frames at 30 fps = 49 at 25 fps (a short shot);
    # 60 = 50: a long enough shot, but 50 detections are not more than 50 (no track)
    box = _FixedBox((20.0, 20.0, 200.0, 200.0))
    assert OfficialScorer(box, syncnet=None).score(frames + frames[:10], np.zeros(32000), 30).skipped_shots == ((0, 49),)  # type: ignore[arg-type]
    at30 = OfficialScorer(box, syncnet=None).score(frames + frames[:11], np.zeros(32000), 30)  # type: ignore[arg-type]
    assert at30.skipped_shots == () and "no face track" in (at30.reason or "")


def test_a_streamed_frame_source_is_picked_on_the_25_fps_grid_like_a_list() -> None:
    """:func:`picked` over a stream gives what indexing a list gives (repeats and skips of 24 / 30 fps); a
    callable source needs its count."""
    from lipsyncctl.scoring.lse import eval_frame_indices, picked, replayable

    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(37)]
    for fps in (24, 25, 30):
        index = eval_frame_indices(len(frames), fps)
        assert [int(f[0, 0, 0]) for f in picked(iter(frames), index)] == index
    with pytest.raises(ValueError, match="frame count"):
        replayable(lambda: iter(frames))
    open_frames, n = replayable(lambda: iter(frames), 37)
    assert n == 37 and len(list(open_frames())) == len(list(open_frames())) == 37
