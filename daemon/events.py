"""Identity events: their JSON form (schema: daemon/event.schema.json) and where they go.

``EventSinks.emit`` writes each event to the MQTT spool (when MQTT is on), stdout and a
JSON-lines file (when asked). ``published_ts`` is the time the event left the daemon:
set by the MQTT publisher at sending, and by the other sinks at writing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

import cv2
import numpy as np

from daemon import metrics
from daemon.journal import Outage
from daemon.spool import Spool
from daemon.tracks import TrackEvent

logger = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("event.schema.json")
SNAPSHOT_SIZE = 160
SNAPSHOT_PAD = 0.25  # the context around the face in a snapshot, of its size


def _write_line(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def _floats(values: np.ndarray, digits: int = 1) -> list[Any]:
    rounded: list[Any] = np.round(np.asarray(values, dtype=np.float64), digits).tolist()
    return rounded


def event_json(
    event: TrackEvent,
    node: str,
    camera: str,
    frame_ts: float,
    model_id: str | None,
    seq: int,
    where: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The event as published (without ``published_ts``, which is set on sending). ``where``:
    the face's box and landmarks in the frame of ``frame_ts`` (default: the track's latest)."""
    track = event.track
    bbox_xyxy, landmarks = where if where is not None else (track.bbox_xyxy, track.landmarks)
    return {
        "event_id": uuid.uuid4().hex,
        "seq": seq,
        "type": event.kind,
        "node": node,
        "camera": camera,
        "track_id": track.track_id,
        "identity": event.identity,
        "previous_identity": event.previous,
        "reason": event.reason,
        "distance": None if event.distance is None else round(event.distance, 4),
        "confidence": round(float(event.confidence), 4),
        "bbox_xyxy": _floats(bbox_xyxy),
        "landmarks": _floats(landmarks),
        "first_seen_ts": round(track.first_seen_ts, 3),
        "frame_ts": round(frame_ts, 3),
        "model": model_id,
    }


def in_view_json(camera: str, identities: list[str | None], ts: float) -> dict[str, Any]:
    """Who a camera sees now (retained on ``cameras/CAMERA/faces``): its confirmed faces,
    the names among them and how many are unknown, as of ``ts``."""
    return {
        "camera": camera,
        "faces": len(identities),
        "people": sorted({name for name in identities if name is not None}),
        "unknown": sum(name is None for name in identities),
        "ts": round(ts, 3),
    }


def person_key(name: str) -> str:
    """A person's name as one level of an MQTT topic and a Home Assistant object id: its
    letters and digits in ASCII, then a hash of the whole name (``Zoë`` and ``Zoe`` are two
    people; ``张伟`` has no ASCII letters)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower())[:40].strip("_")
    # of the name in NFC, trimmed (how the gallery compared names before it collapsed inner
    # spaces too): a name stored before that keeps its key, its topic and its Home Assistant
    # entity, and an older gallery's 'Ada Lovelace' and 'Ada\xa0Lovelace' keep two keys
    digest = hashlib.sha256(unicodedata.normalize("NFC", name).strip().encode()).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else digest


def person_json(name: str, cameras: list[str]) -> dict[str, Any]:
    """Where an enrolled person is in view now (retained on ``people/KEY``); no time, so an
    unchanged state is not sent again (the events have the times)."""
    return {"name": name, "cameras": cameras}


def region_xyxy(
    image_hw: tuple[int, ...], bbox_xyxy: np.ndarray, pad: float
) -> tuple[int, int, int, int]:
    """The face box grown by ``pad`` of its longer side on every side, within the image, as
    whole pixels (left, top, right, bottom); empty (right <= left) for a box outside it."""
    x0, y0, x1, y1 = np.asarray(bbox_xyxy, dtype=np.float64)
    grow = pad * max(x1 - x0, y1 - y0)
    height, width = image_hw[:2]
    left, top = int(min(max(0, x0 - grow), width)), int(min(max(0, y0 - grow), height))
    right, bottom = int(max(min(width, x1 + grow), 0)), int(max(min(height, y1 + grow), 0))
    return left, top, right, bottom


def face_region(image: np.ndarray, bbox_xyxy: np.ndarray, pad: float) -> np.ndarray:
    """The pixels of ``region_xyxy`` (a view, possibly empty)."""
    left, top, right, bottom = region_xyxy(image.shape, bbox_xyxy, pad)
    return image[top:bottom, left:right]


def to_jpeg(crop: np.ndarray, max_side: int) -> bytes:
    """``crop`` as a JPEG, scaled down to at most ``max_side`` px on its long side; b"" for
    an empty crop."""
    if crop.size == 0:
        return b""
    scale = max_side / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return jpeg.tobytes() if ok else b""


def face_snapshot(image: np.ndarray, bbox_xyxy: np.ndarray) -> bytes:
    """A JPEG of the face with some context, at most SNAPSHOT_SIZE px on its long side."""
    return to_jpeg(face_region(image, bbox_xyxy, SNAPSHOT_PAD), SNAPSHOT_SIZE)


def _as_it_left(event: dict[str, Any]) -> bool:
    """Whether ``event`` is a ``confirmed`` sent as its track leaves, undecided (``reason``
    lost, cut or stopped): often no face at all (the top of a head, a dark background, a
    second box on a face). Its own snapshot goes with it, but it does not replace the
    camera's last face, the picture of the docs' stranger notification."""
    return event["type"] == "confirmed" and event.get("reason") is not None


class RetainedState(Protocol):
    """Where the current state goes, the latest value of each only (the MQTT publisher)."""

    def set_in_view(self, camera: str, state: dict[str, Any]) -> None: ...
    def set_last_snapshot(self, camera: str, jpeg: bytes) -> None: ...
    def set_person_snapshot(self, name: str, jpeg: bytes) -> None: ...
    def set_people(self, states: dict[str, dict[str, Any]]) -> None: ...
    def set_person(self, name: str, state: dict[str, Any]) -> None: ...


def open_jsonl(path: Path) -> TextIO:
    """The JSON-lines file, for appending. Made owner-only (0600, new folders 0700): it says
    who was where and when. A last line cut short (a power cut mid-write) is ended first,
    so it does not swallow the next event."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size:
            with path.open("rb") as existing:
                existing.seek(size - 1)
                torn = existing.read(1) != b"\n"
            if torn:
                os.write(fd, b"\n")
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "a", encoding="utf-8")


