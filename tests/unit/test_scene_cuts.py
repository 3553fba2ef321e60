"""daemon.scene_cuts on real frames: a picture that cuts to another scene, and what a fixed
camera sees that must not read as one (someone close to the lens, headlights into it, a
light over half the room, a moment of black with sensor noise or an on-screen clock, two
different frames in a row, a camera back after 2 s); and the pipeline's wait for the next
frame before it ends the tracks at a cut, its whole-frame search and its counter."""

from __future__ import annotations

import json
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.camera_frames import Frame
from daemon.config_file import parse_config
from daemon.cut_hold import PENDING_MAX_S
from daemon.events import EventSinks
from daemon.scene_cuts import SceneCuts, likeness, thumbnail
from daemon.scheduler import Pipeline
from tests.clips import DEMO_CLIP, read_frames

CUT_TO_AUDIENCE = 211  # the demo clip's frame where Lin-Manuel Miranda's close-up cuts away


def cuts_in(frames: list, fps: float = 10) -> list[int]:
    """The frames (indices) that ``SceneCuts`` calls cuts, as its next frame confirms."""
    scenes, cuts = SceneCuts(), []
    for k, frame in enumerate(frames):
        if scenes.look(frame, k / fps).confirms:
            cuts.append(k - 1)
    return cuts


@pytest.fixture(scope="module")
def crowd(shared_data) -> list:
    """crowd_1080p at 5 fps, at 960x540: people walking at a fixed camera."""
    frames = read_frames(shared_data / "videos" / "crowd_1080p.mp4", every=5)
    return [cv2.resize(frame, (960, 540)) for frame in frames]


def test_the_demo_clips_cut_to_the_audience_is_a_cut_and_its_close_up_is_not() -> None:
    """At 10 fps (every 3rd frame) from the close-up's start: one cut, where the picture
    turns to the audience; the close-up's frames (he moves, the camera follows) are none."""
    first = 85
    frames = read_frames(DEMO_CLIP, first, every=3)
    assert [first + 3 * k for k in cuts_in(frames)] == [CUT_TO_AUDIENCE]


def test_someone_close_to_the_lens_or_a_light_over_half_the_room_is_no_cut(crowd) -> None:
    """A dark coat over the left 60 % of the picture for 5 frames (someone passing close to
    the lens), and the top half's light down to 30 % for good: no cut (a picture cut on
    either one alone, as a whole). The same coat over all of it is one."""
    coat = [f.copy() for f in crowd]
    for frame in coat[5:10]:
        frame[:, : int(0.6 * frame.shape[1])] = (35, 30, 30)
    assert cuts_in(coat, 5) == []
    half_dark = [f.copy() for f in crowd]
    for frame in half_dark[5:]:
        frame[: frame.shape[0] // 2] = (frame[: frame.shape[0] // 2] * 0.3).astype(np.uint8)
    assert cuts_in(half_dark, 5) == []
    stage = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE - 30, 1)[0]
    other = crowd[:5] + [cv2.resize(stage, (960, 540))] * 5
    assert cuts_in(other, 5) == [5]


def _boxed(frame: np.ndarray, kind: str, black: np.ndarray | None = None) -> np.ndarray:
    """``frame`` as shown with black bars in the same 16:9 frame: the middle of a 2.39:1
    film letterboxed (what the frame's top and bottom showed: black), or all of it squeezed
    to 4:3 and pillarboxed (its sides' middle cut would stay a dark stage: 0.57 alike) or to
    9:16, a phone's video (0.32 of the width is picture). The bars are ``black`` where
    given (as a decoder gives them), else 0."""
    height, width = frame.shape[:2]
    boxed = np.zeros_like(frame) if black is None else black.copy()
    if kind == "letterbox":
        band = (height - int(width / 2.39)) // 2
        boxed[band : height - band] = frame[band : height - band]
    else:
        side = (width - int(height * (4 / 3 if kind == "pillarbox" else 9 / 16))) // 2
        boxed[:, side : width - side] = cv2.resize(frame, (width - 2 * side, height))
    return boxed


