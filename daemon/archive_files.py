"""The face archive on disk: its folders, ``DAY/CAMERA/HHMMSS-tTRACK-WHO[-N]/`` each with its
images and a visit.json (daemon/archive.py writes them; ``read_visit`` and ``image_faces``
read what it says), and how to tell them from anything else: the writer deletes only these,
and the commands recognise them.
"""

from __future__ import annotations

import logging
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engines.base import brief, finite_number, read_json

logger = logging.getLogger(__name__)

VISIT_FILE = "visit.json"
LOCK_FILE = "archive.lock"  # held by the daemon that writes the archive (daemon/claims.py)
# `archive prune` holds the lock too, for a moment, saying so in it: a daemon starting then
# (or another prune) waits this long for it (deleting thousands of visits takes seconds),
# instead of being refused as if a second daemon wrote the archive
PRUNE = "archive prune"
PRUNE_WAIT_S = 30.0
LAST_TIMESTAMP = datetime(9999, 1, 1, tzinfo=timezone.utc).timestamp()  # what datetime shows
# the writer's folders, the only ones it deletes: YYYY-MM-DD / CAMERA / HHMMSS-tTRACK-WHO[-N]
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CAMERA = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VISIT = re.compile(r"([0-9]{6})-t[0-9]+-[A-Za-z0-9_-]+")


def archive_level(folder: Path) -> str | None:
    """Which part of a face archive ``folder`` is: "the archive", "a day", "a camera" or "a
    visit" folder; None for any other."""
    if (folder / VISIT_FILE).is_file():
        return "a visit"
    children = [child for child in folder.iterdir() if child.is_dir()]
    if any(_VISIT.fullmatch(c.name) and (c / VISIT_FILE).is_file() for c in children):
        return "a camera"
    if _DAY.fullmatch(folder.name) and any(folder.glob(f"*/*/{VISIT_FILE}")):
        return "a day"
    if any(_DAY.fullmatch(c.name) and any(c.glob(f"*/*/{VISIT_FILE}")) for c in children):
        return "the archive"
    return None


def is_visit_folder(folder: Path) -> bool:
    """A visit folder the writer made: ``DAY/CAMERA/HHMMSS-tTRACK-WHO[-N]`` holding a
    visit.json (not a symbolic link, not a folder of the user's own that holds a copy)."""
    try:
        day, camera, name = folder.parts[-3:]
        return (
            _DAY.fullmatch(day) is not None
            and _CAMERA.fullmatch(camera) is not None
            and _VISIT.fullmatch(name) is not None
            and not folder.is_symlink()
            and (folder / VISIT_FILE).is_file()
        )
    except (ValueError, OSError):
        return False


def scan_visits(root: Path) -> list[tuple[float, Path, int]]:
    """(start, folder, bytes on disk) of every visit under ``root``, oldest first: the
    folders of the writer's shape holding a visit.json (anything else is left alone)."""
    found = []
    for visit in root.glob(f"*/*/*/{VISIT_FILE}"):
        folder = visit.parent
        if not is_visit_folder(folder):
            continue
        day, hhmmss = folder.parts[-3], folder.name[:6]
        try:
            found.append((started_at(visit, day, hhmmss), folder, disk_bytes(folder)))
        except (OSError, ValueError):
            continue
    return sorted(found)


def write_private(path: Path, data: bytes) -> None:
    """A new owner-only file, flushed to the disk (before its folder is renamed into place:
    a power cut must not leave a visit whose files are empty)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def disk_bytes(folder: Path) -> int:
    """The disk space a visit takes: its files' blocks and its own."""
    paths = [folder, *folder.iterdir()]
    return sum(path.stat().st_blocks * 512 for path in paths)


def started_at(visit_file: Path, day: str, hhmmss: str) -> float:
    """When a visit on disk started: its visit.json says exactly; else its folder's name (in
    local time, ambiguous in the hour a clock goes back); ValueError if neither can."""
    try:
        return float(read_visit(visit_file)["first_seen_ts"])
    except (OSError, ValueError):
        return time.mktime(time.strptime(f"{day} {hhmmss}", "%Y-%m-%d %H%M%S"))


def read_visit(visit_file: Path) -> dict[str, Any]:
    """A visit.json's record; OSError when the file cannot be read, ValueError saying what is
    wrong when it is not the record the writer makes: UTF-8 JSON (not nested too deeply), an
    object whose first_seen_ts (and last_seen_ts) are times (finite numbers of seconds from
    1970 to the year 9999), whose images are objects, identity text and named a list."""
    record = read_json(visit_file)
    if not isinstance(record, dict):
        raise ValueError(f"not a JSON object: {brief(record)}")
    if "first_seen_ts" not in record:
        raise ValueError("no first_seen_ts")
    for key in ("first_seen_ts", "last_seen_ts"):
        seconds = finite_number(record.get(key, 0))
        if seconds is None or not 0 <= seconds <= LAST_TIMESTAMP:
            raise ValueError(f"{key} {brief(record[key])} is not a time")
    images = record.get("images", [])
    if not isinstance(images, list) or not all(isinstance(image, dict) for image in images):
        raise ValueError(f"images {brief(images)} are not a list of objects")
    if not isinstance(record.get("identity"), (str, type(None))):
        raise ValueError(f"identity {brief(record['identity'])} is not a name")
    if not isinstance(record.get("named"), (list, type(None))):
        raise ValueError(f"named {brief(record['named'])} is not a list of names")
    return record


def image_faces(visit_file: Path) -> dict[str, tuple[list[float], float | None]]:
    """file -> (face_xyxy, score) of the images a visit.json places a face in (score None
    where it gives none): what the camera saw, for enroll to take that face. OSError and
    ValueError as ``read_visit``; ValueError, KeyError or TypeError for an image the writer
    does not write (a face_xyxy not of numbers, no file)."""
    return {
        str(image["file"]): (_box(image["face_xyxy"]), finite_number(image.get("score")))
        for image in read_visit(visit_file)["images"]
        if len(image.get("face_xyxy", ())) == 4
    }


def _box(values: Any) -> list[float]:
    """A visit.json face_xyxy as floats; ValueError unless every one is a finite number."""
    box = [finite_number(v) for v in values]
    if None in box:
        raise ValueError(f"face_xyxy {brief(values)} is not numbers")
    return [v for v in box if v is not None]
