"""The hot path: one thread owns the engines. It gathers frames from every camera, detects
faces on the whole batch, embeds the faces that need it in one call, matches them against
the gallery, updates each camera's tracks and emits the events that are due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

from daemon import metrics
from daemon.archive import FaceArchive
from daemon.camera_frames import Frame, FrameQueues
from daemon.config import Config
from daemon.cut_hold import CutHold, Step
from daemon.events import (
    SNAPSHOT_PAD,
    SNAPSHOT_SIZE,
    EventSinks,
    event_json,
    face_region,
    face_snapshot,
    in_view_json,
    person_json,
    to_jpeg,
)
from daemon.face_search import FaceSearch, camera_detectors
from daemon.frame_admission import FrameAdmission
from daemon.gallery import Gallery, GalleryError
from daemon.gallery_file import GalleryBusy, file_stamp
from daemon.gallery_open import came_and_went, open_gallery, threshold_said
from daemon.recognition import frontal_offset
from daemon.tracking import Rematch, Tracker
from daemon.tracks import Track, TrackEvent
from engines.facenet import FaceNet
from engines.mtcnn import MTCNN, FrameDetections

logger = logging.getLogger(__name__)

EXPIRE_EVERY_S = 0.25
GALLERY_CHECK_S = 2.0  # how often the gallery file is looked at for changes
# how long a reload waits for a writer's lock (enroll, a gallery command): on the thread that
# runs the engines, every camera waits with it; a gallery being written is tried again at
# the next check
GALLERY_LOCK_S = 0.2


@dataclass
class _Face:
    frame: Frame
    detections: FrameDetections
    index: int
    track: Track

    def own(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The face's box, landmarks and score in its own frame (the track holds those of
        its latest frame, a later one when a batch has several frames of the camera)."""
        found, k = self.detections, self.index
        return found.bbox_xyxy[k], found.landmarks[k], float(found.score[k])