def test_the_demo_clips_cut_to_the_audience_with_black_bars_is_a_cut() -> None:
    """Letterboxed (2.39:1) or pillarboxed (4:3, or a phone's 9:16 video: a third of the
    width is picture): the fixed edge where a bar meets the picture kept the border blocks
    alike, and no cut was ever found. The bars are cropped: the cut to the audience is one,
    the close-up's frames letterboxed are none."""
    first = 85
    frames = read_frames(DEMO_CLIP, first, every=3)
    assert thumbnail(_boxed(frames[0], "phone")).bars[2] > 0.3
    for kind in ("letterbox", "pillarbox", "phone"):
        boxed = [_boxed(frame, kind) for frame in frames]
        assert [first + 3 * k for k in cuts_in(boxed)] == [CUT_TO_AUDIENCE], kind
        assert cuts_in(boxed[: (CUT_TO_AUDIENCE - first) // 3]) == [], kind


def test_bars_of_a_decoders_black_with_noise_are_cropped_too() -> None:
    """Bars as a decoder gives them, video black (16, not 0) with a little noise: they are
    cropped as well, and the cut to the audience letterboxed is one (taken for picture,
    their fixed edge would hide every cut of the film)."""
    first = 85
    frames = read_frames(DEMO_CLIP, first, every=3)
    rng = np.random.default_rng(0)
    boxed = [
        _boxed(f, "letterbox", np.clip(rng.normal(16, 1.5, f.shape), 0, 255).astype(np.uint8))
        for f in frames
    ]
    assert thumbnail(boxed[0]).bars[0] > 0.1
    assert [first + 3 * k for k in cuts_in(boxed)] == [CUT_TO_AUDIENCE]


def test_a_black_band_down_one_side_is_cropped_on_that_side_only() -> None:
    """A black privacy mask (or one bar) over the right 10 % of the picture: that band is
    cropped, not the left side, and the cut to the audience is still one."""
    first = 85
    masked = read_frames(DEMO_CLIP, first, every=3)
    band = int(0.9 * masked[0].shape[1])
    for frame in masked:
        frame[:, band:] = 0
    assert thumbnail(masked[0]).bars[2:] == (0, pytest.approx(0.1, abs=0.02))
    assert [first + 3 * k for k in cuts_in(masked)] == [CUT_TO_AUDIENCE]


def test_half_the_picture_going_black_is_no_cut_though_black_rows_are_bars(crowd) -> None:
    """The top half, or the left half, of a fixed camera's picture goes black (0) for good:
    those rows or columns look like a bar, but the frame before has none, so both are
    compared whole (a bar one frame has does not crop the other's picture): no cut. (Each
    frame cropped by its own bars: the left half's is a cut, 0.18 alike.)"""
    for half in (np.s_[: crowd[0].shape[0] // 2], np.s_[:, : crowd[0].shape[1] // 2]):
        dark = [f.copy() for f in crowd]
        for frame in dark[5:]:
            frame[half] = 0
        assert max(thumbnail(dark[6]).bars) == 0.5
        assert cuts_in(dark, 5) == []


def test_rows_dark_but_for_a_few_lights_are_picture_not_bars(crowd) -> None:
    """A night sky over the top fifth with a street light every 10th column: its rows are
    mostly black but bright in places (their 95th percentile), so they are picture, not a
    bar to crop."""
    frame = crowd[0].copy()
    top = frame.shape[0] // 5
    frame[:top] = 0
    frame[:top, ::10] = 255
    assert thumbnail(frame).bars[0] == 0


@pytest.fixture(scope="module")
def head(shared_data) -> list:
    """head_turn at 10 fps, at 864x558: a man turning his head at a fixed camera."""
    frames = read_frames(shared_data / "videos" / "head_turn_3456x2234.mp4", count=20, every=3)
    return [cv2.resize(frame, (864, 558)) for frame in frames]


def _flare(frame: np.ndarray) -> np.ndarray:
    """Headlights into the lens: a glow that saturates most of the picture."""
    height, width = frame.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    distance = np.hypot(xs - 0.6 * width, ys - 0.4 * height) / (0.5 * width)
    glow = 255 * 1.5 * np.clip(1.2 - distance, 0, 1)[..., None]
    return np.clip(frame + glow, 0, 255).astype(np.uint8)


def test_someone_right_in_front_of_the_lens_or_headlights_into_it_is_no_cut(head, crowd) -> None:
    """A dark coat over the left 85 % of the picture for 2 frames (head_turn) or 3 (crowd),
    with a sensor's noise, and headlights saturating three quarters of it for 3 frames: no
    cut. A block covered or saturated in either frame shows nothing there (its edges vary
    less than FLAT_EDGES: noise is not an edge), which is no evidence of another scene (both
    were cuts, going in and coming out, when such a block counted as unlike)."""
    rng = np.random.default_rng(0)
    for frames, count in ((head, 2), (crowd, 3)):
        coat = [f.copy() for f in frames]
        for frame in coat[5 : 5 + count]:
            part = frame[:, : int(0.85 * frame.shape[1])]
            part[:] = np.clip(rng.normal((35, 30, 30), 3, part.shape), 0, 255)
        assert cuts_in(coat) == []
    flare = [*head[:5], *(_flare(f) for f in head[5:8]), *head[8:]]
    assert (flare[6] == 255).all(axis=2).mean() > 0.7
    assert cuts_in(flare) == []


def test_a_patterned_coat_over_three_quarters_for_two_frames_is_no_cut(crowd) -> None:
    """Someone in a patterned coat (it has edges, so it counts as a picture) passes over the
    left 75 % of a fixed camera's picture for two frames: the right quarter's 4 blocks stay
    alike, as many as ALIKE_BLOCKS asks, and every visit in view goes on (no cut)."""
    pattern = cv2.resize(read_frames(DEMO_CLIP, CUT_TO_AUDIENCE, 1)[0], (960, 540))
    coat = [f.copy() for f in crowd]
    for frame in coat[5:7]:
        frame[:, :720] = pattern[:, :720]
    assert cuts_in(coat, 5) == []


def test_black_with_sensor_noise_or_an_on_screen_clock_is_blank_and_no_cut(crowd) -> None:
    """The light out a moment: black with a sensor's noise, or black with the camera's
    clock burnt in, is blank (not compared, not remembered): no cut, going dark or coming
    back. A dark picture is not blank."""
    rng = np.random.default_rng(0)
    noisy = np.clip(rng.normal(8, 3, crowd[0].shape), 0, 255).astype(np.uint8)
    clock = np.zeros_like(crowd[0])
    cv2.putText(clock, "2026-12-01 19:04:50 CAM1", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0,
                (255, 255, 255), 2)  # fmt: skip
    assert thumbnail(noisy).blank and thumbnail(clock).blank
    assert not thumbnail((crowd[0] * 0.15).astype(np.uint8)).blank
    for black in (noisy, clock):
        assert cuts_in(crowd[:3] + [black] * 2 + crowd[3:6], 5) == []


def test_a_grey_camera_is_compared_as_its_colour_twin(crowd) -> None:
    """A grey frame, with or without its channel axis (H, W, 1), is measured as the colour
    frame it came from: (H, W, 1) raised an OpenCV error in the colour conversion."""
    colour = crowd[:2]
    grey = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in colour]
    for frames in (grey, [frame[:, :, None] for frame in grey]):
        thumbs = [thumbnail(frame) for frame in frames]
        assert not thumbs[0].blank
        assert likeness(thumbs[0], thumbs[1]) == pytest.approx(
            likeness(thumbnail(colour[0]), thumbnail(colour[1])), abs=0.02
        )


def test_one_frame_of_another_picture_is_no_cut_and_a_lasting_one_is() -> None:
    """A cut candidate counts only when the next frame is also unlike the frame before it
    and like the candidate: one frame of the audience inside the close-up (a flash, a corrupt
    frame) is none; the audience for two frames is one, at its first."""
    stage = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE - 12, 4, every=3)
    audience = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE, 2, every=3)
    assert cuts_in([*stage[:2], audience[0], *stage[2:]]) == []
    assert cuts_in([*stage, *audience]) == [4]


def test_the_frame_back_after_a_flash_is_no_candidate_itself() -> None:
    """A flash (one frame of the audience), then the close-up again: that frame says the
    flash was no cut, and is no candidate itself (a candidate is held back from tracking
    and searched whole, for nothing)."""
    stage = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE - 12, 4, every=3)
    audience = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE, 1)
    scenes = SceneCuts()
    looks = [scenes.look(f, k / 10) for k, f in enumerate([*stage[:3], *audience, stage[3]])]
    assert looks[3].candidate
    assert (looks[4].confirms, looks[4].candidate) == (False, False)


