"""The face choice over tracks (``faces.select``): largest per frame, by id, and the active speaker.

Tracking on real frames, with the point and id choices over tracked faces, is tests/unit/test_faces_track.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from lipsyncctl.errors import ConfigError
from lipsyncctl.faces.detect import Face
from lipsyncctl.faces.speaker import active_speaker, select_speaker


def _face(track_id: int, x: float, gap: float = 0.0) -> Face:
    lmk = np.zeros((68, 2))
    lmk[:, 0] = x + 50
    lmk[:, 1] = 50
    lmk[66, 1] = 50 + gap
    return Face(np.array([x, 0, x + 100, 120.0]), 1.0, lmk, track_id)


def test_select_largest_and_active_speaker():
    rng = np.random.default_rng(1)
    energy = np.abs(rng.normal(size=40)).cumsum() % 3
    frames = [[_face(0, 0, gap=energy[i] * 5), _face(1, 200, gap=rng.uniform(0, 15))] for i in range(40)]
    assert active_speaker(frames, energy) == 0
    assert all(f.track_id == 0 for f in select_speaker(frames, select="speaker", audio_energy=energy))
    big = [[_face(0, 0), Face(np.array([200, 0, 400, 240.0]), 1.0, np.zeros((68, 2)), 1)], []]
    chosen = select_speaker(big)
    assert chosen[0].track_id == 1 and chosen[1] is None
    with pytest.raises(ConfigError):
        select_speaker(big, select="sideways")  # type: ignore[arg-type]


def test_a_face_choice_matching_nothing_is_a_wrong_argument_naming_the_tracks():
    """--face ID / --face-at X,Y that match no face: exit 2 (not bad media), the tracks found and their boxes said."""
    from lipsyncctl.errors import FaceChoiceError, NoFaceError

    frames = [[_face(0, 0), _face(3, 200)], [_face(0, 0)]]
    with pytest.raises(FaceChoiceError) as err:
        select_speaker(frames, select="id", track_id=7)
    assert err.value.exit_code == 2 and isinstance(err.value, NoFaceError)  # a timeline shot: still "no face"
    assert "no face with track id 7" in err.value.message
    assert "tracks found: 0 at (0,0)-(100,120) in 2 frames, 3 at (200,0)-(300,120) in 1 frame" in err.value.message
    with pytest.raises(FaceChoiceError, match=r"no face covers the point \(500, 50\).*tracks found: 0 at"):
        select_speaker(frames, select="point", point=(500, 50))
    assert [f.track_id for f in select_speaker(frames, select="point", point=(250, 50)) if f] == [3]
