"""The pipeline's recognition (daemon.scheduler) with scripted engines: min_face_px, the
cameras' own thresholds, gallery reloads, faces seen side on, snapshots."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.camera_frames import Frame
from daemon.config_file import parse_config
from daemon.events import EventSinks, face_snapshot
from daemon.gallery import Gallery
from daemon.gallery_write import Enrollment
from daemon.scheduler import Pipeline
from engines.mtcnn import FrameDetections
from tests.pipeline_fakes import OneFace as _OneFace
from tests.pipeline_fakes import Recorded as _Recorded
from tests.pipeline_fakes import (
    ScriptedEngines,
    found,
    galleries_closed,  # noqa: F401  (a fixture, used by name)
)
from tests.pipeline_fakes import gallery_of_ann_and_bob as _gallery_of_ann_and_bob

pytestmark = pytest.mark.usefixtures("galleries_closed")


def test_faces_smaller_than_min_face_px_are_not_recognised_and_cast_no_vote(tmp_path) -> None:
    """A 20 px face (a face in the crowd, a hand): never matched, its track announced with
    identity null once seen in vote_window frames (it was matched to whoever lay nearest, ann here); a camera whose own
    min_face_px lets it through names ann. A named face that then shrinks keeps its name:
    its small frames cast no vote and are counted."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OneFace.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    config = parse_config(
        {
            "cameras": [
                {"name": "far", "url": "far.mp4"},
                {"name": "near", "url": "near.mp4", "recognition": {"min_face_px": 10}},
            ],
            "recognition": {"model": None, "gallery": str(path)},
        }
    )
    assert config.recognition.min_face_px == 30
    sinks = _Recorded()
    events = sinks.events

    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    image = np.zeros((360, 640, 3), np.uint8)
    too_small = REGISTRY.get_sample_value("facewatch_faces_too_small_total", {"camera": "far"})
    engines.side = 20.0
    for k in range(15):  # announced undecided once seen in vote_window frames
        pipeline.process([Frame("far", k, 1000.0 + k / 5, image)])
        assert len(events) == (k == 14)
    assert [(e["type"], e["identity"], e["distance"]) for e in events] == [
        ("confirmed", None, None)
    ]
    assert engines.embedded == 0
    after = REGISTRY.get_sample_value("facewatch_faces_too_small_total", {"camera": "far"})
    assert after == (too_small or 0) + 15
    for k in range(6):
        pipeline.process([Frame("near", k, 1000.0 + k / 5, image)])
    assert [(e["camera"], e["identity"]) for e in events[1:]] == [("near", "ann")]

    pipeline.expire(2000.0, stopping=True)
    events.clear()
    engines.side = 40.0
    for k in range(5):
        pipeline.process([Frame("far", k, 3000.0 + k / 5, image)])
    assert [(e["type"], e["identity"]) for e in events] == [("confirmed", "ann")]
    embedded, engines.side = engines.embedded, 27.0  # the same track (size within 1.5x)
    for k in range(5, 40):
        pipeline.process([Frame("far", k, 3000.0 + k / 5, image)])
    assert [(e["type"], e["identity"]) for e in events] == [("confirmed", "ann")]
    assert engines.embedded == embedded


def _day_and_night(tmp_path: Path) -> tuple[Path, Pipeline, list[dict]]:
    """A face 0.084 from ann, enrolled, seen 15 times by a day camera (the default threshold
    0.2) and a night camera made stricter (0.05): the gallery, the pipeline, its events."""
    path = tmp_path / "gallery.sqlite"
    ann = np.eye(8, dtype=np.float32)[0] + 0.3 * np.eye(8, dtype=np.float32)[1]
    with Gallery.create(path, _OneFace.model_id, 8, 0.154) as gallery:
        gallery.enroll([Enrollment("ann", ann / np.linalg.norm(ann), "a" * 64)])
    config = parse_config(
        {
            "cameras": [
                {"name": "day", "url": "day.mp4"},
                {"name": "night", "url": "night.mp4", "recognition": {"threshold": 0.05}},
            ],
            "recognition": {"model": None, "gallery": str(path), "threshold": 0.2},
        }
    )
    sinks = _Recorded()
    events = sinks.events

    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    image = np.zeros((360, 640, 3), np.uint8)
    for k in range(15):
        pipeline.process([Frame("day", k, 1000.0 + k / 5, image)])
        pipeline.process([Frame("night", k, 1000.0 + k / 5, image)])
    return path, pipeline, events


