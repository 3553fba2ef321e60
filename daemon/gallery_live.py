"""The gallery the pipeline matches faces against (``daemon.scheduler.Pipeline``): re-read
when its file changes (``facewatch enroll``, ``gallery remove``...) or at SIGHUP, with the
faces in view named again by the new one at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from daemon import metrics
from daemon.config import Config
from daemon.event_emitter import EventEmitter
from daemon.gallery import Gallery
from daemon.gallery_file import GalleryBusy, GalleryError, file_stamp
from daemon.gallery_open import came_and_went, open_gallery, threshold_said
from daemon.tracking import Rematch, Tracker
from engines.facenet import FaceNet

# the pipeline's log lines, as they were before it was split (the log shows the name)
logger = logging.getLogger("daemon.scheduler")

# how long a reload waits for a writer's lock (enroll, a gallery command): on the thread that
# runs the engines, every camera waits with it; a gallery being written is tried again at
# the next check
GALLERY_LOCK_S = 0.2


class LiveGallery:
    """The pipeline's gallery (None: none yet, every face unknown). Owned by the scheduler
    thread, which opens it (SQLite connections are per thread)."""

    def __init__(
        self,
        config: Config,
        facenet: FaceNet | None,
        gallery: Gallery | None,
        trackers: Mapping[str, Tracker],
        emitter: EventEmitter,
        thresholds: Mapping[str, float | None],
    ) -> None:
        """``facenet``: None when nothing is recognised (no gallery is read); ``emitter``:
        where the events of the faces a new gallery names differently go; ``thresholds``:
        each camera's own (None: the gallery's)."""
        self.config, self.facenet, self.gallery = config, facenet, gallery
        self.trackers, self._emitter, self._threshold = trackers, emitter, thresholds
        self._gallery_read = False  # once read, a reload says who came and went
        self._gallery_stamp: tuple[int, ...] | None = None  # the file as last read
        self._gallery_busy = False  # the last reload found it being written (said once)

    def changed(self) -> bool:
        """Whether the gallery file was written, created, replaced or deleted since it was
        last read (``facewatch enroll``, ``gallery remove``...)."""
        if self.facenet is None:  # no recognition: no gallery is read
            return False
        return file_stamp(self.config.recognition.gallery) != self._gallery_stamp

    def reload(self) -> None:
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
                people += came_and_went(self._emitter.enrolled, set(names))
            logger.info("gallery %s: %d %s, %s", fresh.path, len(names), people, said)
        self._gallery_read = True
        for gone in self._emitter.enrolled - set(names):  # off /metrics too (once scraped, the
            metrics.forget_identity(
                gone, self.trackers
            )  # past stays in Prometheus until its retention)
        self._emitter.enrolled = set(names)
        self._rename_in_view(fresh)
        self._emitter.people(names)

    def close(self) -> None:
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
                self._emitter.emit(event, camera, event.track.last_frame_ts)
            self._emitter.changed(camera, events, time.time())

    def _rematch(self, gallery: Gallery | None, camera: str) -> Rematch | None:
        """``gallery``'s matching at ``camera``'s threshold (its own, else the default)."""
        if gallery is None:
            return None
        threshold = self._threshold[camera]
        return lambda embeddings: gallery.match(embeddings, defaults=[threshold] * len(embeddings))
