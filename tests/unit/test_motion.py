"""The motion gate: what counts as moved on real video, and which frames the pipeline then
searches."""

from __future__ import annotations

import re

import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.camera_frames import Frame
from daemon.config import ConfigError
from daemon.config_file import parse_config
from daemon.events import EventSinks
from daemon.motion import MotionDetector
from daemon.scheduler import Pipeline
from tests.clips import DEMO_CLIP, EMPTY_FRAME, noisy_copies, read_frames

DEFAULTS = parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}).detection.motion


def gate() -> MotionDetector:
    return MotionDetector(DEFAULTS.min_change_levels, DEFAULTS.min_area_fraction)


@pytest.mark.parametrize("sigma", [3, 10])
def test_a_still_picture_with_sensor_noise_does_not_move(sigma) -> None:
    motion = gate()
    frames = noisy_copies(read_frames(DEMO_CLIP, EMPTY_FRAME, 1)[0], 20, sigma)
    assert [motion.moved(f) for f in frames] == [True] + [False] * 19


@pytest.mark.parametrize(
    ("clip", "every", "count"),
    [
        ("crowd_1080p.mp4", 5, 20),  # pedestrians far off, at 5 fps
        ("head_turn_3456x2234.mp4", 12, 15),  # a man who only turns his head, at 5 fps
    ],
)
def test_people_moving_in_real_video_move_every_frame(shared_data, clip, every, count) -> None:
    motion = gate()
    frames = read_frames(shared_data / "videos" / clip, 0, count, every)
    assert len(frames) == count
    assert all(motion.moved(f) for f in frames)


def test_someone_coming_into_a_still_scene_moves_and_a_new_connection_starts_afresh() -> None:
    motion = gate()
    empty = read_frames(DEMO_CLIP, EMPTY_FRAME, 1)[0]
    for image in noisy_copies(empty, 10, 3):
        motion.moved(image)
    assert not motion.moved(empty)
    arrival = read_frames(DEMO_CLIP, 0, 1)[0]  # the clip's first frame: two faces there
    assert motion.moved(arrival)
    motion.reset()
    assert motion.moved(empty)  # a first frame: nothing to compare with
    assert not motion.moved(empty)
    assert motion.moved(empty[:, :320].copy())  # another shape: a first frame again


def test_a_scene_changed_once_is_still_again_within_seconds() -> None:
    """A light turned on (or a car parked) changes the picture once: that frame moved, and
    the frames after it are still again within a few seconds, the recent frames' average
    having caught up (compared with the first frame for good, every frame moved: the
    detector ran on a quiet camera all night)."""
    motion = gate()
    dark = np.full((360, 640, 3), 60, np.uint8)
    lit = dark.copy()
    lit[:, :320] += 100  # the left half of the picture, 100 grey levels brighter
    assert motion.changed(dark) == 1.0 and motion.changed(dark) == 0.0
    assert motion.changed(lit) == pytest.approx(0.5, abs=0.02), "the changed fraction"
    moved = [motion.moved(lit) for _ in range(15)]  # 3 s at 5 fps
    assert moved[0] and not moved[-1], moved


def test_sensor_noise_on_a_small_substream_does_not_move() -> None:
    """A 320x180 substream's frames are not shrunk (no averaging): the blur is what keeps a
    still camera's sensor noise from moving every frame."""
    motion = gate()
    small = np.ascontiguousarray(read_frames(DEMO_CLIP, EMPTY_FRAME, 1)[0][::4, ::4])
    frames = noisy_copies(small, 10, 10)
    assert [motion.moved(f) for f in frames] == [True] + [False] * 9


def pipeline_for(detector, full_scan_every: int = 1, **motion: object) -> Pipeline:
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4"}],
            "detection": {
                "full_scan_every": full_scan_every,
                "motion": {"check_every_s": 5, **motion},
            },
            "recognition": {"model": None},
        }
    )
    return Pipeline(config, detector, None, EventSinks())


def still_count() -> float:
    return REGISTRY.get_sample_value("facewatch_frames_still_total", {"camera": "door"}) or 0.0


def test_still_frames_are_searched_only_every_check_every_s_while_no_face_is_in_view(
    detector,
) -> None:
    pipeline = pipeline_for(detector)
    empty = read_frames(DEMO_CLIP, EMPTY_FRAME, 1)[0]
    searched = []
    before = still_count()
    for second in range(12):  # a still, empty scene: searched at 0, 5 and 10 s
        pipeline.process([Frame("door", second, 1000.0 + second, empty, moved=False)])
        searched.append(pipeline.search._last_search["door"] == 1000.0 + second)
    assert [s for s, yes in enumerate(searched) if yes] == [0, 5, 10]
    assert still_count() - before == 9

    # someone comes in: searched, and then every frame while their face is in view
    arrival, *stays = read_frames(DEMO_CLIP, 0, 4)
    pipeline.process([Frame("door", 12, 1012.0, arrival, moved=True)])
    assert pipeline.trackers["door"].tracks
    for k, image in enumerate(stays):  # standing still in front of the camera
        pipeline.process([Frame("door", 13 + k, 1013.0 + k, image, moved=False)])
        assert pipeline.search._last_search["door"] == 1013.0 + k
    assert still_count() - before == 9

    # a clock set back: searched at once, not after check_every_s
    pipeline = pipeline_for(detector)
    pipeline.process([Frame("door", 1, 1000.0, empty, moved=False)])
    pipeline.process([Frame("door", 2, 990.0, empty, moved=False)])
    assert pipeline.search._last_search["door"] == 990.0