def test_two_different_unlike_frames_in_a_row_are_no_cut() -> None:
    """The audience inside the close-up, then the clip's opening shot: that frame is unlike
    the close-up but unlike the audience too (two corrupt frames, two flashes), so it
    confirms nothing; back to the close-up, no cut."""
    stage = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE - 12, 4, every=3)
    audience = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE, 1)
    opening = read_frames(DEMO_CLIP, 10, 1)
    assert cuts_in([*stage[:3], *audience, *opening, stage[3]]) == []


def test_a_cut_right_after_a_one_frame_glitch_is_found() -> None:
    """The close-up, one glitch frame (the audience: a corrupt frame, a one-frame
    dissolve), then the clip's opening shot for good: the cut is found at the opening's
    first frame, so the faces there do not go on in Lin-Manuel Miranda's track, with his
    name."""
    stage = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE - 12, 3, every=3)
    audience = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE, 1)
    opening = read_frames(DEMO_CLIP, 10, 2, every=3)
    assert cuts_in([*stage, *audience, *opening]) == [4]


def test_frames_more_than_a_few_seconds_apart_are_not_compared() -> None:
    """The close-up, then 2 s later the audience for good: no cut (a camera that went quiet
    comes back with its people moved); the same frames 0.1 s apart are one."""
    stage = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE - 12, 4, every=3)
    audience = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE, 2, every=3)
    for gap, cuts in ((2.0, []), (0.1, [4])):
        scenes, found = SceneCuts(), []
        clocks = [0.0, 0.1, 0.2, 0.3, 0.3 + gap, 0.4 + gap]
        for k, (image, clock) in enumerate(zip([*stage, *audience], clocks, strict=True)):
            if scenes.look(image, clock).confirms:
                found.append(k - 1)
        assert found == cuts


