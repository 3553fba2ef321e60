"""The MQTT spool (daemon.spool, spool_sqlite, spool_messages): bounded, private, its
space given back, a damaged or older one set aside or rebuilt, one copied from elsewhere said."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from daemon.spool import Spool


def test_spool_is_bounded_fifo_and_survives_reopening(tmp_path) -> None:
    spool = Spool(tmp_path / "spool", max_messages=10)
    dropped = [spool.append("t", str(k).encode()) for k in range(12)]
    assert dropped == [0] * 10 + [1, 1], "the oldest one goes for each new one, from the 11th"
    assert len(spool) == 10
    first = spool.peek(3)
    assert [m.payload for m in first] == [b"2", b"3", b"4"]
    spool.delete(first[0].row_id)
    spool.delete(first[0].row_id)  # (again: an acknowledgement handled twice)
    assert len(spool) == 9
    spool.close()
    os.chmod(spool.path, 0o644)  # (a spool that an older version, or a copy, left readable)
    again = Spool(tmp_path / "spool", max_messages=10)
    assert len(again) == 9 and again.peek(1)[0].payload == b"3"
    assert oct(again.path.stat().st_mode & 0o777) == "0o600"
    assert oct(again.folder.stat().st_mode & 0o777) == "0o700"
    again.close()


def test_what_the_publisher_remembers_is_its_latest_and_outlives_a_restart(tmp_path) -> None:
    """The people whose retained topics were published (``remember``): the latest list is
    recalled after a restart, so a person added since and then removed while the daemon was
    stopped has their topics deleted too."""
    spool = Spool(tmp_path / "spool")
    assert spool.recall("people") is None
    spool.remember("people", '["ann"]')
    spool.remember("people", '["ann", "bob"]')
    spool.close()
    again = Spool(tmp_path / "spool")
    assert again.recall("people") == '["ann", "bob"]'
    again.close()


def test_a_drained_spool_gives_its_space_back(tmp_path) -> None:
    """A long broker outage on an SD card: 15 MB of snapshots spooled, then sent. SQLite
    keeps freed pages for itself; the file stayed at its largest, for good."""
    spool = Spool(tmp_path / "spool")
    for _ in range(3000):
        spool.append("t", os.urandom(5000))
    wal = spool.path.with_name(spool.path.name + "-wal")
    size = spool.path.stat().st_size + wal.stat().st_size
    assert size > 15e6
    for message in spool.peek(3000):
        spool.delete(message.row_id)
    left = spool.path.stat().st_size + wal.stat().st_size
    assert len(spool) == 0 and left < 1e6, left
    spool.append("t", b"still works")
    assert [m.payload for m in spool.peek(2)] == [b"still works"]
    spool.close()


def test_a_sent_message_leaves_no_trace_in_the_spool_file(tmp_path, sqlite_default_build) -> None:
    """A delivered face snapshot is overwritten in the spool's file, also with an SQLite
    built with its own default (secure_delete off: Debian's build turns it on)."""
    face = b"\xff\xd8" + os.urandom(3000)
    spool = Spool(tmp_path / "spool")
    spool.append("snapshots/door/1", face)
    spool.append("t", b"stays")
    spool.delete(spool.peek(1)[0].row_id)
    spool.close()  # (its WAL is written into the file)
    data = spool.path.read_bytes()
    assert b"stays" in data and face[:64] not in data


def test_a_drained_spool_keeps_no_sent_message_in_its_wal(tmp_path) -> None:
    """Events and faces sent stayed readable in the spool's -wal file (up to ~4 MB of recent
    history) while the daemon ran, and after a crash: once the spool is drained, they go."""
    spool = Spool(tmp_path / "spool")
    face = b"\xff\xd8" + os.urandom(3000)
    spool.append("snapshots/door/1", face)
    sent = spool.peek(1)[0].row_id
    spool.delete(sent)
    spool.delete(sent)  # (an acknowledgement handled twice: it was sent all the same)
    wal = spool.path.with_name(spool.path.name + "-wal")
    spool.tidy(every_s=3600)
    assert face[:64] in wal.read_bytes(), "not at every message: once in every_s"
    spool.tidy(every_s=0)
    assert face[:64] not in wal.read_bytes() + spool.path.read_bytes()
    spool.append("t", b"still works")
    assert [m.payload for m in spool.peek(2)] == [b"still works"]
    spool.close()


def test_sqlite_errors_are_told_apart_without_their_codes_too() -> None:
    """Python 3.10 (JetPack 6's) gives no sqlite_errorcode: SQLite's words tell the damaged
    spool to set aside and the full disk to wait for."""
    from daemon import spool_sqlite

    for words, code in [
        ("database disk image is malformed", spool_sqlite.SQLITE_CORRUPT),
        ("file is not a database", spool_sqlite.SQLITE_NOTADB),
        ("database or disk is full", spool_sqlite.SQLITE_FULL),
        ("disk I/O error", spool_sqlite.SQLITE_IOERR),
        ("no such table: x", 0),
    ]:
        assert spool_sqlite._code(sqlite3.DatabaseError(words)) == code, words
    # Python 3.11 and later: the extended code (SQLITE_IOERR_WRITE: an I/O error to wait out)
    write_failed = sqlite3.OperationalError("disk I/O error")
    write_failed.sqlite_errorcode = 778  # type: ignore[attr-defined]
    assert spool_sqlite._code(write_failed) == spool_sqlite.SQLITE_IOERR


def test_a_spool_in_use_by_another_daemon_is_refused(tmp_path) -> None:
    """Two daemons on one spool (a manual `facewatch run` beside the service, metrics off)
    would send every message twice: the second is refused, for now (exit status 1)."""
    import errno

    from daemon.preflight import output_error

    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "lock").write_text("4194303")  # a longer pid, from a run before
    first = Spool(tmp_path / "spool")
    with pytest.raises(
        OSError, match=rf"in use by another facewatch \(pid {os.getpid()}\)"
    ) as error:
        Spool(tmp_path / "spool")
    assert error.value.errno == errno.EBUSY
    refused = output_error("mqtt.spool_dir", error.value)
    assert type(refused) is OSError and "once the other has stopped" in str(refused)
    first.close()
    Spool(tmp_path / "spool").close()  # free again


