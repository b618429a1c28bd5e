"""Length policies and frame/time mapping of the sync plan (pure arithmetic)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from lipsyncctl.errors import MediaError, UsageError
from lipsyncctl.media.reader import index_runs
from lipsyncctl.pipeline.plan import plan_clip, select_range

NTSC = Fraction(30000, 1001)


def _plan(v: int, audio_s: float, policy: str, fps: Fraction = Fraction(25), out: Fraction | None = None):
    return plan_clip(v, fps, int(round(audio_s * 16000)), 16000, policy, fps=out)


def test_pingpong_matches_official_loop_video_order():
    plan = _plan(3, 9 / 25, "pingpong")  # 9 frames of audio over a 3-frame picture
    assert plan.num_frames == 9
    # official loop_video: [fwd, reversed, fwd], turn frames repeat
    assert plan.source_indices(0, 9) == [0, 1, 2, 2, 1, 0, 0, 1, 2]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("loop", [0, 1, 2, 0, 1, 2, 0]),
        ("freeze", [0, 1, 2, 2, 2, 2, 2]),
        ("cut", [0, 1, 2]),
        ("silence", [0, 1, 2]),
    ],
)
def test_policies_when_audio_is_longer(policy, expected):
    plan = _plan(3, 7 / 25, policy)
    assert plan.source_indices(0, plan.num_frames) == expected
    assert plan.output_samples(48000) == round(len(expected) / 25 * 48000)


@pytest.mark.parametrize("policy", ["pingpong", "loop", "freeze", "cut"])
def test_audio_shorter_cuts_picture(policy):
    plan = _plan(100, 2.0, policy)
    assert plan.num_frames == 50
    assert plan.source_indices(45, 50) == [45, 46, 47, 48, 49]


def test_shown_source_frames_stop_where_a_shorter_dub_cuts_the_output():
    """The faces a run tracks: up to the last source frame the output shows (all of them once it loops)."""
    assert _plan(100, 2.0, "cut").shown_source_frames() == 50
    assert _plan(100, 6.0, "cut").shown_source_frames() == 100
    assert _plan(3, 7 / 25, "pingpong").shown_source_frames() == 3
    assert _plan(100, 2.0, "silence").shown_source_frames() == 100
    ntsc = plan_clip(600, Fraction(30), 16000 * 2, 16000, "cut", fps=Fraction(25), first_frame=10)
    assert ntsc.shown_source_frames() == ntsc.source_index(ntsc.num_frames - 1) - 10 + 1 == 59  # 49 * 30/25, +1


def test_silence_keeps_whole_picture_and_pads_audio():
    plan = _plan(100, 2.0, "silence")
    assert plan.num_frames == 100
    assert plan.output_samples(16000) == 4 * 16000


def test_audio_frames_cover_audio_at_ntsc_rate():
    # 3.0 s at 29.97 -> 89.91 frames -> 90 frames; output lasts 90/29.97 s >= 3.0 s by < 1 frame
    plan = plan_clip(300, NTSC, 48000 * 3, 48000, "pingpong")
    assert plan.fps == NTSC
    assert plan.num_frames == 90
    assert 0 <= plan.duration - 3.0 < float(1 / NTSC)


def test_conform_to_25_drops_frames_like_ffmpeg_r():
    plan = plan_clip(600, Fraction(30), 16000 * 20, 16000, "pingpong", fps=Fraction(25))
    assert plan.picture_frames == 500
    assert plan.num_frames == 500
    idx = plan.source_indices(0, 6)
    assert idx == [0, 1, 2, 3, 4, 6]  # every sixth source frame dropped
    assert plan.source_index(499) <= 599


def test_start_end_selection_offsets_source_index():
    first, stop = select_range(250, Fraction(25), start=1.0, end=3.0)
    assert (first, stop) == (25, 75)
    plan = plan_clip(stop - first, Fraction(25), 16000 * 2, 16000, first_frame=first)
    assert plan.source_index(0) == 25 and plan.source_index(plan.num_frames - 1) == 74
    with pytest.raises(UsageError) as err:  # wrong arguments (exit 2), not bad media
        select_range(250, Fraction(25), start=20.0)
    assert err.value.exit_code == 2


def test_a_start_between_frames_starts_on_the_frame_then_on_screen() -> None:
    """As ``prep --start``: 0.19 s at 24 fps falls in frame 4 (0.1667-0.2083 s), which starts the selection (it was
    rounded to frame 5, half a frame late against the dub); an end between frames keeps the frame on screen then; a
    time on a boundary (exactly, also at 30000/1001) is that frame's start."""
    assert select_range(100, Fraction(24), start=0.19, end=0.4) == (4, 10)  # 0.4 s: frame 9 (0.375-0.4167)
    assert select_range(100, Fraction(24), start=0.2, end=0.375) == (4, 9)
    assert select_range(100, Fraction(25), start=0.2, end=0.4) == (5, 10)
    ntsc = Fraction(30000, 1001)
    assert select_range(100, ntsc, start=1.001, end=2.002) == (30, 60)
    assert select_range(100, ntsc, start=1.0, end=1.9) == (30, 57)  # frame 30 starts at 1.001 s: within 1 ms
    assert select_range(100, ntsc, start=0.99, end=1.9) == (29, 57)


