"""The face archive's writer thread (``FaceArchive``'s, daemon/archive.py): each visit that
ended written to its folder, aside and then renamed into place; the oldest visits deleted
beyond ``keep_days`` and ``max_mb``; a step that fails counted and logged, and its return said.
With the visits as the scheduler thread hands them over (``_Visit``, its images ``_Image``).
"""

from __future__ import annotations

import bisect
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from daemon import metrics
from daemon.archive_files import (
    VISIT_FILE,
    disk_bytes,
    scan_visits,
    write_private,
)
from daemon.config_outputs import ArchiveConfig
from daemon.events import person_key
from engines.base import sync_folder

# the archive's log lines under the name they always had (the tests read it)
logger = logging.getLogger("daemon.archive")

PRUNE_EVERY_S = 60.0  # keep_days is checked this often when nothing is written
WARN_EVERY_S = 60.0
WRITE_STEP = "a visit not written to"
# the writer's repeated steps, as their failure is said, and as their return is (the scan
# of the folder at start is not repeated)
RECOVERED = {WRITE_STEP: "writes visits to", "cannot delete old visits in": "deletes old visits in"}


@dataclass
class _Image:
    quality: float
    ts: float
    window: float  # which min_gap_s stretch of the visit it was taken in
    jpeg: bytes
    bbox_xyxy: list[float]  # in the frame
    face_xyxy: list[float]  # in the JPEG
    score: float
    enrollable: bool


@dataclass
class _Visit:
    camera: str
    track_id: int
    first_seen: float
    frame_hw: tuple[int, int]
    images: list[_Image] = field(default_factory=list)  # in time order
    ended: dict[str, Any] = field(default_factory=dict)  # set at `left`: who, when, why
    opened: float = field(default_factory=time.monotonic)  # its start, on a clock NTP won't step


def _local_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


