"""The hot path: one thread owns the engines. It gathers frames from every camera, detects
faces on the whole batch, embeds the faces that need it in one call, matches them against
the gallery, updates each camera's tracks and emits the events that are due.

``Pipeline`` runs each batch through its collaborators, each owning its own state:
``daemon.frame_admission`` (each camera's frames as they come), ``daemon.face_search``
(where faces are searched for), ``daemon.recogniser`` (the faces named),
``daemon.event_emitter`` (the events sent) and ``daemon.gallery_live`` (the gallery in use).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection

from daemon import metrics
from daemon.archive import FaceArchive
from daemon.camera_frames import Frame, FrameQueues
from daemon.config import Config
from daemon.cut_hold import CutHold, Step
from daemon.event_emitter import EventEmitter
from daemon.events import EventSinks
from daemon.face_search import FaceSearch, camera_detectors
from daemon.frame_admission import FrameAdmission
from daemon.gallery import Gallery
from daemon.gallery_live import LiveGallery
from daemon.recogniser import Recogniser
from daemon.tracking import Tracker
from daemon.tracks import TrackedFace
from engines.facenet import FaceNet
from engines.mtcnn import MTCNN

logger = logging.getLogger(__name__)

EXPIRE_EVERY_S = 0.25
GALLERY_CHECK_S = 2.0  # how often the gallery file is looked at for changes


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
        self.archive = archive
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
        self.model_id = facenet.model_id if facenet is not None else None
        self.emitter = EventEmitter(config, sinks, self.trackers, archive, self.model_id)
        thresholds = {c.name: c.recognition.threshold for c in config.cameras}
        self.live_gallery = LiveGallery(
            config, facenet, gallery, self.trackers, self.emitter, thresholds
        )
        self.recogniser = Recogniser(
            config, facenet, self.trackers, self.live_gallery, self.emitter, thresholds
        )

    @property
    def gallery(self) -> Gallery | None:
        """The gallery in use (None: none yet, every face unknown)."""
        return self.live_gallery.gallery

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
        faces: list[TrackedFace] = []
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
                faces += [TrackedFace(frame, detections, k, t) for k, t in enumerate(tracks)]
                self.search.see_still(frame, detections, tracks)
        if not frames:
            return
        if self.facenet is not None:
            # (first: a face found someone else's gets its own track)
            self.recogniser.recognise(faces)
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
        self.emitter.emit_due(frames, faces)

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
        self.emitter.ended(frame.camera, ended, frame.ts)

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
            self.emitter.ended(frame.camera, ended, frame.ts)

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
            self.emitter.ended(camera, tracker.expire(seen_until, stopping), time.time())

    # -- the gallery ----------------------------------------------------------------------

    def gallery_changed(self) -> bool:
        """Whether the gallery file was written, created, replaced or deleted since it was
        last read (``facewatch enroll``, ``gallery remove``...)."""
        return self.live_gallery.changed()

    def reload_gallery(self) -> None:
        """Re-read the gallery file (at start, when it changed, at SIGHUP); on failure the old
        one stays in use (and the same file is not tried again)."""
        self.live_gallery.reload()

    def close_gallery(self) -> None:
        """Close the gallery file, on the thread that opened it (SQLite's rule), when the
        engines stop (left open, Python 3.13 warned "unclosed database" at exit)."""
        self.live_gallery.close()


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
