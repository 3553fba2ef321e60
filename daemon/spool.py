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
that finds it empty (the file, opened, rebuilt or set aside: ``daemon.spool_sqlite``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from daemon.claims import claim, machine_id
from daemon.spool_messages import (
    MESSAGE_COLUMNS,
    Backlog,
    Message,
    _backlog_of,
    _message,
    _text,
    as_owner,
)
from daemon.spool_sqlite import _damaged, _unusable, open_file, set_aside

logger = logging.getLogger(__name__)

SPOOL_FILE = "mqtt-spool.sqlite"
SHRINK_ABOVE_BYTES = 8 << 20  # an empty spool's file larger than this is vacuumed
# a drained spool's write-ahead log is emptied at most this often: it holds the messages sent
# (events, face snapshots) until then, also after a crash
TIDY_EVERY_S = 60.0
T = TypeVar("T")


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
                self._db, self._count = open_file(self.path)
            except sqlite3.DatabaseError as exc:
                if not _damaged(exc):
                    raise
                set_aside(self.path, exc)  # the daemon is worth more than what it held
                self._db, self._count = open_file(self.path)
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
        set_aside(self.path, why, held)
        self._start_new()

    def _start_new(self) -> None:
        """Open the new spool after ``_replace``, with what the old one remembered."""
        self._db, self._count = open_file(self.path)
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