class Pipeline:
    """Detection -> tracking -> embedding -> matching -> events, for batches of frames."""

    def __init__(
        self,
        config: Config,
        detector: MTCNN,
        facenet: FaceNet | None,
        sinks: EventSinks,
        gallery: Gallery | None = None,
        archive: FaceArchive | None = None,
    ) -> None:
        self.config, self.detector, self.facenet, self.sinks = config, detector, facenet, sinks
        self.gallery, self.archive = gallery, archive
        self.trackers = {
            c.name: Tracker(
                c.name, config.tracking, config.recognition.reembed_every, facenet is not None
            )
            for c in config.cameras
        }
        detectors = camera_detectors(config, detector)
        self.admission = FrameAdmission(config, detectors, self.trackers)
        self.search = FaceSearch(config, detectors, self.trackers, self.admission)
        self._cuts = CutHold((c.name for c in config.cameras), config.tracking.end_at_scene_cuts)
        self._min_face_px = {c.name: config.min_face_px(c) for c in config.cameras}
        self._threshold = {c.name: c.recognition.threshold for c in config.cameras}
        # (camera, track id) -> the latest face of a track not yet confirmed, for the snapshot
        # of a confirmed sent as it leaves (with tracking.snapshots)
        self._undecided_face: dict[tuple[str, int], np.ndarray] = {}
        self._state_ts: dict[str, float] = {}  # camera -> ts of its latest in-view state
        self._enrolled: set[str] = set()  # the gallery's names
        self._gallery_read = False  # once read, a reload says who came and went
        self._gallery_stamp: tuple[int, ...] | None = None  # the file as last read
        self._gallery_busy = False  # the last reload found it being written (said once)
        self._seq = 0
        self.model_id = facenet.model_id if facenet is not None else None

    # -- one batch ------------------------------------------------------------------------

    def process(self, frames: list[Frame]) -> None:
        steps = [Step(frame, self.admission.arrived(frame)) for frame in frames]
        steps = [
            s for s in steps if self.admission.takes(s.frame) and self.search.worth_a_search(s)
        ]
        if not steps:
            return
        metrics.BATCH_FRAMES.observe(len(steps))
        whole = {id(step.frame) for step in steps if self._cuts.look(step) or step.whole}
        with metrics.STAGE_SECONDS.labels("detect").time():
            found = self.search.detect([step.frame for step in steps], whole)
        for step, detections in zip(steps, found, strict=True):
            step.detections = detections
        self._track(self._cuts.take() + steps)

    def _track(self, steps: list[Step]) -> None:
        """Tracks, recognition, archive and events of frames already searched (``steps``, in
        order); a scene cut candidate whose camera has tracks is held until its next frame
        says whether it is a cut (``daemon.cut_hold``), and tracked then, at the latest by
        ``expire``."""
        frames: list[Frame] = []
        faces: list[_Face] = []
        with metrics.STAGE_SECONDS.labels("track").time():
            for step in steps:
                frame, detections = step.frame, step.detections
                tracker = self.trackers[frame.camera]
                if step.cut is None and tracker.tracks:
                    self._cuts.hold(step)  # (none of its faces joins them yet)
                    continue
                frames.append(frame)
                if step.cut:
                    self._cut(frame, step.likeness)
                metrics.FRAMES_PROCESSED.labels(frame.camera).inc()
                metrics.FACES_DETECTED.labels(frame.camera).inc(len(detections))
                detections = self.search.not_ignored(frame, detections)
                self.admission.follow_size(frame)
                self._lost_by(frame, step.stalled_s)
                tracks = tracker.update(frame.clock, detections, frame.ts)
                faces += [_Face(frame, detections, k, t) for k, t in enumerate(tracks)]
                self.search.see_still(frame, detections, tracks)
        if not frames:
            return
        if self.facenet is not None:
            self._recognise(faces)  # (first: a face found someone else's gets its own track)
            for camera in {frame.camera for frame in frames}:
                self.trackers[camera].settle()
        if self.archive is not None:
            with metrics.STAGE_SECONDS.labels("archive").time():
                for face in faces:
                    if face.track.doubt is not None:
                        continue  # (whose face it is, the track's next one says)
                    when = face.track.wall_ts(face.frame.clock)
                    self.archive.observe(
                        face.frame.camera, face.track, face.frame.image, face.own(), when
                    )
        self._emit_due(frames, faces)

    def _cut(self, frame: Frame, likeness: float) -> None:
        """``frame`` is a scene cut, confirmed by its camera's next frame: its camera's
        tracks end before its faces are matched (a face where another stood before the cut
        continued that one's track and name), ``left`` with reason ``cut``; counted
        (``facewatch_scene_cuts_total``)."""
        metrics.SCENE_CUTS.labels(frame.camera).inc()
        ended = self.trackers[frame.camera].cut()
        announced = sum(event.kind == "left" for event in ended)
        if announced:
            logger.debug(
                "camera %s: the picture cut to another scene at frame %d (likeness %.2f to "
                "the frame before): %d announced track(s) end",
                frame.camera, frame.seq, likeness, announced,
            )  # fmt: skip
        self._ended(frame.camera, ended, frame.ts)

    def forget_held(self) -> None:
        """After a failure of the engines: the held frames are not tracked (their faces
        would need the engines); ``expire`` then ends the visits."""
        self._cuts.forget()

    def _lost_by(self, frame: Frame, stalled_s: float) -> None:
        """``left`` for the tracks of ``frame``'s camera unseen for ``lost_after_s`` by its
        time (less ``stalled_s``), before its faces are matched: the periodic ``expire`` may
        not have run since, and a face there just past the limit continued a stranger's
        visit (a file camera's loop: his visit went on with another person's face)."""
        ended = self.trackers[frame.camera].expire(frame.clock - stalled_s)
        if ended:
            self._ended(frame.camera, ended, frame.ts)

    def _recognise(self, faces: list[_Face]) -> None:
        facenet = self.facenet
        if facenet is None:
            return
        wanted = [f for f in faces if self.trackers[f.frame.camera].wants_embedding(f.track)]
        wanted = [f for f in wanted if self._large_enough(f) and self._frontal_enough(f)]
        if not wanted:
            return
        with metrics.STAGE_SECONDS.labels("embed").time():
            embeddings = facenet.embed_picks(
                [(f.frame.image, f.detections, f.index) for f in wanted]
            )
        with metrics.STAGE_SECONDS.labels("match").time():
            matches = None
            if self.gallery is not None:  # each at its camera's threshold, where it has one
                defaults = [self._threshold[f.frame.camera] for f in wanted]
                matches = self.gallery.match(embeddings, defaults=defaults)
        for k, face in enumerate(wanted):
            camera = face.frame.camera
            metrics.FACES_EMBEDDED.labels(camera).inc()
            identity, distance = (None, float("inf"))
            if matches is not None:
                identity, distance = matches[k].identity, matches[k].distance
            named = "known" if identity and not self.config.metrics.identities else identity
            metrics.RECOGNITIONS.labels(camera, named or "unknown").inc()
            self._same_person(face, faces, embeddings[k], identity)
            self.trackers[camera].record(face.track, identity, distance, embeddings[k].copy())

    def _same_person(
        self, face: _Face, faces: list[_Face], embedding: np.ndarray, named: str | None
    ) -> None:
        """A face of a track that came back after a gap (``Tracker.replaced``; ``named``: the
        gallery's match): when it and the next are someone else's, the track's faces of the
        batch since the first go to a new track (the track it had then ends here, ``left``)."""
        gallery, camera = self.gallery, face.frame.camera
        within = self._threshold[camera]  # (the camera's own, as its faces were matched)
        if gallery is None:
            within = None
        elif within is None:
            override = gallery.threshold_override
            within = gallery.threshold if override is None else override
        old = face.track
        tracker = self.trackers[camera]
        track, ended = tracker.replaced(old, embedding, named, face.frame.clock, within)
        if track is old:
            return
        for other in faces:  # (from the first look's frame: it may be in this batch too)
            if other.track is old and other.frame.clock >= track.first_seen:
                other.track = track
        if ended:
            self._ended(camera, ended, face.frame.ts)

    def _large_enough(self, face: _Face) -> bool:
        """Whether the face is large enough to recognise (``recognition.min_face_px``): a
        smaller one is not matched and casts no vote (a tiny face, or a hand or the back of a
        head found as one, was matched to whoever lay nearest), counted when it is not."""
        x1, y1, x2, y2 = face.own()[0]
        if min(x2 - x1, y2 - y1) >= self._min_face_px[face.frame.camera]:
            return True
        metrics.FACES_TOO_SMALL.labels(face.frame.camera).inc()
        return False

    def _frontal_enough(self, face: _Face) -> bool:
        """Whether the face is turned little enough to recognise (``recognition.max_turn``),
        or its track has no verdict yet: once the track is announced by a vote, one turned
        further casts no vote, as a too small one (the model matches a profile to nobody: an
        enrolled person who turned away was changed to unknown while he stood there);
        before, it votes (a stranger who crosses the view side-on is announced while there,
        not as he leaves); counted when it casts none."""
        most = self.config.recognition.max_turn
        if most is None or not face.track.judged:
            return True
        if abs(frontal_offset(face.own()[1])) <= most:
            return True
        metrics.FACES_TURNED.labels(face.frame.camera).inc()
        return False

    def _emit_due(self, frames: list[Frame], faces: list[_Face]) -> None:
        by_frame: dict[int, dict[int, _Face]] = {}  # frame -> track -> its face there
        for face in faces:
            by_frame.setdefault(id(face.frame), {})[id(face.track)] = face
        for frame in frames:
            seen = by_frame.get(id(frame), {})
            events = self.trackers[frame.camera].decide([face.track for face in seen.values()])
            for event in events:
                self._emit(event, frame.camera, frame.ts, seen[id(event.track)])
            self._changed(frame.camera, events, frame.ts)
            if self.config.tracking.snapshots:
                self._keep_undecided(seen.values())

    def _keep_undecided(self, faces: Iterable[_Face]) -> None:
        """The face of each track not confirmed yet, as its latest frame shows it: its
        ``confirmed`` may come only as it leaves, with no frame to take a snapshot from."""
        for face in faces:
            if not face.track.confirmed:
                crop = face_region(face.frame.image, face.own()[0], SNAPSHOT_PAD)
                key = (face.frame.camera, face.track.track_id)
                self._undecided_face[key] = crop.copy()  # not a view: frees the frame

    def expire(self, now: float, stopping: bool = False, pending: Collection[str] = ()) -> None:
        """``left`` for the tracks gone (for every open one when ``stopping``). A camera that
        sent no frame for a while (a stall) holds its tracks up to STALL_GRACE_S: the faces
        in view when its frames come again are the same visit, not a new arrival. First the
        held cut candidates whose next frame will not come in time are tracked, as no cut
        (``pending``: the cameras with a frame waiting for the pipeline, which decides)."""
        due = self._cuts.due(now, stopping, pending)
        if due:
            self._track(due)
        for camera, tracker in self.trackers.items():
            seen_until = self.admission.seen_until(camera, now)
            self._ended(camera, tracker.expire(seen_until, stopping), time.time())

    def _ended(self, camera: str, events: list[TrackEvent], ts: float) -> None:
        """The events of ``camera``'s tracks that ended (``left``, each at its last
        sighting), the state after them at ``ts``, and their archive visits."""
        for event in events:
            self._emit(event, camera, event.track.last_seen_ts)
        self._changed(camera, events, ts)
        live = {t.track_id for t in self.trackers[camera].tracks}
        for key in [k for k in self._undecided_face if k[0] == camera and k[1] not in live]:
            del self._undecided_face[key]  # a track gone unannounced (too brief)
        if self.archive is not None:
            self.archive.visits_ended(camera, events, live)

    def _changed(self, camera: str, events: list[TrackEvent], ts: float) -> None:
        """The state after ``camera``'s events: who it sees, where the people they name are."""
        if not events:
            return
        # ``ts``: a frame's time, or the clock's at an expiry (later than frames still in
        # the pipeline): never earlier than the camera's previous state's
        ts = self._state_ts[camera] = max(ts, self._state_ts.get(camera, ts))
        self.sinks.in_view(camera, in_view_json(camera, self.trackers[camera].in_view(), ts))
        named = {name for e in events for name in (e.identity, e.previous) if name is not None}
        for name in sorted(named & self._enrolled):
            self.sinks.person(name, person_json(name, self._cameras_seeing(name)))

    def _cameras_seeing(self, name: str) -> list[str]:
        return sorted(c for c, tracker in self.trackers.items() if name in tracker.in_view())

    def _emit(
        self,
        event: TrackEvent,
        camera: str,
        frame_ts: float,
        face: _Face | None = None,
    ) -> None:
        """``face``: the event's face in the frame that caused it (none for ``left`` and
        the events of an expiry or a gallery reload)."""
        self._seq += 1
        where = face.own()[:2] if face is not None else None
        payload = event_json(
            event, self.config.node_id, camera, frame_ts, self.model_id, self._seq, where
        )
        snapshot = self._snapshot(event, camera, face) if self.config.tracking.snapshots else None
        self.sinks.emit(payload, snapshot)

    def _snapshot(self, event: TrackEvent, camera: str, face: _Face | None) -> bytes | None:
        """The event's face: in its frame; for a ``confirmed`` sent as the track leaves,
        its latest face (kept while it was undecided); none for ``left`` and ``reason:
        gallery``."""
        undecided = self._undecided_face.pop((camera, event.track.track_id), None)
        if face is not None:
            return face_snapshot(face.frame.image, face.own()[0])
        if event.kind == "confirmed" and undecided is not None:
            return to_jpeg(undecided, SNAPSHOT_SIZE)
        return None

    # -- the gallery ----------------------------------------------------------------------

    def gallery_changed(self) -> bool:
        """Whether the gallery file was written, created, replaced or deleted since it was
        last read (``facewatch enroll``, ``gallery remove``...)."""
        if self.facenet is None:  # no recognition: no gallery is read
            return False
        return file_stamp(self.config.recognition.gallery) != self._gallery_stamp

    def reload_gallery(self) -> None:
        """Re-read the gallery file (at start, when it changed, at SIGHUP); on failure the old
        one stays in use (and the same file is not tried again)."""
        if self.facenet is None:
            return
        self._gallery_stamp = file_stamp(self.config.recognition.gallery)
        fresh = None
        try:
            fresh = open_gallery(self.config, self.facenet.model_id, GALLERY_LOCK_S)
            # read now, whole: a file replaced later must not be matched against as this one
            names = fresh.load() if fresh is not None else []
        except GalleryError as exc:
            if fresh is not None:
                fresh.close()
            if isinstance(exc, GalleryBusy):  # a writer holds it: tried at the next check
                self._gallery_stamp = None
                if not self._gallery_busy:
                    logger.info("gallery not reloaded yet: it is being written (%s)", exc)
                self._gallery_busy = True
                return
            logger.error("gallery not reloaded: %s", exc)
            return
        self._gallery_busy = False
        if self.gallery is not None:
            self.gallery.close()
        self.gallery = fresh
        metrics.GALLERY_IDENTITIES.set(len(names))  # (a file that failed leaves the old count)
        if fresh is not None:
            people = "person" if len(names) == 1 else "people"
            said = threshold_said(fresh, self.config.cameras)
            if self._gallery_read:
                people += came_and_went(self._enrolled, set(names))
            logger.info("gallery %s: %d %s, %s", fresh.path, len(names), people, said)
        self._gallery_read = True
        for gone in self._enrolled - set(names):  # off /metrics too (once scraped, the
            metrics.forget_identity(
                gone, self.trackers
            )  # past stays in Prometheus until its retention)
        self._enrolled = set(names)
        self._rename_in_view(fresh)
        self.sinks.people({n: person_json(n, self._cameras_seeing(n)) for n in names})

    def close_gallery(self) -> None:
        """Close the gallery file, on the thread that opened it (SQLite's rule), when the
        engines stop (left open, Python 3.13 warned "unclosed database" at exit)."""
        if self.gallery is not None:
            self.gallery.close()
            self.gallery = None

    def _rename_in_view(self, gallery: Gallery | None) -> None:
        """The faces in view now, named by the new gallery at once: their recent faces are
        matched again (an enrolled, renamed or removed person; events with reason
        "gallery"), each at its camera's threshold as when it was seen."""
        for camera, tracker in self.trackers.items():
            events = tracker.recount(self._rematch(gallery, camera))
            for event in events:  # (no frame caused it: the track's latest, as its box)
                self._emit(event, camera, event.track.last_frame_ts)
            self._changed(camera, events, time.time())

    def _rematch(self, gallery: Gallery | None, camera: str) -> Rematch | None:
        """``gallery``'s matching at ``camera``'s threshold (its own, else the default)."""
        if gallery is None:
            return None
        threshold = self._threshold[camera]
        return lambda embeddings: gallery.match(embeddings, defaults=[threshold] * len(embeddings))