def test_a_cameras_own_threshold_names_its_faces_only_within_it(tmp_path) -> None:
    """A night camera made stricter (cameras[].recognition.threshold): a face 0.084 from ann
    is named by the day camera (recognition.threshold 0.2) and is a stranger to the night
    camera (0.05) (every camera had the one threshold: the night camera's poor faces were
    named as the wrong person as readily as the day camera's)."""
    _, _, events = _day_and_night(tmp_path)
    assert [(e["camera"], e["type"], e["identity"]) for e in events] == [
        ("day", "confirmed", "ann"),
        ("night", "confirmed", None),
    ]


def test_a_gallery_reload_names_who_came_and_who_went(tmp_path, caplog) -> None:
    """An old backup copied over the live gallery brought back a person forgotten since,
    and the reload said only `gallery PATH: 2 people`: nothing showed who was back (or
    gone). A reload names them, +came and -went; the first read at start lists nobody."""
    import shutil

    def gallery(path: Path, names: list[str]) -> Path:
        with Gallery.create(path, _OneFace.model_id, 8, 0.154) as made:
            for k, name in enumerate(names):
                one = np.eye(8, dtype=np.float32)[k % 8]
                made.enroll([Enrollment(name, one, f"{k}{name}".ljust(64, "0"))])
        return path

    live = gallery(tmp_path / "gallery.sqlite", ["ann", "bob", "obama"])
    backup = gallery(tmp_path / "backup.sqlite", ["alex-lacamoire", "ann", "bob"])
    config = parse_config(
        {"cameras": [{"name": "door", "url": "x.mp4"}], "recognition": {"gallery": str(live)}}
    )
    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, EventSinks())  # type: ignore[arg-type]

    def reloaded() -> list[str]:
        caplog.clear()
        with caplog.at_level("INFO", logger="daemon.scheduler"):
            pipeline.reload_gallery()
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("gallery")]

    threshold = "threshold 0.154 (the gallery's)"
    assert reloaded() == [f"gallery {live}: 3 people, {threshold}"]
    shutil.copyfile(backup, live)  # a restore of a backup taken before the erasure
    assert reloaded() == [f"gallery {live}: 3 people (+alex-lacamoire, -obama), {threshold}"]
    assert reloaded() == [f"gallery {live}: 3 people, {threshold}"]  # (a SIGHUP: no change)
    names = [f"p{k:02d}" for k in range(12)]
    shutil.copyfile(gallery(tmp_path / "many.sqlite", names), live)
    assert reloaded() == [
        f"gallery {live}: 12 people (+p00, +p01, +p02, +p03, +p04, +p05, +p06, +p07, +p08, "
        f"+p09 and 5 more), {threshold}"
    ]


def test_a_gallery_reload_names_the_faces_in_view_at_their_cameras_threshold(tmp_path) -> None:
    """A stranger 0.084 from ann, left unnamed by a strict night camera (threshold 0.05, the
    default 0.2), stays unnamed when someone else is enrolled and the daemon reloads the
    gallery (the faces in view were matched again at the default: named ann at the reload,
    and held by a full window of such votes)."""
    path, pipeline, events = _day_and_night(tmp_path)
    with Gallery.open(path, _OneFace.model_id, writable=True) as gallery:
        gallery.enroll([Enrollment("bob", np.eye(8, dtype=np.float32)[5], "b" * 64)])
    pipeline.reload_gallery()
    image = np.zeros((360, 640, 3), np.uint8)
    for k in range(15, 30):
        pipeline.process([Frame("day", k, 1000.0 + k / 5, image)])
        pipeline.process([Frame("night", k, 1000.0 + k / 5, image)])
    assert [(e["camera"], e["type"], e["identity"]) for e in events] == [
        ("day", "confirmed", "ann"),
        ("night", "confirmed", None),
    ]
    assert pipeline.trackers["night"].in_view() == [None]


