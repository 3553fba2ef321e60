"""Face tracks (daemon.tracking): association, the identity vote and its hysteresis, the
events, and a gallery changed while faces are in view."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.camera_frames import Frame, FrameQueues
from daemon.config import Config
from daemon.config_file import parse_config
from daemon.config_pipeline import TrackingConfig
from daemon.events import EventSinks
from daemon.gallery import Gallery
from daemon.gallery_match import Match
from daemon.gallery_write import Enrollment
from daemon.scheduler import BatchScheduler, Pipeline
from daemon.tracking import Tracker
from engines.mtcnn import FrameDetections
from tests.pipeline_fakes import (
    ScriptedEngines,
    galleries_closed,  # noqa: F401  (a fixture, used by name)
)

pytestmark = pytest.mark.usefixtures("galleries_closed")


def faces(*boxes: tuple[float, float, float, float]) -> FrameDetections:
    bbox = np.array(boxes, np.float32).reshape(-1, 4)
    return FrameDetections(
        bbox, np.ones(len(bbox), np.float32), np.zeros((len(bbox), 5, 2), np.float32)
    )


def run(tracker: Tracker, ts: float, found: FrameDetections, who: list[str | None]) -> list:
    tracks = tracker.update(ts, found)
    for track, name in zip(tracks, who, strict=True):
        if tracker.wants_embedding(track):
            tracker.record(track, name, 0.5 if name else 1.5)
    return [(e.kind, e.track.track_id, e.identity) for e in tracker.decide(tracks)]


def test_a_track_is_confirmed_identified_changed_and_leaves() -> None:
    config = TrackingConfig(
        confirm_frames=2, min_votes=2, unknown_votes=2, vote_window=3, lost_after_s=1.0
    )
    tracker = Tracker("cam", config, reembed_every=1)
    a, b = (10, 10, 50, 50), (200, 10, 240, 50)
    assert run(tracker, 0.0, faces(a, b), [None, "bob"]) == []
    assert tracker.in_view() == [], "nothing is in view before it is confirmed"
    assert run(tracker, 0.1, faces(a, b), [None, "bob"]) == [
        ("confirmed", 1, None),
        ("confirmed", 2, "bob"),
    ]
    assert tracker.in_view() == [None, "bob"]
    moved = (14, 12, 54, 52)  # IoU with a is high: same track
    assert run(tracker, 0.2, faces(moved), ["ann"]) == []
    assert run(tracker, 0.3, faces(moved), ["ann"]) == [("identified", 1, "ann")]
    assert tracker.expire(0.9) == []
    left = tracker.expire(1.21)
    assert [(e.kind, e.track.track_id, e.reason) for e in left] == [("left", 2, "lost")]
    assert [t.track_id for t in tracker.tracks] == [1]
    assert tracker.in_view() == ["ann"]
    run(tracker, 1.3, faces(a, b), [None, None])  # track 3 starts, not confirmed yet
    assert tracker.in_view() == ["ann"]
    stopped = tracker.expire(1.31, stopping=True)
    assert [(e.kind, e.track.track_id, e.identity, e.reason) for e in stopped] == [
        ("left", 1, "ann", "stopped")
    ], "a stop ends every open track; only confirmed ones were announced, so only they leave"
    assert tracker.tracks == []
    assert tracker.in_view() == []


def test_a_cut_ends_every_track_and_a_face_in_the_same_place_starts_its_own() -> None:
    """A scene cut (the scheduler's ``daemon.scene_cuts``): ``left`` (reason cut, its name,
    its own last box) for the announced track, nothing for one too young to be announced, and
    a face where the named one was is a new track, not his."""
    config = TrackingConfig(confirm_frames=2, min_votes=2, vote_window=3)
    tracker = Tracker("cam", config, reembed_every=1)
    a, b = (10, 10, 50, 50), (200, 10, 240, 50)
    run(tracker, 0.0, faces(a), ["ann"])
    assert run(tracker, 0.1, faces(a), ["ann"]) == [("confirmed", 1, "ann")]
    run(tracker, 0.2, faces((12, 10, 52, 50), b), ["ann", None])
    ended = tracker.cut()
    assert [(e.kind, e.track.track_id, e.identity, e.reason) for e in ended] == [
        ("left", 1, "ann", "cut")
    ]
    assert ended[0].track.bbox_xyxy.tolist() == [12, 10, 52, 50]
    assert tracker.tracks == [] and tracker.in_view() == []
    assert [t.track_id for t in tracker.update(0.3, faces(a))] == [3]


def test_a_known_face_first_seen_turned_away_is_not_announced_a_stranger() -> None:
    """Bob comes to the door looking aside: his first recognitions match nobody, then he
    turns. He was announced unknown at the third frame (a "stranger at the door"
    automation fired for the family) and named seconds later; now a name needs
    ``min_votes`` votes, but unknown ``unknown_votes``: Bob is announced once, by name."""
    tracker = Tracker("door", TrackingConfig(), reembed_every=10)  # the defaults
    box = (10, 10, 50, 50)
    events = []
    for k, who in enumerate([None, None, None, "bob", "bob", "bob", "bob"]):
        events += run(tracker, k / 5, faces(box), [who])
        if not events:
            assert tracker.in_view() == [], "an undecided face is not counted a stranger"
    assert events == [("confirmed", 1, "bob")]


def test_a_stranger_is_not_named_from_two_near_threshold_frames() -> None:
    """A stranger whose face matches Bob now and then near the threshold: 2 of the first 3
    recognitions published him as Bob (a large gallery makes such matches common). A name
    needs min_votes (3) and a majority of the votes so far."""
    tracker = Tracker("door", TrackingConfig(), reembed_every=10)  # the defaults
    box = (10, 10, 50, 50)
    events = []
    for k, who in enumerate(["bob", None, "bob", None, None, None, None, "bob", None]):
        events += run(tracker, k / 5, faces(box), [who])
    assert events == [("confirmed", 1, None)]
    tie = Tracker("door", TrackingConfig(), reembed_every=10)
    votes = ["bob", None, None, "bob", None, "bob"]
    seen = [run(tie, k / 5, faces(box), [who]) for k, who in enumerate(votes)]
    assert seen == [[]] * 6, "3 votes for bob against 3 for nobody is no majority"


def test_a_stranger_is_announced_unknown_once_enough_votes_say_so() -> None:
    """Nobody matches: announced unknown at the ``unknown_votes``-th recognition; without
    recognition (no FaceNet: no votes at all) at ``confirm_frames``; a vote still split when
    the window is full is announced undecided (identity null) rather than never."""
    box = (10, 10, 50, 50)
    stranger = Tracker("door", TrackingConfig(confirm_frames=3, unknown_votes=5))
    seen = [run(stranger, k / 5, faces(box), [None]) for k in range(6)]
    assert seen == [[], [], [], [], [("confirmed", 1, None)], []]
    assert stranger.in_view() == [None]
    detection_only = Tracker(
        "door", TrackingConfig(confirm_frames=3, unknown_votes=5), recognising=False
    )
    confirmed = []
    for k in range(3):
        confirmed += detection_only.decide(detection_only.update(k / 5, faces(box)))
    assert [(e.kind, e.identity) for e in confirmed] == [("confirmed", None)]
    split = Tracker("door", TrackingConfig(confirm_frames=1, min_votes=2, vote_window=4))
    seen = [run(split, k / 5, faces(box), [who]) for k, who in enumerate(["a", None, "b", None])]
    assert seen == [[], [], [], [("confirmed", 1, None)]]
    [left] = split.expire(5.0)
    assert (left.identity, left.confidence, left.distance) == (None, 0.0, None), (
        "undecided as it was announced, not 50 % unknown"
    )


def test_a_face_too_small_to_match_is_still_announced_and_a_brief_one_as_it_leaves() -> None:
    """Faces whose vote never comes in (matched twice, then too small to match: no more
    votes) were never announced while in view; one seen in confirm_frames frames but gone
    before its vote was in had no events at all (nor its archive folder). Now the first is
    announced undecided once seen in vote_window frames, the second as it leaves; a face
    seen small at first and then large enough waits for its vote, and is named at once."""
    box = (10, 10, 50, 50)
    config = TrackingConfig(confirm_frames=3, vote_window=15, lost_after_s=1.0)
    shrunk = Tracker("door", config)
    events = [run(shrunk, k / 5, faces(box), ["bob"]) for k in range(2)]
    events += [shrunk.decide(shrunk.update(k / 5, faces(box))) for k in range(2, 15)]
    announced = [(k, e.kind, e.identity) for k, got in enumerate(events) for e in got]
    assert announced == [(14, "confirmed", None)]
    brief = Tracker("door", config)
    for k in range(config.confirm_frames):
        assert run(brief, k / 5, faces(box), [None]) == []
    gone = brief.expire(5.0)
    assert [(e.kind, e.identity, e.reason, e.confidence, e.distance) for e in gone] == [
        ("confirmed", None, "lost", 0.0, None),
        ("left", None, "lost", 0.0, None),
    ], "undecided (3 votes for nobody, 5 asked): no confidence in 'unknown'"
    approaching = Tracker("door", config)
    for k in range(6):  # too small to match: no vote
        assert approaching.decide(approaching.update(k / 5, faces(box))) == []
    assert run(approaching, 1.2, faces(box), ["ann"]) == []
    assert run(approaching, 1.4, faces(box), ["ann"]) == []
    assert run(approaching, 1.6, faces(box), ["ann"]) == [("confirmed", 1, "ann")]


def test_the_docs_filter_keeps_the_events_of_decided_strangers_only() -> None:
    """docs/operations.md's filter for event consumers, `identity == null and reason == null
    and confidence > 0` (and its jq line, run when jq is installed), on the events of a
    stranger, a named face, a glimpse announced as it leaves, a face too small to match, a
    name the votes turn to unknown and a person removed from the gallery while in view: it
    keeps the stranger's confirmed and the change to unknown, and nothing else."""
    import json
    import shutil
    import subprocess

    from daemon.events import event_json
    from tests.conftest import REPO

    docs = (REPO / "docs" / "operations.md").read_text()
    assert "`identity == null and reason == null and confidence > 0`" in docs
    jq_line = "jq -c 'select(.identity == null and .reason == null and .confidence > 0)'"
    assert f"\n{jq_line}\n" in docs

    tracker = Tracker("door", TrackingConfig(), reembed_every=1)  # the defaults
    stranger, ann, glimpse, far, bob = (box_at(150 * k + 100, 100, 60) for k in range(5))
    events = []
    for k in range(20):
        ts = k / 5
        shown = {stranger: None, ann: "ann", far: "small", bob: "bob" if k < 5 else None}
        shown |= {glimpse: "small"} if k < 4 else {}
        events += tracker.expire(ts)
        tracks = tracker.update(ts, faces(*shown))
        for track, who in zip(tracks, shown.values(), strict=True):
            if who != "small" and tracker.wants_embedding(track):
                tracker.record(track, who, 0.05 if who else 1.5, np.ones(8, np.float32))
        events += tracker.decide(tracks)
    events += tracker.recount(None)  # the gallery deleted: ann, still in view, is nobody now
    events += tracker.expire(4.0, stopping=True)
    published = [event_json(e, "node", "door", 1000.0, "m", seq) for seq, e in enumerate(events, 1)]
    ids = {"stranger": 1, "ann": 2, "far": 3, "bob": 4, "glimpse": 5}  # (as first seen)
    unknown = [
        (e["type"], e["track_id"], e["reason"], e["confidence"] > 0)
        for e in published
        if e["identity"] is None
    ]
    assert sorted(unknown, key=str) == sorted(
        [
            ("confirmed", ids["stranger"], None, True),  # decided: kept
            ("confirmed", ids["glimpse"], "lost", False),  # as it leaves
            ("left", ids["glimpse"], "lost", False),
            ("confirmed", ids["far"], None, False),  # too small: never decided
            ("changed", ids["bob"], None, True),  # bob's votes turned to nobody: kept
            ("changed", ids["ann"], "gallery", True),  # removed from the gallery
        ]
        + [("left", ids[who], "stopped", who != "far") for who in ("stranger", "far", "bob")]
        + [("left", ids["ann"], "stopped", True)],
        key=str,
    )

    def decided_stranger(event: dict) -> bool:
        return event["identity"] is None and event["reason"] is None and event["confidence"] > 0

    kept = [(e["type"], e["track_id"]) for e in published if decided_stranger(e)]
    assert kept == [("confirmed", ids["stranger"]), ("changed", ids["bob"])]
    if shutil.which("jq"):
        lines = "".join(json.dumps(e) + "\n" for e in published)
        out = subprocess.run(
            ["jq", "-c", jq_line.split("'")[1]], input=lines, capture_output=True, text=True
        )
        assert [json.loads(line)["seq"] for line in out.stdout.splitlines()] == [
            e["seq"] for e in published if decided_stranger(e)
        ]


def test_a_window_shorter_than_the_votes_asked_names_with_what_it_holds() -> None:
    """vote_window: 2 in a config, min_votes left at its default (3, once 2): nobody would
    ever be named; the vote asks at most as many as the window holds."""
    tracker = Tracker("door", TrackingConfig(confirm_frames=2, vote_window=2))
    box = (10, 10, 50, 50)
    events = [run(tracker, k / 5, faces(box), ["bob"]) for k in range(2)]
    assert events == [[], [("confirmed", 1, "bob")]]
    stranger = Tracker("door", TrackingConfig(confirm_frames=2, vote_window=2))
    for k in range(2):
        [track] = stranger.update(k / 5, faces(box))
        stranger.record(track, None, 1.5)
        confirmed = stranger.decide([track])
    assert [(e.kind, e.identity, e.confidence, e.distance) for e in confirmed] == [
        ("confirmed", None, 1.0, 1.5)
    ], "unknown by its 2 votes (unknown_votes 5), not undecided"


def test_resolved_tracks_are_embedded_only_every_n_frames() -> None:
    tracker = Tracker("cam", TrackingConfig(confirm_frames=1, min_votes=2), reembed_every=3)
    box = faces((0, 0, 40, 40))
    embedded = []
    for k in range(9):
        track = tracker.update(float(k), box)[0]
        embedded.append(tracker.wants_embedding(track))
        if embedded[-1]:
            tracker.record(track, "ann", 0.3)
        tracker.decide([track])
    assert embedded == [True, True, False, False, True, False, False, True, False]


def test_a_face_that_moved_past_any_overlap_keeps_its_track() -> None:
    """At low fps a walking face moves more than its width between processed frames: the
    centre pass continues the track; a face that moved farther, or changed size too much,
    or the same motion with max_shift 0 (IoU only), starts a new one."""
    tracker = Tracker("cam", TrackingConfig())
    (a, b) = tracker.update(0.0, faces((100, 100, 150, 150), (400, 100, 450, 150)))
    # a: 45 px right (0.9 widths, no overlap); b: 80 px right (1.6 widths)
    (a2, b2) = tracker.update(0.5, faces((145, 100, 195, 150), (480, 100, 530, 150)))
    assert a2 is a and b2 is not b
    (a3,) = tracker.update(1.0, faces((180, 100, 280, 200)))  # twice as large: new
    assert a3 is not a
    (a4,) = tracker.update(1.5, faces((205, 125, 255, 175)))  # half as large, same centre: new
    assert a4 is not a3
    iou_only = Tracker("cam", TrackingConfig(max_shift=0))
    (c,) = iou_only.update(0.0, faces((100, 100, 150, 150)))
    (c2,) = iou_only.update(0.5, faces((145, 100, 195, 150)))
    assert c2 is not c


def test_two_moving_faces_are_not_swapped() -> None:
    tracker = Tracker("cam", TrackingConfig())
    left, right = tracker.update(0.0, faces((100, 100, 150, 150), (300, 100, 350, 150)))
    # both moved 40 px towards each other; each stays nearer its own track
    new_left, new_right = tracker.update(0.5, faces((140, 100, 190, 150), (260, 100, 310, 150)))
    assert new_left is left and new_right is right


# -- crossings and people taking another's place (the review's synthetic clips, 5 fps) --

ANN, BOB = np.eye(8, dtype=np.float32)[:2]  # two people's faces, as FaceNet embeds them
SAME_WITHIN = 0.5  # the gallery's threshold in these tests (ann to bob: 2.0)


def box_at(cx: float, cy: float, side: float = 100) -> tuple[float, float, float, float]:
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


Shown = list[tuple[str, tuple[float, float, float, float], np.ndarray]]


def watch(tracker: Tracker, frames: list[tuple[float, Shown]], end: float) -> tuple[list, dict]:
    """Each frame's faces (who, box, embedding) through the tracker as the scheduler runs
    it (a face in doubt is compared before its vote), then the tracks gone by ``end``; every
    event as (kind, track id, identity, and a left's last sighting), and the people whose
    faces each track was given (as the archive has them: not one whose track's next face is
    to say whose it is)."""
    events: list = []
    held: dict[int, set[str]] = {}

    def said(found: list) -> list:
        return [
            (e.kind, e.track.track_id, e.identity, *([e.track.last_seen] * (e.kind == "left")))
            for e in found
        ]

    for ts, shown in frames:
        tracks = tracker.update(ts, faces(*[box for _, box, _ in shown]))
        for k, (who, _, embedding) in enumerate(shown):
            if tracker.wants_embedding(tracks[k]):
                tracks[k], ended = tracker.replaced(tracks[k], embedding, who, ts, SAME_WITHIN)
                events += said(ended)
                tracker.record(tracks[k], who, 0.1, embedding)
            if tracks[k].doubt is None:  # (one still in doubt is not archived either)
                held.setdefault(tracks[k].track_id, set()).add(who)
        tracker.settle()
        events += said(tracker.decide(tracks))
        events += said(tracker.expire(ts))
    return events + said(tracker.expire(end)), held


def test_two_faces_crossing_keep_their_tracks() -> None:
    """ann walks left to right, bob right to left in front of her (1-8 s, crossing at
    4.5 s; she is hidden behind him while they overlap): each track keeps its person, with
    no `changed` (the tracks swapped people at the crossing, and each person's name sat on
    the other's face until the votes turned over)."""
    tracker = Tracker("hall", TrackingConfig(), reembed_every=10)
    frames: list[tuple[float, Shown]] = []
    for k in range(5, 40):
        t = k / 5
        ann_x, bob_x = 200 + (t - 1) * 880 / 7, 1080 - (t - 1) * 880 / 7
        shown: Shown = [("bob", box_at(bob_x, 380), BOB)]
        if abs(ann_x - bob_x) >= 75:
            shown.insert(0, ("ann", box_at(ann_x, 360), ANN))
        frames.append((t, shown))
    events, held = watch(tracker, frames, 10.0)
    assert held == {1: {"ann"}, 2: {"bob"}}
    assert events == [
        ("confirmed", 1, "ann"),
        ("confirmed", 2, "bob"),
        ("left", 1, "ann", 7.8),
        ("left", 2, "bob", 7.8),
    ]


def test_a_face_passing_in_front_of_a_still_one_keeps_both_tracks() -> None:
    """ann stands still (1-9 s); bob walks across in front of her (3-7 s, 49 px a frame),
    hiding her while he passes: her track stays hers and leaves when she does (her track
    went off with bob's face and `left` while she stood there; his `changed` to her)."""
    tracker = Tracker("hall", TrackingConfig(), reembed_every=10)
    frames: list[tuple[float, Shown]] = []
    for k in range(5, 45):
        t = k / 5
        bob_x = 150 + (t - 3) * 980 / 4
        shown: Shown = []
        if abs(bob_x - 640) >= 75 or not 3 <= t < 7:
            shown.append(("ann", box_at(640, 360), ANN))
        if 3 <= t < 7:
            shown.append(("bob", box_at(bob_x, 370), BOB))
        frames.append((t, shown))
    events, held = watch(tracker, frames, 12.0)
    assert held == {1: {"ann"}, 2: {"bob"}}
    assert events == [
        ("confirmed", 1, "ann"),
        ("confirmed", 2, "bob"),
        ("left", 2, "bob", 6.8),
        ("left", 1, "ann", 8.8),
    ]


def test_someone_else_in_the_place_after_a_gap_is_a_new_visit() -> None:
    """ann at the door until 5 s; 1 s later bob stands where she stood: ann leaves at her
    last frame, bob gets his own track, confirmed from his first frame (his track was hers:
    no `left` for her, no `confirmed` for him, his visit begun when she came); ann again
    after a 1 s gap (below lost_after_s) is the same visit."""
    tracker = Tracker("door", TrackingConfig(), reembed_every=10)
    door = box_at(400, 360)
    frames: list[tuple[float, Shown]] = [(k / 5, [("ann", door, ANN)]) for k in range(5, 25)]
    frames += [(k / 5, []) for k in range(25, 30)]
    frames += [(k / 5, [("bob", door, BOB)]) for k in range(30, 45)]
    events, held = watch(tracker, frames, 12.0)
    assert events == [
        ("confirmed", 1, "ann"),
        ("left", 1, "ann", 4.8),
        ("confirmed", 2, "bob"),
        ("left", 2, "bob", 8.8),
    ]
    assert held == {1: {"ann"}, 2: {"bob"}}
    again = Tracker("door", TrackingConfig(), reembed_every=10)
    back = ANN + 0.2 * BOB  # her face from another angle: 0.04 from the first
    frames = [(k / 5, [("ann", door, ANN)]) for k in range(5, 25)]
    frames += [(k / 5, []) for k in range(25, 30)]
    frames += [(k / 5, [("ann", door, back)]) for k in range(30, 45)]
    events, held = watch(again, frames, 12.0)
    assert events == [("confirmed", 1, "ann"), ("left", 1, "ann", 8.8)]


def test_someone_the_gallery_names_in_the_place_after_a_gap_is_a_new_visit() -> None:
    """ann at the door until 5 s; 1 s later bob, whose faces lie only 1.2 times the
    gallery's threshold from hers (as near as most people's at video quality) but whom the
    gallery names: ann leaves at her last frame and bob is a visit of his own (he went on
    as her track, renamed with a `changed`). A stranger as near is not told apart."""
    door = box_at(400, 360)
    near = turned(np.eye(8, dtype=np.float32)[2], 0.6)

    def visit(newcomer: str) -> list:
        frames: list[tuple[float, Shown]] = [(k / 5, [("ann", door, ANN)]) for k in range(5, 25)]
        frames += [(k / 5, []) for k in range(25, 30)]
        frames += [(k / 5, [(newcomer, door, near)]) for k in range(30, 45)]
        return watch(Tracker("door", TrackingConfig(), reembed_every=10), frames, 12.0)[0]

    assert visit("bob") == [
        ("confirmed", 1, "ann"),
        ("left", 1, "ann", 4.8),
        ("confirmed", 2, "bob"),
        ("left", 2, "bob", 8.8),
    ]
    assert [e[:2] for e in visit("") if e[0] in ("confirmed", "left")] == [
        ("confirmed", 1),
        ("left", 1),
    ]


def test_the_new_track_of_someone_else_starts_at_their_first_frame() -> None:
    """bob's visit, after ann's in the same place, begins when he came (first_seen)."""
    tracker = Tracker("door", TrackingConfig(), reembed_every=10)
    door = box_at(400, 360)
    frames: list[tuple[float, Shown]] = [(k / 5, [("ann", door, ANN)]) for k in range(5, 25)]
    frames += [(k / 5, []) for k in range(25, 30)]
    frames += [(k / 5, [("bob", door, BOB)]) for k in range(30, 33)]
    watch(tracker, frames, 6.6)
    [bob] = tracker.tracks
    assert (bob.track_id, bob.first_seen, bob.hits) == (2, 6.0, 3)


def test_a_face_turning_while_followed_frame_to_frame_keeps_its_track() -> None:
    """A head turning: its embedding drifts from ann's frontal face far past the threshold
    (to 2.0), a little each frame, and the face is found in every frame: one visit, never
    split (a profile is not someone else)."""
    tracker = Tracker("door", TrackingConfig(), reembed_every=1)
    frames: list[tuple[float, Shown]] = []
    for k in range(25):
        turned = min(k / 20, 1.0) * np.pi / 2
        face = np.cos(turned) * ANN + np.sin(turned) * BOB
        frames.append((k / 5, [("ann", box_at(400 + k, 360), face)]))
    events, held = watch(tracker, frames, 8.0)
    assert events == [("confirmed", 1, "ann"), ("left", 1, "ann", 4.8)]
    assert held == {1: {"ann"}}


def turned(toward: np.ndarray, distance: float) -> np.ndarray:
    """ann's face turned toward ``toward`` (a unit vector apart from hers) until it lies
    ``distance`` (squared, of unit vectors) from her frontal one."""
    cos = 1 - distance / 2
    return cos * ANN + np.sqrt(1 - cos**2) * toward


def test_a_still_face_half_covered_by_a_passer_keeps_its_track() -> None:
    """ann stands still (25 fps); bob walks in front of her from the right: for 0.2 s the
    visible part of her face shrinks and slides left, then she is hidden 0.76 s, then she
    shows where she stood: one visit (her shrinking box became a velocity that carried her
    predicted face 75 px away, and she came back as a new visit)."""
    tracker = Tracker("hall", TrackingConfig(), reembed_every=10)
    frames: list[tuple[float, Shown]] = []
    for k in range(25, 100):
        t, shown = k / 25, []
        if k < 50 or k >= 74:
            shown.append(("ann", box_at(640, 360), ANN))
        elif k < 55:  # her right side covered: the box shrinks to 60 px and shifts left
            right = 690 - 8 * (k - 49)
            shown.append(("ann", (590.0, 330.0, float(right), 390.0), ANN))
        if 45 <= k < 80:
            shown.append(("bob", box_at(900 - 8 * (k - 45), 370), BOB))
        frames.append((t, shown))
    events, held = watch(tracker, frames, 8.0)
    assert held == {1: {"ann"}, 2: {"bob"}}
    assert events == [
        ("confirmed", 1, "ann"),
        ("confirmed", 2, "bob"),
        ("left", 1, "ann", 3.96),
        ("left", 2, "bob", 3.16),
    ]


def test_a_face_a_little_beyond_the_threshold_in_a_crowd_keeps_its_track() -> None:
    """ann walks through a crowd (25 fps): one frame she is not found, and the next two of
    her faces lie 1.2-1.3 times the gallery's threshold from those her track kept (one in
    twenty of a person's faces do, in a real crowd); bob crosses in front of her and her face,
    over his hidden one's path, is turned as far. A face that is not twice and clearly far
    from hers, or nearer bob's, is hers: one visit each (she became two or three visits, each
    with its `left` and `confirmed`)."""
    tracker = Tracker("hall", TrackingConfig(), reembed_every=10)
    aside = np.eye(8, dtype=np.float32)[2]
    frames: list[tuple[float, Shown]] = []
    for k in range(100):
        ann_x, bob_x = 200 + 4 * k, 800 - 4 * k
        face = turned(aside, 0.6) if k in (31, 32) or abs(ann_x - bob_x) < 60 else ANN
        shown: Shown = [] if k == 30 else [("ann", box_at(ann_x, 360), face)]
        if abs(ann_x - bob_x) >= 60:
            shown.append(("bob", box_at(bob_x, 380), BOB))
        frames.append((k / 25, shown))
    events, held = watch(tracker, frames, 8.0)
    assert held == {1: {"ann"}, 2: {"bob"}}
    assert [e[:3] for e in events] == [
        ("confirmed", 1, "ann"),
        ("confirmed", 2, "bob"),
        ("left", 1, "ann"),
        ("left", 2, "bob"),
    ]


def test_a_neighbour_stepping_in_front_leaves_both_visits_whole() -> None:
    """ann and bob side by side; bob steps in front of ann for a second and the detector
    finds only his face, where ann stood: ann's track waits for her, no `left`, no new
    visit, no `changed` (his face may sit in her track while it stands where she stood)."""
    tracker = Tracker("hall", TrackingConfig(), reembed_every=10)
    frames: list[tuple[float, Shown]] = []
    for k in range(5, 40):
        t = k / 5
        bob_x = 560 if k < 15 or k >= 20 else 640
        shown: Shown = [("bob", box_at(bob_x, 360), BOB)]
        if not 15 <= k < 20:
            shown.insert(0, ("ann", box_at(640, 360), ANN))
        frames.append((t, shown))
    events, held = watch(tracker, frames, 12.0)
    assert held[2] == {"bob"}
    assert [e[:3] for e in events] == [
        ("confirmed", 1, "ann"),
        ("confirmed", 2, "bob"),
        ("left", 1, "ann"),
        ("left", 2, "bob"),
    ]


def test_a_lean_that_stops_does_not_carry_a_young_track_onto_a_hidden_face() -> None:
    """The review's lean scene at 5 fps: bob leans fast in front of ann (his face, found
    far from where it was, starts a new track) and stops there; ann, hidden 0.4 s and half
    covered before, shows again beside him. Her face stays her track's: no `left` for ann
    while she stands there, no track of his renamed to her with a `changed` (the young
    track's speed, still half of the lean's, carried its box onto her face)."""

    def box(x1: float, x2: float) -> tuple[float, float, float, float]:
        return (x1, 300.0, x2, 420.0)

    ann, half, bob = box(523, 601), box(513, 579), box(700, 785)
    frames: list[tuple[float, Shown]] = [
        (k / 5, [("ann", ann, ANN), ("bob", bob, BOB)]) for k in range(5, 16)
    ]
    frames += [
        (3.2, [("ann", half, ANN), ("bob", box(605, 694), BOB)]),
        (3.4, [("bob", box(554, 644), BOB)]),
        (3.6, [("bob", box(555, 640), BOB)]),
        (3.8, [("ann", ann, ANN), ("bob", box(603, 688), BOB)]),
    ]
    frames += [(k / 5, [("ann", ann, ANN), ("bob", bob, BOB)]) for k in range(20, 40)]
    events, held = watch(Tracker("hall", TrackingConfig(), reembed_every=10), frames, 12.0)
    assert held[1] == {"ann"}
    assert [e for e in events if e[2] == "ann"] == [
        ("confirmed", 1, "ann"),
        ("left", 1, "ann", 7.8),
    ]
    assert not [e for e in events if e[0] == "changed"]


def test_a_face_in_doubt_too_small_to_recognise_is_not_judged_later() -> None:
    """ann's track comes back after a frame with a face too small to recognise (as the
    scheduler does: not embedded); her face, embedded 5 s later, is bob's: no `left` for ann
    dated 5 s back to the frame before that small face while her track went on (the doubt
    raised by the small face stayed, and was judged on bob's)."""
    tracker = Tracker("door", TrackingConfig(), reembed_every=10)
    door = box_at(400, 360)
    for k in range(10):
        [track] = tracker.update(k / 5, faces(door))
        if tracker.wants_embedding(track):
            assert tracker.replaced(track, ANN, "ann", k / 5, SAME_WITHIN) == (track, [])
            tracker.record(track, "ann", 0.1, ANN)
        tracker.decide([track])
        tracker.settle()
    tracker.update(2.0, faces())
    tracker.settle()
    for k in range(11, 36):  # too small: never embedded
        tracker.update(k / 5, faces(door))
        tracker.settle()
    again, ended = tracker.replaced(track, BOB, "bob", 7.0, SAME_WITHIN)
    assert (again, ended) == (track, [])
    assert track.last_seen == 7.0


def test_a_second_face_beside_a_tracked_one_gets_its_own_track() -> None:
    """Someone steps up beside ann, their box overlapping hers: ann's face continues her
    track, theirs starts its own (and so gets its own events), not ann's track too."""
    tracker = Tracker("cam", TrackingConfig())
    (ann,) = tracker.update(0.0, faces((100, 100, 200, 200)))
    same, beside = tracker.update(0.5, faces((102, 100, 202, 200), (140, 100, 240, 200)))
    assert same is ann and beside is not ann
    assert len(tracker.tracks) == 2


def test_a_track_remembers_every_name_its_events_gave() -> None:
    config = TrackingConfig(confirm_frames=1, min_votes=2, vote_window=2, lost_after_s=1.0)
    tracker = Tracker("cam", config, reembed_every=1)
    box = (10, 10, 50, 50)
    assert run(tracker, 0.0, faces(box), ["bob"]) == []  # one vote: not decided yet
    assert run(tracker, 0.1, faces(box), ["bob"]) == [("confirmed", 1, "bob")]
    assert run(tracker, 0.2, faces(box), [None]) == []  # one vote each: still bob
    assert run(tracker, 0.3, faces(box), [None]) == [("changed", 1, None)]
    assert run(tracker, 0.4, faces(box), ["ann"]) == []
    assert run(tracker, 0.5, faces(box), ["ann"]) == [("identified", 1, "ann")]
    assert run(tracker, 0.6, faces(box), [None]) == []
    assert run(tracker, 0.7, faces(box), [None]) == [("changed", 1, None)]
    [left] = tracker.expire(2.0)
    assert left.identity is None and left.track.announced == {"bob", "ann"}, (
        "named bob when confirmed, ann when identified"
    )


def test_a_new_gallery_renames_the_faces_in_view_at_once() -> None:
    """Enrolled (or removed, renamed) while the face is in view: its recent faces are matched
    again against the new gallery, and the identity follows at once, with the whole window
    (before, the votes started again: a glance away then made the person unknown)."""
    config = TrackingConfig(confirm_frames=1, min_votes=2, unknown_votes=2, vote_window=15)
    tracker = Tracker("cam", config, reembed_every=10)
    box, face = (10, 10, 50, 50), np.eye(4, dtype=np.float32)[0]
    for k in range(10):  # unknown until min_votes, then embedded every 10 frames
        [track] = tracker.update(k / 10, faces(box))
        if tracker.wants_embedding(track):
            tracker.record(track, None, 1.5, face)
        tracker.decide([track])
    assert track.identity is None and track.judged and len(track.votes) == 2
    seen: list[np.ndarray] = []

    def ann_enrolled(embeddings: np.ndarray) -> list[Match]:
        seen.append(embeddings)
        return [Match("ann", 0.25, 0.5) for _ in embeddings]

    [event] = tracker.recount(ann_enrolled)
    assert (event.kind, event.identity, event.previous, event.reason) == (
        "identified",
        "ann",
        None,
        "gallery",
    )
    assert np.array_equal(seen[0], [face, face]) and event.distance == 0.25
    assert tracker.recount(ann_enrolled) == [], "the same gallery again: nothing changes"
    [removed] = tracker.recount(None)  # the gallery file was deleted: nobody is known
    assert (removed.kind, removed.identity, removed.previous) == ("changed", None, "ann")
    assert removed.distance is None, "matched nobody at all: no distance (JSON has no inf)"


def test_a_reload_decides_by_the_rematched_votes_without_the_margin() -> None:
    """Enrolled while in view, with a face near the threshold: 8 of 15 recent faces now
    match. The new gallery's evidence decides at once; the margin is for noise between
    recognitions under one gallery."""
    config = TrackingConfig(confirm_frames=1, min_votes=2, vote_window=15, switch_margin=4)
    tracker = Tracker("cam", config, reembed_every=1)
    faces_seen = np.eye(16, dtype=np.float32)[1:]  # 15 different faces of one track
    for k, face in enumerate(faces_seen):
        [track] = tracker.update(k / 10, faces((10, 10, 50, 50)))
        tracker.record(track, None, 1.5, face)
        tracker.decide([track])
    assert track.identity is None and track.judged

    def borderline(embeddings: np.ndarray) -> list[Match]:
        return [Match("ann" if k % 2 == 0 else None, 0.3, 0.1) for k in range(len(embeddings))]

    [event] = tracker.recount(borderline)
    assert (event.kind, event.identity, event.reason) == ("identified", "ann", "gallery")


def test_a_named_track_holds_its_name_until_another_clearly_leads() -> None:
    """A face near the threshold, named on one recognition and not on the next, keeps its
    name (it flipped at each recognition: an event and a presence toggle every 2 s); a tie
    keeps it too; another person taking the place is renamed once they lead by the margin."""
    config = TrackingConfig(confirm_frames=1, min_votes=2, vote_window=15, switch_margin=4)
    tracker = Tracker("cam", config, reembed_every=1)
    box = (10, 10, 50, 50)
    changes = []
    for k in range(60):  # bob, unknown, bob, unknown...
        changes += run(tracker, k / 10, faces(box), ["bob" if k % 2 == 0 else None])
    assert changes == [("confirmed", 1, "bob")]
    for k in range(60, 80):  # carl took bob's place
        changes += run(tracker, k / 10, faces(box), ["carl"])
        if len(changes) == 2:
            break
    # the window: 7 bob and 8 unknown; carl outnumbers bob by 4 when he has 8 of 15 votes
    # (bob 3, unknown 4): at his 8th recognition
    assert changes[1] == ("changed", 1, "carl") and k == 67, (changes, k)


def test_a_change_to_another_name_needs_min_votes_for_it() -> None:
    """Bob is named; then the face matches ann twice and carl once near the threshold (a
    stranger, or a bad light): ann leads bob, but 2 votes are fewer than min_votes (3), so
    the track is not renamed ann."""
    config = TrackingConfig(confirm_frames=1, min_votes=3, vote_window=4, switch_margin=1)
    tracker = Tracker("cam", config, reembed_every=1)
    changes = []
    for k, who in enumerate(["bob", "bob", "bob", "ann", "carl", "ann"]):
        changes += run(tracker, k / 10, faces((10, 10, 50, 50)), [who])
    assert changes == [("confirmed", 1, "bob")]


def test_a_face_found_unknown_after_its_undecided_announcement_holds_like_a_stranger() -> None:
    """Announced undecided (too small to match for vote_window frames), then recognised as
    nobody: from then on it is an announced stranger, and a name near the threshold must
    outnumber "unknown" by switch_margin, as for any stranger (not merely lead it)."""
    box = (10, 10, 50, 50)
    renamed_at = {}
    for first in ("undecided", "stranger"):
        tracker = Tracker("door", TrackingConfig(), reembed_every=1)  # the defaults
        who: list[str | None] = [] if first == "undecided" else [None] * 5
        events = []
        for k in range(15):  # undecided: no votes at all, announced at the 15th frame
            tracks = tracker.update(k / 5, faces(box))
            for track, name in zip(tracks, who[k : k + 1], strict=False):
                tracker.record(track, name, 1.5)
            events += [(e.kind, e.identity) for e in tracker.decide(tracks)]
        assert events == [("confirmed", None)], first
        if first == "undecided":  # then 5 recognitions of nobody
            for k in range(15, 20):
                assert run(tracker, k / 5, faces(box), [None]) == []
        for k in range(20, 35):
            if run(tracker, k / 5, faces(box), ["bob"]):
                renamed_at[first] = k - 19
                break
    assert renamed_at == {"undecided": 9, "stranger": 9}, "bob's 9th vote: 9 against 5"


def test_a_track_named_otherwise_is_looked_at_again_at_once() -> None:
    """A named track is embedded every ``reembed_every`` frames, but at once again when its
    latest recognition names someone else (not when it is unknown: a face turned away)."""
    config = TrackingConfig(confirm_frames=1, min_votes=1, vote_window=15)
    tracker = Tracker("cam", config, reembed_every=10)
    [track] = tracker.update(0.0, faces((0, 0, 9, 9)))
    tracker.record(track, "bob", 0.5)
    tracker.decide([track])
    assert track.identity == "bob" and not tracker.wants_embedding(track)
    tracker.record(track, None, 1.5)
    assert not tracker.wants_embedding(track)
    tracker.record(track, "carl", 0.4)
    assert tracker.wants_embedding(track)


def test_a_tie_keeps_the_announced_identity() -> None:
    config = TrackingConfig(confirm_frames=1, min_votes=1, vote_window=4, switch_margin=4)
    tracker = Tracker("cam", config, reembed_every=1)
    changes = []
    for k, who in enumerate(["ann", "ann", "bob", "bob"] * 5):
        changes += run(tracker, k / 10, faces((0, 0, 9, 9)), [who])
    assert changes == [("confirmed", 1, "ann")], "2 against 2 all along: ann stays"
    # in a window of 4, a margin of 2 is enough (a third of the votes, rounded up)
    changes += run(tracker, 2.0, faces((0, 0, 9, 9)), ["bob"])
    assert changes[1:] == [("changed", 1, "bob")]


def test_left_carries_the_announced_identitys_support() -> None:
    config = TrackingConfig(confirm_frames=1, min_votes=1, vote_window=5, lost_after_s=1.0)
    tracker = Tracker("cam", config, reembed_every=1)
    for k, who in enumerate(["ann", "ann", "ann", None, None]):
        run(tracker, k / 10, faces((0, 0, 9, 9)), [who])
    [left] = tracker.expire(5.0)
    assert (left.identity, left.confidence, left.distance) == ("ann", 3 / 5, 0.5)


class _OnePerson(ScriptedEngines):
    """The detector finds one face in every frame, and FaceNet gives it ``face``'s embedding."""

    def __init__(self, face: np.ndarray) -> None:
        self.face = face

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        return [faces((100, 100, 160, 160)) for _ in images]

    def embed_picks(self, picks: list) -> np.ndarray:
        return np.stack([self.face for _ in picks])


class _Recorded(EventSinks):
    """The events, the camera's faces and the people topics, as a subscriber sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []
        self.faces: dict = {}
        self.presence: dict = {}

    def emit(self, event: dict, snapshot: bytes | None = None) -> None:
        self.events.append(event)

    def in_view(self, camera: str, state: dict) -> None:
        self.faces = state

    def person(self, name: str, state: dict) -> None:
        self.presence[name] = state["cameras"]

    def people(self, states: dict) -> None:
        self.presence = {name: state["cameras"] for name, state in states.items()}


def test_a_person_renamed_or_removed_while_in_view_is_so_at_once(tmp_path) -> None:
    """`gallery rename` and `gallery remove` while the person is in view: one event with
    reason "gallery" at the reload, and the camera's faces and the people topics follow at
    once (a rename showed the new name as seen nowhere, then as a change of person)."""
    ann, bob = np.eye(8, dtype=np.float32)[:2]
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OnePerson.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", ann, "a" * 64), Enrollment("bob", bob, "b" * 64)])
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "door.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
        }
    )

    engines, sinks = _OnePerson(ann), _Recorded()
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    for k in range(10):
        pipeline.process([Frame("door", k, 1000.0 + k / 5, np.zeros((360, 640, 3), np.uint8))])
    assert [(e["type"], e["identity"]) for e in sinks.events] == [("confirmed", "ann")]
    with Gallery.open(path, writable=True) as gallery:
        gallery.rename("ann", "Anna")
    pipeline.reload_gallery()
    renamed = sinks.events[1:]
    assert [(e["type"], e["identity"], e["previous_identity"], e["reason"]) for e in renamed] == [
        ("changed", "Anna", "ann", "gallery")
    ]
    assert sinks.faces["people"] == ["Anna"] and sinks.presence == {"Anna": ["door"], "bob": []}
    with Gallery.open(path, writable=True) as gallery:
        gallery.remove("Anna")
    pipeline.reload_gallery()
    removed = sinks.events[2:]
    assert [(e["type"], e["identity"], e["previous_identity"], e["reason"]) for e in removed] == [
        ("changed", None, "Anna", "gallery")
    ]
    assert sinks.faces["unknown"] == 1 and sinks.presence == {"bob": []}


class _Door(_OnePerson):
    """One face at the door, or nobody (``away``)."""

    away = False

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        return [faces() if self.away else faces((100, 100, 160, 160)) for _ in images]


def _bob_takes_anns_place(config: Config, ann: np.ndarray, bob: np.ndarray) -> _Recorded:
    """The door's events at 5 fps: ann 0-3.8 s, nobody for a second, bob from 5 s."""
    sinks, engines = _Recorded(), _Door(ann)
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    for k in range(40):
        engines.away, engines.face = 20 <= k < 25, ann if k < 20 else bob
        pipeline.process([Frame("door", k, 1000.0 + k / 5, np.zeros((360, 640, 3), np.uint8))])
    return sinks


def test_someone_else_at_the_door_ends_the_visit_and_starts_their_own(tmp_path) -> None:
    """The daemon's events when bob takes ann's place at the door after a second: `left`
    for ann at her last frame, `confirmed` for bob with his own track and first_seen, and
    the camera's faces say bob alone (ann stayed in view 2 s after she left, and bob's
    visit carried her track and the time she came)."""
    ann, bob = np.eye(8, dtype=np.float32)[:2]
    path, config = _ann_enrolled(tmp_path, ann)
    with Gallery.open(path, writable=True) as gallery:
        gallery.enroll([Enrollment("bob", bob, "b" * 64)])
    sinks = _bob_takes_anns_place(config, ann, bob)
    said = [(e["type"], e["track_id"], e["identity"]) for e in sinks.events]
    assert said == [("confirmed", 1, "ann"), ("left", 1, "ann"), ("confirmed", 2, "bob")]
    assert sinks.events[1]["frame_ts"] == pytest.approx(1003.8)
    assert sinks.events[2]["first_seen_ts"] == pytest.approx(1005.0)
    assert sinks.faces["people"] == ["bob"]


def test_a_face_just_past_lost_after_s_starts_its_own_visit_between_expiries() -> None:
    """A stranger last seen at 1.0 s, then a face in about his place 2.2 s later
    (lost_after_s 2): his visit had ended, though the scheduler's expiry (every 0.25 s, or
    before a batch in identify) had not run since it was 2.0 s old. The face continued his
    track: his visit lasted 2 s longer, carrying another person's face, and theirs began late
    (a file camera's loop did it in the demo). His `left` comes at his last frame, and the
    face starts its own visit. A camera that sent nothing meanwhile (a stall) still keeps
    its tracks for the face back in view (test_scheduler: a short stall)."""
    config = parse_config(
        {"cameras": [{"name": "door", "url": "door.mp4"}], "recognition": {"model": None}}
    )

    class Door(_OnePerson):
        away = False

        def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
            return [faces() if self.away else faces((100, 100, 160, 160)) for _ in images]

    engines, sinks = Door(np.eye(8, dtype=np.float32)[0]), _Recorded()
    pipeline = Pipeline(config, engines, None, sinks)  # type: ignore[arg-type]
    for k in range(20):  # 5 fps: a face 0-1.0 s, nobody until 3.0 s, a face from 3.2 s
        engines.away = 5 < k < 16
        pipeline.process([Frame("door", k, 1000.0 + k / 5, np.zeros((360, 640, 3), np.uint8))])
        pipeline.expire(1000.0 + k / 5)  # (the scheduler's, after the batch)
    said = [(e["type"], e["track_id"]) for e in sinks.events]
    assert said == [("confirmed", 1), ("left", 1), ("confirmed", 2)]
    assert sinks.events[1]["frame_ts"] == pytest.approx(1001.0)
    assert sinks.events[2]["first_seen_ts"] == pytest.approx(1003.2)
    assert sinks.faces["faces"] == 1


def test_someone_else_at_a_strict_cameras_door_is_judged_at_its_threshold(tmp_path) -> None:
    """A camera with its own strict threshold (0.5): bob, whom it names though his face
    lies within the gallery's default of ann's, takes her place after a second: his own
    visit (ann's `left`, bob's `confirmed`), as at the default threshold, not ann's visit
    turned into bob's (the face was judged at the default, not at the camera's)."""
    ann = np.eye(8, dtype=np.float32)[0]
    bob = (0.6 * ann + 0.8 * np.eye(8, dtype=np.float32)[1]).astype(np.float32)
    path, _ = _ann_enrolled(tmp_path, ann)  # (ann and bob 0.8 apart, squared)
    with Gallery.open(path, writable=True) as gallery:
        gallery.enroll([Enrollment("bob", bob, "b" * 64)])
        assert gallery.threshold > 0.8
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "door.mp4", "recognition": {"threshold": 0.5}}],
            "recognition": {"model": None, "gallery": str(path)},
        }
    )
    sinks = _bob_takes_anns_place(config, ann, bob)
    said = [(e["type"], e["track_id"], e["identity"]) for e in sinks.events]
    assert said == [("confirmed", 1, "ann"), ("left", 1, "ann"), ("confirmed", 2, "bob")]


def test_someone_else_at_the_door_in_a_batch_of_frames_is_a_new_visit(tmp_path) -> None:
    """The door of the test above, with the frames of the camera taken three at a time (an
    overloaded box, or a GPU's larger batches): ann's last frame, the empty one and bob's
    first in one batch still give ann's `left` and bob's own visit (the doubt raised by
    bob's face was settled by ann's, of the batch's earlier frame, and bob was renamed from
    ann with a `changed`)."""
    ann, bob = np.eye(8, dtype=np.float32)[:2]
    path, config = _ann_enrolled(tmp_path, ann)
    with Gallery.open(path, writable=True) as gallery:
        gallery.enroll([Enrollment("bob", bob, "b" * 64)])
    sinks = _Recorded()

    class Door(_OnePerson):
        def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
            return [
                faces() if who[id(im)] is None else faces((100, 100, 160, 160)) for im in images
            ]

        def embed_picks(self, picks: list) -> np.ndarray:
            return np.stack([who[id(image)] for image, _, _ in picks])

    engines = Door(ann)
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    who: dict[int, np.ndarray | None] = {}
    frames = []
    for k in range(40):  # 5 fps: ann 0-3.8 s, nobody at 4.0 s, bob from 4.2 s
        image = np.zeros((360, 640, 3), np.uint8)
        who[id(image)] = ann if k < 20 else None if k == 20 else bob
        frames.append(Frame("door", k, 1000.0 + k / 5, image))
    for batch in [frames[:1]] + [frames[k : k + 3] for k in range(1, 40, 3)]:  # [19, 20, 21]
        pipeline.process(batch)
        pipeline.expire(batch[-1].clock)
    said = [(e["type"], e["track_id"], e["identity"]) for e in sinks.events]
    assert said == [("confirmed", 1, "ann"), ("left", 1, "ann"), ("confirmed", 2, "bob")]
    assert sinks.events[1]["frame_ts"] == pytest.approx(1003.8)
    assert sinks.events[2]["first_seen_ts"] == pytest.approx(1004.2)


def test_an_engine_failure_ends_the_visits_in_view(tmp_path) -> None:
    """The engine thread fails (a CUDA error, a bug) while a face is in view: its track
    leaves (reason stopped) and the camera's retained state says nobody, as at a clean stop;
    the visit stayed open for good, the face 'in view' until the restart."""
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "door.mp4"}],
            "recognition": {"model": None, "gallery": str(tmp_path / "none.sqlite")},
            "tracking": {"unknown_votes": 3},  # announced unknown at the third frame
        }
    )

    class Failing(_OnePerson):
        calls = 0

        def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
            self.calls += 1
            if self.calls > 4:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return super().detect(images, priors)

    events: list[dict] = []
    in_view: list[dict] = []

    class Sinks(EventSinks):
        def emit(self, event: dict, snapshot: bytes | None = None) -> None:
            events.append(event)

        def in_view(self, camera: str, state: dict) -> None:
            in_view.append(state)

    engines = Failing(np.eye(8, dtype=np.float32)[0])
    queues = FrameQueues(["door"], 4)
    scheduler = BatchScheduler(Pipeline(config, engines, engines, Sinks()), queues)  # type: ignore[arg-type]
    scheduler.start()
    for k in range(6):  # one frame a batch: the fifth fails
        queues.put(Frame("door", k, time.time(), np.zeros((360, 640, 3), np.uint8)))
        deadline = time.monotonic() + 10
        while scheduler.batches < k + 1 and scheduler.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
    scheduler.join(10)
    assert isinstance(scheduler.error, RuntimeError) and not scheduler.is_alive()
    assert [(e["type"], e["reason"]) for e in events] == [("confirmed", None), ("left", "stopped")]
    assert in_view[-1]["faces"] == 0


def test_the_gallery_file_is_closed_when_the_engines_stop(tmp_path) -> None:
    """The gallery the engine thread opened is closed as it stops (it stayed open to the
    process's end: Python 3.13 warned "ResourceWarning: unclosed database" at exit)."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OnePerson.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "door.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
        }
    )
    engines = _OnePerson(np.eye(8, dtype=np.float32)[0])
    pipeline = Pipeline(config, engines, engines, EventSinks())  # type: ignore[arg-type]
    scheduler = BatchScheduler(pipeline, FrameQueues(["door"], 4))
    scheduler.start()
    deadline = time.monotonic() + 10
    while pipeline.gallery is None and time.monotonic() < deadline:
        time.sleep(0.01)
    opened = pipeline.gallery
    assert opened is not None
    assert opened._conn.total_changes == 0  # open (a query would be refused: another thread)
    scheduler.stop()
    scheduler.join(10)
    assert not scheduler.is_alive() and scheduler.error is None
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        opened._conn.total_changes  # noqa: B018


def test_a_camera_back_at_another_resolution_keeps_its_faces_tracks() -> None:
    """1080p, then the camera comes back at 360p with the person where they were: the same
    visit (it was `left` and a new `confirmed`, for someone who never moved)."""
    config = parse_config(
        {"cameras": [{"name": "door", "url": "door.mp4"}], "recognition": {"model": None}}
    )

    class Scaled(_OnePerson):
        def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
            scale = [image.shape[1] / 640 for image in images]
            return [faces((100 * s, 100 * s, 160 * s, 160 * s)) for s in scale]

    events: list[dict] = []

    class Sinks(EventSinks):
        def emit(self, event: dict, snapshot: bytes | None = None) -> None:
            events.append(event)

    engines = Scaled(np.eye(8, dtype=np.float32)[0])
    pipeline = Pipeline(config, engines, None, Sinks())  # type: ignore[arg-type]
    for k, width in enumerate([1920] * 5 + [640] * 5):
        image = np.zeros((width * 9 // 16, width, 3), np.uint8)
        pipeline.process([Frame("door", k, 1000.0 + k / 5, image)])
    assert [e["type"] for e in events] == ["confirmed"]
    [track] = pipeline.trackers["door"].tracks
    assert track.bbox_xyxy.tolist() == [100, 100, 160, 160]
    # one batch with a frame of each size (a camera switching back while the daemon is behind)
    batch = [np.zeros((1080, 1920, 3), np.uint8), np.zeros((360, 640, 3), np.uint8)]
    pipeline.process(
        [Frame("door", 10 + k, 1002.0 + k / 5, image) for k, image in enumerate(batch)]
    )
    assert [e["type"] for e in events] == ["confirmed"] and len(
        pipeline.trackers["door"].tracks
    ) == 1


def test_a_camera_back_with_another_aspect_ratio_scales_each_axis() -> None:
    """A camera back at 640x480 from 1920x1080 (its substream): the tracks' boxes shrink by
    a third across and by 2.25 down, so the faces where they were continue their visits."""
    tracker = Tracker("door", TrackingConfig())
    [track] = tracker.update(0.0, faces((960, 540, 1080, 720)))
    tracker.rescale((640 / 1920, 480 / 1080))
    assert np.allclose(track.bbox_xyxy, [320, 240, 360, 320])
    [again] = tracker.update(0.5, faces((320, 240, 360, 320)))
    assert again is track


def _ann_enrolled(tmp_path: Path, ann: np.ndarray) -> tuple[Path, Config]:
    """A gallery of ann for the scripted FaceNet, and a one-camera config that reads it."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OnePerson.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", ann, "a" * 64)])
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "door.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
        }
    )
    return path, config


@pytest.mark.parametrize("private", [False, True])
def test_snapshots_and_names_in_metrics_only_when_the_config_says_so(tmp_path, private) -> None:
    """tracking.snapshots off (the default): no face JPEG goes with the events; on: each
    event of a frame carries one. metrics.identities off: /metrics counts ann's
    recognitions as 'known', her name nowhere in it."""
    from prometheus_client import REGISTRY

    ann = np.eye(8, dtype=np.float32)[0]
    path, _ = _ann_enrolled(tmp_path, ann)
    config = parse_config(
        {
            "cameras": [{"name": f"cam{int(private)}", "url": "door.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
            "tracking": {"snapshots": not private},
            "metrics": {"identities": not private},
        }
    )
    camera = config.cameras[0].name
    sent: list[bytes | None] = []

    class Sinks(EventSinks):
        def emit(self, event: dict, snapshot: bytes | None = None) -> None:
            sent.append(snapshot)

    engines = _OnePerson(ann)
    pipeline = Pipeline(config, engines, engines, Sinks())  # type: ignore[arg-type]
    pipeline.reload_gallery()
    image = np.full((360, 640, 3), 128, np.uint8)
    for k in range(5):
        pipeline.process([Frame(camera, k, 1000.0 + k / 5, image)])
    assert len(sent) == 1
    assert (sent[0] is None) == private
    named = REGISTRY.get_sample_value(
        "facewatch_recognitions_total", {"camera": camera, "identity": "ann"}
    )
    known = REGISTRY.get_sample_value(
        "facewatch_recognitions_total", {"camera": camera, "identity": "known"}
    )
    assert (named, known) == ((None, 3.0) if private else (3.0, None))


def test_a_gallery_being_written_holds_the_cameras_a_moment_and_is_read_when_done(
    tmp_path, caplog
) -> None:
    """An enroll or import holds the gallery's write lock (a large one writes before its
    commit, so the daemon sees the file change): the reload waited 5 s for it on the thread
    that runs the engines (every camera's frames dropped meanwhile), then logged an ERROR
    meant for CLI users. Now it waits a moment, keeps the gallery it has, says so once, and
    reads the file at the next check once the writer is done."""
    import sqlite3

    from daemon.gallery_live import GALLERY_LOCK_S

    ann = np.eye(8, dtype=np.float32)[0]
    path, config = _ann_enrolled(tmp_path, ann)
    engines = _OnePerson(ann)
    pipeline = Pipeline(config, engines, engines, EventSinks())  # type: ignore[arg-type]
    pipeline.reload_gallery()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # a writer mid-commit: no reader gets in
    writer.execute("UPDATE meta SET value = value WHERE key = 'threshold'")
    with caplog.at_level("INFO", logger="daemon.scheduler"):
        for _ in range(3):
            started = time.monotonic()
            pipeline.reload_gallery()
            assert time.monotonic() - started < GALLERY_LOCK_S + 0.5
    said = [r for r in caplog.records if "being written" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "INFO", caplog.text
    assert pipeline.gallery is not None and pipeline.gallery.load() == ["ann"], "kept"
    writer.execute("COMMIT")
    writer.close()
    assert pipeline.gallery_changed(), "tried again at the next check"
    pipeline.reload_gallery()
    assert pipeline.gallery is not None and not pipeline.live_gallery._gallery_busy


def test_a_gallery_event_after_a_clock_step_carries_the_frames_time(tmp_path) -> None:
    """NTP steps the clock an hour on while ann is in view, then she is renamed: the
    reload's `changed` (reason gallery) carries her latest frame's time as the clock said
    then, as the events of frames do; it carried the visit's first clock, an hour behind,
    which the docs' automation took for an event delivered late."""
    ann = np.eye(8, dtype=np.float32)[0]
    path, config = _ann_enrolled(tmp_path, ann)
    events: list[dict] = []

    class Sinks(EventSinks):
        def emit(self, event: dict, snapshot: bytes | None = None) -> None:
            events.append(event)

    engines = _OnePerson(ann)
    pipeline = Pipeline(config, engines, engines, Sinks())  # type: ignore[arg-type]
    pipeline.reload_gallery()
    image = np.zeros((360, 640, 3), np.uint8)
    for k in range(10):  # the clock steps on an hour after the fifth frame
        wall = 1000.0 + k / 5 + (3600.0 if k >= 5 else 0.0)
        pipeline.process([Frame("door", k, wall, image, mono=50.0 + k / 5)])
    with Gallery.open(path, writable=True) as gallery:
        gallery.rename("ann", "Anna")
    pipeline.reload_gallery()
    [renamed] = [e for e in events if e["reason"] == "gallery"]
    assert renamed["frame_ts"] == 1000.0 + 9 / 5 + 3600.0
    assert renamed["first_seen_ts"] == 1000.0


def test_a_face_said_still_is_one_that_stayed_not_one_that_came_back() -> None:
    """A photo found in two frames of three for 45 min is said once, at 30 min. Someone
    seated whose head is back at its first place in one frame of three is not; nor are
    people back in their seats after 40 min of an empty room (their places, kept while
    nothing was in view, were said to have stayed 30 min)."""  # (frames 1 s apart)
    from daemon.still_faces import StillFaces

    photo = np.array([[100.0, 100, 160, 170]])
    moved = photo + np.array([[9.0, 0, 9, 0]])  # (IoU 0.74 with where it was)
    lower = photo + np.array([[0.0, 9, 0, 9]])  # (0.77)
    none = np.zeros((0, 4))

    def said(frames: list[np.ndarray], every_s: float = 1.0) -> list[float]:
        still, when = StillFaces(), []
        for k, boxes in enumerate(frames):
            if still.see(1000.0 + every_s * k, boxes):
                when.append(every_s * k)
        return when

    assert said([photo, photo, none] * 900) == [1800.0]
    assert said([photo, moved, lower] * 900) == []
    seated_again = [photo] * 60 + [none] * 2400 + [photo] * 5
    assert said(seated_again) == []


def _said_still(frames: list[np.ndarray], every_s: float = 1.0) -> list[list[float]]:
    """When (seconds from the first frame) ``StillFaces`` says a face stayed, and where."""
    from daemon.still_faces import StillFaces

    still, said = StillFaces(), []
    for k, boxes in enumerate(frames):
        said += [[every_s * k, *box] for box in still.see(1000.0 + every_s * k, boxes)]
    return said


_PHOTO = np.array([[100.0, 100, 160, 170]])  # (60 x 70 px)
_NONE = np.zeros((0, 4))


def test_a_photos_box_jittering_a_few_pixels_is_one_place_and_two_photos_are_two() -> None:
    """The detector's box of a photo on the wall wobbles by 2 px either way (IoU 0.94 with
    where it was first found, 0.88 between the two extremes): one place, said at 30 min.
    Two photos side by side are two places, each said at 30 min, with its own box; a face
    found in exactly 40 % of the frames (2 of 5) stays still by the documented share."""
    shift = np.array([[2.0, 0, 2, 0]])
    jitter = [_PHOTO, _PHOTO + shift, _PHOTO - shift]
    assert _said_still(jitter * 620) == [[1800.0, *_PHOTO[0]]]
    other = _PHOTO + np.array([[200.0, 0, 200, 0]])
    both = np.concatenate([_PHOTO, other])
    assert _said_still([both] * 1810) == [[1800.0, *_PHOTO[0]], [1800.0, *other[0]]]
    assert _said_still([_PHOTO, _NONE, _PHOTO, _NONE, _NONE] * 362) == [[1800.0, *_PHOTO[0]]]


def test_a_place_without_a_face_for_30_s_starts_over_and_is_said_once_only() -> None:
    """Someone standing in front of the photo for 40 s (nothing found there): its place is
    forgotten, and its 30 minutes start again when it is found again. Hidden under 30 s (found
    again 30 s after it was last), it is the same place. A photo said, then hidden a minute
    and found again a few pixels off, is not said a second time."""
    away = [_PHOTO] * 1200 + [_NONE] * 40 + [_PHOTO] * 1810
    assert _said_still(away) == [[1240.0 + 1800.0, *_PHOTO[0]]]
    hidden = [_PHOTO] * 1200 + [_NONE] * 29 + [_PHOTO] * 700
    assert _said_still(hidden) == [[1800.0, *_PHOTO[0]]]
    back = [_PHOTO] * 1810 + [_NONE] * 60 + [_PHOTO + np.array([[2.0, 0, 2, 0]])] * 1810
    assert _said_still(back) == [[1800.0, *_PHOTO[0]]]


def test_faces_walking_by_leave_no_places_behind() -> None:
    """A corridor camera at 25 fps: a face walking across (a new place each frame, 10 px on)
    all day would keep every frame's place: the places a face only passed through are
    forgotten within a few frames, and an empty view forgets the rest."""
    from daemon.still_faces import PASSING_FRAMES, StillFaces

    still = StillFaces()
    kept = []
    for k in range(25 * 20):  # 20 s of someone walking by, back and forth
        x = 10.0 * (k % 100)
        assert still.see(k / 25, np.array([[x, 100, x + 60, 170]])) == []
        kept.append(len(still._places))
    assert max(kept) <= PASSING_FRAMES + 1
    still.see(20.0 + 31.0, _NONE)
    assert still._places == []


def test_a_jittery_box_does_not_stop_a_walking_face_and_a_turn_back_does() -> None:
    """A face walking right 18 px a frame at 10 fps whose box once wobbles 6.5 px back (the
    detector's box, not the face): its velocity goes on (any move back zeroed it, and the
    track, predicting nothing for 3 frames, lost the walker in a synthetic scene); a face
    that turns back by a fifth of its width (a lean coming back) has none."""
    from daemon.tracks import Track

    def walked(steps: list[float]) -> Track:
        track = Track(1, np.array(box_at(100, 300), np.float32), np.zeros((5, 2)), 0.0, 0.0)
        x = 100.0
        for k, step in enumerate(steps, 1):
            x += step
            track.follow(np.array(box_at(x, 300), np.float32), k / 10)
            track.bbox_xyxy, track.last_seen = np.array(box_at(x, 300), np.float32), k / 10
        return track

    wobbled = walked([18, 18, 18, 18, -6.5, 18])
    assert wobbled.moves >= 3 and wobbled.velocity_xy[0] > 100, wobbled.velocity_xy
    turned = walked([18, 18, 18, 18, -20])
    assert turned.moves == 0 and not turned.velocity_xy.any()
