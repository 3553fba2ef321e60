"""The gallery's SQLite file: its schema, creating it owner-only, checking that it may be
written, and SQLite's errors in words (``daemon.gallery`` is what uses it)."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import datetime, timezone
from pathlib import Path

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


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create_private(path: Path) -> None:
    """An empty file only its owner may read or write (its folder made 0700 if new)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


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
    permission bits; we don't), and its folder, where SQLite writes its journal."""
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


def translate(path: Path, exc: sqlite3.DatabaseError) -> GalleryError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return GalleryError(
            f"{path}: gallery is locked by another writer (another facewatch enroll or "
            "gallery command?); try again when it has finished"
        )
    if "readonly" in text or "read-only" in text:
        return GalleryError(f"{path}: gallery file is read-only ({exc})")
    if "malformed" in text:
        return GalleryError(
            f"{path}: the gallery file is corrupt ({exc}); use a backup or an export"
        )
    if "not a database" in text or "no such table" in text:
        return GalleryError(f"{path}: not a facewatch gallery ({exc})")
    return GalleryError(f"{path}: gallery error: {exc}")
