"""The face archive on disk: its folders, ``DAY/CAMERA/HHMMSS-tTRACK-WHO[-N]/`` each with
its images and a visit.json (daemon/archive.py writes them), and how to tell them from
anything else: the writer deletes only these, and the commands recognise them.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

VISIT_FILE = "visit.json"
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
        return float(json.loads(visit_file.read_text(encoding="utf-8"))["first_seen_ts"])
    except (OSError, ValueError, KeyError, TypeError):
        return time.mktime(time.strptime(f"{day} {hhmmss}", "%Y-%m-%d %H%M%S"))
