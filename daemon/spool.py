"""A bounded on-disk FIFO of MQTT messages (one SQLite file, owner-only permissions).

Every event goes through it: the scheduler appends, the publisher takes the oldest, and
deletes it only once the broker acknowledged it. A message is therefore on disk from the
moment it is created until it is delivered; a crash or a SIGTERM loses nothing. When the
spool holds ``max_messages``, the oldest is dropped to make room, and that is counted.

It also keeps what the publisher must remember across restarts (``remember`` / ``recall``):
the people whose retained topics it published, so it can delete those of people removed
from the gallery while the daemon was stopped (or removed while the broker was away, until
their deletions were sent).

Each message costs two small transactions (its append, its delete), each writing the pages
it touched to the write-ahead log: 1 KB pages, not SQLite's 4 KB, and no AUTOINCREMENT
(its counter's page was a third page written per append) keep that to about 2 KB written
per event, not 12.5 KB (SD cards). A spool an older facewatch made is rebuilt so at a start
that finds it empty.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pwd
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from daemon.claims import claim, machine_id

logger = logging.getLogger(__name__)

SPOOL_FILE = "mqtt-spool.sqlite"
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 10, 11, 13, 26
SHRINK_ABOVE_BYTES = 8 << 20  # an empty spool's file larger than this is vacuumed
# a drained spool's write-ahead log is emptied at most this often: it holds the messages sent
# (events, face snapshots) until then, also after a crash
TIDY_EVERY_S = 60.0
WAL_LIMIT_BYTES = 1 << 20  # what an emptied WAL file keeps of its size
MAX_TS = 253402300799.0  # 9999-12-31: an event time beyond is none to show
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
# a message's row as it is read: text as bytes (decoded here, so that a damaged topic is one
# unreadable message, not an error that stops every read)
MESSAGE_COLUMNS = "id, CAST(topic AS BLOB), CAST(payload AS BLOB), qos, retain, CAST(kind AS BLOB)"
T = TypeVar("T")


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


def topic_node(topic: str) -> str:
    """The ``PREFIX/NODE`` a spooled message's topic names: the part before
    ``/events/CAMERA`` or ``/snapshots/CAMERA/EVENT_ID`` (the topic itself when neither)."""
    levels = topic.split("/")
    if len(levels) >= 4 and levels[-2] == "events":
        return "/".join(levels[:-2])
    if len(levels) >= 5 and levels[-3] == "snapshots":
        return "/".join(levels[:-3])
    return topic


@dataclass(frozen=True)
class Backlog:
    """Some of the spooled messages, for the log: how many, for which nodes, of when."""

    count: int
    nodes: tuple[str, ...]  # the PREFIX/NODE their topics name
    first_ts: float | None  # the frame times of the oldest and newest event among them
    last_ts: float | None

    def when(self) -> str:
        """`` (events of 2025-05-01 14:03 to 2025-05-02 09:12)`` in local time, or nothing
        when no event among them says when it was seen."""
        if self.first_ts is None or self.last_ts is None:
            return ""
        first, last = (_local(ts) for ts in (self.first_ts, self.last_ts))
        return f" (events of {first}" + ("" if last == first else f" to {last}") + ")"


def _local(ts: float) -> str:
    """A time as the log's reminders say it, ``2025-05-01 14:03``."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def as_owner() -> str:
    """``sudo -u USER `` for a command on the daemon's files (SQLite files root made beside
    the spool's would keep the daemon out), or nothing when it runs as root."""
    uid = os.geteuid()
    if uid == 0:
        return ""
    try:
        return f"sudo -u {pwd.getpwuid(uid).pw_name} "
    except KeyError:  # (a container's user without a name)
        return f"sudo -u '#{uid}' "


def _frame_ts(payload: bytes) -> float | None:
    """An event's ``frame_ts``, or None when the payload has none (damaged, another version)."""
    try:
        ts = json.loads(payload).get("frame_ts")
    except (ValueError, AttributeError):
        return None
    if not isinstance(ts, (int, float)) or not 0 < ts < MAX_TS:  # (NaN too)
        return None  # (a time that cannot be shown: milliseconds, a hand edit)
    return float(ts)


def _backlog_of(rows: Iterable[tuple[Any, Any]]) -> Backlog:
    """The Backlog of (topic, payload of an event or None) rows, topics read as BLOB."""
    nodes: set[str] = set()
    count, times = 0, []
    for topic, payload in rows:
        count += 1
        nodes.add(topic_node(_text(topic)))
        ts = _frame_ts(payload) if isinstance(payload, bytes) else None
        if ts is not None:
            times.append(ts)
    return Backlog(count, tuple(sorted(nodes)), min(times, default=None), max(times, default=None))


