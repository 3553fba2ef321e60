"""The gallery's SQLite file: its schema, creating it owner-only, checking that it may be
written, and SQLite's errors in words (``daemon.gallery`` and the modules its ``Gallery``
is made of use it)."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from datetime import datetime, timezone
from pathlib import Path

from engines.base import sync_folder

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
META_KEYS = ("schema_version", "model_id", "embedding_size", "threshold")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    threshold REAL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE embeddings (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    vector BLOB NOT NULL,
    source_sha256 TEXT NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (identity_id, source_sha256)
);
CREATE INDEX embeddings_identity ON embeddings(identity_id);
"""


def file_stamp(path: str | Path) -> tuple[int, ...] | None:
    """What changes whenever the gallery file is written or replaced: its inode, size and
    time, and SQLite's file change counter (header bytes 24-27, bumped by every commit);
    None when there is no file."""
    try:
        info = os.stat(path)
        with open(path, "rb") as file:
            header = file.read(28)
    except OSError:
        return None
    counter = int.from_bytes(header[24:28], "big")
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, counter)


class GalleryError(RuntimeError):
    """A gallery that cannot be used as asked; the message names the file and the reason."""


class GalleryBusy(GalleryError):
    """The gallery is locked by a writer (another process) for longer than the wait."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create_private(path: Path) -> None:
    """An empty file only its owner may read or write (its folder made 0700 if new)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def place(scratch: Path, path: Path) -> None:
    """Put the finished file ``scratch`` at ``path``, which must not exist (FileExistsError:
    another process made it meanwhile), and make the new name durable."""
    try:
        os.link(scratch, path)  # never replaces
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (FAT): a plain rename
        if path.exists():
            raise FileExistsError(path) from None
        os.rename(scratch, path)
    sync_folder(path.resolve().parent)


def write_schema(
    conn: sqlite3.Connection, model_id: str, embedding_size: int, threshold: float
) -> None:
    conn.execute("BEGIN")
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("schema_version", str(SCHEMA_VERSION)),
            ("model_id", model_id),
            ("embedding_size", str(int(embedding_size))),
            ("threshold", repr(float(threshold))),
            ("created", now_iso()),
        ],
    )
    conn.execute("COMMIT")


def check_writable(path: Path) -> None:
    """GalleryError unless we may write the file, which is not marked read-only (root ignores
    permission bits; we don't), and its folder, where SQLite writes its journal; a file
    system mounted read-only is named as such (chmod cannot help there)."""
    if _read_only_mount(path):
        raise GalleryError(
            f"{path}: the file system the gallery is on is mounted read-only; remount it "
            "read-write, or use a copy on a writable file system to change it"
        )
    mode = path.stat().st_mode
    if not os.access(path, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise GalleryError(
            f"{path}: gallery file is read-only; make it writable "
            f"(chmod u+w) or use a copy to change it"
        )
    folder = path.resolve().parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GalleryError(
            f"{path}: its folder {folder} is not writable, and SQLite writes its journal "
            "there while it changes the gallery; make the folder writable or use a copy"
        )


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:  # the other checks name what is wrong
        return False


SQLITE_FULL = 13  # no extended codes: "database or disk is full"
SQLITE_READONLY_ROLLBACK = 776  # a read-only connection met a hot journal


def hot_journal(exc: sqlite3.DatabaseError, path: Path) -> bool:
    """A write was cut short (a power cut, a kill) and left its journal: only a connection
    that may write can roll it back, and a read-only one is refused."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11 and later
    if code is not None:
        return bool(code == SQLITE_READONLY_ROLLBACK)
    journal = path.with_name(path.name + "-journal")  # 3.10: "readonly", and the journal there
    return "readonly" in str(exc).lower() and journal.is_file() and journal.stat().st_size > 0


# Deleted rows (a removed person's name and face embeddings) are overwritten with zeros
# rather than left in free space of the file and its copies: SQLite's own default is off,
# and only some builds (Debian's) turn it on.
SECURE_DELETE = "PRAGMA secure_delete = ON"


def roll_back(path: Path, lock_timeout_s: float) -> bool:
    """Roll back the interrupted write of a hot journal (SQLite does it at the first read of
    a connection that may write); False when this user cannot write there."""
    if not os.access(path, os.W_OK) or not os.access(path.resolve().parent, os.W_OK | os.X_OK):
        return False
    logger.warning("%s: rolling back a write that was cut short (its journal was left)", path)
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=lock_timeout_s
        )
        try:
            conn.execute(SECURE_DELETE)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False  # the first error stands
    return True


def translate(path: Path, exc: sqlite3.DatabaseError) -> GalleryError:
    if hot_journal(exc, path):
        return GalleryError(
            f"{path}: a write to the gallery was cut short and left {path.name}-journal; "
            "run `facewatch gallery list` on it once as the file's owner to roll it back"
        )
    text = str(exc).lower()
    code = getattr(exc, "sqlite_errorcode", None)
    if code == SQLITE_FULL or "disk is full" in text:
        return GalleryError(
            f"{path}: the disk is full: no space left on the file system of "
            f"{path.resolve().parent} for the gallery and its journal; nothing was changed: "
            "free some space and try again"
        )
    if "locked" in text or "busy" in text:
        return GalleryBusy(
            f"{path}: gallery is locked by another writer (another facewatch enroll or "
            "gallery command?); try again when it has finished"
        )
    if "readonly" in text or "read-only" in text:
        return GalleryError(f"{path}: gallery file is read-only ({exc})")
    if "malformed" in text:
        return GalleryError(
            f"{path}: the gallery file is corrupt ({exc}); restore an export into a new "
            "gallery (`facewatch gallery import FILE --gallery NEW`), or enroll again"
        )
    if "no such table" in text and path.is_file() and path.stat().st_size == 0:
        return GalleryError(
            f"{path}: an empty file, not a gallery (an enroll cut short?): delete it, or "
            "enroll someone (enroll replaces an empty file)"
        )
    if "not a database" in text or "no such table" in text:
        return GalleryError(f"{path}: not a facewatch gallery ({exc})")
    return GalleryError(f"{path}: gallery error: {exc}")
