"""The MQTT spool's SQLite file: its layout (1 KB pages and no AUTOINCREMENT: fewer disk writes
per message, ``daemon.spool``), its tables checked, a spool an older facewatch made told
apart, and what SQLite's errors say of the file: damaged (it is set aside for a new one), or
its disk full or failing (waited out)."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 10, 11, 13, 26
PAGE_SIZE = 1024  # an event (~0.5 KB) fits in one page; a face snapshot spans a few
# Without AUTOINCREMENT a new message's id is the highest id + 1, so the oldest is still the
# lowest id. An id is used again only once every message from it up was deleted, and only
# the publisher deletes the newest (a full spool drops the oldest): it holds no id it deleted.
MESSAGES_TABLE = (
    "CREATE TABLE IF NOT EXISTS {name} (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
    "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, kind TEXT NOT NULL)"
)
STATE_TABLE = "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
COLUMNS = {  # what each table must have, in this order (the rebuild copies rows as they are)
    "messages": ("id", "topic", "payload", "qos", "retain", "kind"),
    "state": ("key", "value"),
}


# SQLite's own words for its result codes (Python 3.10's exceptions carry no code)
_MESSAGES = {
    "disk i/o error": SQLITE_IOERR,
    "malformed": SQLITE_CORRUPT,
    "database or disk is full": SQLITE_FULL,
    "file is not a database": SQLITE_NOTADB,
}


def _code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of ``exc`` (0 when it cannot be told)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11 and later
    if code is not None:
        return int(code) & 0xFF
    text = str(exc).lower()
    return next((value for words, value in _MESSAGES.items() if words in text), 0)


class WrongTables(sqlite3.DatabaseError):
    """A spool whose tables are not those facewatch makes (an old or hand-made one)."""


def _damaged(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the spool file is damaged (it is moved aside for a new one), not
    that its disk is full or failing (that is waited out)."""
    if isinstance(exc, WrongTables):
        return True
    return isinstance(exc, sqlite3.DatabaseError) and _code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def _unusable(path: Path, exc: OSError | sqlite3.Error) -> OSError:
    """Why the spool cannot be opened, as an OSError whose errno says whether waiting may
    help (a full disk, an I/O error: ENOSPC, EIO) or someone must act (the rest)."""
    if isinstance(exc, OSError):
        number, said = exc.errno, exc.strerror or str(exc)
    else:
        number = {SQLITE_FULL: errno.ENOSPC, SQLITE_IOERR: errno.EIO}.get(_code(exc))
        said = str(exc)
    if number not in (errno.ENOSPC, errno.EIO) and _full(path.parent):
        number, said = errno.ENOSPC, f"{said} (its disk is full)"  # SQLite: 'cannot open'
    return OSError(number, f"MQTT spool {path}: cannot open: {said}")


def _full(folder: Path) -> bool:
    """No block or no inode left for a new file in ``folder`` (or the nearest that exists)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        disk = os.statvfs(folder)
    except OSError:
        return False
    return disk.f_bavail == 0 or (disk.f_files > 0 and disk.f_favail == 0)


def _autoincrement(db: sqlite3.Connection) -> bool:
    """The messages table an older facewatch made: AUTOINCREMENT ids."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()
    return "AUTOINCREMENT" in str(row[0]).upper()


def _check_tables(db: sqlite3.Connection) -> None:
    """WrongTables when a table lacks a column facewatch reads or writes (a table of an
    older or hand-made spool that ``CREATE TABLE IF NOT EXISTS`` kept)."""
    for table, expected in COLUMNS.items():
        found = tuple(str(row[1]) for row in db.execute(f"PRAGMA table_info({table})"))
        if found != expected:
            raise WrongTables(
                f"its table {table} has the columns ({', '.join(found)}), not "
                f"({', '.join(expected)})"
            )


def _old_layout(db: sqlite3.Connection) -> bool:
    """A spool an older facewatch made: 4 KB pages, or AUTOINCREMENT ids."""
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    return page_size != PAGE_SIZE or _autoincrement(db)
