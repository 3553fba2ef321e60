"""An open gallery's reads (``GalleryReader``, what ``daemon.gallery.Gallery`` is built
on): its meta values, who is enrolled, their faces and the images they came from, each read
checked as ``gallery_check`` checks it; and a person found by name as the commands find
them (``lookup_name``: any spelling that comes to the same; a typo gets a "did you mean").
"""

from __future__ import annotations

import difflib
import sqlite3
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.gallery_check import default_threshold, own_threshold, vectors_of
from daemon.gallery_check import embedding_size as stored_embedding_size
from daemon.gallery_file import GalleryError, translate
from daemon.gallery_names import lookup_name, twin_key


@dataclass(frozen=True)
class Identity:
    name: str
    threshold: float | None
    embeddings: int
    created: str
    updated: str


class GalleryReader:
    """The state of an open gallery file and what reads it; ``Gallery`` opens one."""

    def __init__(self, path: Path, conn: sqlite3.Connection, writable: bool) -> None:
        self.path, self._conn, self.writable = path, conn, writable
        # (meta's values are TEXT NOT NULL: gallery_file's schema)
        self._meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self._matrix: tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray] | None = None
        # the daemon's recognition.threshold, when set, replaces the stored default
        self.threshold_override: float | None = None
        # the file's stamp (gallery_file.file_stamp) as this object's create made it; None
        # when the file was there: who may delete it again, and only while it is unchanged
        self.created: tuple[int, ...] | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._meta["model_id"]

    @property
    def embedding_size(self) -> int:
        return stored_embedding_size(self.path, self._meta["embedding_size"])

    @property
    def threshold(self) -> float:
        """The default threshold (identities without their own); GalleryError when the file
        holds none a command would store."""
        return default_threshold(self.path, self._meta["threshold"])

    def identities(self) -> list[Identity]:
        """Everyone enrolled, by name; GalleryError for an own threshold that is no number."""
        rows = self._read(
            "SELECT i.name, i.threshold, COUNT(e.id), i.created, i.updated FROM identities i "
            "LEFT JOIN embeddings e ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name"
        )
        return [
            Identity(name, own_threshold(self.path, name, own), faces, created, updated)
            for name, own, faces, created, updated in rows
        ]

    def embeddings(self) -> tuple[np.ndarray, list[str], list[str], list[str]]:
        """All enrolled vectors (M, D) with, per row, the identity, source hash and time;
        GalleryError naming the first face that is not a unit vector of the gallery's size."""
        rows = self._read(
            "SELECT i.name, e.vector, e.source_sha256, e.created FROM embeddings e "
            "JOIN identities i ON i.id = e.identity_id ORDER BY i.name, e.id"
        )
        names = [r[0] for r in rows]
        vectors = vectors_of(self.path, names, [r[1] for r in rows], self.embedding_size)
        return vectors, names, [r[2] for r in rows], [r[3] for r in rows]

    def sources(self) -> dict[str, set[str]]:
        """Who has a face enrolled from each source image (by its SHA-256)."""
        holders: dict[str, set[str]] = {}
        for name, source in self._read(
            "SELECT i.name, e.source_sha256 FROM embeddings e JOIN identities i "
            "ON i.id = e.identity_id"
        ):
            holders.setdefault(source, set()).add(lookup_name(name))
        return holders

    def sources_of(self, name: str) -> set[str]:
        """The SHA-256s of the images ``name``'s faces were enrolled from (GalleryError when
        no one of that name is enrolled)."""
        try:
            identity_id = self._identity_id(self._conn, name)
            rows = self._conn.execute(
                "SELECT source_sha256 FROM embeddings WHERE identity_id = ?", (identity_id,)
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None
        return {str(row[0]) for row in rows}

    def identity(self, name: str) -> Identity:
        """The person ``name`` finds (as the commands find names); GalleryError when no one."""
        try:
            identity_id = self._identity_id(self._conn, name)
            row = self._conn.execute(
                "SELECT i.name, i.threshold, COUNT(e.id), i.created, i.updated FROM identities "
                "i LEFT JOIN embeddings e ON e.identity_id = i.id WHERE i.id = ? GROUP BY i.id",
                (identity_id,),
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None
        return Identity(*row)

    def faces_of(self, name: str) -> list[tuple[str, str]]:
        """(when enrolled, the source image's SHA-256) of each of ``name``'s faces, oldest
        first: the photos of one enroll share its time, so a batch enrolled by mistake shows
        as one (GalleryError when no one of that name is enrolled)."""
        try:
            identity_id = self._identity_id(self._conn, name)
            rows = self._conn.execute(
                "SELECT created, source_sha256 FROM embeddings WHERE identity_id = ? "
                "ORDER BY created, id",
                (identity_id,),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None
        return [(str(created), str(source)) for created, source in rows]

    def knows(self, name: str) -> bool:
        """Whether ``name`` is enrolled, found as the commands find it (``lookup_name``)."""
        try:
            return find(self._conn, name) is not None
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None

    def _identity_id(self, conn: sqlite3.Connection, name: str) -> int:
        found = find(conn, name)
        if found is None:
            close = self._close_name(conn, name)
            hint = f"; did you mean {close!r}?" if close else ""
            raise GalleryError(f"{self.path}: no identity named {name!r}{hint}")
        return found

    def close_name(self, name: str) -> str | None:
        """The enrolled name ``name`` (not enrolled) may be a typo of, else None."""
        try:
            return self._close_name(self._conn, name)
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None

    @staticmethod
    def _close_name(conn: sqlite3.Connection, name: str) -> str | None:
        ids = ids_by_name(conn)
        twin = by_folded_name(ids).get(twin_key(name))
        close = [twin[0]] if twin else difflib.get_close_matches(lookup_name(name), ids, n=1)
        return close[0] if close else None

    def _read(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None


class Names:
    """The identities' ids by name, read once, each found as ``find`` finds it: spelt as
    stored (NFC), else as ``lookup_name`` spells both (a gallery written before names were
    normalised may hold a macOS NFD name, spaces, a no-break space, and even 'Ada Lovelace'
    and 'Ada\\xa0Lovelace' as two people: each is found by its own spelling); the first row
    wins a tie."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.exact: dict[str, int] = {}
        self.folded: dict[str, int] = {}  # by lookup_name
        for identity_id, stored in conn.execute("SELECT id, name FROM identities ORDER BY id"):
            self.add(stored, int(identity_id))

    def add(self, name: str, identity_id: int) -> None:
        """``name`` enrolled as ``identity_id`` (a person just created)."""
        self.exact.setdefault(unicodedata.normalize("NFC", name), identity_id)
        self.folded.setdefault(lookup_name(name), identity_id)

    def get(self, name: str) -> int | None:
        found = self.exact.get(unicodedata.normalize("NFC", name))
        return self.folded.get(lookup_name(name)) if found is None else found


def ids_by_name(conn: sqlite3.Connection) -> dict[str, int]:
    """Identity ids by name as ``lookup_name`` spells it (``Names.folded``)."""
    return Names(conn).folded


def find(conn: sqlite3.Connection, name: str) -> int | None:
    """The identity called ``name`` (``Names.get``)."""
    return Names(conn).get(name)


def by_folded_name(ids: dict[str, int]) -> dict[str, tuple[str, int]]:
    """``ids`` (``ids_by_name``) keyed by ``twin_key``: (name, id)."""
    folded: dict[str, tuple[str, int]] = {}
    for name, identity_id in ids.items():
        folded.setdefault(twin_key(name), (name, identity_id))
    return folded
