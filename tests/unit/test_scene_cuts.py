"""daemon.scene_cuts on real frames: a picture that cuts to another scene, and pictures that
only move (people walking, a head turning, a camera's light)."""

from __future__ import annotations

import numpy as np

from daemon.scene_cuts import CUT_BELOW, SceneCuts, likeness, thumbnail
from tests.clips import DEMO_CLIP, read_frames

CUT_TO_AUDIENCE = 211  # the demo clip's frame where Lin-Manuel Miranda's close-up cuts away


def cuts_in(frames: list) -> list[int]:
    scenes = SceneCuts()
    return [k for k, frame in enumerate(frames) if scenes.cut(frame) is not None]


def test_the_demo_clips_cut_to_the_audience_is_a_cut_and_its_close_up_is_not() -> None:
    """At 10 fps (every 3rd frame) from the close-up's start: one cut, where the picture
    turns to the audience; the close-up's frames (he moves, the camera follows) are none."""
    first = 85
    frames = read_frames(DEMO_CLIP, first, every=3)
    assert [first + 3 * k for k in cuts_in(frames)] == [CUT_TO_AUDIENCE]
    before, after = (thumbnail(f) for f in read_frames(DEMO_CLIP, CUT_TO_AUDIENCE - 1, 2))
    assert likeness(before, after) < CUT_BELOW


def test_people_walking_and_a_change_of_light_are_no_cut(shared_data) -> None:
    """crowd_1080p at 5 fps (people walking at the camera), the same frames darker by half
    from one frame on (a camera's exposure) and a black frame between two of them (the
    light out a moment): no cut. A fade through black between two scenes is one."""
    crowd = read_frames(shared_data / "videos" / "crowd_1080p.mp4", every=5)
    assert cuts_in(crowd) == []
    darker = [f if k < 10 else (f // 2) for k, f in enumerate(crowd)]
    assert cuts_in(darker) == []
    black = np.zeros_like(crowd[0])
    assert cuts_in([crowd[0], black, crowd[1]]) == []
    stage, audience = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE - 1, 2)
    assert cuts_in([stage, np.zeros_like(stage), audience]) == [2]
