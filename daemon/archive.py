"""The face archive (``archive`` in the config): the faces of each visit, kept on disk.

A visit is one confirmed track, from its first frame to its ``left``. While it lasts, its
best images stay in memory: the best of each ``min_gap_s`` stretch of the visit, and of
those the ``per_visit`` best (large, frontal, sharp, and likely to pass enroll's gates:
``rate_face``). Once it has left, a writer thread puts them in one folder::

    DIR/YYYY-MM-DD/CAMERA/HHMMSS-tTRACK-WHO/face-1.jpg ... visit.json

(the local date and time of its first frame; WHO is ``unknown`` or the person's key). Each
image is the face with half its size of context around it; visit.json says where the face
is in it, so ``facewatch enroll --name NAME FOLDER`` takes that face. By default
(``which: unknown``) only the visits none of whose events named anyone are kept. The daemon
owns the folder: it deletes the oldest visits (folders of that shape holding a visit.json,
nothing else) when they take more than ``max_mb`` of disk or started more than
``keep_days`` ago. While it runs it holds the folder's ``archive.lock`` file: a second daemon given
the same folder is refused at start (its limits would delete this one's visits). A visit
still open when the daemon dies is lost; one that cannot be written is counted
(``facewatch_archive_failures_total``) and logged, never a reason to stop.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, NamedTuple, ParamSpec, TypeAlias

import cv2
import numpy as np

from daemon import metrics
from daemon.archive_writer import PRUNE_EVERY_S, WRITE_STEP, ArchiveWriter, _Image, _Visit
from daemon.config_outputs import ArchiveConfig
from daemon.events import region_xyxy, to_jpeg
from daemon.face_quality import Aligner, FaceRating, rate_face, reference_crop
from daemon.tracks import Track, TrackEvent

logger = logging.getLogger(__name__)
_P = ParamSpec("_P")
_Method: TypeAlias = "Callable[Concatenate[FaceArchive, _P], None]"

CONTEXT = 0.5  # of the face's size, on every side of its box
MAX_SIDE = 400  # px, the long side of an archived image
QUEUE_BYTES = 64_000_000  # images of the visits waiting for the writer; beyond: dropped


class _Written(NamedTuple):
    jpeg: bytes
    face_xyxy: np.ndarray  # in the JPEG
    rating: FaceRating  # on the JPEG, as enroll reads it


def _contained(what: str) -> Callable[[_Method[_P]], _Method[_P]]:
    """For the methods the scheduler thread calls: a failure (a bug) is counted and logged
    as ``what``, never raised into the thread that runs the engines."""

    def wrap(method: _Method[_P]) -> _Method[_P]:
        @functools.wraps(method)
        def run(self: FaceArchive, *args: _P.args, **kwargs: _P.kwargs) -> None:
            try:
                method(self, *args, **kwargs)
            except Exception as exc:
                self._failed(what, repr(exc), "internal")

        return run

    return wrap


class FaceArchive(ArchiveWriter):
    """``observe``, ``visits_ended``: the scheduler thread; the files: the writer thread."""

    def __init__(
        self,
        config: ArchiveConfig,
        node: str,
        model_id: str | None,
        align: Aligner = reference_crop,
    ) -> None:
        """``align``: the crop of the daemon's FaceNet (``FaceNet.align_face``), on which
        enroll will check a face for blur."""
        if config.dir is None:
            raise ValueError("archive.dir is not set")
        self.config, self.node, self.model_id = config, node, model_id
        self.align = align
        self.root = Path(config.dir)
        self._open: dict[tuple[str, int], _Visit] = {}
        self._queue: queue.Queue[_Visit | None] = queue.Queue()
        self._queued_bytes = self._queued_visits = 0  # the visits in the queue, their images
        self._queue_lock = threading.Lock()
        self._finishing = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="face-archive", daemon=True)
        # the visits on disk, as (start, folder, bytes on disk), oldest first: the writer's
        self._index: list[tuple[float, Path, int]] = []
        # the visits this run wrote: their start on the monotonic clock, by which they are aged
        # (a wall clock stepped at boot, set right only after some were written, made those
        # years old or from the future)
        self._opened: dict[Path, float] = {}
        self._bytes = 0
        self._refreshed = time.monotonic()  # when visits deleted by hand were last looked for
        self._warned: dict[str, float] = {}
        self._failing: dict[str, int] = {}  # the writer's steps failing now: how many times
        self._pruned = {"size": 0, "age": 0}  # deleted since the last log line about it

    @staticmethod
    def prepare(root: str) -> None:
        """Create the archive's folder (owner-only) and check it can be written; OSError."""
        path = Path(root)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            path.chmod(0o700)  # also one that was there already
        except PermissionError:  # another user's folder that this one may write to
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                logger.warning(
                    "archive.dir %s belongs to another user and others may read it (mode "
                    "%03o): faces are personal data; give the daemon a folder of its own",
                    path,
                    mode,
                )
        probe = path / f".probe-{uuid.uuid4().hex}"
        probe.mkdir(mode=0o700)
        probe.rmdir()

    # -- the scheduler thread -------------------------------------------------------------

    @_contained("a face not archived")
    def observe(
        self,
        camera: str,
        track: Track,
        image: np.ndarray,
        face: tuple[np.ndarray, np.ndarray, float],
        ts: float,
    ) -> None:
        """``track``'s face in a frame taken at ``ts``: ``face`` is its (box, landmarks,
        detector score) in ``image``. The visit keeps the best image of each ``min_gap_s``
        stretch of it, and of those the ``per_visit`` best."""
        key = (camera, track.track_id)
        if self.config.which == "unknown" and track.announced:
            self._open.pop(key, None)  # a visit with a name is not kept: nor its images
            return
        visit = self._open.get(key)
        if visit is None:
            frame_hw = (image.shape[0], image.shape[1])
            visit = self._open[key] = _Visit(camera, track.track_id, track.first_seen_ts, frame_hw)
        box, landmarks, score = face
        gap = self.config.min_gap_s
        window = (ts - visit.first_seen) // gap if gap > 0 else ts
        replaced = self._replaced(visit, window)
        # a face that may replace one is rated on the frame first (cheap), to pass over most;
        # a face that may be kept is rated on its JPEG, as enroll will read it (compressed,
        # scaled down when large): on the frame, faces enroll refused as too blurry were
        # called enrollable
        if replaced is not None:
            rating = rate_face(image, box, landmarks, score, self.align)
            if not self._better(visit, replaced, rating):
                return
        written = self._written(image, box, landmarks, score)
        if written is None or not self._better(visit, replaced, written.rating):
            return
        if replaced is not None:
            del visit.images[replaced]
        visit.images.append(  # the latest: time order holds
            _Image(
                quality=round(written.rating.quality, 4),
                ts=ts,
                window=window,
                jpeg=written.jpeg,
                bbox_xyxy=np.round(np.asarray(box, dtype=np.float64), 1).tolist(),
                face_xyxy=np.round(written.face_xyxy, 1).tolist(),
                score=round(float(score), 4),
                enrollable=written.rating.enrollable,
            )
        )

    def _replaced(self, visit: _Visit, window: float) -> int | None:
        """Which of the visit's images a better one taken in ``window`` replaces (None: it
        is added): one image per window, and at most ``per_visit``, the worst going."""
        images = visit.images
        if images and images[-1].window == window:
            return len(images) - 1
        if len(images) >= self.config.per_visit:
            return min(range(len(images)), key=lambda k: images[k].quality)
        return None

    @staticmethod
    def _better(visit: _Visit, replaced: int | None, rating: FaceRating) -> bool:
        return replaced is None or rating.quality > visit.images[replaced].quality

    def _written(
        self, image: np.ndarray, box: np.ndarray, landmarks: np.ndarray, score: float
    ) -> _Written | None:
        """The face with its context as the JPEG to write, rated on that JPEG decoded (None:
        nothing to write)."""
        left, top, right, bottom = region_xyxy(image.shape[:2], box, CONTEXT)
        crop = image[top:bottom, left:right]
        jpeg = to_jpeg(crop, MAX_SIDE)
        if not jpeg:
            return None
        scale = min(1.0, MAX_SIDE / max(crop.shape[:2]))
        origin = np.array([left, top], dtype=np.float64)
        face_xyxy = (np.asarray(box, dtype=np.float64) - np.tile(origin, 2)) * scale
        marks = (np.asarray(landmarks, dtype=np.float64) - origin) * scale
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            return None
        return _Written(jpeg, face_xyxy, rate_face(decoded, face_xyxy, marks, score, self.align))

    @_contained("visits not archived")
    def visits_ended(self, camera: str, events: list[TrackEvent], live: set[int]) -> None:
        """After ``camera``'s tracks expired: the visits that left go to the writer (the
        ones ``which`` keeps); those of tracks gone unconfirmed are dropped."""
        for event in events:
            if event.kind != "left":
                continue
            visit = self._open.pop((camera, event.track.track_id), None)
            if visit is None or not visit.images:
                continue
            named = sorted(event.track.announced)
            if self.config.which == "unknown" and named:
                continue
            visit.ended = {
                "identity": event.identity,
                "named": named,
                "distance": None if event.distance is None else round(event.distance, 4),
                "confidence": round(float(event.confidence), 4),
                "last_seen": event.track.last_seen_ts,
                "reason": event.reason,
            }
            self._enqueue(visit)
        for key in [k for k in self._open if k[0] == camera and k[1] not in live]:
            del self._open[key]

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def _enqueue(self, visit: _Visit) -> None:
        size = sum(len(image.jpeg) for image in visit.images)
        with self._queue_lock:
            late = self._finishing.is_set()
            full = self._queued_bytes + size > QUEUE_BYTES
            if not (late or full):
                self._queued_bytes += size
                self._queued_visits += 1
                self._queue.put(visit)
                return
        metrics.ARCHIVE_FAILURES.labels("behind").inc()
        why = "ended after the stop began" if late else "waiting already: the disk is too slow"
        self._warn(why, logging.WARNING, f"face archive: visits dropped: {why}")

    def _dequeue(self, timeout_s: float) -> _Visit | None:
        """The next visit; None once ``finish`` was called and the visits before are written;
        queue.Empty after ``timeout_s`` without any."""
        visit = self._queue.get(timeout=timeout_s)
        if visit is not None:
            with self._queue_lock:
                self._queued_bytes -= sum(len(image.jpeg) for image in visit.images)
                self._queued_visits -= 1
        return visit

    def finish(self) -> None:
        """No more visits: the writer ends once it has written those waiting."""
        with self._queue_lock:
            self._finishing.set()
            self._queue.put(None)  # the queue has no bound: this never waits

    def join(self, timeout_s: float) -> bool:
        """Wait for the writer, after ``finish``; whether it ended."""
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            logger.warning("face archive: %d visit(s) not written in time", self._queued_visits)
            return False
        return True

    def stop(self, timeout_s: float) -> None:
        """``finish``, then ``join`` for at most ``timeout_s``."""
        self.finish()
        self.join(timeout_s)

    # -- the writer thread ----------------------------------------------------------------

    def _write_loop(self) -> None:
        self._guarded("cannot read", self._scan)
        self._guarded("cannot delete old visits in", self._prune)
        while True:
            try:
                visit = self._dequeue(PRUNE_EVERY_S)
            except queue.Empty:
                self._guarded("cannot delete old visits in", self._prune)
                continue
            if visit is None:
                return
            self._guarded(WRITE_STEP, self._write, visit)
            self._guarded("cannot delete old visits in", self._prune)