def _root_page(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(
            db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        )


@pytest.mark.parametrize("damage", ["pages", "whole", "state", "columns"])
def test_a_damaged_spool_is_set_aside_and_a_new_one_starts(tmp_path, caplog, damage) -> None:
    """An SD card's bad block in the spool stopped the daemon at every start (a traceback,
    restarted every 5 s; or 'not a database', not restarted). What it held is worth less
    than the daemon: it is moved aside, named in the log, and a new spool starts. So is one
    whose ``state`` page is damaged (the publisher's first read of it crashed every start)
    and one whose tables have other columns (an old or hand-made one: every event went
    around the spool, with a hint to check the free space)."""
    spool = Spool(tmp_path / "spool")
    spool.remember("people", "[]")
    for k in range(300):
        spool.append("t", bytes(3000) + str(k).encode())
    spool.close()
    path = tmp_path / "spool" / "mqtt-spool.sqlite"
    if damage == "columns":
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("DROP TABLE messages")
            db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, topic TEXT, payload BLOB)")
    data = bytearray(path.read_bytes())
    if damage == "pages":  # four pages in the middle of the messages
        middle = len(data) // 2 // 4096 * 4096
        data[middle : middle + 4 * 4096] = b"\xa5" * (4 * 4096)
    elif damage == "whole":
        data[:] = b"\xa5" * len(data)
    elif damage == "state":
        page = _root_page(path, "state")
        data[(page - 1) * 1024 : page * 1024] = bytes(1024)
    path.write_bytes(bytes(data))
    again = Spool(tmp_path / "spool")
    assert len(again) == 0
    again.append("t", b"new")
    assert [m.payload for m in again.peek(5)] == [b"new"]
    aside = [p.name for p in (tmp_path / "spool").iterdir() if ".damaged-" in p.name]
    assert aside and all(p.startswith("mqtt-spool.sqlite") for p in aside), aside
    again.close()
    assert "is damaged" in caplog.text and "moved aside" in caplog.text
    if damage == "columns":
        assert "its table messages has the columns (id, topic, payload), not (id, topic, " in (
            caplog.text
        )


EVENT = b'{"event_id":"67b8817baf554412a13a50796981ee0d","type":"confirmed"}' + b" " * 380