def test_a_1_fps_camera_has_its_cut_found() -> None:
    """A camera at 1 fps (a frame every second, inside WITHIN_S) switching to another view
    (a PTZ preset): the cut is one, at the new view's first frame."""
    stage = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE - 12, 4, every=3)
    audience = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE, 2, every=3)
    assert cuts_in([*stage, *audience], fps=1) == [4]


_SINKS: list[EventSinks] = []  # _pipeline's, their events file closed after the test


@pytest.fixture(autouse=True)
def _sinks_closed() -> Iterator[None]:
    yield
    while _SINKS:
        _SINKS.pop().close()


def _pipeline(
    detector, tmp_path, camera: dict | None = None, full_scan_every: int | None = None
) -> tuple[Pipeline, list[dict]]:
    settings: dict = {
        "cameras": [{"name": "door", "url": "x.mp4", "fps": 10, **(camera or {})}],
        "recognition": {"model": None},
        "tracking": {"confirm_frames": 1},
    }
    if full_scan_every is not None:
        settings["detection"] = {"full_scan_every": full_scan_every}
    config = parse_config(settings)
    events = tmp_path / "events.jsonl"
    _SINKS.append(EventSinks(jsonl_file=str(events)))
    pipeline = Pipeline(config, detector, None, _SINKS[-1])

    def sent() -> list[dict]:
        lines = events.read_text().splitlines() if events.exists() else []
        return [json.loads(line) for line in lines]

    return pipeline, sent  # type: ignore[return-value]


