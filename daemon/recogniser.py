"""The pipeline's recognition (``daemon.scheduler.Pipeline``): the faces of a batch that need
it, large and frontal enough (``recognition.min_face_px``, ``max_turn``), embedded in one
FaceNet call and matched against the gallery, each at its camera's threshold; their votes go
to their tracks, and a face that came back after a gap as someone else starts its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from daemon import metrics
from daemon.config import Config
from daemon.event_emitter import EventEmitter
from daemon.face_quality import frontal_offset
from daemon.gallery_live import LiveGallery
from daemon.tracking import Tracker
from daemon.tracks import TrackedFace
from engines.facenet import FaceNet


class Recogniser:
    """Names the faces of each batch. Owned by the scheduler thread."""

    def __init__(
        self,
        config: Config,
        facenet: FaceNet | None,
        trackers: Mapping[str, Tracker],
        gallery: LiveGallery,
        emitter: EventEmitter,
        thresholds: Mapping[str, float | None],
    ) -> None:
        """``gallery``: the one in use, as it is re-read; ``emitter``: where the events of a
        track that ends (its face was someone else's) go; ``thresholds``: each camera's own
        (None: the gallery's)."""
        self.config, self.facenet, self.trackers = config, facenet, trackers
        self._gallery, self._emitter, self._threshold = gallery, emitter, thresholds
        self._min_face_px = {c.name: config.min_face_px(c) for c in config.cameras}

    def recognise(self, faces: list[TrackedFace]) -> None:
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
            gallery = self._gallery.gallery
            if gallery is not None:  # each at its camera's threshold, where it has one
                defaults = [self._threshold[f.frame.camera] for f in wanted]
                matches = gallery.match(embeddings, defaults=defaults)
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
        self,
        face: TrackedFace,
        faces: list[TrackedFace],
        embedding: np.ndarray,
        named: str | None,
    ) -> None:
        """A face of a track that came back after a gap (``Tracker.replaced``; ``named``: the
        gallery's match): when it and the next are someone else's, the track's faces of the
        batch since the first go to a new track (the track it had then ends here, ``left``)."""
        gallery, camera = self._gallery.gallery, face.frame.camera
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
            self._emitter.ended(camera, ended, face.frame.ts)

    def _large_enough(self, face: TrackedFace) -> bool:
        """Whether the face is large enough to recognise (``recognition.min_face_px``): a
        smaller one is not matched and casts no vote (a tiny face, or a hand or the back of a
        head found as one, was matched to whoever lay nearest), counted when it is not."""
        x1, y1, x2, y2 = face.own()[0]
        if min(x2 - x1, y2 - y1) >= self._min_face_px[face.frame.camera]:
            return True
        metrics.FACES_TOO_SMALL.labels(face.frame.camera).inc()
        return False

    def _frontal_enough(self, face: TrackedFace) -> bool:
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