def test_the_check_of_a_still_scene_searches_the_whole_frame(detector) -> None:
    """With full_scan_every 5 most frames are searched only around the faces in view: the
    check of a still scene with none must search the whole frame, or someone who stands
    still (in view when the camera came back) is found only every 5th check."""
    pipeline = pipeline_for(detector, full_scan_every=5)
    empty = read_frames(DEMO_CLIP, EMPTY_FRAME, 1)[0]
    pipeline.process([Frame("door", 0, 1000.0, empty, moved=True)])  # the camera came back
    standing = read_frames(DEMO_CLIP, 0, 1)[0]  # two faces, quite still
    for second in range(1, 6):
        pipeline.process([Frame("door", second, 1000.0 + second, standing, moved=False)])
    assert pipeline.trackers["door"].tracks, "found at the check, 5 s later"


def test_a_face_missed_a_moment_in_a_still_scene_is_looked_for_again(detector) -> None:
    """Someone sitting still looks down for 3 s: their track ends, and the frames were then
    skipped as still until the next check (presence off for ~10 s, the visit split in two).
    A camera that saw a face within check_every_s searches its still frames."""
    pipeline = pipeline_for(detector)
    empty = read_frames(DEMO_CLIP, EMPTY_FRAME, 1)[0]
    sitting = read_frames(DEMO_CLIP, 0, 1)[0]
    pipeline.process([Frame("door", 0, 1000.0, sitting, moved=True)])
    assert pipeline.trackers["door"].tracks
    for second in range(1, 4):  # no face found (looking down), nothing moves much
        pipeline.process([Frame("door", second, 1000.0 + second, empty, moved=False)])
        pipeline.expire(1000.0 + second)
    assert not pipeline.trackers["door"].tracks, "lost_after_s: the track ended"
    pipeline.process([Frame("door", 4, 1004.0, sitting, moved=False)])
    assert pipeline.search._last_search["door"] == 1004.0 and pipeline.trackers["door"].tracks
    for second in range(5, 15):  # gone for good: still frames are skipped again...
        pipeline.process([Frame("door", second, 1000.0 + second, empty, moved=False)])
        pipeline.expire(1000.0 + second)
    # ...once check_every_s (5 s) passed since the last frame with a track (at 7 s)
    assert pipeline.search._last_search["door"] == 1011.0


def test_without_the_gate_every_frame_is_searched(detector) -> None:
    pipeline = pipeline_for(detector, enabled=False)
    empty = read_frames(DEMO_CLIP, EMPTY_FRAME, 1)[0]
    before = still_count()
    for second in range(3):
        pipeline.process([Frame("door", second, 1000.0 + second, empty, moved=False)])
        assert pipeline.search._last_search["door"] == 1000.0 + second
    assert still_count() == before


def test_a_cameras_motion_settings_fill_in_from_detection_motion() -> None:
    config = parse_config(
        {
            "cameras": [
                {"name": "door", "url": "x.mp4"},
                {
                    "name": "tree",
                    "url": "y.mp4",
                    "detection": {"motion": {"min_area_fraction": 0.05}},
                },
                {"name": "hall", "url": "z.mp4", "detection": {"motion": {"enabled": False}}},
            ],
            "detection": {"motion": {"min_change_levels": 30}},
        }
    )
    door, tree, hall = (config.motion(c) for c in config.cameras)
    assert (door.enabled, door.min_change_levels, door.min_area_fraction) == (
        True,
        30,
        DEFAULTS.min_area_fraction,
    )
    assert (tree.enabled, tree.min_change_levels, tree.min_area_fraction) == (True, 30, 0.05)
    assert (hall.enabled, hall.min_change_levels, hall.check_every_s) == (False, 30, 10.0)


def test_motion_true_or_false_is_the_gate_on_or_off() -> None:
    config = parse_config(
        {
            "cameras": [
                {"name": "door", "url": "x.mp4", "detection": {"motion": False}},
                {"name": "hall", "url": "y.mp4"},
            ],
            "detection": {"motion": True},
        }
    )
    assert [config.motion(c).enabled for c in config.cameras] == [False, True]
    with pytest.raises(
        ConfigError, match=r"detection.motion: expected a section .*, or true / false"
    ):
        parse_config({"cameras": [{"name": "d", "url": "x"}], "detection": {"motion": "off"}})