def test_a_cut_ends_the_tracks_before_its_frame_is_tracked(detector, tmp_path) -> None:
    """The demo clip at 10 fps, frame by frame. The audience frame (a candidate) waits: its
    faces join no track, and Lin-Manuel Miranda's track is open. The next frame confirms
    it: his track leaves (reason cut) at his last sighting, then the audience frame's faces
    are new tracks, announced at the audience frame's time, then the next frame's."""
    pipeline, sent = _pipeline(detector, tmp_path)
    first = CUT_TO_AUDIENCE - 9
    images = read_frames(DEMO_CLIP, first, 5, every=3)
    ts = [1000.0 + k / 10 for k in range(5)]
    for k in range(4):
        pipeline.process([Frame("door", first + 3 * k, ts[k], images[k])])
    [his] = pipeline.trackers["door"].tracks
    assert [e for e in sent() if e["type"] == "left"] == []
    pipeline.process([Frame("door", first + 12, ts[4], images[4])])
    events = sent()
    left = events[1]
    assert (left["type"], left["track_id"], left["reason"]) == ("left", his.track_id, "cut")
    assert left["frame_ts"] == pytest.approx(ts[2])
    after = events[2:]
    assert after and all(e["type"] == "confirmed" and e["track_id"] > his.track_id for e in after)
    assert [e["frame_ts"] for e in after] == sorted(e["frame_ts"] for e in after)
    assert after[0]["frame_ts"] == pytest.approx(ts[3])


def test_a_candidate_at_the_end_is_tracked_and_one_frame_reverts(detector, tmp_path) -> None:
    """The stream ends on the audience frame (a candidate, its next never comes): its faces
    are still tracked (no frame lost), no cut. One audience frame inside the close-up: no
    track leaves."""
    pipeline, sent = _pipeline(detector, tmp_path)
    first = CUT_TO_AUDIENCE - 9
    images = read_frames(DEMO_CLIP, first, 4, every=3)
    for k, image in enumerate(images):
        pipeline.process([Frame("door", first + 3 * k, 1000.0 + k / 10, image)])
    pipeline.expire(1000.4, stopping=True)
    reasons = [(e["type"], e["reason"]) for e in sent() if e["type"] == "left"]
    assert reasons and all(reason == "stopped" for _, reason in reasons)
    assert any(e["frame_ts"] == pytest.approx(1000.3) for e in sent())  # the audience's
    (tmp_path / "revert").mkdir()
    pipeline, sent = _pipeline(detector, tmp_path / "revert")
    stage = read_frames(DEMO_CLIP, first, 3, every=3)
    audience = read_frames(DEMO_CLIP, CUT_TO_AUDIENCE, 1)
    for k, image in enumerate([*stage[:2], *audience, stage[2]]):
        pipeline.process([Frame("door", k, 1000.0 + k / 10, image)])
    assert [e for e in sent() if e["type"] == "left"] == []