def test_prep_and_sync_start_on_the_same_frame() -> None:
    """One rule for a time's frame: sync's --start, prep's --start (conform_cfr picks the frame on screen with the
    same tolerance) and prep's output timecode (it stamped round(t * fps): a frame off for --start 0.03 at 25)."""
    from lipsyncctl.media.rates import frame_on_screen
    from lipsyncctl.media.reader import Frame, conform_cfr

    for fps in (Fraction(25), Fraction(24), Fraction(30000, 1001)):
        frames = [Frame(index=k, time=Fraction(k) / fps, av_frame=None) for k in range(80)]  # type: ignore[arg-type]
        for t in (0.0, 0.03, 0.19, 0.5, 1.0, 1.001, 2.02):
            (_, picked), = list(conform_cfr(iter(frames), fps, start=Fraction(t).limit_denominator(10**6), count=1))
            assert picked.index == frame_on_screen(t, fps) == select_range(80, fps, start=t)[0], (fps, t)


def test_bad_inputs():
    with pytest.raises(MediaError):
        _plan(0, 1.0, "loop")
    with pytest.raises(MediaError):
        plan_clip(10, Fraction(25), 0, 16000)
    with pytest.raises(ValueError):
        _plan(10, 1.0, "bounce")


def test_windows_and_index_runs():
    plan = _plan(10, 40 / 25, "loop")
    wins = list(plan.windows(16))
    assert wins == [(0, 16), (16, 32), (32, 40)]
    runs = index_runs(plan.source_indices(0, 16), max_gap=2)
    assert runs == [(0, 9)]
    assert index_runs([98, 99, 0, 1, 2], max_gap=4) == [(0, 2), (98, 99)]


def test_end_past_the_clip_is_clamped_with_a_warning():
    from lipsyncctl.pipeline.plan import end_clamp_warning

    assert select_range(250, Fraction(25), start=9.0, end=30.0) == (225, 250)  # clamped, as before
    warning = end_clamp_warning(250, Fraction(25), 30.0)
    assert warning is not None and "clamped" in warning and "10.000 s" in warning and "--end 30" in warning
    assert end_clamp_warning(250, Fraction(25), 10.0) is None  # exactly the end: nothing to say
    assert end_clamp_warning(250, Fraction(25), 3.0) is None
    assert end_clamp_warning(250, Fraction(25), None) is None


def test_audio_and_selection_disagreeing_warns():
    """--end 7.5 on a 25 fps clip with 4 s of audio: the default policy cuts the picture to the audio, which
    overrides --end; that is said, with both lengths and the output's."""
    from lipsyncctl.pipeline.plan import length_mismatch_warning

    plan = plan_clip(188, Fraction(25), 4 * 16000, 16000, "pingpong")
    w = length_mismatch_warning(plan, None, 7.5)
    assert w == ("the audio (4.000 s) is shorter than the picture selected by --end (7.520 s, 188 frames): the "
                 "picture is cut to the audio (length policy pingpong); the output has 100 frames (4.000 s)")
    w = length_mismatch_warning(plan_clip(50, Fraction(25), 4 * 16000, 16000, "loop"), 1.0, 3.0)
    assert w is not None and "longer than the picture selected by --start/--end (2.000 s, 50 frames)" in w
    assert "the picture restarts" in w and "100 frames" in w
    w = length_mismatch_warning(plan_clip(188, Fraction(25), 4 * 16000, 16000, "silence"))
    assert w is not None and "than the clip (7.520 s" in w and "padded with silence" in w and "188 frames (7.520 s)" in w
    # within a frame (AAC padding, a dub cut to the picture): nothing to say
    assert length_mismatch_warning(plan_clip(100, Fraction(25), 4 * 16000 + 500, 16000, "pingpong"), None, 4.0) is None
    assert length_mismatch_warning(plan_clip(100, Fraction(25), 4 * 16000, 16000, "cut")) is None