class BatchScheduler(threading.Thread):
    """The one thread that runs the engines."""

    def __init__(self, pipeline: Pipeline, queues: FrameQueues) -> None:
        super().__init__(name="batch-scheduler", daemon=True)
        self.pipeline, self.queues = pipeline, queues
        # time.monotonic() of the last round of the loop (batch or not) and the last batch
        self.last_round = self.last_batch = time.monotonic()
        self._stop_event = threading.Event()
        self._reload = threading.Event()
        self.error: BaseException | None = None
        self.batches = 0

    def stop(self) -> None:
        self._stop_event.set()

    def request_reload(self) -> None:
        self._reload.set()

    def run(self) -> None:
        batching = self.pipeline.config.batching
        last_expire = last_gallery_check = 0.0
        try:
            self.pipeline.reload_gallery()  # opened here: SQLite connections are per thread
            while True:
                if time.monotonic() - last_gallery_check >= GALLERY_CHECK_S:
                    last_gallery_check = time.monotonic()
                    if self.pipeline.gallery_changed():
                        self._reload.set()
                if self._reload.is_set():
                    self._reload.clear()
                    self.pipeline.reload_gallery()
                stopping = self._stop_event.is_set()
                frames = self.queues.take(batching.max_batch, batching.max_wait_ms / 1000, 0.2)
                if frames:
                    self.pipeline.process(frames)
                    self.batches += 1
                    self.last_batch = time.monotonic()
                self.last_round = time.monotonic()
                now = time.monotonic()  # the frames' clock (Frame.clock)
                if now - last_expire >= EXPIRE_EVERY_S:
                    self.pipeline.expire(now, pending=self.queues.cameras_waiting())
                    last_expire = now
                if stopping and not frames:  # drained: cameras stopped, queues empty
                    self.pipeline.expire(time.monotonic(), stopping=True)
                    return
        except BaseException as exc:  # the service stops and reports it
            logger.exception("batch scheduler failed")
            self.error = exc
            self._end_visits()
        finally:
            self.pipeline.close_gallery()

    def _end_visits(self) -> None:
        """After a failure: `left` (reason stopped) for the faces in view, and nobody in view
        (the retained state), as at a clean stop; a visit must not stay open for good."""
        try:
            self.pipeline.forget_held()
            self.pipeline.expire(time.monotonic(), stopping=True)
        except Exception:
            logger.exception("the open tracks could not be ended after the failure")