def test_a_candidate_followed_by_black_is_tracked_at_once(detector, tmp_path) -> None:
    """The audience frame (a cut candidate, held), then a black frame: the black frame says
    it was no cut, and the audience's faces are tracked then, at their frame's time, not
    held until the camera's next picture or the hold's expiry."""
    pipeline, sent = _pipeline(detector, tmp_path)
    first = CUT_TO_AUDIENCE - 9
    images = read_frames(DEMO_CLIP, first, 4, every=3)
    for k, image in enumerate([*images, np.zeros_like(images[0])]):
        pipeline.process([Frame("door", first + 3 * k, 1000.0 + k / 10, image)])
    assert any(e["frame_ts"] == pytest.approx(1000.3) for e in sent())


def _scene_cuts(camera: str) -> float:
    return REGISTRY.get_sample_value("facewatch_scene_cuts_total", {"camera": camera}) or 0.0


def test_a_cut_is_counted_where_it_ended_the_tracks(detector, tmp_path) -> None:
    """facewatch_scene_cuts_total goes up by one at the demo clip's cut to the audience,
    where Lin-Manuel Miranda's track ends; the same frames at a camera whose faces are all
    ignored (no track to end) count none."""
    first = CUT_TO_AUDIENCE - 9
    images = read_frames(DEMO_CLIP, first, 5, every=3)
    everywhere = [[0, 0], [1, 0], [1, 1], [0, 1]]
    for name, camera, counted in (
        ("cut-counted", {}, 1),
        ("cut-no-tracks", {"detection": {"ignore": [everywhere]}}, 0),
    ):
        (tmp_path / name).mkdir()
        pipeline, sent = _pipeline(detector, tmp_path / name, {"name": name, **camera})
        before = _scene_cuts(name)
        for k, image in enumerate(images):
            pipeline.process([Frame(name, first + 3 * k, 1000.0 + k / 10, image)])
        assert [e["reason"] for e in sent() if e["type"] == "left"] == ["cut"] * counted
        assert _scene_cuts(name) - before == counted


def test_the_faces_after_a_cut_are_searched_for_in_the_whole_frame(detector, tmp_path) -> None:
    """With full scans rare (full_scan_every 100: between them only around the tracks),
    the audience's faces after the cut, far from Lin-Manuel Miranda's, are found on the
    cut's frame (their tracks start there) and on the next (each is seen there): the cut's
    frame and the frame that confirms it, searched before the tracks end, are searched
    whole."""
    pipeline, sent = _pipeline(detector, tmp_path, full_scan_every=100)
    first = CUT_TO_AUDIENCE - 9
    images = read_frames(DEMO_CLIP, first, 5, every=3)
    ts = [1000.0 + k / 10 for k in range(5)]
    for k, image in enumerate(images):
        pipeline.process([Frame("door", first + 3 * k, ts[k], image)])
    confirmed = [e["frame_ts"] for e in sent() if e["type"] == "confirmed"]
    assert confirmed[0] == pytest.approx(ts[0])  # (his, on the first frame: a full scan)
    assert sum(t == pytest.approx(ts[3]) for t in confirmed) >= 3
    tracks = pipeline.trackers["door"].tracks
    assert len(tracks) >= 3 and all(t.last_seen == pytest.approx(ts[4]) for t in tracks)


def test_a_held_frame_forgotten_after_a_failure_is_never_tracked(detector, tmp_path) -> None:
    """The engines fail while the audience frame (a cut candidate) is held: forget_held
    drops it, and the visits end (stopped) with no event at the held frame's time."""
    pipeline, sent = _pipeline(detector, tmp_path)
    first = CUT_TO_AUDIENCE - 9
    images = read_frames(DEMO_CLIP, first, 4, every=3)
    for k, image in enumerate(images):
        pipeline.process([Frame("door", first + 3 * k, 1000.0 + k / 10, image)])
    pipeline.forget_held()
    pipeline.expire(1000.4, stopping=True)
    events = sent()
    assert [e["reason"] for e in events if e["type"] == "left"] == ["stopped"]
    assert not any(e["frame_ts"] == pytest.approx(1000.3) for e in events)


