"""The gallery: who is enrolled, in one SQLite file.

Tables: ``meta`` (schema version, the model id and embedding size every embedding was made
with, the default threshold), ``identities`` (name, threshold or NULL for the default,
created / updated as ISO 8601 UTC) and ``embeddings`` (one row per enrolled face: identity,
model id, the vector as float32 bytes, the source image's SHA-256, timestamp).

Distances are squared Euclidean between L2-normalised embeddings (0 .. 4; the training
module's LFW thresholds are on this scale). ``match`` is one matrix product against every
enrolled embedding: the nearest one names the identity when it is closer than that
identity's threshold (else the gallery default), otherwise the face is unknown.

A gallery made with another model is refused, never mixed. Writes are transactions:
enrolling many faces commits all of them or none. A file marked read-only (no write
permission bits) is never written, even by root. New files are created owner-only (0600).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_THRESHOLD = 1.1  # squared L2 on unit vectors; FaceNet's usual same/different cut
DEFAULT_LOCK_TIMEOUT_S = 5.0

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


class GalleryError(RuntimeError):
    """A gallery that cannot be used as asked; the message names the file and the reason."""


@dataclass(frozen=True)
class Match:
    """The answer for one face: ``identity`` None means unknown. ``nearest`` is the closest
    enrolled identity either way; ``confidence`` is how far inside its threshold the face
    is, ``1 - distance / threshold`` clipped to [0, 1] (0 for unknown faces)."""

    identity: str | None
    distance: float
    confidence: float
    nearest: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Identity:
    name: str
    threshold: float | None
    embeddings: int
    created: str
    updated: str


@dataclass(frozen=True)
class Enrollment:
    """One face to enroll: who, its embedding (D,), and the SHA-256 of its source image."""

    name: str
    embedding: np.ndarray
    source_sha256: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _create_private(path: Path) -> None:
    """An empty file only its owner may read or write (its folder made 0700 if new)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class Gallery:
    """An open gallery file. Use ``Gallery.open`` (or ``Gallery.create``)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, writable: bool) -> None:
        self.path, self._conn, self.writable = path, conn, writable
        self._meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self._matrix: tuple[np.ndarray, np.ndarray, list[str], np.ndarray] | None = None
        # the daemon's recognition.threshold, when set, replaces the stored default
        self.threshold_override: float | None = None

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        model_id: str | None = None,
        writable: bool = False,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> Gallery:
        """Open an existing gallery; ``model_id`` (when given) must be the one it was made with."""
        path = Path(path)
        if not path.is_file():
            raise GalleryError(f"{path}: no gallery here (enroll someone first: facewatch enroll)")
        if writable and not _may_write(path):
            raise GalleryError(
                f"{path}: gallery file is read-only; make it writable "
                f"(chmod u+w) or use a copy to change it"
            )
        uri = f"{path.resolve().as_uri()}?mode={'rw' if writable else 'ro'}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=lock_timeout_s, isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
            gallery = cls(path, conn, writable)
        except sqlite3.DatabaseError as exc:
            raise _translate(path, exc) from None
        gallery._check(model_id)
        return gallery

    @classmethod
    def create(
        cls,
        path: str | Path,
        model_id: str,
        embedding_size: int,
        threshold: float = DEFAULT_THRESHOLD,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> Gallery:
        """A new, empty gallery file (0600) for embeddings of ``model_id``."""
        path = Path(path)
        if path.exists():
            raise GalleryError(f"{path}: already exists")
        _create_private(path)
        try:
            conn = sqlite3.connect(path, timeout=lock_timeout_s, isolation_level=None)
            _write_schema(conn, model_id, embedding_size, threshold)
        except sqlite3.DatabaseError as exc:
            path.unlink(missing_ok=True)
            raise _translate(path, exc) from None
        conn.close()
        return cls.open(path, model_id, writable=True, lock_timeout_s=lock_timeout_s)

    @classmethod
    def open_or_create(
        cls, path: str | Path, model_id: str, embedding_size: int, **kwargs: float
    ) -> Gallery:
        if Path(path).exists():
            return cls.open(path, model_id, writable=True, **kwargs)
        return cls.create(path, model_id, embedding_size, **kwargs)

    def _check(self, model_id: str | None) -> None:
        if self._meta.get("schema_version") != str(SCHEMA_VERSION):
            raise GalleryError(
                f"{self.path}: gallery schema version {self._meta.get('schema_version')!r}, "
                f"this facewatch reads version {SCHEMA_VERSION}"
            )
        if model_id is not None and model_id != self.model_id:
            raise GalleryError(
                f"{self.path}: this gallery was enrolled with model {self.model_id!r}, but "
                f"the model in use is {model_id!r}; embeddings of different models cannot be "
                "compared: use the gallery's model, or enroll everyone again into a new gallery"
            )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties -------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._meta["model_id"]

    @property
    def embedding_size(self) -> int:
        return int(self._meta["embedding_size"])

    @property
    def threshold(self) -> float:
        """The default threshold (identities without their own)."""
        return float(self._meta["threshold"])

    def identities(self) -> list[Identity]:
        rows = self._read(
            "SELECT i.name, i.threshold, COUNT(e.id), i.created, i.updated FROM identities i "
            "LEFT JOIN embeddings e ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name"
        )
        return [Identity(*row) for row in rows]

    def embeddings(self) -> tuple[np.ndarray, list[str], list[str], list[str]]:
        """All enrolled vectors (M, D) with, per row, the identity, source hash and time."""
        rows = self._read(
            "SELECT i.name, e.vector, e.source_sha256, e.created FROM embeddings e "
            "JOIN identities i ON i.id = e.identity_id ORDER BY i.name, e.id"
        )
        size = self.embedding_size
        vectors = np.zeros((len(rows), size), np.float32)
        for k, row in enumerate(rows):
            vectors[k] = np.frombuffer(row[1], dtype="<f4")
        return vectors, [r[0] for r in rows], [r[2] for r in rows], [r[3] for r in rows]

    # -- matching ---------------------------------------------------------------------------

    def _loaded(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """(vectors (M, D), owner index (M,), names, thresholds per name), cached."""
        if self._matrix is None:
            vectors, owners, _, _ = self.embeddings()
            names = sorted(set(owners))
            index = {name: k for k, name in enumerate(names)}
            own = {i.name: i.threshold for i in self.identities()}
            default = self.threshold if self.threshold_override is None else self.threshold_override
            thresholds = np.array(
                [default if own[n] is None else own[n] for n in names], np.float64
            )
            owner = np.array([index[n] for n in owners], np.int64)
            self._matrix = (np.ascontiguousarray(vectors), owner, names, thresholds)
        return self._matrix

    def match(self, embeddings: np.ndarray) -> list[Match]:
        """The identity (or unknown) of each of ``embeddings`` (N, D), nearest neighbour."""
        queries = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.embedding_size)
        if len(queries) == 0:
            return []
        vectors, owner, names, thresholds = self._loaded()
        if len(vectors) == 0:
            return [Match(None, float("inf"), 0.0) for _ in queries]
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        similarity = queries @ vectors.T  # (N, M): the one matrix product
        best = np.argmax(similarity, axis=1)
        distances = np.maximum(2.0 - 2.0 * similarity[np.arange(len(queries)), best], 0.0)
        results = []
        for row, dist in zip(best, distances, strict=True):
            who = int(owner[row])
            limit = float(thresholds[who])
            known = bool(dist < limit)
            confidence = float(np.clip(1.0 - dist / limit, 0.0, 1.0)) if known else 0.0
            results.append(
                Match(names[who] if known else None, float(dist), confidence, names[who], limit)
            )
        return results

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if not self.writable:
            raise GalleryError(f"{self.path}: opened read-only")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _translate(self.path, exc) from None
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._conn.execute("ROLLBACK")
            raise _translate(self.path, exc) from None
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        finally:
            self._matrix = None

    def enroll(self, faces: Sequence[Enrollment]) -> int:
        """Add every face in one transaction (all or nothing); returns how many were new
        (a source image already enrolled for that identity is not added twice)."""
        added = 0
        with self._transaction() as conn:
            for face in faces:
                vector = np.asarray(face.embedding, dtype="<f4").reshape(-1)
                if vector.size != self.embedding_size or not np.all(np.isfinite(vector)):
                    raise GalleryError(
                        f"{self.path}: embedding for {face.name!r} has {vector.size} finite "
                        f"values expected {self.embedding_size}; nothing was enrolled"
                    )
                identity_id = self._identity_id(conn, face.name, create=True)
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO embeddings "
                    "(identity_id, model_id, vector, source_sha256, created) VALUES (?,?,?,?,?)",
                    (identity_id, self.model_id, vector.tobytes(), face.source_sha256, _now()),
                )
                added += cursor.rowcount
        return added

    def _identity_id(self, conn: sqlite3.Connection, name: str, create: bool = False) -> int:
        row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is not None:
            conn.execute("UPDATE identities SET updated = ? WHERE id = ?", (_now(), row[0]))
            return int(row[0])
        if not create:
            raise GalleryError(f"{self.path}: no identity named {name!r}")
        if not name.strip():
            raise GalleryError(f"{self.path}: an identity needs a non-empty name")
        now = _now()
        cursor = conn.execute(
            "INSERT INTO identities (name, threshold, created, updated) VALUES (?, NULL, ?, ?)",
            (name, now, now),
        )
        return int(cursor.lastrowid or 0)

    def remove(self, name: str) -> int:
        """Delete an identity and its embeddings; returns how many embeddings went."""
        with self._transaction() as conn:
            identity_id = self._identity_id(conn, name)
            count = conn.execute(
                "DELETE FROM embeddings WHERE identity_id = ?", (identity_id,)
            ).rowcount
            conn.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
        return int(count)

    def rename(self, old: str, new: str) -> None:
        with self._transaction() as conn:
            identity_id = self._identity_id(conn, old)
            if conn.execute("SELECT 1 FROM identities WHERE name = ?", (new,)).fetchone():
                raise GalleryError(f"{self.path}: an identity named {new!r} already exists")
            if not new.strip():
                raise GalleryError(f"{self.path}: an identity needs a non-empty name")
            conn.execute("UPDATE identities SET name = ? WHERE id = ?", (new, identity_id))

    def set_threshold(self, name: str | None, threshold: float | None) -> None:
        """The threshold of one identity (None: use the default), or with ``name`` None the
        gallery default."""
        if threshold is not None and not 0.0 < threshold <= 4.0:
            raise GalleryError(f"threshold {threshold} outside (0, 4] (squared L2 on unit vectors)")
        with self._transaction() as conn:
            if name is None:
                if threshold is None:
                    raise GalleryError("the default threshold cannot be empty")
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'threshold'", (repr(threshold),)
                )
                self._meta["threshold"] = repr(float(threshold))
            else:
                identity_id = self._identity_id(conn, name)
                conn.execute(
                    "UPDATE identities SET threshold = ? WHERE id = ?", (threshold, identity_id)
                )

    def _read(self, sql: str) -> list[tuple]:
        try:
            return self._conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _translate(self.path, exc) from None


def _write_schema(
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
            ("created", _now()),
        ],
    )
    conn.execute("COMMIT")


def _may_write(path: Path) -> bool:
    """Writable by us, and not marked read-only (root ignores permission bits; we don't)."""
    mode = path.stat().st_mode
    return os.access(path, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _translate(path: Path, exc: sqlite3.DatabaseError) -> GalleryError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return GalleryError(
            f"{path}: gallery is locked by another writer (another facewatch enroll or "
            "gallery command?); try again when it has finished"
        )
    if "readonly" in text or "read-only" in text:
        return GalleryError(f"{path}: gallery file is read-only ({exc})")
    if "not a database" in text or "no such table" in text or "malformed" in text:
        return GalleryError(f"{path}: not a facewatch gallery ({exc})")
    return GalleryError(f"{path}: gallery error: {exc}")