def test_a_message_costs_the_spool_about_2_kb_of_disk_writes(tmp_path) -> None:
    """SD cards: every event goes through the spool, broker up or not (appended, then
    deleted at the broker's PUBACK). With 4 KB pages and AUTOINCREMENT's counter that wrote
    12 KB to the spool's write-ahead log per 0.5 KB event: 2 GB a day for a busy camera."""
    spool = Spool(tmp_path / "spool")
    wal = spool.path.with_name(spool.path.name + "-wal")
    before = wal.stat().st_size
    for _ in range(100):
        spool.append("facewatch/node/events/door", EVENT, kind="event")
        spool.delete(spool.peek(1)[0].row_id)
    per_message = (wal.stat().st_size - before) / 100
    spool.close()
    assert per_message < 2500, per_message
    assert _layout(spool.path) == (1024, False)


def _older_spool(folder: Path, payloads: list[bytes]) -> None:
    """A spool as facewatch made it before: 4 KB pages, AUTOINCREMENT ids, used a while
    (people published remembered, 20 messages sent), ``payloads`` waiting."""
    folder.mkdir(mode=0o700)
    db = sqlite3.connect(folder / "mqtt-spool.sqlite", isolation_level=None)
    db.execute("PRAGMA page_size=4096")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
        "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, "
        "kind TEXT NOT NULL)"
    )
    db.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO state VALUES ('people', '[\"ann\", \"bob\"]')")
    for payload in [EVENT] * 20 + payloads:
        db.execute(
            "INSERT INTO messages (topic, payload, qos, retain, kind) VALUES (?, ?, 1, 0, 'raw')",
            ("t", payload),
        )
    db.execute("DELETE FROM messages WHERE payload = ?", (EVENT,))
    db.close()
    assert _layout(folder / "mqtt-spool.sqlite") == (4096, True)


def _layout(path: Path) -> tuple[int, bool]:
    """A spool file's page size, and whether its ids are AUTOINCREMENT's."""
    db = sqlite3.connect(path)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        [sql] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()
    finally:
        db.close()
    return page_size, "AUTOINCREMENT" in sql


def test_an_empty_spool_of_an_older_facewatch_is_rebuilt_keeping_the_people(
    tmp_path, caplog
) -> None:
    """An update keeps the spool (usually empty after a clean stop): it is made anew with
    1 KB pages and no AUTOINCREMENT, or it would go on writing 12 KB per event for good;
    the people published stay remembered (their topics are deleted when they leave)."""
    _older_spool(tmp_path / "spool", [])
    with caplog.at_level("INFO", logger="daemon.spool"):
        spool = Spool(tmp_path / "spool")
    assert spool.recall("people") == '["ann", "bob"]'
    spool.append("t", b"new")
    assert [m.payload for m in spool.peek(5)] == [b"new"]
    spool.close()
    assert _layout(spool.path) == (1024, False)
    assert "rebuilt in the current layout (1 KB pages" in caplog.text
    assert sorted(p.name for p in spool.folder.iterdir()) == ["lock", "mqtt-spool.sqlite"]
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600


def test_a_waiting_spool_of_an_older_facewatch_is_sent_first_and_rebuilt_later(
    tmp_path,
) -> None:
    """Messages waiting in an older facewatch's spool (a broker away at the update) are
    left in it, in their order, and sent first; the spool is rebuilt at the first start
    that finds it empty, the people published still remembered."""
    _older_spool(tmp_path / "spool", [b"a", b"b", b"c"])
    spool = Spool(tmp_path / "spool")
    spool.append("t", b"d")
    assert [m.payload for m in spool.peek(10)] == [b"a", b"b", b"c", b"d"]
    spool.close()
    assert _layout(spool.path) == (4096, True)
    spool = Spool(tmp_path / "spool")
    for message in spool.peek(10):
        spool.delete(message.row_id)
    spool.close()
    spool = Spool(tmp_path / "spool")
    assert len(spool) == 0 and spool.recall("people") == '["ann", "bob"]'
    spool.close()
    assert _layout(spool.path) == (1024, False)


def test_a_rebuild_that_fails_leaves_the_older_spool_working(tmp_path, monkeypatch, caplog):
    """A full disk (the rebuild writes a copy of the file) leaves the older spool as it
    was, working, said in the log; the next start tries again."""
    connect = sqlite3.connect

    class FullDisk(sqlite3.Connection):
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
            if sql == "VACUUM":
                raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)

    _older_spool(tmp_path / "spool", [])
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: connect(*a, factory=FullDisk, **k))
    with caplog.at_level("INFO", logger="daemon.spool"):
        spool = Spool(tmp_path / "spool")
    spool.append("t", b"new")
    assert [m.payload for m in spool.peek(5)] == [b"new"]
    assert spool.recall("people") == '["ann", "bob"]'
    assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    spool.close()
    assert "not rebuilt (database or disk is full)" in caplog.text
    assert "rebuilt in the current layout" not in caplog.text
    assert _layout(spool.path)[0] == 4096
    monkeypatch.setattr(sqlite3, "connect", connect)
    spool = Spool(tmp_path / "spool")
    for message in spool.peek(5):
        spool.delete(message.row_id)
    spool.close()
    Spool(tmp_path / "spool").close()
    assert _layout(spool.path) == (1024, False)


