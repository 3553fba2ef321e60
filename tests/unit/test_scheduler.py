"""The batch scheduler's pipeline (daemon.scheduler) on detection and tracking: full scans,
ignore regions, presence and in-view state, stalls and clock steps."""

from __future__ import annotations

import json
import re
import time
from unittest import mock

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.camera_frames import Frame
from daemon.config import ConfigError
from daemon.config_file import parse_config
from daemon.events import EventSinks
from daemon.scheduler import Pipeline
from tests.conftest import REPO
from tests.pipeline_fakes import Recorded as _Recorded
from tests.unit.test_tracking import faces


def test_full_scan_every_n_frames_and_search_around_tracks_in_between(detector) -> None:
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4"}],
            "detection": {"full_scan_every": 3},
            "recognition": {"model": None},
        }
    )
    pipeline = Pipeline(config, detector, None, EventSinks())
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    seen = []
    for k in range(7):
        ok, image = clip.read()
        assert ok
        prior = pipeline.search.prior(Frame("door", k, float(k), image))
        seen.append(None if prior is None else len(prior))
        pipeline.trackers["door"].update(float(k), detector.detect([image])[0])
    faces = len(pipeline.trackers["door"].tracks)
    assert faces > 0
    assert seen[0] is None and seen[3] is None and seen[6] is None
    assert all(n is not None and n > 0 for n in (seen[1], seen[2], seen[4], seen[5]))

    # without a motion gate (every frame "moved"), between full scans a frame of a camera
    # with no face in view is not given to the detector (there is nothing to search around;
    # its pyramid was built for nothing)
    ungated = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4"}],
            "detection": {"full_scan_every": 3, "motion": False},
            "recognition": {"model": None},
        }
    )
    pipeline = Pipeline(ungated, detector, None, EventSinks())
    given: list[int] = []
    real_detect = detector.detect
    blank = np.zeros((360, 640, 3), np.uint8)

    def counting(images, priors=None):  # type: ignore[no-untyped-def]
        given.append(len(images))
        return real_detect(images, priors=priors)

    with mock.patch.object(detector, "detect", counting):
        for k in range(7):
            pipeline.process([Frame("door", k, float(k), blank)])
    assert given == [1, 1, 1], "the full scans only (frames 0, 3, 6)"
    assert pipeline.search._last_search["door"] == 6.0, "each frame counts as searched"

    # with one, the first 3 frames that moved after a still one are searched whole
    # (someone may have come in: tests/unit/test_motion.py), then, while the view moves on
    # with no one in it (a street, trees in the wind), every 3rd again; each frame by its
    # own place in the run, also when a batch holds two of the camera's frames (identify
    # on a video, a pipeline behind)
    def searched_whole(batch: int) -> list[int]:
        pipeline = Pipeline(config, detector, None, EventSinks())
        whole: list[int] = []

        def recording(images, priors=None):  # type: ignore[no-untyped-def]
            whole.extend(int(i[0, 0, 0]) for i, p in zip(images, priors, strict=True) if p is None)
            return real_detect(images, priors=priors)

        frames = [  # (frames 7 and 8 still: not searched)
            Frame("door", k, k / 10, np.full((360, 640, 3), k, np.uint8), moved=k not in (7, 8))
            for k in range(12)
        ]
        with mock.patch.object(detector, "detect", recording):
            for start in range(0, len(frames), batch):
                pipeline.process(frames[start : start + batch])
        return whole

    assert searched_whole(1) == [0, 1, 2, 5, 9, 10, 11]
    assert searched_whole(2) == [0, 1, 2, 5, 9, 10, 11]
    # one with faces in view is searched around them between full scans: every frame
    pipeline = Pipeline(config, detector, None, EventSinks())
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    given.clear()
    with mock.patch.object(detector, "detect", counting):
        for k in range(7):
            pipeline.process([Frame("door", k, float(k), clip.read()[1])])
    assert given == [1] * 7 and pipeline.trackers["door"].tracks[0].hits == 7

    # several cameras: their full scans fall in different batches
    config.cameras[0] = config.cameras[0].model_copy(update={"name": "d"})
    config.cameras.extend(config.cameras[0].model_copy(update={"name": n}) for n in "bc")
    pipeline = Pipeline(config, detector, None, EventSinks())
    blank = np.zeros((360, 640, 3), np.uint8)
    still = [Frame(c, 0, 0.0, blank, moved=False) for c in "dbc"]  # (moved: searched whole)
    rounds = [[pipeline.search.prior(frame) is None for frame in still] for _ in range(6)]
    assert rounds == [[True, False, False], [False, True, False], [False, False, True]] * 2