@dataclass(frozen=True)
class Message:
    row_id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str  # "event" (JSON that gets its publish time) or "raw"
    unreadable: str | None = None  # why its row cannot be read (damaged): nothing else holds
    generation: int = 0  # the spool file it was read from (Spool.generation)


def _message(row: tuple[Any, ...]) -> Message:
    """A row read with MESSAGE_COLUMNS; ValueError or TypeError when a value is not what
    facewatch wrote (a topic that is no UTF-8, a value where none can be)."""
    row_id, topic, payload, qos, retain, kind = row
    return Message(
        int(row_id),
        bytes(topic).decode(),
        bytes(payload),
        int(qos),
        bool(retain),
        bytes(kind).decode(),
    )


def _text(value: object) -> str:
    """A value read as BLOB, as text for the log (bytes that are no UTF-8 as ``\\xe5``)."""
    return (
        bytes(value).decode(errors="backslashreplace") if isinstance(value, bytes) else str(value)
    )


class Spool:
    def __init__(self, folder: str | Path, max_messages: int = 100_000) -> None:
        self.folder = Path(folder)
        self.max_messages = max_messages
        self.path = self.folder / SPOOL_FILE
        try:
            self._lock_file = self._claim()
        except OSError as exc:
            raise _unusable(self.path, exc) from exc
        try:
            try:
                self._db, self._count = self._open()
            except sqlite3.DatabaseError as exc:
                if not _damaged(exc):
                    raise
                self._set_aside(exc)  # the daemon is worth more than what it held
                self._db, self._count = self._open()
        except (OSError, sqlite3.Error) as exc:
            os.close(self._lock_file)
            raise _unusable(self.path, exc) from exc
        self._lock = threading.Lock()
        # what a spool found damaged while running remembered, while its new file cannot
        # be made yet (its disk full): None when the spool is open
        self._pending: list[tuple[str, str]] | None = None
        # how many times a damaged spool was replaced while running: the new file's row ids
        # start again at 1, and a message of the old one must not delete one of the new
        self.generation = 0
        self._dropped, self._next_drop_log = 0, 0.0
        self._sent_in_wal, self._tidied = False, time.monotonic()  # (see tidy)
        self._check_machine()
        if self._count:
            logger.info(
                "MQTT spool %s: %d messages from before, sent first", self.path, self._count
            )

    def _check_machine(self) -> None:
        """A spool copied from another machine (a backup restored, a box moved) sends what it
        held, which that machine may have delivered since the copy: said at the start, with
        the line that deletes them. Each start records the machine it runs on."""
        here = machine_id()
        if here is None:
            return
        try:
            there = self.recall("machine")
            if there is not None and there != here and self._count:
                backlog = self._backlog("", ())
                logger.warning(
                    "MQTT spool %s: its %d message(s)%s were spooled on another machine (its "
                    "/etc/machine-id differs): a backup restored, or a box moved. They are "
                    "sent now, to %s; if that machine delivered them already (it ran on after "
                    "the copy), stop facewatch and delete them: %ssqlite3 %s "
                    "'DELETE FROM messages'",
                    self.path, backlog.count, backlog.when(), ", ".join(backlog.nodes),
                    as_owner(), shlex.quote(str(self.path)),
                )  # fmt: skip
            if there != here:
                self.remember("machine", here)
        except sqlite3.Error as exc:  # (its disk full: told when events need it)
            logger.debug("MQTT spool %s: the machine not recorded: %s", self.path, exc)

    def _claim(self) -> int:
        """An exclusive lock on the folder's ``lock`` file, held while the spool is open: a
        second daemon on the same spool would send every message twice."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return claim(self.folder / "lock", "spool_dir")

    def _open(self) -> tuple[sqlite3.Connection, int]:
        """The spool's database, made if new, and the number of messages in it."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        for suffix in ("", "-wal", "-shm"):  # owner-only, also a spool an older one made
            part = Path(f"{self.path}{suffix}")
            if part.exists() and part.stat().st_mode & 0o077:
                os.chmod(part, 0o600)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
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
                self._rebuild(db, count)
        except BaseException:
            db.close()
            raise
        return db, count

    def _rebuild(self, db: sqlite3.Connection, count: int) -> None:
        """A spool an older facewatch made (4 KB pages, AUTOINCREMENT) is made anew in the
        current layout when it is empty, with what it remembers (the people published); one
        that holds messages is left as it is until a start finds it empty. Each step is one
        SQLite transaction, so a crash or a full disk leaves the old layout or the new one,
        every row in it; a step that fails is logged and tried again at the next start."""
        if count:
            logger.info(
                "MQTT spool %s: made by an older facewatch (more disk writes per message); "
                "rebuilt at the first start that finds it empty", self.path,
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
                "to the disk per message until a start rebuilds it", self.path, exc,
            )  # fmt: skip
        finally:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        if not _old_layout(db):
            logger.info(
                "MQTT spool %s: rebuilt in the current layout (1 KB pages: fewer disk writes "
                "per message)", self.path,
            )  # fmt: skip

    def _set_aside(self, why: sqlite3.DatabaseError, held: int | None = None) -> None:
        """Move a damaged spool (and its WAL) aside, for a new one in its place."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            damaged = Path(f"{self.path}{suffix}")
            if damaged.exists():
                damaged.rename(f"{self.path}{suffix}.damaged-{stamp}")
        logger.error(
            "MQTT spool %s is damaged (%s): moved aside as %s.damaged-%s; a new spool "
            "starts, and the %s the old one held %s not sent (sqlite3 FILE .recover "
            "reads what is left of them)",
            self.path, why, self.path.name, stamp,
            "events" if held is None else f"{held} message(s)", "are" if held != 1 else "is",
        )  # fmt: skip

    def _guarded(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` done on the spool's database (hold ``_lock``). A spool found damaged
        while the daemon runs (a bad block, a row SQLite cannot delete) is moved aside as at
        start, and a new one takes its place, where ``work`` is done again: what it held
        is not sent, and what it remembered goes over when it can still be read. While the
        new file cannot be made (its disk full), each call tries again and fails as a full
        disk does."""
        if self._pending is not None:
            self._start_new()
        try:
            return work(self._db)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
            self._replace(exc)
        return work(self._db)

    def _replace(self, why: sqlite3.DatabaseError) -> None:
        """Set the damaged spool aside while running, and start a new one (``_guarded``)."""
        try:
            state = [(str(k), str(v)) for k, v in self._db.execute("SELECT key, value FROM state")]
        except (sqlite3.Error, ValueError):
            state = []
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        held, self._count, self._pending = self._count, 0, state
        self.generation += 1
        self._set_aside(why, held)
        self._start_new()

    def _start_new(self) -> None:
        """Open the new spool after ``_replace``, with what the old one remembered."""
        self._db, self._count = self._open()
        state, self._pending = self._pending or [], None
        try:
            self._db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", state)
        except sqlite3.Error as exc:  # (its disk full: the people published are saved anew)
            logger.debug("MQTT spool %s: what it remembered not kept: %s", self.path, exc)

    def __len__(self) -> int:
        return self._count

    def append(self, topic: str, payload: bytes, kind: str = "raw") -> int:
        """Store one message (sent with QoS 1, not retained); returns how many old messages
        were dropped to make room."""
        with self._lock:
            return self._guarded(lambda db: self._append(db, topic, payload, kind))

    def _append(self, db: sqlite3.Connection, topic: str, payload: bytes, kind: str) -> int:
        dropped = 0
        if self._count >= self.max_messages:
            dropped = self._count - self.max_messages + 1
            db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)",
                (dropped,),
            )
            self._count -= dropped
            self._dropped += dropped
            if time.monotonic() >= self._next_drop_log:  # once a minute, not per message
                logger.warning(
                    "MQTT spool full (%d): dropped the oldest message (%d so far)",
                    self.max_messages,
                    self._dropped,
                )
                self._next_drop_log = time.monotonic() + 60.0
        db.execute(
            "INSERT INTO messages (topic, payload, qos, retain, kind) VALUES (?, ?, 1, 0, ?)",
            (topic, payload, kind),
        )
        self._count += 1
        return dropped

    def peek(self, limit: int = 1) -> list[Message]:
        """The oldest ``limit`` messages, oldest first (they stay in the spool). One whose
        row cannot be read (damaged) comes with ``unreadable`` saying why, for the
        publisher to drop: it would stop every message after it."""
        with self._lock:
            messages = self._guarded(lambda db: self._oldest(db, limit))
            return [replace(m, generation=self.generation) for m in messages]

    def _oldest(self, db: sqlite3.Connection, limit: int) -> list[Message]:
        try:
            rows = db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            return [_message(row) for row in rows]
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not _damaged(exc):
                raise
        # one row at a time (the ids come from the table's b-tree alone: damage there is
        # no row's, and the spool is replaced)
        ids = db.execute("SELECT id FROM messages ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [self._one(db, int(row[0])) for row in ids]

    @staticmethod
    def _one(db: sqlite3.Connection, row_id: int) -> Message:
        try:
            row = db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (row_id,)
            ).fetchone()
            return _message(row)
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not _damaged(exc):
                raise
            why = str(exc)
        said = {"topic": "?", "kind": "?"}  # for the log, what can be read of them
        for column in said:
            with contextlib.suppress(sqlite3.DatabaseError, TypeError):
                value = db.execute(
                    f"SELECT CAST({column} AS BLOB) FROM messages WHERE id = ?", (row_id,)
                ).fetchone()[0]
                said[column] = _text(value)
        return Message(row_id, said["topic"], b"", 1, False, said["kind"], unreadable=why)

    def delete(self, row_id: int, generation: int | None = None) -> None:
        """Delete a message; a row SQLite cannot delete (damaged) takes the spool aside.
        ``generation``: the spool file it was read from; a file set aside since held it
        (nothing is deleted: that id is another message's in the new file)."""
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            deleted = self._guarded(
                lambda db: db.execute("DELETE FROM messages WHERE id = ?", (row_id,)).rowcount
            )
            self._count -= deleted
            self._sent_in_wal = self._sent_in_wal or bool(deleted)
            if deleted and not self._count:
                self._shrink()

    def tidy(self, every_s: float = TIDY_EVERY_S) -> None:
        """When the spool is empty, and at most once in ``every_s``: write its write-ahead
        log into the file and empty it, so that the messages sent (events naming people,
        their faces) are no longer readable there (the file overwrites them: secure_delete)."""
        with self._lock:
            if self._count or not self._sent_in_wal:
                return
            if time.monotonic() - self._tidied < every_s:
                return
            self._tidied = time.monotonic()
            try:
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                logger.debug("MQTT spool %s: WAL not emptied: %s", self.path, exc)
                return
            self._sent_in_wal = bool(busy)

    def _shrink(self) -> None:
        """Once a backlog is sent, give its space back to the disk (SQLite keeps a file's
        pages for reuse: a long outage left hundreds of MB on an SD card for good)."""
        try:
            if self.path.stat().st_size < SHRINK_ABOVE_BYTES:
                return
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (OSError, sqlite3.Error) as exc:  # (a full disk: VACUUM needs room) next time
            logger.debug("MQTT spool %s: not shrunk: %s", self.path, exc)

    def strays(self, base: str) -> Backlog | None:
        """The spooled messages whose topic is not under ``base/`` (this node's
        ``PREFIX/NODE``); None when there are none."""
        backlog = self._backlog("WHERE substr(topic, 1, ?) != ?", (len(base) + 1, f"{base}/"))
        return backlog if backlog.count else None

    def _backlog(self, where: str, args: tuple[object, ...]) -> Backlog:
        """The messages ``where`` selects: how many, for which nodes, and of when."""
        query = (
            "SELECT CAST(topic AS BLOB), CASE WHEN kind = 'event' THEN payload END "
            f"FROM messages {where} ORDER BY id"
        )
        with self._lock:
            return self._guarded(lambda db: _backlog_of(db.execute(query, args)))

    def delete_under(self, topic: str) -> int:
        """Delete every message for ``topic`` and the topics under it; how many went."""
        with self._lock:
            deleted = self._guarded(
                lambda db: (
                    db.execute(
                        "DELETE FROM messages WHERE topic = ? OR substr(topic, 1, ?) = ?",
                        (topic, len(topic) + 1, f"{topic}/"),
                    ).rowcount
                )
            )
            self._count -= deleted
            self._sent_in_wal = self._sent_in_wal or bool(deleted)
        return int(deleted)

    def remember(self, key: str, value: str) -> None:
        with self._lock:
            self._guarded(
                lambda db: db.execute(
                    "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value)
                )
            )

    def recall(self, key: str) -> str | None:
        """What ``remember`` kept under ``key`` (None when nothing; text that is no UTF-8,
        damaged, with its bad bytes replaced)."""
        with self._lock:
            row = self._guarded(
                lambda db: db.execute(
                    "SELECT CAST(value AS BLOB) FROM state WHERE key = ?", (key,)
                ).fetchone()
            )
        return None if row is None or row[0] is None else _text(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._lock_file >= 0:
                os.close(self._lock_file)  # (the lock goes with it)
                self._lock_file = -1
