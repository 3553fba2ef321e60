"""The pipeline's events on their way out (``daemon.scheduler.Pipeline``): each track event
numbered and sent with its face's snapshot, the state after them (who each camera sees,
where each enrolled person is), and the archive's visits ended with their tracks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from daemon.archive import FaceArchive
from daemon.camera_frames import Frame
from daemon.config import Config
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
from daemon.tracking import Tracker
from daemon.tracks import TrackedFace, TrackEvent


class EventEmitter:
    """Sends every camera's events to the sinks, in order. Owned by the scheduler thread."""

    def __init__(
        self,
        config: Config,
        sinks: EventSinks,
        trackers: Mapping[str, Tracker],
        archive: FaceArchive | None,
        model_id: str | None,
    ) -> None:
        self.config, self.sinks, self.trackers = config, sinks, trackers
        self.archive, self.model_id = archive, model_id
        self.enrolled: set[str] = set()  # the gallery's names: their person state is sent
        self._seq = 0
        # (camera, track id) -> the latest face of a track not yet confirmed, for the snapshot
        # of a confirmed sent as it leaves (with tracking.snapshots)
        self._undecided_face: dict[tuple[str, int], np.ndarray] = {}
        self._state_ts: dict[str, float] = {}  # camera -> ts of its latest in-view state

    def emit_due(self, frames: list[Frame], faces: list[TrackedFace]) -> None:
        """The events due after ``frames`` (their faces: ``faces``), frame by frame."""
        by_frame: dict[int, dict[int, TrackedFace]] = {}  # frame -> track -> its face there
        for face in faces:
            by_frame.setdefault(id(face.frame), {})[id(face.track)] = face
        for frame in frames:
            seen = by_frame.get(id(frame), {})
            events = self.trackers[frame.camera].decide([face.track for face in seen.values()])
            for event in events:
                self.emit(event, frame.camera, frame.ts, seen[id(event.track)])
            self.changed(frame.camera, events, frame.ts)
            if self.config.tracking.snapshots:
                self._keep_undecided(seen.values())

    def _keep_undecided(self, faces: Iterable[TrackedFace]) -> None:
        """The face of each track not confirmed yet, as its latest frame shows it: its
        ``confirmed`` may come only as it leaves, with no frame to take a snapshot from."""
        for face in faces:
            if not face.track.confirmed:
                crop = face_region(face.frame.image, face.own()[0], SNAPSHOT_PAD)
                key = (face.frame.camera, face.track.track_id)
                self._undecided_face[key] = crop.copy()  # not a view: frees the frame

    def ended(self, camera: str, events: list[TrackEvent], ts: float) -> None:
        """The events of ``camera``'s tracks that ended (``left``, each at its last
        sighting), the state after them at ``ts``, and their archive visits."""
        for event in events:
            self.emit(event, camera, event.track.last_seen_ts)
        self.changed(camera, events, ts)
        live = {t.track_id for t in self.trackers[camera].tracks}
        for key in [k for k in self._undecided_face if k[0] == camera and k[1] not in live]:
            del self._undecided_face[key]  # a track gone unannounced (too brief)
        if self.archive is not None:
            self.archive.visits_ended(camera, events, live)

    def changed(self, camera: str, events: list[TrackEvent], ts: float) -> None:
        """The state after ``camera``'s events: who it sees, where the people they name are."""
        if not events:
            return
        # ``ts``: a frame's time, or the clock's at an expiry (later than frames still in
        # the pipeline): never earlier than the camera's previous state's
        ts = self._state_ts[camera] = max(ts, self._state_ts.get(camera, ts))
        self.sinks.in_view(camera, in_view_json(camera, self.trackers[camera].in_view(), ts))
        named = {name for e in events for name in (e.identity, e.previous) if name is not None}
        for name in sorted(named & self.enrolled):
            self.sinks.person(name, person_json(name, self.cameras_seeing(name)))

    def people(self, names: list[str]) -> None:
        """Every enrolled person's state (``names``: the gallery's), as a new gallery is read."""
        self.sinks.people({n: person_json(n, self.cameras_seeing(n)) for n in names})

    def cameras_seeing(self, name: str) -> list[str]:
        return sorted(c for c, tracker in self.trackers.items() if name in tracker.in_view())

    def emit(
        self,
        event: TrackEvent,
        camera: str,
        frame_ts: float,
        face: TrackedFace | None = None,
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

    def _snapshot(self, event: TrackEvent, camera: str, face: TrackedFace | None) -> bytes | None:
        """The event's face: in its frame; for a ``confirmed`` sent as the track leaves,
        its latest face (kept while it was undecided); none for ``left`` and ``reason:
        gallery``."""
        undecided = self._undecided_face.pop((camera, event.track.track_id), None)
        if face is not None:
            return face_snapshot(face.frame.image, face.own()[0])
        if event.kind == "confirmed" and undecided is not None:
            return to_jpeg(undecided, SNAPSHOT_SIZE)
        return None