def test_a_persons_presence_follows_their_tracks_on_every_camera() -> None:
    """Ada on two cameras, then gone from one: her state names the other; names not in the
    gallery (removed since their track began) are not published."""
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "a.mp4"}, {"name": "yard", "url": "b.mp4"}],
            "recognition": {"model": None},
            "tracking": {"confirm_frames": 1, "min_votes": 1, "vote_window": 1, "lost_after_s": 1},
        }
    )

    class State:
        def __init__(self) -> None:
            self.people: dict[str, list[str]] = {}

        def set_person(self, name: str, state: dict) -> None:
            self.people[name] = state["cameras"]

        def set_in_view(self, camera: str, state: dict) -> None:
            pass

    state = State()
    pipeline = Pipeline(config, None, None, EventSinks(state=state))  # type: ignore[arg-type]
    pipeline.emitter.enrolled = {"Ada"}

    def step(camera: str, ts: float, who: str) -> None:  # a frame with one face, recognised
        tracker = pipeline.trackers[camera]
        tracks = tracker.update(ts, faces((10, 10, 50, 50)))
        tracker.record(tracks[0], who, 0.5)
        pipeline.emitter.changed(camera, tracker.decide(tracks), ts)

    step("door", 0.0, "Ada")
    assert state.people == {"Ada": ["door"]}
    step("yard", 0.0, "Bob")
    assert state.people == {"Ada": ["door"]}, "Bob is not enrolled: not published"
    step("yard", 0.1, "Ada")  # the yard's face turns out to be Ada
    assert state.people == {"Ada": ["door", "yard"]}
    step("yard", 1.0, "Ada")
    pipeline.expire(1.05)  # the door's face was last seen at 0.0: it left
    assert state.people == {"Ada": ["yard"]}
    step("yard", 1.1, "Bob")  # the yard's face turns out not to be Ada after all
    assert state.people == {"Ada": []}


def test_faces_centred_in_a_cameras_ignore_regions_are_dropped(detector) -> None:
    """A region over the left half of the demo clip: the faces there make no tracks and are
    counted; the others are tracked as before."""
    left_half = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]
    config = parse_config(
        {
            "cameras": [
                {"name": "all", "url": "x.mp4"},
                {"name": "half", "url": "x.mp4", "detection": {"ignore": [left_half]}},
            ],
            "recognition": {"model": None},
        }
    )
    pipeline = Pipeline(config, detector, None, EventSinks())
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    ignored_before = REGISTRY.get_sample_value("facewatch_faces_ignored_total", {"camera": "half"})
    centres = {"all": [], "half": []}
    for k in range(0, 120):
        ok, image = clip.read()
        assert ok
        if k % 10:
            continue
        pipeline.process([Frame(camera, k, float(k), image) for camera in ("all", "half")])
        for camera, seen in centres.items():
            seen += [(t.bbox_xyxy[0] + t.bbox_xyxy[2]) / 2 / image.shape[1]
                     for t in pipeline.trackers[camera].tracks if t.last_seen == float(k)]  # fmt: skip
    on_the_left = sum(x < 0.5 for x in centres["all"])
    assert on_the_left > 0 and len(centres["all"]) > on_the_left, "faces on both sides"
    assert sorted(centres["half"]) == sorted(x for x in centres["all"] if x >= 0.5)
    ignored = REGISTRY.get_sample_value("facewatch_faces_ignored_total", {"camera": "half"})
    assert ignored - (ignored_before or 0) == on_the_left


def test_a_face_that_stays_put_for_half_an_hour_is_said_with_the_region_that_drops_it(
    detector, caplog
) -> None:
    """A photo on the wall: the same picture for 30 min. Each face of it is said once, after
    30 min and not before, with the detection.ignore region that covers it; that region,
    pasted into the camera's config, drops that face and keeps the other."""
    frame = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4")).read()[1]
    camera = {"name": "hall", "url": "rtsp://cam.lan/stream"}

    def run(regions: list, minutes: float, quiet_for: float | None = None) -> Pipeline:
        cams = [{**camera, "detection": {"ignore": regions}}] if regions else [camera]
        config = parse_config({"cameras": cams, "recognition": {"model": None}})
        pipeline = Pipeline(config, detector, None, EventSinks())
        for k in range(int(minutes * 60 / 15) + 1):  # a frame every 15 s (the motion gate's)
            pipeline.process([Frame("hall", k, 1000.0 + 15 * k, frame)])
            if quiet_for is not None and 15 * k <= quiet_for * 60:
                assert not caplog.records, f"said after {15 * k} s"
        return pipeline

    with caplog.at_level("WARNING", logger="daemon.scheduler"):
        run([], 45, quiet_for=29.5)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said  # the clip's first frame: two faces, each said once
    assert all(m.startswith("camera hall: a face has stayed at one place for 30 min") for m in said)
    corners = re.search(r"detection\.ignore: (\[\[.*\]\]) \(", said[0])
    assert corners, said[0]
    region = json.loads(corners.group(1))
    pipeline = run([region], 0.5)
    [kept] = pipeline.trackers["hall"].tracks  # one face dropped, the other tracked
    x = (kept.bbox_xyxy[0] + kept.bbox_xyxy[2]) / 2 / frame.shape[1]
    assert not region[0][0] <= x <= region[1][0]