class EventSinks:
    """Fan-out of events. Thread-safe; the scheduler thread is the only caller in practice."""

    def __init__(
        self,
        spool: Spool | None = None,
        topic_for: Callable[[str], str] | None = None,
        snapshot_topic_for: Callable[[str, str], str] | None = None,
        on_spooled: Callable[[], None] | None = None,
        state: RetainedState | None = None,
        stdout: bool = False,
        jsonl_file: str | None = None,
        direct: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        """``direct(topic, payload)``: sends a message at once, without the spool (False
        when it cannot): what reaches the broker while the spool's disk refuses them."""
        self.spool, self.topic_for, self.snapshot_topic_for = spool, topic_for, snapshot_topic_for
        self.direct = direct
        self.on_spooled = on_spooled or (lambda: None)
        self.state = state
        self._stdout: TextIO | None = sys.stdout if stdout else None
        self._file: TextIO | None = None
        self._jsonl_path = Path(jsonl_file) if jsonl_file else None
        if self._jsonl_path is not None:
            self._file = open_jsonl(self._jsonl_path)
        self._lock = threading.Lock()
        # outputs whose failure was logged, until they recover: since when, events lost there
        self._failing: dict[str, tuple[Outage, int]] = {}
        used = {
            "spool": spool is not None and topic_for is not None,
            "stdout": stdout,
            "jsonl_file": bool(jsonl_file),
        }
        for name in (n for n, on in used.items() if on):
            # at 0 from the start: a series born at its first failures is already at their
            # count, and increase() (FacewatchEventOutputFailing) does not see them
            metrics.EVENT_OUTPUT_FAILURES.labels(name)

    def emit(self, event: dict[str, Any], snapshot: bytes | None = None) -> None:
        """Hand ``event`` to every output. An output that fails (a full disk, a read-only
        one) loses it, counted and logged, and the others still get it: the daemon goes on."""
        metrics.EVENTS.labels(event["camera"], event["type"]).inc()
        with self._lock:
            if self.spool is not None and self.topic_for is not None:
                self._to_mqtt(self.spool, self.topic_for(event["camera"]), event, snapshot)
            streams = [
                (n, s)
                for n, s in (("stdout", self._stdout), ("jsonl_file", self._file))
                if s is not None
            ]
            if streams:  # (most daemons have none: MQTT only)
                stamped = dict(event, published_ts=round(time.time(), 3))
                line = json.dumps(stamped, separators=(",", ":"))
                for name, stream in streams:
                    self._guarded(name, _write_line, stream, line)

    def _to_mqtt(
        self, spool: Spool, topic: str, event: dict[str, Any], snapshot: bytes | None
    ) -> None:
        """The event, then its snapshot, into the spool; what the spool refuses (its disk
        full or failing) goes straight to the broker while connected (``direct``)."""
        spooled = self._guarded("spool", self._spool, spool, topic, event)
        if not spooled:
            stamped = dict(event, published_ts=round(time.time(), 3))
            self._send_direct(topic, json.dumps(stamped, separators=(",", ":")).encode())
        if snapshot and self.snapshot_topic_for is not None:
            snapshot_topic = self.snapshot_topic_for(event["camera"], event["event_id"])
            if not (spooled and self._spool_snapshot(spool, snapshot_topic, snapshot)):
                self._send_direct(snapshot_topic, snapshot)
            if self.state is not None and not _as_it_left(event):
                self.state.set_last_snapshot(event["camera"], snapshot)
                if event["identity"] is not None:  # this event's face: not the camera's last,
                    # which another face of the same frame may have replaced by now
                    self.state.set_person_snapshot(event["identity"], snapshot)
        metrics.SPOOL_EVENTS.set(len(spool))
        if spooled:
            self.on_spooled()

    def _spool(self, spool: Spool, topic: str, event: dict[str, Any]) -> None:
        payload = json.dumps(event, separators=(",", ":")).encode()
        dropped = spool.append(topic, payload, kind="event")
        if dropped:
            metrics.MQTT_PUBLISHES.labels("dropped").inc(dropped)

    @staticmethod
    def _spool_snapshot(spool: Spool, topic: str, snapshot: bytes) -> bool:
        """False when the spool refused it (the event itself got in: it is not sent twice)."""
        try:
            dropped = spool.append(topic, snapshot, kind="raw")
        except (OSError, sqlite3.Error):
            return False
        if dropped:
            metrics.MQTT_PUBLISHES.labels("dropped").inc(dropped)
        return True

    def _send_direct(self, topic: str, payload: bytes) -> None:
        """Straight to the broker while connected, not kept if the connection drops too."""
        if self.direct is not None:
            self.direct(topic, payload)

    def _guarded(self, name: str, write: Callable[..., None], *args: Any) -> bool:
        """``write(*args)``; False (counted) when it failed: logged at the outage's first
        event, then every REMIND_S with the events lost there since it began."""
        try:
            write(*args)
        except (OSError, sqlite3.Error) as exc:
            metrics.EVENT_OUTPUT_FAILURES.labels(name).inc()
            self._failed(name, exc)
            return False
        if self._failing.pop(name, None) is not None:
            logger.info("events: %s takes them again", self._output(name)[0])
        return True

    def _failed(self, name: str, exc: Exception) -> None:
        """Log an output's failure: its first of an outage, then a reminder every REMIND_S."""
        outage, lost = self._failing.get(name, (None, 0))
        self._failing[name] = (outage or Outage(), lost + 1)
        if outage is not None and not outage.due():
            return
        then = "they are lost there"
        if name == "spool" and self.direct is not None:
            then = "sent to the broker without it while connected (lost if not)"
        what, folder = self._output(name)
        check = f"; check the free space of {folder} (df -h) and that it can be written"
        if outage is None:
            said = f"cannot take them ({exc}): {then}"
        else:  # the events since it began, this one too
            since = f"{lost + 1} events since {outage.since()}"
            said = f"still cannot take them ({exc}): {since}, {then}"
        logger.error("events: %s %s%s", what, said, check if folder else "")

    def _output(self, name: str) -> tuple[str, Path | None]:
        """An output as the log names it (its file and key), and the folder it writes to."""
        if name == "spool" and self.spool is not None:
            return f"the spool {self.spool.path} (mqtt.spool_dir)", self.spool.folder
        if name == "jsonl_file" and self._jsonl_path is not None:
            path = self._jsonl_path
            return f"the events file {path} (events.jsonl_file)", path.parent
        return name, None

    def in_view(self, camera: str, state: dict[str, Any]) -> None:
        """Who ``camera`` sees now (``in_view_json``), after its events changed it."""
        if self.state is not None:
            self.state.set_in_view(camera, state)

    def people(self, states: dict[str, dict[str, Any]]) -> None:
        """Every enrolled person's presence (``person_json``), when the gallery is loaded."""
        if self.state is not None:
            self.state.set_people(states)

    def person(self, name: str, state: dict[str, Any]) -> None:
        """One person's presence (``person_json``), after events changed it."""
        if self.state is not None:
            self.state.set_person(name, state)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