class _Passer(ScriptedEngines):
    """One face in the middle of the frame while ``present``, straight on or (``turned``) a
    profile, its nose 3 half eye distances off the eyes' middle; its embedding is on axis
    ``axis`` (0: ann's)."""

    FRONTAL = ((305, 170), (335, 170), (320, 185), (308, 198), (332, 198))
    PROFILE = ((330, 170), (345, 170), (360, 185), (335, 198), (350, 198))

    def __init__(self, axis: int, turned: bool) -> None:
        self.axis, self.turned, self.present = axis, turned, True

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        if not self.present:
            return [found([]) for _ in images]
        landmarks = [self.PROFILE if self.turned else self.FRONTAL]
        return [found([(290, 150, 370, 230)], landmarks) for _ in images]

    def embed_picks(self, picks: list) -> np.ndarray:
        return np.stack([np.eye(8, dtype=np.float32)[self.axis] for _ in picks])


def _passing(tmp_path: Path, engines: _Passer, steps: list[tuple[bool, bool]]) -> list[dict]:
    """The events of one face at 5 fps, frame by frame (present, turned), expired as the
    engine thread does; each event with the frame it came at (``_at``)."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, engines.model_id, 8, 0.154) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    config = parse_config(
        {
            "cameras": [{"name": "hall", "url": "rtsp://hall/stream"}],
            # every face of a track recognised (its votes the faces, frame by frame)
            "recognition": {"model": None, "gallery": str(path), "reembed_every": 1},
        }
    )
    sinks = _Recorded()
    events = sinks.events

    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    image = np.zeros((360, 640, 3), np.uint8)
    for k, (engines.present, engines.turned) in enumerate(steps):
        pipeline.process([Frame("hall", k, 1000.0 + k / 5, image)])
        pipeline.expire(1000.0 + k / 5)
        for event in events:
            event.setdefault("_at", k)
    return events


def test_a_stranger_who_crosses_the_view_side_on_is_announced_while_there(tmp_path) -> None:
    """A stranger walks across a hall camera's view side-on, in view 8 frames at 5 fps: a
    stranger (confirmed, identity null, with the distance to the nearest enrolled face)
    after unknown_votes recognitions, while still in view (a face turned past max_turn cast
    no vote: nothing was sent until he had gone, then confirmed and left together, and the
    people sensor never showed him)."""
    steps = [(True, True)] * 8 + [(False, False)] * 15
    events = _passing(tmp_path, _Passer(axis=3, turned=True), steps)
    said = [(e["type"], e["identity"], e["_at"]) for e in events]
    assert said[0] == ("confirmed", None, 4), said
    assert events[0]["distance"] == pytest.approx(2.0)
    assert [e["type"] for e in events] == ["confirmed", "left"]


def test_a_named_face_that_turns_away_keeps_its_name(tmp_path) -> None:
    """Ann, named after looking at the camera for 5 frames, turns to a profile that the
    model matches to nobody, for 4 s: still ann (a turned face casts no vote once its track
    is announced: "changed" to unknown while she stood there)."""
    engines = _Passer(axis=0, turned=False)
    steps = [(True, False)] * 5 + [(True, True)] * 20
    original = engines.embed_picks
    engines.embed_picks = lambda picks: (  # type: ignore[method-assign]
        original(picks) if not engines.turned else np.stack([np.eye(8)[3] for _ in picks])
    )
    events = _passing(tmp_path, engines, steps)
    assert [(e["type"], e["identity"]) for e in events] == [("confirmed", "ann")]


def test_a_confirmed_sent_as_its_face_leaves_has_the_snapshot_of_its_last_face(tmp_path) -> None:
    """A face never decided (too small to recognise, seen a moment) is confirmed as it
    leaves, with no frame then: it came without a snapshot (half of a busy camera's
    confirmed), and a consumer waiting on snapshots/CAMERA/EVENT_ID waited for ever. Its
    snapshot is its face in the last frame that showed it."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OneFace.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    config = parse_config(
        {
            "cameras": [{"name": "far", "url": "far.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
            "tracking": {"snapshots": True},
        }
    )
    sinks = _Recorded()
    sent = sinks.sent

    engines = _OneFace()
    engines.side = 20.0  # below min_face_px: no vote, undecided
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (360, 640, 3), np.uint8) for _ in range(4)]
    for k, image in enumerate(images):
        pipeline.process([Frame("far", k, 1000.0 + k / 5, image)])
    assert sent == []
    pipeline.expire(1015.0)  # its camera silent past the stall grace: the face is gone
    assert [(e["type"], e["reason"]) for e, _ in sent] == [("confirmed", "lost"), ("left", "lost")]
    (_, snapshot), (_, none) = sent
    last_face = np.array([310.0, 170.0, 330.0, 190.0])
    assert snapshot == face_snapshot(images[-1], last_face)
    assert none is None
    assert pipeline.emitter._undecided_face == {}, "nothing kept once the track is gone"