@pytest.mark.parametrize(
    ("regions", "expected"),
    [
        ([[[0, 0], [1, 0]]], "region 0: expected 3 or more"),
        ([[[0, 0], [1, 0], [1, 1]], [[0, 0], [640, 0], [640, 360]]], "region 1: corners are"),
        ([[[0, 0, 1], [1, 0], [1, 1]]], "expected a list of regions, each a list of [x, y]"),
        ([[0.5, 0.09, 0.62, 0.40]], "expected a list of regions"),  # a box, not a region
        ("0.5,0.09,0.62,0.09,0.62,0.4", "expected a list of regions"),  # Frigate's masks
        ([[[0.5, 0.1], [0.6, 0.4], [0.6, 0.1], [0.5, 0.4]]], "region 0: its edges cross"),
        ([[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]], "region 0: encloses no area"),
    ],
)
def test_ignore_regions_are_checked(regions, expected) -> None:
    camera = {"name": "door", "url": "x.mp4", "detection": {"ignore": regions}}
    with pytest.raises(ConfigError, match=r"cameras\[0\] \(door\)\.detection\.ignore") as error:
        parse_config({"cameras": [camera]})
    assert expected in str(error.value)


def test_a_batch_with_two_frames_of_a_camera_reports_each_frames_own_face(
    detector, tmp_path
) -> None:
    """The track holds its latest box; events, snapshots and archived images of the earlier
    frame must use that frame's own."""
    from daemon.archive import FaceArchive

    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4"}],
            "recognition": {"model": None},
            "tracking": {"confirm_frames": 1},
            "archive": {"dir": str(tmp_path / "archive"), "min_gap_s": 0, "per_visit": 10},
        }
    )
    archive = FaceArchive(config.archive, "node", None)
    archive.start()
    events = tmp_path / "events.jsonl"
    sinks = EventSinks(jsonl_file=str(events))
    pipeline = Pipeline(config, detector, None, sinks, archive=archive)
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    images = []
    for k in range(27):
        ok, image = clip.read()
        assert ok
        if k in (20, 26):  # one face that moves between the two
            images.append(image)
    clip.release()
    found = [detector.detect([image])[0] for image in images]
    assert [len(f) for f in found] == [1, 1]
    assert np.abs(found[0].bbox_xyxy - found[1].bbox_xyxy).max() > 20
    now = round(time.time(), 1)
    pipeline.process([Frame("door", k, now + k / 5, image) for k, image in enumerate(images)])
    pipeline.expire(now + 1, stopping=True)
    archive.stop(timeout_s=10)
    sinks.close()
    [confirmed] = [json.loads(line) for line in events.read_text().splitlines()][:1]
    assert confirmed["type"] == "confirmed" and confirmed["frame_ts"] == pytest.approx(now)
    assert confirmed["bbox_xyxy"] == pytest.approx(found[0].bbox_xyxy[0].tolist(), abs=0.06)
    [visit] = (tmp_path / "archive").glob("*/door/*/visit.json")
    archived = json.loads(visit.read_text())["images"]
    for image, faces_there in zip(archived, found, strict=True):
        assert image["bbox_xyxy"] == pytest.approx(faces_there.bbox_xyxy[0].tolist(), abs=0.06)


def test_an_ignore_region_at_the_frames_edge_takes_faces_the_edge_cuts_off() -> None:
    """MTCNN's boxes reach past the frame for a face the edge cuts off: the centre of the
    part inside the frame counts, and a region's far edge (x or y = 1) is inside it."""
    strips = [[[0, 0], [0.3, 0], [0.3, 1], [0, 1]], [[0.7, 0], [1, 0], [1, 1], [0.7, 1]]]
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4", "detection": {"ignore": strips}}],
            "recognition": {"model": None},
        }
    )
    pipeline = Pipeline(config, None, None, EventSinks())  # type: ignore[arg-type]
    frame = Frame("door", 1, 0.0, np.zeros((360, 640, 3), np.uint8))
    kept = pipeline.search.not_ignored(
        frame, faces((-60, 100, 40, 220), (600, 100, 700, 220), (300, 100, 340, 140))
    )
    assert kept.bbox_xyxy.tolist() == [[300, 100, 340, 140]]