class ArchiveWriter:
    """What ``FaceArchive``'s writer thread does (``FaceArchive._write_loop`` runs it), and
    the failures both of its threads count and log (``_failed``, ``_warn``)."""

    config: ArchiveConfig
    node: str
    model_id: str | None
    root: Path
    _index: list[tuple[float, Path, int]]
    _opened: dict[Path, float]
    _bytes: int
    _refreshed: float
    _warned: dict[str, float]
    _failing: dict[str, int]
    _pruned: dict[str, int]

    def _guarded(self, what: str, step: Callable[..., None], *args: object) -> None:
        """Run a step of the writer; a failure (the disk refused, or a bug) is counted and
        logged as ``what`` the archive's folder, and the writer goes on. While a step fails,
        ``facewatch_archive_failing`` is 1 (``facewatch status`` says so); the first time
        it works again is said, with the visits lost meanwhile."""
        try:
            step(*args)
        except Exception as exc:
            self._failed(f"{what} {self.root}", str(exc))
            if what in RECOVERED:
                self._failing[what] = self._failing.get(what, 0) + 1
                metrics.ARCHIVE_FAILING.set(1)
            return
        if what in self._failing:
            self._recovered(what, self._failing.pop(what))

    def _recovered(self, what: str, failures: int) -> None:
        """A step that failed works again: said, and the failure's next return logged at
        once (not held back by WARN_EVERY_S)."""
        self._warned.pop(f"{what} {self.root}", None)
        if not self._failing:
            metrics.ARCHIVE_FAILING.set(0)
        lost = f" ({failures} visit(s) not written meanwhile)" if what == WRITE_STEP else ""
        logger.info("face archive: %s %s again%s", RECOVERED[what], self.root, lost)

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
            self._fill(scratch, visit)
            sync_folder(scratch)
            scratch.rename(final)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        try:
            sync_folder(parent)
        except OSError as exc:  # written, renamed: counted below all the same
            logger.debug("archive: %s: the rename not flushed: %s", final, exc)
        size = disk_bytes(final)
        bisect.insort(self._index, (visit.first_seen, final, size))
        self._opened[final] = visit.opened
        self._bytes += size
        metrics.ARCHIVE_VISITS.labels(visit.camera).inc()

    def _fill(self, folder: Path, visit: _Visit) -> None:
        images = visit.images
        described = []
        for k, image in enumerate(images, 1):
            described.append(
                {
                    "file": f"face-{k}.jpg",
                    "ts": round(image.ts, 3),
                    "bbox_xyxy": image.bbox_xyxy,
                    "face_xyxy": image.face_xyxy,
                    "score": image.score,
                    "quality": image.quality,
                    "enrollable": image.enrollable,
                }
            )
            write_private(folder / f"face-{k}.jpg", image.jpeg)
        ended = visit.ended
        about = {
            "node": self.node,
            "camera": visit.camera,
            "track_id": visit.track_id,
            "identity": ended["identity"],
            "named": ended["named"],
            "distance": ended["distance"],
            "confidence": ended["confidence"],
            "reason": ended["reason"],
            "model": self.model_id,
            "frame_hw": list(visit.frame_hw),
            "first_seen": _local_iso(visit.first_seen),
            "last_seen": _local_iso(ended["last_seen"]),
            "first_seen_ts": round(visit.first_seen, 3),
            "last_seen_ts": round(ended["last_seen"], 3),
            "images": described,
        }
        text = json.dumps(about, indent=2, ensure_ascii=False) + "\n"
        write_private(folder / VISIT_FILE, text.encode())

    def _scan(self) -> None:
        """The visits already on disk (a previous run's), and leftovers of a write cut
        short."""
        for leftover in self.root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self._index = scan_visits(self.root)
        self._bytes = sum(entry[2] for entry in self._index)

    def _prune(self, refresh: bool = False) -> None:
        """Delete the oldest visits while the archive takes too much disk or they started
        too long ago. First, with ``refresh``, once a PRUNE_EVERY_S and before deleting for
        size: forget the visits deleted by hand."""
        max_bytes = self.config.max_mb * 1e6
        stale = time.monotonic() - self._refreshed >= PRUNE_EVERY_S
        if refresh or stale or self._bytes > max_bytes:
            self._index = [entry for entry in self._index if entry[1].is_dir()]
            self._bytes = sum(entry[2] for entry in self._index)
            kept = {folder for _, folder, _ in self._index}
            self._opened = {f: opened for f, opened in self._opened.items() if f in kept}
            self._refreshed = time.monotonic()
        aged = self._aged()
        if aged:
            self._index = [entry for entry in self._index if entry[1] not in aged]
            for folder in aged:
                self._delete(folder, aged[folder], "age")
        while self._index and self._bytes > max_bytes:
            _, folder, size = self._index.pop(0)
            self._delete(folder, size, "size")
        metrics.ARCHIVE_BYTES.set(self._bytes)
        if any(self._pruned.values()) and self._warn(
            "pruned",
            logging.INFO,
            f"face archive: deleted {self._pruned['age']} visit(s) older than keep_days "
            f"{self.config.keep_days:g} and {self._pruned['size']} to stay within max_mb "
            f"{self.config.max_mb:g}",
        ):
            self._pruned = {"size": 0, "age": 0}

    def prune_once(self) -> dict[str, list[Path]]:
        """Apply keep_days and max_mb once to the visits on disk, as the writer does, where
        no writer runs (``facewatch archive prune``: the daemon stopped, or its archive
        turned off); the visits deleted, by why: "age" or "size". Unlike the writer's start,
        it leaves leftovers of a write (``.tmp-*``) alone: a daemon that claims no folder
        (an older facewatch) may be writing them."""
        self._index = scan_visits(self.root)
        self._bytes = sum(entry[2] for entry in self._index)
        aged = set(self._aged())
        before = [folder for _, folder, _ in self._index]
        self._prune(refresh=True)
        kept = {folder for _, folder, _ in self._index}
        gone = [folder for folder in before if folder not in kept]
        return {
            "age": [folder for folder in gone if folder in aged],
            "size": [folder for folder in gone if folder not in aged],
        }

    def _aged(self) -> dict[Path, int]:
        """The visits older than keep_days, with their size: those of this run by the
        monotonic clock, those of earlier runs by their start's wall-clock time."""
        keep_s = self.config.keep_days * 86400
        now, clock = time.time(), time.monotonic()
        aged = {}
        for started, folder, size in self._index:
            opened = self._opened.get(folder)
            if (now - started if opened is None else clock - opened) > keep_s:
                aged[folder] = size
        return aged

    def _delete(self, folder: Path, size: int, reason: str) -> None:
        """Delete a visit taken off the index, and its camera and day folders once empty."""
        shutil.rmtree(folder, ignore_errors=True)
        self._opened.pop(folder, None)
        self._bytes -= size
        metrics.ARCHIVE_PRUNED.labels(reason).inc()
        self._pruned[reason] += 1
        for parent in (folder.parent, folder.parent.parent):  # camera, then day
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break

    def _failed(self, what: str, detail: str, reason: str = "error") -> None:
        """Count a failure (``error``: the disk refused; ``internal``: anything else, a bug)
        and log it."""
        metrics.ARCHIVE_FAILURES.labels(reason).inc()
        self._warn(what, logging.ERROR, f"face archive: {what}: {detail}")

    def _warn(self, key: str, level: int, message: str) -> bool:
        """Log ``message``, at most once a WARN_EVERY_S per ``key`` (a full disk would
        flood); whether it was logged."""
        now = time.monotonic()
        if now - self._warned.get(key, -np.inf) < WARN_EVERY_S:
            return False
        self._warned[key] = now
        logger.log(level, message)
        return True
