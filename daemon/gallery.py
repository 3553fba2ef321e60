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
import difflib
import logging
import os
import sqlite3
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daemon.gallery_check import (
    UNIT_TOLERANCE,
    check_threshold,
    default_threshold,
    own_threshold,
    vectors_of,
)
from daemon.gallery_check import embedding_size as stored_embedding_size
from daemon.gallery_file import (
    META_KEYS,
    SCHEMA_VERSION,
    SECURE_DELETE,
    GalleryError,
    check_writable,
    create_private,
    file_stamp,
    hot_journal,
    now_iso,
    place,
    roll_back,
    translate,
    write_schema,
)
from daemon.gallery_names import clean_name, lookup_name, twin_key
from engines.facenet import DEFAULT_THRESHOLD, split_embeddings_id

logger = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT_S = 5.0
# (a gallery cannot move to another model: its people's photos are enrolled again)
REENROLL = (
    "enroll everyone again into a new gallery: `facewatch enroll --config FILE --gallery "
    "NEW.sqlite --dir PHOTOS` (one sub-folder of photos per person; the daemon's config "
    "gives the model), then set recognition.gallery: NEW.sqlite in FILE"
)


def shown_threshold(value: float) -> str:
    """A threshold as the commands print it: 3 decimals, or 2 significant digits below 0.001
    (an untrained model's LFW threshold can be that small: not "0.000")."""
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


class GalleryExists(GalleryError):
    """``Gallery.create`` found a file in its place: there before, or made meanwhile by
    another enroll or import."""


@dataclass(frozen=True)
class Match:
    """The answer for one face: ``identity`` None means unknown. ``nearest`` is the closest
    enrolled identity either way; ``confidence`` is how far inside its threshold the face
    is, ``1 - distance / threshold`` clipped to [0, 1] (0 for unknown faces).
    ``runner_up``: the closest other identity, at ``runner_up_distance`` (None, inf when the
    gallery holds one person)."""

    identity: str | None
    distance: float
    confidence: float
    nearest: str | None = None
    threshold: float | None = None
    runner_up: str | None = None
    runner_up_distance: float = float("inf")


@dataclass(frozen=True)
class Identity:
    name: str
    threshold: float | None
    embeddings: int
    created: str
    updated: str


@dataclass(frozen=True)
class Enrollment:
    """One face to enroll: who, its embedding (D,), and the SHA-256 of its source image;
    ``created``: when it was first enrolled (an export's, kept by an import; None: now)."""

    name: str
    embedding: np.ndarray
    source_sha256: str
    created: str | None = None