def test_a_cut_is_decided_by_the_next_frame_however_late_the_pipeline_runs(
    detector, tmp_path
) -> None:
    """The pipeline runs 2 s behind its camera: at the expiry after the audience frame (a
    cut candidate, held) the next frame is already waiting in the camera's queue, and it
    decides: Lin-Manuel Miranda's track ends at the cut. Had the camera gone quiet instead
    (nothing waiting), the held frame is tracked then, as no cut; so it is when a frame has
    waited over PENDING_MAX_S (one the engines refuse never decides)."""
    first = CUT_TO_AUDIENCE - 9
    images = read_frames(DEMO_CLIP, first, 5, every=3)
    ts = [1000.0 + k / 10 for k in range(5)]
    for name, late_s, pending, reasons in (
        ("late", 2.0, {"late"}, ["cut"]),
        ("quiet", 2.0, set(), []),
        ("stuck", PENDING_MAX_S + 0.5, {"stuck"}, []),
    ):
        (tmp_path / name).mkdir()
        pipeline, sent = _pipeline(detector, tmp_path / name, {"name": name})
        for k, image in enumerate(images[:4]):
            pipeline.process([Frame(name, first + 3 * k, ts[k], image)])
        pipeline.expire(ts[3] + late_s, pending=pending)
        pipeline.process([Frame(name, first + 12, ts[4], images[4])])
        assert [e["reason"] for e in sent() if e["type"] == "left"] == reasons


def _cut_steps(camera: str = "door") -> list:
    """The demo clip's frames around its cut to the audience (the 4th), 0.1 s apart, as the
    pipeline's steps."""
    from daemon.cut_hold import Step

    first = CUT_TO_AUDIENCE - 9
    images = read_frames(DEMO_CLIP, first, 5, every=3)
    return [Step(Frame(camera, first + 3 * k, 1000.0 + k / 10, image), 0.0) for k, image in
            enumerate(images)]  # fmt: skip


def test_a_held_cut_is_handed_back_once_and_a_camera_without_cut_detection_holds_none() -> None:
    """The audience frame, held as a candidate, is confirmed a cut by the next frame (which
    is searched whole) and handed back for tracking once: the batch after that tracks it
    no second time. A camera with tracking.end_at_scene_cuts off has no candidate, nor a
    whole-frame search for it: its frames are searched as full_scan_every says."""
    from daemon.cut_hold import CutHold

    steps, hold = _cut_steps(), CutHold(["door"], True)
    assert [hold.look(step) for step in steps[:4]] == [False, False, False, True]
    assert [step.cut for step in steps[:4]] == [False, False, False, None]
    hold.hold(steps[3])
    assert hold.look(steps[4]) is True and steps[3].cut is True
    assert hold.take() == [steps[3]] and hold.take() == []
    steps, off = _cut_steps(), CutHold(["door"], False)
    assert [off.look(step) for step in steps] == [False] * 5
    assert [step.cut for step in steps] == [False] * 5


def test_a_held_candidate_waits_up_to_pending_max_s_for_the_frame_in_its_queue() -> None:
    """The pipeline runs behind: a candidate whose camera has a frame waiting in its queue
    is held for that frame while it is under PENDING_MAX_S (4 x WITHIN_S: 6 s) late; past it, it is handed
    back as no cut. One whose camera sent nothing more is handed back past WITHIN_S."""
    from daemon.cut_hold import CutHold
    from daemon.scene_cuts import WITHIN_S

    for pending, wait_s in (({"door"}, 4 * WITHIN_S), (set(), WITHIN_S)):  # (6 s, 1.5 s)
        steps, hold = _cut_steps(), CutHold(["door"], True)
        for step in steps[:4]:
            hold.look(step)
        hold.hold(steps[3])
        held_at = steps[3].frame.clock
        assert hold.due(held_at + wait_s - 0.1, False, pending) == []
        assert hold.due(held_at + wait_s + 0.1, False, pending) == [steps[3]]
        assert steps[3].cut is False and hold.take() == []
