"""The gallery: who is enrolled, in one SQLite file.

Tables: ``meta`` (schema version, the model id and embedding size every embedding was made
with, the default threshold), ``identities`` (name, threshold or NULL for the default,
created / updated as ISO 8601 UTC) and ``embeddings`` (one row per enrolled face: identity,
model id, the vector as float32 bytes, the source image's SHA-256, timestamp).

A gallery made with another model is refused, never mixed. A file marked read-only (no write
permission bits) is never written, even by root. New files are created owner-only (0600).

Here: ``Gallery``, opening and creating the file, and deleting a file a failed first enroll
made. Beside it, what ``Gallery`` is made of: ``gallery_read`` (the meta values, the people,
their faces, a person found by name), ``gallery_match`` (matching faces: the distances and
thresholds) and ``gallery_write`` (enrolling, removing, renaming, thresholds: each write one
transaction); and ``gallery_file`` (the SQLite file), ``gallery_check`` (what a read
refuses), ``gallery_names`` (how names are stored and compared).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from daemon.gallery_check import check_threshold
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
    place,
    roll_back,
    translate,
    write_schema,
)
from daemon.gallery_match import GalleryMatcher
from daemon.gallery_write import GalleryWriter
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


class Gallery(GalleryMatcher, GalleryWriter):
    """An open gallery file. Use ``Gallery.open`` (or ``Gallery.create``)."""

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
            conn = None
            try:
                conn = sqlite3.connect(uri, uri=True, timeout=lock_timeout_s, isolation_level=None)
                conn.execute("PRAGMA foreign_keys = ON")
                if writable:
                    conn.execute(SECURE_DELETE)
                gallery = cls(path, conn, writable)
                break
            except sqlite3.DatabaseError as exc:
                if conn is not None:  # (its file closed now, not at the next garbage collection)
                    conn.close()
                if attempt or not (hot_journal(exc, path) and roll_back(path, lock_timeout_s)):
                    raise translate(path, exc) from None
        try:
            gallery._check(model_id)
        except BaseException:
            gallery.close()
            raise
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