class Gallery:
    """An open gallery file. Use ``Gallery.open`` (or ``Gallery.create``)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, writable: bool) -> None:
        self.path, self._conn, self.writable = path, conn, writable
        self._meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self._matrix: tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray] | None = None
        # the daemon's recognition.threshold, when set, replaces the stored default
        self.threshold_override: float | None = None
        # the file's stamp (gallery_file.file_stamp) as this object's create made it; None
        # when the file was there: who may delete it again, and only while it is unchanged
        self.created: tuple[int, ...] | None = None

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
        if path.is_dir():
            raise GalleryError(f"{path}: a folder, not a gallery file")
        if not path.is_file():
            raise GalleryError(f"{path}: no gallery here (enroll someone first: facewatch enroll)")
        if writable:
            check_writable(path)
        uri = f"{path.resolve().as_uri()}?mode={'rw' if writable else 'ro'}"
        for attempt in range(2):
            try:
                conn = sqlite3.connect(uri, uri=True, timeout=lock_timeout_s, isolation_level=None)
                conn.execute("PRAGMA foreign_keys = ON")
                if writable:
                    conn.execute(SECURE_DELETE)
                gallery = cls(path, conn, writable)
                break
            except sqlite3.DatabaseError as exc:
                if attempt or not (hot_journal(exc, path) and roll_back(path, lock_timeout_s)):
                    raise translate(path, exc) from None
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
        """A new, empty gallery file (0600) for embeddings of ``model_id``. It is made whole
        beside its place and only then put there: a cut (power, kill) leaves no half gallery."""
        path = Path(path)
        try:
            stamp = _make(path, model_id, embedding_size, threshold, lock_timeout_s)
        except FileExistsError:
            raise GalleryExists(f"{path}: already exists") from None
        gallery = cls.open(path, model_id, writable=True, lock_timeout_s=lock_timeout_s)
        gallery.created = stamp
        return gallery

    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        model_id: str,
        embedding_size: int,
        threshold: float = DEFAULT_THRESHOLD,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> Gallery:
        """The gallery at ``path`` (with its own threshold), or a new one at ``threshold``
        (also in place of an empty file: a creation cut short by an older facewatch); the
        one another enroll or import made meanwhile when it is first (``created`` None)."""
        path = Path(path)
        if path.is_file() and path.stat().st_size == 0:
            logger.warning("%s: an empty file, not a gallery: replaced by a new gallery", path)
            for suffix in ("-journal", "-wal", "-shm"):  # its SQLite leftovers, not the new one's
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            path.unlink()
        if not path.exists():
            try:
                return cls.create(path, model_id, embedding_size, threshold, lock_timeout_s)
            except GalleryExists:  # another enroll or import made it meanwhile: theirs is ours
                pass
        return cls.open(path, model_id, writable=True, lock_timeout_s=lock_timeout_s)

    def _check(self, model_id: str | None) -> None:
        missing = [key for key in META_KEYS if key not in self._meta]
        if missing:
            raise GalleryError(f"{self.path}: not a facewatch gallery (no {', '.join(missing)})")
        if self._meta.get("schema_version") != str(SCHEMA_VERSION):
            raise GalleryError(
                f"{self.path}: gallery schema version {self._meta.get('schema_version')!r}, "
                f"this facewatch reads version {SCHEMA_VERSION}"
            )
        stored_embedding_size(self.path, self._meta["embedding_size"])  # (no command mends it)
        if model_id is not None and model_id != self.model_id:
            ours, flip = split_embeddings_id(self.model_id)
            if split_embeddings_id(model_id)[0] == ours:
                setting = "with" if flip else "without"
                raise GalleryError(
                    f"{self.path}: this gallery was enrolled {setting} --flip (mirrored faces "
                    "averaged in), and embeddings made otherwise do not match its own: use it "
                    f"{setting} --flip (recognition.flip: {str(flip).lower()} in a daemon "
                    f"config), or {REENROLL}"
                )
            raise GalleryError(
                f"{self.path}: this gallery was enrolled with model {self.model_id!r}, but "
                f"the model in use is {model_id!r}; embeddings of different models cannot be "
                f"compared: use the gallery's model, or {REENROLL}"
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
            return _find(self._conn, name) is not None
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None

    # -- matching ---------------------------------------------------------------------------

    def load(self) -> list[str]:
        """Read every enrolled vector and threshold now, in one read of the file (whatever is
        written to it later, ``match`` then uses these); the names of the people enrolled.
        GalleryError when the file cannot be read."""
        return self._loaded()[2]

    def damage(self) -> list[str]:
        """What SQLite's quick check finds damaged in the file (an index, a page that the
        reads of ``load`` do not touch), [] when nothing; GalleryError when it cannot run."""
        found = [" ".join(str(row[0]).split()) for row in self._read("PRAGMA quick_check(5)")]
        return [] if found == ["ok"] else found

    def with_own_threshold(self) -> int:
        """How many people have a threshold of their own, in the state ``load`` read (no
        second read: a writer may hold the file by now)."""
        return int(np.isfinite(self._loaded()[4]).sum())

    def _loaded(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
        """(vectors (M, D), owner index (M,), names, thresholds per name, each name's own
        threshold or NaN), cached."""
        if self._matrix is None:
            with self._snapshot():  # the two reads see one state of the file
                vectors, owners, _, _ = self.embeddings()
                own = {i.name: i.threshold for i in self.identities()}
            names = sorted(set(owners))
            index = {name: k for k, name in enumerate(names)}
            default = self.threshold if self.threshold_override is None else self.threshold_override
            thresholds = np.array(
                [default if own.get(n) is None else own[n] for n in names], np.float64
            )
            self._check_thresholds(names, thresholds)
            owner = np.array([index[n] for n in owners], np.int64)
            theirs = np.array([np.nan if own.get(n) is None else own[n] for n in names])
            self._matrix = (np.ascontiguousarray(vectors), owner, names, thresholds, theirs)
        return self._matrix

    def _check_thresholds(self, names: list[str], thresholds: np.ndarray) -> None:
        """GalleryError for a threshold no command would have stored (an import by an older
        facewatch took an export's as it was): infinite, everyone would match."""
        for name, value in zip(names, thresholds, strict=True):
            try:
                check_threshold(float(value), f"{name}'s threshold")
            except GalleryError as exc:
                raise GalleryError(
                    f"{self.path}: {exc}: set it again (facewatch gallery threshold "
                    f"{name!r} VALUE, or --default VALUE)"
                ) from None

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: its reads see one state of the file, whoever writes."""
        try:
            self._conn.execute("BEGIN")
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("COMMIT")

    def match(
        self,
        embeddings: np.ndarray,
        runner_up: bool = False,
        defaults: Sequence[float | None] | None = None,
    ) -> list[Match]:
        """The identity (or unknown) of each of ``embeddings`` (N, D), nearest neighbour;
        with ``runner_up`` (identify shows it), also the closest other identity: a second
        pass over the gallery that the daemon's matching does not make. ``defaults``: per
        face, a threshold in place of the default (a camera's own; None: the default), which
        a person's own threshold overrides only where it is stricter."""
        queries = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.embedding_size)
        if len(queries) == 0:
            return []
        vectors, owner, names, thresholds, theirs = self._loaded()
        if len(vectors) == 0:
            return [Match(None, float("inf"), 0.0) for _ in queries]
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        similarity = queries @ vectors.T  # (N, M): the one matrix product
        rows = np.arange(len(queries))
        best = np.argmax(similarity, axis=1)
        distances = np.maximum(2.0 - 2.0 * similarity[rows, best], 0.0)
        seconds: list[tuple[str | None, float]] = [(None, float("inf"))] * len(queries)
        if runner_up:
            others = np.where(owner[None, :] == owner[best][:, None], -np.inf, similarity)
            second = np.argmax(others, axis=1)  # the nearest face of anyone else
            second_distances = np.maximum(2.0 - 2.0 * others[rows, second], 0.0)
            seconds = [
                (names[int(owner[j])] if np.isfinite(d) else None, float(d))
                for j, d in zip(second, second_distances, strict=True)
            ]
        results = []
        instead = [None] * len(queries) if defaults is None else defaults
        for row, dist, (other, other_distance), default in zip(
            best, distances, seconds, instead, strict=True
        ):
            who = int(owner[row])
            limit = float(thresholds[who])
            if default is not None:  # a person's own (NaN: none) holds only where stricter
                limit = float(np.fmin(theirs[who], default))
            known = bool(dist < limit)
            confidence = float(np.clip(1.0 - dist / limit, 0.0, 1.0)) if known else 0.0
            results.append(
                Match(
                    names[who] if known else None,
                    float(dist),
                    confidence,
                    names[who],
                    limit,
                    other,
                    other_distance,
                )
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
            ids = _ids_by_name(conn)
            folded = _by_folded_name(ids)
            holders: dict[str, set[int]] = {}
            touched: set[int] = set()
            for source, holder in conn.execute("SELECT source_sha256, identity_id FROM embeddings"):
                holders.setdefault(source, set()).add(holder)
            for face in faces:
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
                identity_id = ids.get(lookup_name(face.name))
                if identity_id is None:
                    name = clean_name(face.name)
                    _refuse_case_twin(folded, name, -1, self.path)
                    identity_id = _create_identity(conn, name)
                    ids[name] = identity_id
                    folded[twin_key(name)] = (name, identity_id)
                others = holders.setdefault(face.source_sha256, set()) - {identity_id}
                if others:
                    (holder,) = conn.execute(
                        "SELECT name FROM identities WHERE id = ?", (min(others),)
                    ).fetchone()
                    raise GalleryError(
                        f"{self.path}: a photo of {face.name!r} is already enrolled as "
                        f"{holder!r}; nothing was enrolled"
                    )
                holders[face.source_sha256].add(identity_id)
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
                if cursor.rowcount:
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

    def _identity_ids(self, conn: sqlite3.Connection, names: list[str]) -> dict[str, int]:
        """Each of ``names`` as ``_identity_id`` finds it, from one read of the identities (an
        import of 5,000 people with their own thresholds read all of them for each one)."""
        if not names:
            return {}
        exact: dict[str, int] = {}
        for identity_id, stored in conn.execute("SELECT id, name FROM identities ORDER BY id"):
            exact.setdefault(unicodedata.normalize("NFC", stored), int(identity_id))
        folded = _ids_by_name(conn)
        found = {}
        for name in names:
            identity_id = exact.get(unicodedata.normalize("NFC", name))
            if identity_id is None:
                identity_id = folded.get(lookup_name(name))
            found[name] = self._identity_id(conn, name) if identity_id is None else identity_id
        return found

    def _identity_id(self, conn: sqlite3.Connection, name: str) -> int:
        found = _find(conn, name)
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
        ids = _ids_by_name(conn)
        twin = _by_folded_name(ids).get(twin_key(name))
        close = [twin[0]] if twin else difflib.get_close_matches(lookup_name(name), ids, n=1)
        return close[0] if close else None

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
            if _find(conn, new) not in (None, identity_id):
                raise GalleryError(f"{self.path}: an identity named {new!r} already exists")
            _refuse_case_twin(_by_folded_name(_ids_by_name(conn)), new, identity_id, self.path)
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

    def _read(self, sql: str) -> list[tuple]:
        try:
            return self._conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None


def _make(
    path: Path, model_id: str, embedding_size: int, threshold: float, lock_timeout_s: float
) -> tuple[int, ...]:
    """Make a new gallery file at ``path``; its ``file_stamp`` as made (before anyone else
    can write it). FileExistsError when a file is there, or is put there meanwhile."""
    if path.exists():
        raise FileExistsError(path)
    try:
        check_threshold(threshold, "default threshold")
    except GalleryError as exc:
        raise GalleryError(f"{path}: {exc}") from None
    scratch = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        scratch.unlink(missing_ok=True)
        create_private(scratch)
        conn = sqlite3.connect(scratch, timeout=lock_timeout_s, isolation_level=None)
        try:
            conn.execute(SECURE_DELETE)
            write_schema(conn, model_id, embedding_size, threshold)
        finally:
            conn.close()
        stamp = file_stamp(scratch)  # a link or rename keeps inode, size, time and content
        if stamp is None:
            raise GalleryError(f"{path}: cannot create the gallery: {scratch} cannot be read back")
        place(scratch, path)
    except sqlite3.DatabaseError as exc:
        raise translate(path, exc) from None
    except FileExistsError:
        raise
    except OSError as exc:
        raise GalleryError(f"{path}: cannot create the gallery: {exc.strerror}") from None
    finally:
        scratch.unlink(missing_ok=True)
    return stamp


def remove_created(gallery: Gallery) -> bool:
    """Delete the file ``gallery`` created (``Gallery.created``) when nothing was written to
    it since, so that a failed first enroll leaves no empty gallery; a file another process
    made, or has written to meanwhile (an enroll that opened it), is kept. Whether it went.
    Its size and time are not compared: a large enroll rolled back changes them (SQLite
    writes pages to the file before the commit and puts them back); every commit bumps the
    change counter (the gallery's journal is a rollback journal, never a WAL)."""
    if gallery.created is None:
        return False
    now = file_stamp(gallery.path)
    if now is None or _unwritten(now) != _unwritten(gallery.created):
        return False
    gallery.path.unlink(missing_ok=True)
    return True


def _unwritten(stamp: tuple[int, ...]) -> tuple[int, ...]:
    """What of a ``file_stamp`` stays while nothing is committed: device, inode, counter."""
    return (stamp[0], stamp[1], stamp[-1])


def _ids_by_name(conn: sqlite3.Connection) -> dict[str, int]:
    """Identity ids by name as ``lookup_name`` spells it (a gallery written before names
    were normalised may hold a macOS NFD name, spaces, a no-break space); the first row wins
    a tie."""
    ids: dict[str, int] = {}
    for identity_id, stored in conn.execute("SELECT id, name FROM identities ORDER BY id"):
        ids.setdefault(lookup_name(stored), int(identity_id))
    return ids


def _find(conn: sqlite3.Connection, name: str) -> int | None:
    """The identity called ``name``: spelt as stored, else as ``lookup_name`` spells both (a
    gallery from before may hold 'Ada Lovelace' and 'Ada\\xa0Lovelace': each is found)."""
    typed = unicodedata.normalize("NFC", name)
    for identity_id, stored in conn.execute("SELECT id, name FROM identities ORDER BY id"):
        if unicodedata.normalize("NFC", stored) == typed:
            return int(identity_id)
    return _ids_by_name(conn).get(lookup_name(name))


def _by_folded_name(ids: dict[str, int]) -> dict[str, tuple[str, int]]:
    """``ids`` (``_ids_by_name``) keyed by ``twin_key``: (name, id)."""
    folded: dict[str, tuple[str, int]] = {}
    for name, identity_id in ids.items():
        folded.setdefault(twin_key(name), (name, identity_id))
    return folded


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