def test_a_reload_that_meets_a_writer_after_reading_the_gallery_goes_on(
    tmp_path, monkeypatch, caplog
) -> None:
    """The reload's log line read the gallery a second time (how many have their own
    threshold), outside the wait for a writer: an enroll committing just then stopped the
    engine thread, and the daemon with it. The line says what the one read found."""
    import sqlite3

    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OneFace.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
        gallery.set_threshold("ann", 0.2)
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "a.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
        }
    )
    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, EventSinks())  # type: ignore[arg-type]
    writer = sqlite3.connect(path, isolation_level=None)
    load = Gallery.load

    def load_then_a_writer_locks_the_file(self: Gallery) -> list[str]:
        names = load(self)
        writer.execute("BEGIN EXCLUSIVE")  # an enroll committing right now
        return names

    monkeypatch.setattr(Gallery, "load", load_then_a_writer_locks_the_file)
    with caplog.at_level("INFO", logger="daemon.scheduler"):
        pipeline.reload_gallery()
    writer.execute("COMMIT")
    writer.close()
    [said] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gallery")]
    assert said.startswith(f"gallery {path}: 1 person, threshold ") and said.endswith(
        "(the gallery's), 1 with their own"
    ), said
    assert pipeline.gallery is not None and pipeline.emitter.enrolled == {"ann"}


def test_a_gallery_damaged_while_the_daemon_runs_leaves_the_old_one_in_use(
    tmp_path, caplog
) -> None:
    """A blob of the wrong length written into the gallery while the daemon ran stopped the
    engine thread (a ValueError traceback, exit 1, and at each restart again: a loop), after
    facewatch_gallery_identities had already counted the file's people. The reload logs why
    it is not taken and goes on with the gallery it had, and its count."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OneFace.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    config = parse_config(
        {"cameras": [{"name": "door", "url": "a.mp4"}], "recognition": {"gallery": str(path)}}
    )
    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, EventSinks())  # type: ignore[arg-type]
    pipeline.reload_gallery()
    assert REGISTRY.get_sample_value("facewatch_gallery_identities") == 1
    path.unlink()
    _gallery_of_ann_and_bob(path, _OneFace.model_id)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE embeddings SET vector = ? WHERE id = 2", (bytes(28),))
    assert pipeline.gallery_changed()
    with caplog.at_level("INFO", logger="daemon.scheduler"):
        pipeline.reload_gallery()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"gallery not reloaded: {path}: bob's face 1 (of 1): 28 bytes, 32 expected; the "
        "gallery file is damaged: restore an export into a new gallery (`facewatch gallery "
        "import FILE --gallery NEW`), or `facewatch gallery remove 'bob'` and enroll them again"
    ]
    assert pipeline.gallery is not None and pipeline.emitter.enrolled == {"ann"}
    [match] = pipeline.gallery.match(np.eye(8, dtype=np.float32)[:1])
    assert match.identity == "ann"
    assert REGISTRY.get_sample_value("facewatch_gallery_identities") == 1
    assert not pipeline.gallery_changed()  # (the same file is not tried again)
