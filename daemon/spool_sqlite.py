"""The MQTT spool's SQLite file: its layout (1 KB pages and no AUTOINCREMENT: fewer disk writes
per message, ``daemon.spool``), the file opened in it (owner-only, WAL), its tables checked, a
spool an older facewatch made told apart and rebuilt, and what SQLite's errors say of the
file: damaged (it is set aside for a new one), or its disk full or failing (waited out). Its
log lines are the spool's (``daemon.spool``)."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from pathlib import Path

logger = logging.getLogger("daemon.spool")

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
WAL_LIMIT_BYTES = 1 << 20  # what an emptied WAL file keeps of its size
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


def open_file(path: Path) -> tuple[sqlite3.Connection, int]:
    """The spool's database at ``path``, made if new, and the number of messages in it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    for suffix in ("", "-wal", "-shm"):  # owner-only, also a spool an older one made
        part = Path(f"{path}{suffix}")
        if part.exists() and part.stat().st_mode & 0o077:
            os.chmod(part, 0o600)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # (a new file's: before WAL, tables)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # sent events and face snapshots are overwritten, not left in free pages (SQLite's
        # default is off; only some builds turn it on)
        db.execute("PRAGMA secure_delete=ON")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        db.execute(MESSAGES_TABLE.format(name="messages"))
        db.execute(STATE_TABLE)
        _check_tables(db)
        db.execute("SELECT key, CAST(value AS BLOB) FROM state").fetchall()  # (readable)
        count = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        if _old_layout(db):
            _rebuild(db, path, count)
    except BaseException:
        db.close()
        raise
    return db, count


def _rebuild(db: sqlite3.Connection, path: Path, count: int) -> None:
    """A spool an older facewatch made (4 KB pages, AUTOINCREMENT) is made anew in the
    current layout when it is empty, with what it remembers (the people published); one
    that holds messages is left as it is until a start finds it empty. Each step is one
    SQLite transaction, so a crash or a full disk leaves the old layout or the new one,
    every row in it; a step that fails is logged and tried again at the next start."""
    if count:
        logger.info(
            "MQTT spool %s: made by an older facewatch (more disk writes per message); "
            "rebuilt at the first start that finds it empty", path,
        )  # fmt: skip
        return
    try:
        if _autoincrement(db):
            with db:  # (copies any row all the same: never one lost)
                db.execute("BEGIN IMMEDIATE")
                db.execute(MESSAGES_TABLE.format(name="messages_new"))
                db.execute("INSERT INTO messages_new SELECT * FROM messages")
                db.execute("DROP TABLE messages")
                db.execute("ALTER TABLE messages_new RENAME TO messages")
                db.execute("DELETE FROM sqlite_sequence")
        db.execute("PRAGMA journal_mode=DELETE")  # (WAL keeps a file's page size)
        db.execute("PRAGMA synchronous=FULL")  # (NORMAL is power-safe under WAL only)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("VACUUM")
    except sqlite3.Error as exc:
        logger.warning(
            "MQTT spool %s: made by an older facewatch, not rebuilt (%s): it writes more "
            "to the disk per message until a start rebuilds it", path, exc,
        )  # fmt: skip
    finally:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    if not _old_layout(db):
        logger.info(
            "MQTT spool %s: rebuilt in the current layout (1 KB pages: fewer disk writes "
            "per message)", path,
        )  # fmt: skip


def set_aside(path: Path, why: sqlite3.DatabaseError, held: int | None = None) -> None:
    """Move a damaged spool (and its WAL) aside, for a new one in its place."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        damaged = Path(f"{path}{suffix}")
        if damaged.exists():
            damaged.rename(f"{path}{suffix}.damaged-{stamp}")
    logger.error(
        "MQTT spool %s is damaged (%s): moved aside as %s.damaged-%s; a new spool "
        "starts, and the %s the old one held %s not sent (sqlite3 FILE .recover "
        "reads what is left of them)",
        path, why, path.name, stamp,
        "events" if held is None else f"{held} message(s)", "are" if held != 1 else "is",
    )  # fmt: skip