@pytest.mark.parametrize(
    ("motion", "where"),
    [
        ({"min_area_fraction": 1.5}, "cameras[0] (d).detection.motion.min_area_fraction"),
        ({"min_change_levels": 0}, "cameras[0] (d).detection.motion.min_change_levels"),
        ({"check_every": 5}, "cameras[0] (d).detection.motion.check_every"),
    ],
)
def test_bad_motion_settings_name_their_key(motion, where) -> None:
    with pytest.raises(ConfigError, match=re.escape(where)):
        parse_config({"cameras": [{"name": "d", "url": "x", "detection": {"motion": motion}}]})


def empty_stage_and_arrival() -> tuple[np.ndarray, np.ndarray]:
    """The demo clip's stage with no one on it (frame 85, its right half mirrored over the
    left, where Lin-Manuel Miranda stands), and frame 88: him there (no scene cut between
    them, 0.81 alike; two faces found)."""
    stage, arrival = read_frames(DEMO_CLIP, 85, 2, every=3)
    stage[:, :320] = stage[:, 320:640][:, ::-1]
    return stage, arrival


def test_someone_coming_into_an_empty_view_is_searched_for_between_full_scans(detector) -> None:
    """With full_scan_every 5 a camera with no track had nothing to search around between
    its full scans: those frames were not searched, and someone coming in was found at the
    next full scan, up to 4 frames later (0.87 s median to the first event at 5 fps in a
    review, 0.67 s with full scans every frame). A frame that moved, at a camera with no
    track, is searched whole: they are tracked at the frame they came in. A still frame of
    a camera with no track still waits for the full scan (nothing came in)."""
    pipeline = pipeline_for(detector, full_scan_every=5)
    empty, arrival = empty_stage_and_arrival()
    for k in range(2):  # the camera's full scan, then a frame between full scans
        pipeline.process([Frame("door", k, 1000.0 + k / 5, empty, moved=True)])
    assert not pipeline.trackers["door"].tracks
    pipeline.process([Frame("door", 2, 1000.4, arrival, moved=True)])
    assert len(pipeline.trackers["door"].tracks) == 2, "found at the frame that moved"

    # a still frame with no track (the faces just lost, looking down): searched only at
    # the camera's next full scan, as before
    pipeline = pipeline_for(detector, full_scan_every=5)
    pipeline.process([Frame("door", 0, 1000.0, arrival, moved=True)])  # its full scan
    for second in range(1, 4):
        pipeline.process([Frame("door", second, 1000.0 + second, empty, moved=False)])
        pipeline.expire(1000.0 + second)
    assert not pipeline.trackers["door"].tracks, "lost_after_s: the tracks ended"
    pipeline.process([Frame("door", 4, 1004.0, arrival, moved=False)])
    assert not pipeline.trackers["door"].tracks, "a still frame between full scans"
    pipeline.process([Frame("door", 5, 1005.0, arrival, moved=False)])
    assert len(pipeline.trackers["door"].tracks) == 2, "found at the full scan"


@pytest.mark.parametrize("fps", [5, 25])
def test_a_change_moves_for_about_a_second_at_any_frame_rate(fps) -> None:
    """The gate's memory is about a second of frames, at the camera's fps: a light turned
    on still moves 0.4 s later (someone coming in slowly is not taken for the scene), and
    is still 5 s later, at 5 fps as at 25 (with the memory counted in frames, a 25 fps
    camera forgot a change in a fifth of a second). A camera whose gate is off has none."""
    config = parse_config(
        {"cameras": [{"name": "door", "url": "x.mp4"}], "detection": {"motion": True}}
    )
    motion = MotionDetector.gate(config.motion(config.cameras[0]), fps)
    assert motion is not None
    dark = np.full((360, 640, 3), 60, np.uint8)
    lit = dark + np.uint8(100)
    for _ in range(fps):
        motion.moved(dark)
    moved = [motion.moved(lit) for _ in range(5 * fps)]
    assert all(moved[: round(0.4 * fps) + 1]) and not any(moved[-fps:]), moved
    off = parse_config(
        {"cameras": [{"name": "door", "url": "x.mp4"}], "detection": {"motion": False}}
    )
    assert MotionDetector.gate(off.motion(off.cameras[0]), fps) is None


def test_a_change_of_more_than_min_change_levels_moves_and_one_of_it_does_not() -> None:
    """A dim scene whose light changes by 15 grey levels (min_change_levels) has not moved;
    by 17 it has, against the frames before it (not an average that already holds it)."""
    for change, moved in ((15, False), (17, True)):
        motion = gate()
        dark = np.full((360, 640, 3), 60, np.uint8)
        for _ in range(5):
            motion.moved(dark)
        assert motion.moved(dark + np.uint8(change)) is moved, change


def test_sensor_noise_on_a_tiny_substream_does_not_move() -> None:
    """An 80x45 substream (a quarter of the gate's width) is compared at its own size,
    blurred as it is: not blown up, which left its sensor noise too sharp for the blur."""
    motion = gate()
    small = np.ascontiguousarray(read_frames(DEMO_CLIP, EMPTY_FRAME, 1)[0][::8, ::8])
    assert small.shape[1] < 320
    frames = noisy_copies(small, 10, 10)
    assert [motion.moved(f) for f in frames] == [True] + [False] * 9