def test_the_ack_of_a_message_of_a_spool_set_aside_deletes_nothing_of_the_new_one(
    tmp_path,
) -> None:
    """A spool found damaged while a message of it waits for the broker's acknowledgement:
    the new spool's row ids start again at 1, and the acknowledgement deleted its first
    event, unsent, without a word. It deletes nothing there now."""

    class Damaged:  # the page the next insert needs is damaged
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql.lstrip().upper().startswith("INSERT INTO MESSAGES"):
                raise sqlite3.DatabaseError("database disk image is malformed")
            return self.db.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self.db, name)

    spool = Spool(tmp_path / "spool", 100)
    spool.append("facewatch/n1/events/door", b'{"event_id":"old"}', "event")
    in_flight = spool.peek(1)[0]  # published, its acknowledgement to come
    spool._db = Damaged(spool._db)  # type: ignore[assignment]
    spool.append("facewatch/n1/events/door", b'{"event_id":"new"}', "event")
    assert [m.payload for m in spool.peek(5)] == [b'{"event_id":"new"}']
    spool.delete(in_flight.row_id, in_flight.generation)  # the acknowledgement
    assert [m.payload for m in spool.peek(5)] == [b'{"event_id":"new"}'] and len(spool) == 1
    spool.close()


def test_a_spool_copied_to_another_machine_is_said_at_start_with_the_line_to_empty_it(
    tmp_path, monkeypatch, caplog
) -> None:
    """A state folder backed up while events waited in the spool, restored on a new box
    (the same node_id): every event in it was sent again, also those the old box delivered
    after the backup, without a word. The first start on another machine says so, with the
    line that empties the spool; later starts there, and an empty spool, say nothing."""
    from daemon import claims

    machine_id = tmp_path / "machine-id"
    monkeypatch.setattr(claims, "MACHINE_ID_FILE", machine_id)
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    Spool(tmp_path / "empty", 10).close()
    spool = Spool(tmp_path / "spool", 10)
    for ts in (1_764_600_000.0, 1_764_600_030.0):
        spool.append("facewatch/box/events/door", json.dumps({"frame_ts": ts}).encode(), "event")
    spool.close()
    machine_id.write_text("fedcba9876543210fedcba9876543210\n")  # the new box
    with caplog.at_level("WARNING", logger="daemon.spool"):
        Spool(tmp_path / "empty", 10).close()
        assert caplog.text == "", "an empty spool sends nothing twice"
        Spool(tmp_path / "spool", 10).close()
    [said] = [r.getMessage() for r in caplog.records]
    at = time.strftime("%Y-%m-%d %H:%M", time.localtime(1_764_600_000))
    assert said.startswith(
        f"MQTT spool {spool.path}: its 2 message(s) (events of {at}) were spooled on another "
        "machine (its /etc/machine-id differs): a backup restored, or a box moved. They are "
        "sent now, to facewatch/box; if that machine delivered them already"
    ), said
    caplog.clear()
    with caplog.at_level("WARNING", logger="daemon.spool"):
        Spool(tmp_path / "spool", 10).close()  # its next start: said once is enough
    assert caplog.text == "", caplog.text
    subprocess.run(["sh", "-c", said.split("delete them: ", 1)[1]], check=True, timeout=30)
    again = Spool(tmp_path / "spool", 10)
    assert len(again) == 0
    again.close()


def test_a_spooled_event_time_beyond_any_date_is_shown_as_none() -> None:
    """A stray spooled event with a time in milliseconds (or a hand edit): the start's
    warning about the spool's other-node messages crashed on it (year 57887 is out of
    range); such a time is no time to show."""
    from daemon.spool_messages import _frame_ts

    assert _frame_ts(b'{"frame_ts": 1764600000.5}') == 1764600000.5
    for bad in (b'{"frame_ts": 1764600000500}', b'{"frame_ts": NaN}', b'{"frame_ts": -1}'):
        assert _frame_ts(bad) is None, bad
