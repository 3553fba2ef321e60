"""A bounded on-disk FIFO of MQTT messages (one SQLite file, owner-only permissions).

Every event goes through it: the scheduler appends, the publisher takes the oldest, and
deletes it only once the broker acknowledged it. A message is therefore on disk from the
moment it is created until it is delivered; a crash or a SIGTERM loses nothing. When the
spool holds ``max_messages``, the oldest is dropped to make room, and that is counted.

It also keeps what the publisher must remember across restarts (``remember`` / ``recall``):
the people whose retained topics it published, so it can delete those of people removed
from the gallery while the daemon was stopped.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SPOOL_FILE = "mqtt-spool.sqlite"


@dataclass(frozen=True)
class Message:
    row_id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str  # "event" (JSON that gets its publish time) or "raw"


class Spool:
    def __init__(self, folder: str | Path, max_messages: int = 100_000) -> None:
        self.folder = Path(folder)
        self.max_messages = max_messages
        self.path = self.folder / SPOOL_FILE
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.folder, 0o700)
            if not self.path.exists():
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, "
                "retain INTEGER NOT NULL, kind TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise OSError(f"MQTT spool {self.path}: cannot open: {exc}") from exc
        self._lock = threading.Lock()
        self._dropped, self._next_drop_log = 0, 0.0
        self._count = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        if self._count:
            logger.info(
                "MQTT spool %s: %d messages from before, sent first", self.path, self._count
            )

    def __len__(self) -> int:
        return self._count

    def append(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, kind: str = "raw"
    ) -> int:
        """Store one message; returns how many old messages were dropped to make room."""
        with self._lock:
            dropped = 0
            if self._count >= self.max_messages:
                dropped = self._count - self.max_messages + 1
                self._db.execute(
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
            self._db.execute(
                "INSERT INTO messages (topic, payload, qos, retain, kind) VALUES (?, ?, ?, ?, ?)",
                (topic, payload, qos, int(retain), kind),
            )
            self._count += 1
            return dropped

    def peek(self, limit: int = 1) -> list[Message]:
        """The oldest ``limit`` messages, oldest first (they stay in the spool)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, kind FROM messages ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [Message(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5]) for r in rows]

    def delete(self, row_id: int) -> None:
        with self._lock:
            deleted = self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,)).rowcount
            self._count -= deleted

    def remember(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value)
            )

    def recall(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
