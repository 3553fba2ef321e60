"""Writing an open gallery (``GalleryWriter``, part of ``daemon.gallery.Gallery``):
enrolling faces, removing people or some of their photos, renaming, thresholds.

Writes are transactions: enrolling many faces commits all of them or none. A gallery opened
read-only refuses them. Names are stored as ``clean_name`` makes them, and a name that only
looks like an enrolled one (``twin_key``) is refused, never a second person.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daemon.gallery_check import UNIT_TOLERANCE, check_threshold
from daemon.gallery_file import GalleryError, now_iso, translate
from daemon.gallery_names import clean_name, twin_key
from daemon.gallery_read import GalleryReader, Names, by_folded_name, find, ids_by_name


@dataclass(frozen=True)
class Enrollment:
    """One face to enroll: who, its embedding (D,), and the SHA-256 of its source image;
    ``created``: when it was first enrolled (an export's, kept by an import; None: now)."""

    name: str
    embedding: np.ndarray
    source_sha256: str
    created: str | None = None


class GalleryWriter(GalleryReader):
    """An open gallery's writes, each one transaction (the file opened writable)."""

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if not self.writable:
            raise GalleryError(f"{self.path}: opened read-only")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise translate(self.path, exc) from None
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._roll_back()
            raise translate(self.path, exc) from None
        except BaseException:
            self._roll_back()
            raise
        finally:
            self._matrix = None

    def _roll_back(self) -> None:
        """Undo the open transaction, if any: after a full disk or an I/O error SQLite has
        already rolled it back itself, and a ROLLBACK then would hide the first error."""
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def enroll(
        self, faces: Sequence[Enrollment], thresholds: Mapping[str, float] | None = None
    ) -> int:
        """Add every face in one transaction (all or nothing); returns how many were new
        (a source image already enrolled for that identity is not added twice; one enrolled
        as another identity is refused). ``thresholds`` (an import's) are set in the same
        transaction: no reader ever sees the faces matched at the default instead."""
        limits = {name: check_threshold(value) for name, value in (thresholds or {}).items()}
        added = 0
        with self._transaction() as conn:
            names = Names(conn)
            folded = by_folded_name(names.folded)
            holders: dict[str, set[int]] = {}
            touched: set[int] = set()
            for source, holder in conn.execute("SELECT source_sha256, identity_id FROM embeddings"):
                holders.setdefault(source, set()).add(holder)
            for face in faces:
                vector = self._unit_vector(face)
                identity_id = self._identity_or_new(conn, names, folded, face.name)
                self._refuse_held_by_another(conn, holders, face, identity_id)
                holders[face.source_sha256].add(identity_id)
                if self._insert_face(conn, identity_id, vector, face):
                    added += 1
                    touched.add(identity_id)
            now = now_iso()
            conn.executemany(
                "UPDATE identities SET updated = ? WHERE id = ?", [(now, i) for i in touched]
            )
            found = self._identity_ids(conn, list(limits))
            conn.executemany(
                "UPDATE identities SET threshold = ? WHERE id = ?",
                [(value, found[name]) for name, value in limits.items()],
            )
        return added

    def _unit_vector(self, face: Enrollment) -> np.ndarray:
        """``face``'s embedding as float32 (D,); GalleryError unless it is a finite unit
        vector of the gallery's size."""
        vector = np.asarray(face.embedding, dtype="<f4").reshape(-1)
        if vector.size != self.embedding_size or not np.all(np.isfinite(vector)):
            raise GalleryError(
                f"{self.path}: embedding for {face.name!r} has {vector.size} finite "
                f"values expected {self.embedding_size}; nothing was enrolled"
            )
        length = float(np.linalg.norm(vector.astype(np.float64)))
        if abs(length - 1.0) > UNIT_TOLERANCE:  # the distances assume unit vectors
            raise GalleryError(
                f"{self.path}: embedding for {face.name!r} has length {length:.4g}, "
                "not 1 (FaceNet's are L2-normalised); nothing was enrolled"
            )
        return vector

    def _identity_or_new(
        self,
        conn: sqlite3.Connection,
        names: Names,
        folded: dict[str, tuple[str, int]],
        name: str,
    ) -> int:
        """The id of the identity ``name``, created (and added to ``names`` and ``folded``)
        when there is none; GalleryError for a name that only looks like an enrolled one."""
        identity_id = names.get(name)
        if identity_id is None:
            name = clean_name(name)
            _refuse_case_twin(folded, name, -1, self.path)
            identity_id = _create_identity(conn, name)
            names.add(name, identity_id)
            folded[twin_key(name)] = (name, identity_id)
        return identity_id

    def _refuse_held_by_another(
        self,
        conn: sqlite3.Connection,
        holders: dict[str, set[int]],
        face: Enrollment,
        identity_id: int,
    ) -> None:
        """GalleryError when ``face``'s source image is enrolled as someone else already
        (``holders``: the identities enrolled from each source image)."""
        others = holders.setdefault(face.source_sha256, set()) - {identity_id}
        if others:
            (holder,) = conn.execute(
                "SELECT name FROM identities WHERE id = ?", (min(others),)
            ).fetchone()
            raise GalleryError(
                f"{self.path}: a photo of {face.name!r} is already enrolled as "
                f"{holder!r}; nothing was enrolled"
            )

    def _insert_face(
        self, conn: sqlite3.Connection, identity_id: int, vector: np.ndarray, face: Enrollment
    ) -> bool:
        """Store ``face``'s ``vector`` as ``identity_id``'s; False when that identity was
        enrolled from its source image already."""
        cursor = conn.execute(
            "INSERT OR IGNORE INTO embeddings "
            "(identity_id, model_id, vector, source_sha256, created) VALUES (?,?,?,?,?)",
            (
                identity_id,
                self.model_id,
                vector.tobytes(),
                face.source_sha256,
                face.created or now_iso(),
            ),
        )
        return bool(cursor.rowcount)

    def _identity_ids(self, conn: sqlite3.Connection, names: list[str]) -> dict[str, int]:
        """Each of ``names`` as ``_identity_id`` finds it, from one read of the identities (an
        import of 5,000 people with their own thresholds read all of them for each one)."""
        if not names:
            return {}
        enrolled = Names(conn)
        found = {}
        for name in names:
            identity_id = enrolled.get(name)
            found[name] = self._identity_id(conn, name) if identity_id is None else identity_id
        return found

    def remove(self, name: str) -> int:
        """Delete an identity and its embeddings; returns how many embeddings went."""
        with self._transaction() as conn:
            identity_id = self._identity_id(conn, name)
            count = conn.execute(
                "DELETE FROM embeddings WHERE identity_id = ?", (identity_id,)
            ).rowcount
            conn.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
        return int(count)

    def remove_photos(self, name: str, photos: Mapping[str, set[str]]) -> tuple[int, int]:
        """Delete ``name``'s faces enrolled from ``photos`` (each as the user named it: a
        photo, a folder, with the SHA-256s of its images), in one transaction; (faces
        deleted, faces left). A photo none of whose images ``name`` was enrolled from is a
        GalleryError naming it, and nothing is deleted. Their last face going takes the
        person too, as ``remove`` does: the gallery holds no one without a face."""
        with self._transaction() as conn:
            identity_id = self._identity_id(conn, name)
            enrolled = {
                str(row[0])
                for row in conn.execute(
                    "SELECT source_sha256 FROM embeddings WHERE identity_id = ?", (identity_id,)
                )
            }
            foreign = [given for given, shas in photos.items() if not shas & enrolled]
            if foreign:
                raise GalleryError(
                    f"{self.path}: no face of {name!r} was enrolled from "
                    f"{', '.join(self._whose(conn, given, photos[given]) for given in foreign)}"
                    "; nothing was removed"
                )
            going = sorted(set().union(*photos.values()) & enrolled)
            conn.executemany(
                "DELETE FROM embeddings WHERE identity_id = ? AND source_sha256 = ?",
                [(identity_id, sha) for sha in going],
            )
            left = len(enrolled) - len(going)
            if left:
                conn.execute(
                    "UPDATE identities SET updated = ? WHERE id = ?", (now_iso(), identity_id)
                )
            else:
                conn.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
        return len(going), left

    @staticmethod
    def _whose(conn: sqlite3.Connection, given: str, shas: set[str]) -> str:
        """``given`` (a photo or folder), with whom it is enrolled as instead, if anyone."""
        holders = sorted(
            {
                str(holder)
                for source, holder in conn.execute(
                    "SELECT e.source_sha256, i.name FROM embeddings e "
                    "JOIN identities i ON i.id = e.identity_id"
                )
                if source in shas
            }
        )
        return f"{given} (enrolled as {', '.join(holders)})" if holders else given

    def rename(self, old: str, new: str) -> None:
        with self._transaction() as conn:
            identity_id = self._identity_id(conn, old)
            new = clean_name(new)
            (stored,) = conn.execute(
                "SELECT name FROM identities WHERE id = ?", (identity_id,)
            ).fetchone()
            if new == stored:
                raise GalleryError(f"{self.path}: {old!r} is already called {new!r}")
            if find(conn, new) not in (None, identity_id):
                raise GalleryError(f"{self.path}: an identity named {new!r} already exists")
            _refuse_case_twin(by_folded_name(ids_by_name(conn)), new, identity_id, self.path)
            conn.execute(
                "UPDATE identities SET name = ?, updated = ? WHERE id = ?",
                (new, now_iso(), identity_id),
            )

    def set_threshold(self, name: str | None, threshold: float | None) -> None:
        """The threshold of one identity (None: use the default), or with ``name`` None the
        gallery default."""
        if threshold is not None:
            check_threshold(threshold)
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


def _refuse_case_twin(
    folded: dict[str, tuple[str, int]], name: str, own_id: int, path: Path
) -> None:
    """GalleryError when another identity's name looks like ``name`` (``twin_key``): Bob and
    bob, or 'Ada' and full-width 'Ａｄａ', would be two people, each with half the photos."""
    other, identity_id = folded.get(twin_key(name), (name, own_id))
    if identity_id != own_id:
        raise GalleryError(
            f"{path}: {other!r} is enrolled; {name!r} would be another person (names differ "
            f"in case, full-width or invisible characters only): use {other!r}"
        )


def _create_identity(conn: sqlite3.Connection, name: str) -> int:
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO identities (name, threshold, created, updated) VALUES (?, NULL, ?, ?)",
        (clean_name(name), now, now),
    )
    return int(cursor.lastrowid or 0)
