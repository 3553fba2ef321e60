"""The face archive (``archive`` in the config): the faces of each visit, kept on disk.

A visit is one confirmed track, from its first frame to its ``left``. While it lasts, its
best images stay in memory: at most ``per_visit``, taken at least ``min_gap_s`` apart, the
best being large, frontal and sharp (``face_quality``). Once it has left, a writer thread
puts them in one folder::

    DIR/YYYY-MM-DD/CAMERA/HHMMSS-tTRACK-WHO/face-1.jpg ... visit.json

(the local date and time of its first frame; WHO is ``unknown`` or the person's key). Each
image is the face with half its size of context around it, so ``facewatch enroll --name
NAME FOLDER`` finds the face again. Only visits of unknown faces are kept by default
(``which``). Folders and files are owner-only. The oldest visits are deleted when the
archive grows past ``max_mb`` or they are older than ``keep_days``. A visit still open when
the daemon dies is lost; one that cannot be written is counted
(``facewatch_archive_failures_total``) and logged, never a reason to stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from daemon import metrics
from daemon.config import ArchiveConfig
from daemon.events import face_region, person_key, to_jpeg
from daemon.recognition import DEFAULT_MIN_SHARPNESS, sharpness
from daemon.tracking import Track, TrackEvent

logger = logging.getLogger(__name__)

CONTEXT = 0.5  # of the face's size, on every side of its box
MAX_SIDE = 400  # px, the long side of an archived image
FULL_SIZE_PX = 112  # a face this wide or wider scores full marks for size
QUEUE_VISITS = 64  # visits waiting for the writer; more are dropped (and counted)
PRUNE_EVERY_S = 60.0  # keep_days is checked this often when nothing is written
WARN_EVERY_S = 60.0
VISIT_FILE = "visit.json"


def face_quality(image: np.ndarray, bbox_xyxy: np.ndarray, landmarks: np.ndarray) -> float:
    """How good an image of a face is to look at and to enroll from, in (0, 1]: larger (up
    to FULL_SIZE_PX wide), more frontal (the nose halfway between the eyes, along the line
    through them) and sharper (the enrollment blur score) score higher."""
    width = float(bbox_xyxy[2] - bbox_xyxy[0])
    size = min(1.0, max(width, 1.0) / FULL_SIZE_PX)
    left_eye, right_eye, nose = np.asarray(landmarks[:3], dtype=np.float64)
    axis = right_eye - left_eye
    half = max(float(np.linalg.norm(axis)) / 2, 1e-6)
    offset = float(np.dot(nose - (left_eye + right_eye) / 2, axis / (2 * half))) / half
    frontal = 1.0 - min(1.0, abs(offset))
    face = face_region(image, bbox_xyxy, 0.0)
    sharp = 0.0
    if face.size:
        sharp = min(1.0, sharpness(cv2.resize(face, (160, 160))) / (2 * DEFAULT_MIN_SHARPNESS))
    return size * (0.2 + 0.8 * frontal) * (0.2 + 0.8 * sharp)


@dataclass
class _Image:
    quality: float
    ts: float
    jpeg: bytes
    bbox_xyxy: list[float]
    score: float


@dataclass
class _Visit:
    camera: str
    track_id: int
    first_seen: float
    last_taken: float = -np.inf
    images: list[_Image] = field(default_factory=list)
    ended: dict[str, Any] = field(default_factory=dict)  # set at `left`: who, when, why


def _local_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


class FaceArchive:
    """``observe``, ``visits_ended``: the scheduler thread; the files: the writer thread."""

    def __init__(self, config: ArchiveConfig, node: str, model_id: str | None) -> None:
        if config.dir is None:
            raise ValueError("archive.dir is not set")
        self.config, self.node, self.model_id = config, node, model_id
        self.root = Path(config.dir)
        self._open: dict[tuple[str, int], _Visit] = {}
        self._queue: queue.Queue[_Visit | None] = queue.Queue(QUEUE_VISITS)
        self._thread = threading.Thread(target=self._write_loop, name="face-archive", daemon=True)
        self._index: list[tuple[float, Path, int]] = []  # (mtime, folder, bytes), oldest first
        self._bytes = 0
        self._warned: dict[int, float] = {}

    @staticmethod
    def prepare(root: str) -> None:
        """Create the archive's folder (owner-only) and check it can be written; OSError."""
        path = Path(root)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = path / f".probe-{uuid.uuid4().hex}"
        probe.mkdir(mode=0o700)
        probe.rmdir()

    # -- the scheduler thread -------------------------------------------------------------

    def observe(
        self, camera: str, track: Track, image: np.ndarray, score: float, ts: float
    ) -> None:
        """A frame of ``track``'s face (its box and landmarks as just updated): kept when it
        is one of the visit's best so far and at least ``min_gap_s`` after the last one."""
        key = (camera, track.track_id)
        visit = self._open.get(key)
        if visit is None:
            visit = self._open[key] = _Visit(camera, track.track_id, track.first_seen)
        if ts - visit.last_taken < self.config.min_gap_s:
            return
        visit.last_taken = ts
        quality = face_quality(image, track.bbox_xyxy, track.landmarks)
        full = len(visit.images) >= self.config.per_visit
        worst = min(range(len(visit.images)), key=lambda k: visit.images[k].quality, default=0)
        if full and quality <= visit.images[worst].quality:
            return
        jpeg = to_jpeg(face_region(image, track.bbox_xyxy, CONTEXT), MAX_SIDE)
        if not jpeg:
            return
        box = np.round(np.asarray(track.bbox_xyxy, dtype=np.float64), 1).tolist()
        taken = _Image(round(quality, 4), ts, jpeg, box, round(float(score), 4))
        if full:
            visit.images[worst] = taken
        else:
            visit.images.append(taken)

    def visits_ended(self, camera: str, events: list[TrackEvent], live: set[int]) -> None:
        """After ``camera``'s tracks expired: the visits that left go to the writer (the
        ones ``which`` keeps); those of tracks gone unconfirmed are dropped."""
        for event in events:
            if event.kind != "left":
                continue
            visit = self._open.pop((camera, event.track.track_id), None)
            if visit is None or not visit.images:
                continue
            if self.config.which == "unknown" and event.identity is not None:
                continue
            visit.ended = {
                "identity": event.identity,
                "distance": None if event.distance is None else round(event.distance, 4),
                "confidence": round(float(event.confidence), 4),
                "last_seen": event.track.last_seen,
                "reason": event.reason,
            }
            try:
                self._queue.put_nowait(visit)
            except queue.Full:
                metrics.ARCHIVE_FAILURES.labels("behind").inc()
                self._warn(logging.WARNING, "face archive: the disk is too slow; visits dropped")
        for key in [k for k in self._open if k[0] == camera and k[1] not in live]:
            del self._open[key]

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Write the visits waiting (within ``timeout_s``), then end the writer."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            logger.warning("face archive: %d visit(s) not written in time", self._queue.qsize())

    # -- the writer thread ----------------------------------------------------------------

    def _write_loop(self) -> None:
        self._scan()
        self._prune()
        while True:
            try:
                visit = self._queue.get(timeout=PRUNE_EVERY_S)
            except queue.Empty:
                self._prune()
                continue
            if visit is None:
                return
            try:
                self._write(visit)
            except OSError as exc:
                metrics.ARCHIVE_FAILURES.labels("error").inc()
                self._warn(
                    logging.ERROR, f"face archive: a visit not written to {self.root}: {exc}"
                )
            self._prune()

    def _write(self, visit: _Visit) -> None:
        """The visit's folder, written aside and renamed into place (never half there)."""
        start = time.localtime(visit.first_seen)
        who = visit.ended["identity"]
        name = f"{time.strftime('%H%M%S', start)}-t{visit.track_id}-"
        name += person_key(who) if who is not None else "unknown"
        parent = self.root / time.strftime("%Y-%m-%d", start) / visit.camera
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # also when deleted meanwhile
        for folder in (parent.parent, parent):
            folder.mkdir(mode=0o700, exist_ok=True)
        final, n = parent / name, 1
        while final.exists():
            n += 1
            final = parent / f"{name}-{n}"
        scratch = self.root / f".tmp-{uuid.uuid4().hex}"
        scratch.mkdir(mode=0o700)
        try:
            size = self._fill(scratch, visit)
            scratch.rename(final)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self._index.append((final.stat().st_mtime, final, size))
        self._bytes += size
        metrics.ARCHIVE_VISITS.labels(visit.camera).inc()

    def _fill(self, folder: Path, visit: _Visit) -> int:
        images = sorted(visit.images, key=lambda image: image.ts)
        described = []
        for k, image in enumerate(images, 1):
            described.append(
                {
                    "file": f"face-{k}.jpg",
                    "ts": round(image.ts, 3),
                    "bbox_xyxy": image.bbox_xyxy,
                    "score": image.score,
                    "quality": image.quality,
                }
            )
            _write_private(folder / f"face-{k}.jpg", image.jpeg)
        ended = visit.ended
        about = {
            "node": self.node,
            "camera": visit.camera,
            "track_id": visit.track_id,
            "identity": ended["identity"],
            "distance": ended["distance"],
            "confidence": ended["confidence"],
            "reason": ended["reason"],
            "model_id": self.model_id,
            "first_seen": _local_iso(visit.first_seen),
            "last_seen": _local_iso(ended["last_seen"]),
            "first_seen_ts": round(visit.first_seen, 3),
            "last_seen_ts": round(ended["last_seen"], 3),
            "images": described,
        }
        text = json.dumps(about, indent=2, ensure_ascii=False) + "\n"
        _write_private(folder / VISIT_FILE, text.encode())
        return sum(len(image.jpeg) for image in images) + len(text.encode())

    def _scan(self) -> None:
        """The visits already on disk (a previous run's), and leftovers of a write cut
        short."""
        for leftover in self.root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for visit in self.root.glob("*/*/*"):
            if not visit.is_dir() or any(p.startswith(".") for p in visit.parts[-3:]):
                continue
            try:
                size = sum(f.stat().st_size for f in visit.iterdir() if f.is_file())
                self._index.append((visit.stat().st_mtime, visit, size))
            except OSError:
                continue
        self._index.sort(key=lambda entry: entry[0])
        self._bytes = sum(entry[2] for entry in self._index)

    def _prune(self) -> None:
        """Delete the oldest visits while the archive is too large or they are too old."""
        max_bytes = self.config.max_mb * 1e6
        oldest_s = time.time() - self.config.keep_days * 86400
        while self._index and (self._bytes > max_bytes or self._index[0][0] < oldest_s):
            _, folder, size = self._index.pop(0)
            shutil.rmtree(folder, ignore_errors=True)
            self._bytes -= size
            for parent in (folder.parent, folder.parent.parent):  # camera, then date
                try:
                    parent.rmdir()  # only when empty
                except OSError:
                    break
        metrics.ARCHIVE_BYTES.set(self._bytes)

    def _warn(self, level: int, message: str) -> None:
        """Log ``message``, at most once a WARN_EVERY_S per level (a full disk would flood)."""
        now = time.monotonic()
        if now - self._warned.get(level, -np.inf) >= WARN_EVERY_S:
            self._warned[level] = now
            logger.log(level, message)


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