def _demo_pipeline(detector, count: int) -> tuple[Pipeline, list[dict], list[np.ndarray]]:
    """A detection-only pipeline of one camera whose events are recorded, and the demo
    clip's first ``count`` frames (two faces)."""
    config = parse_config(
        {"cameras": [{"name": "door", "url": "x.mp4"}], "recognition": {"model": None}}
    )
    sinks = _Recorded()
    events = sinks.events

    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    frames = [clip.read()[1] for _ in range(count)]
    return Pipeline(config, detector, None, sinks), events, frames


def test_faces_in_view_through_a_short_stall_are_one_visit(detector) -> None:
    """A camera that hangs for 6 s while people are in view (then hands over its frames):
    their tracks go on, no `left` and new `confirmed` for the same people. A camera silent
    past the stall grace (it is down by then) ends them as usual."""
    pipeline, events, frames = _demo_pipeline(detector, 12)
    for k in range(4):  # 0.6 s of two faces: confirmed
        pipeline.process([Frame("door", k, 1000.0 + 0.2 * k, frames[k])])
    confirmed = {e["track_id"] for e in events if e["type"] == "confirmed"}
    assert confirmed
    pipeline.expire(1006.6)  # 6 s without a frame
    for k in range(4, 8):
        pipeline.process([Frame("door", k, 1006.6 + 0.2 * (k - 4), frames[k])])
    assert [e["type"] for e in events if e["track_id"] in confirmed].count("left") == 0
    assert {e["track_id"] for e in events if e["type"] == "confirmed"} == confirmed
    pipeline.expire(1007.2 + 13)  # then silent past the grace: the visits end
    assert {e["track_id"] for e in events if e["type"] == "left"} == confirmed


@pytest.mark.parametrize("step_s", [-3600.0, 30.0])
def test_a_wall_clock_step_splits_no_track(detector, step_s) -> None:
    """NTP steps the wall clock while people are in view (back an hour, or on by 30 s, as on
    a board without a real-time clock): their tracks go on by the monotonic clock, with no
    second `confirmed` nor early `left`; the events carry their frame's wall-clock time, and
    a visit's `left` the clock of its first frame, so that it lasts what it lasted (it was
    3600 s before its start, or 30 s too long)."""
    pipeline, events, frames = _demo_pipeline(detector, 8)
    for k in range(8):  # 5 fps; the wall clock jumps between frames 0 and 1
        wall = 1_700_000_000.0 + 0.2 * k + (step_s if k >= 1 else 0.0)
        pipeline.process([Frame("door", k, wall, frames[k], mono=500.0 + 0.2 * k)])
    pipeline.expire(500.0 + 0.2 * 7 + 0.5)  # (the monotonic clock's now)
    confirmed = [e for e in events if e["type"] == "confirmed"]
    assert confirmed and len({e["track_id"] for e in confirmed}) == len(confirmed)
    assert not [e for e in events if e["type"] == "left"], "nobody left"
    assert all(e["first_seen_ts"] == 1_700_000_000.0 for e in confirmed)  # wall times
    pipeline.expire(500.0 + 0.2 * 7 + 13)  # silent past the stall grace: gone
    left = [e for e in events if e["type"] == "left"]
    assert {e["track_id"] for e in left} == {e["track_id"] for e in confirmed}
    assert all(e["frame_ts"] == 1_700_000_000.0 + 1.4 for e in left)  # last seen, 1.4 s on
    # confirmed after the step: the time of the frame that confirmed them, on the new clock
    assert all(abs(e["frame_ts"] - 1_700_000_000.0 - step_s) < 2 for e in confirmed)


def test_the_faces_in_view_state_never_goes_back_in_time() -> None:
    """A camera's retained `faces` carried its frames' times, and at an expiry the clock's,
    which runs ahead of the frames still in the pipeline: a consumer keeping the newest
    state by `ts` dropped an update saying three faces were in view."""
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "a.mp4"}],
            "recognition": {"model": None},
            "tracking": {"confirm_frames": 1, "lost_after_s": 1},
        }
    )
    states: list[dict] = []

    class State:
        def set_in_view(self, camera: str, state: dict) -> None:
            states.append(state)

    pipeline = Pipeline(config, None, None, EventSinks(state=State()))  # type: ignore[arg-type]
    tracker = pipeline.trackers["door"]
    tracks = tracker.update(0.0, faces((10, 10, 50, 50)))
    pipeline.emitter.changed("door", tracker.decide(tracks), 100.0)
    pipeline.emitter.changed("door", tracker.expire(5.0), 102.5)  # the clock at the expiry
    tracks = tracker.update(5.1, faces((10, 10, 50, 50)))  # a frame taken before it
    pipeline.emitter.changed("door", tracker.decide(tracks), 102.1)
    assert [(s["faces"], s["ts"]) for s in states] == [(1, 100.0), (0, 102.5), (1, 102.5)]
