"""The spooled messages as they are read: each row (``Message``; one whose values are not what
facewatch wrote is said to be unreadable, not an error), and some of them as the log tells
of them (``Backlog``: how many, for which ``PREFIX/NODE``, of when), with the ``sudo -u``
its advice needs (``as_owner``)."""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_TS = 253402300799.0  # 9999-12-31: an event time beyond is none to show
# a message's row as it is read: text as bytes (decoded here, so that a damaged topic is one
# unreadable message, not an error that stops every read)
MESSAGE_COLUMNS = "id, CAST(topic AS BLOB), CAST(payload AS BLOB), qos, retain, CAST(kind AS BLOB)"


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
