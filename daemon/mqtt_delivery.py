"""Delivering the spool's messages to the broker, one at a time and in order
(``Delivery.send``, from the publisher's sending thread): a message leaves the spool only
after the broker's PUBACK, and what cannot go is dealt with here so that it does not hold
the messages after it for good:

- a row that cannot be read or published (damaged) is dropped, said with its first bytes;
- a message the broker's ACL refuses (MQTT 5 says so in its PUBACK): an event stays, with
  every message after it, offered again every ``REFUSED_RETRY_S``; a snapshot is dropped;
  a message spooled for another node (``Delivery.strays_said``) is dropped with its topic's;
- a spool whose disk refuses to delete what was sent holds the next messages back.

The PUBACKs of the connection's own messages (the node's status, a discovery config) are
checked here too, and a refusal of one is said. Its lines are the publisher's: they are
logged as ``daemon.mqtt``.
"""

from __future__ import annotations

import json
import logging
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from daemon import metrics
from daemon.journal import Outage
from daemon.spool import Spool
from daemon.spool_messages import Backlog, Message, as_owner

logger = logging.getLogger("daemon.mqtt")

# a message the broker refused (its ACL) is offered again this often: it stays in the spool,
# with everything after it, until the ACL lets it through
REFUSED_RETRY_S = 30.0
REFUSALS_KEPT = 64  # refusals of messages nobody waits for (send_now's), the latest kept


class Delivery:
    """The spool's messages on their way to the broker under the node's topics ``base``.
    ``stop`` set, nothing more is waited for; ``said(topic, reason)`` is what a refusal
    of ``topic`` means to the user (``mqtt_diagnosis.refusal_said``)."""

    def __init__(
        self, spool: Spool, base: str, stop: threading.Event, said: Callable[[str, str], str]
    ) -> None:
        self.spool, self.base, self._stop, self._said = spool, base, stop, said
        # spool rows the broker acknowledged (or dropped ones), not yet deleted
        self._acked: set[tuple[int, int]] = set()  # (spool generation, row id)
        # PUBACKs that said no (MQTT 5): mid -> reason, for the sending thread; and the mids
        # of the connection's own checked messages (node status, a discovery config) -> topic
        self._refusals: dict[int, str] = {}
        self._checked: dict[int, str] = {}
        self._refusal_lock = threading.Lock()  # (taken in on_publish: never around a publish)
        self.refused_topic: str | None = None  # the spooled event refused, until one passes
        self._refused_since = Outage()  # (of the refusal of refused_topic: its reminders)
        self._snapshots_refused = False  # a snapshot was refused (and dropped): said once
        self._undeleted = False  # the spool cannot delete what was sent (its disk): said

    # -- PUBACKs (paho's network thread) ------------------------------------------------

    def check(self, mid: int, topic: str) -> None:
        """Log it if the broker refuses this message (``acknowledged``; called in paho's
        network thread, so its PUBACK cannot come first)."""
        with self._refusal_lock:
            self._checked[mid] = topic

    def acknowledged(self, mid: int, reason: object) -> None:
        """A PUBACK: MQTT 5 brokers say in it when their ACL refused the message (3.1.1 ones
        acknowledge it all the same, and drop it)."""
        refused = getattr(reason, "is_failure", False)
        with self._refusal_lock:
            topic = self._checked.pop(mid, None)
            if refused and topic is None:  # the sending thread's, or send_now's
                self._refusals[mid] = str(reason)
                while len(self._refusals) > REFUSALS_KEPT:
                    del self._refusals[next(iter(self._refusals))]
        if refused and topic is not None:
            logger.error("MQTT: %s", self._said(topic, str(reason)))

    # -- the sending thread -------------------------------------------------------------

    def delete_acked(self) -> bool:
        """Delete the messages the broker acknowledged from the spool; False while its disk
        refuses (full, failing): said in one line, and in one when it deletes them again."""
        try:
            while self._acked:
                generation, row_id = acked = next(iter(self._acked))
                self.spool.delete(row_id, generation)
                self._acked.discard(acked)
        except (OSError, sqlite3.Error) as exc:
            if not self._undeleted:
                logger.error(
                    "MQTT: the spool %s cannot delete what the broker took (%s): those "
                    "messages are not sent again, and the spool's next ones wait until it "
                    "can; check the free space of %s (df -h) and that it can be written",
                    self.spool.path, exc, self.spool.folder,
                )  # fmt: skip
                self._undeleted = True
            return False
        if self._undeleted:
            logger.info("MQTT: the spool %s deletes what was sent again", self.spool.path)
            self._undeleted = False
        return True

    def send(self, message: Message, client: paho.Client) -> None:
        """Publish the spool's next message and wait for the broker's PUBACK."""
        if message.unreadable is not None:  # (a damaged row)
            self._drop_unreadable(message, message.unreadable)
            return
        payload, event = message.payload, None
        if message.kind == "event":
            try:
                event = json.loads(payload)
                if not isinstance(event, dict):
                    raise TypeError(f"a JSON {type(event).__name__}, not an object")
            except (ValueError, TypeError) as exc:  # damaged, or of another version
                self._drop_unreadable(message, exc)
                return
            event.setdefault("reason", None)  # (spooled by a facewatch before it had one)
            event["published_ts"] = round(time.time(), 3)
            payload = json.dumps(event, separators=(",", ":")).encode()
        try:
            _check_topic(message.topic)
            info = client.publish(message.topic, payload, qos=message.qos, retain=message.retain)
        except (ValueError, TypeError) as exc:  # a topic with a wildcard, a bad QoS: damaged
            self._drop_unreadable(message, exc, "published")
            return
        # paho keeps a QoS 1 message it could not send and sends it again after reconnecting:
        # wait for that rather than publish a second copy.
        while not self._stop.is_set():
            if wait_acked(info, 1.0):
                with self._refusal_lock:
                    refused = self._refusals.pop(info.mid, None)
                if refused is not None:
                    self.keep_refused(message, refused)
                    return
                self.passed(message)
                self._acked.add((message.generation, message.row_id))  # (until deleted: a
                metrics.MQTT_PUBLISHES.labels("ok").inc()  # failed delete: sent again)
                observe_latency(event)
                self.delete_acked()
                return
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN):
                break  # not sent (no connection, queue full): the spool keeps it for later
        metrics.MQTT_PUBLISHES.labels("failed").inc()

    def keep_refused(self, message: Message, reason: str) -> None:
        """The broker's ACL refused a spooled message. An event stays in the spool (and what
        came after it, in order) and is offered again in ``REFUSED_RETRY_S``; logged once,
        then every ``REMIND_S`` until one passes. A snapshot is dropped (logged once a run): an ACL that keeps faces
        off the broker, or was written before snapshots, held every event behind it. A message
        spooled for another node is dropped too (``_drop_stray``)."""
        metrics.MQTT_PUBLISHES.labels("refused").inc()
        if not message.topic.startswith(f"{self.base}/"):
            self._drop_stray(message, reason)
            return
        if message.kind != "event":
            if not self._snapshots_refused:
                logger.error(
                    "MQTT: %s; face snapshots are dropped while it refuses them, events go on",
                    self._said(message.topic, reason),
                )
                self._snapshots_refused = True
            self.spool.delete(message.row_id, message.generation)
            return
        metrics.MQTT_REFUSED.set(1)
        if message.topic != self.refused_topic:
            logger.error(
                "MQTT: %s; it stays in the spool with the %d message(s) there, offered again "
                "every %g s",
                self._said(message.topic, reason), len(self.spool), REFUSED_RETRY_S,
            )  # fmt: skip
            self.refused_topic, self._refused_since = message.topic, Outage()
        elif self._refused_since.due():  # (an ACL left wrong for a week shows in today's log)
            logger.error(
                "MQTT: the broker still refuses %s (%s; since %s; %d message(s) wait in the "
                "spool), offered again every %g s",
                message.topic, reason, self._refused_since.since(), len(self.spool),
                REFUSED_RETRY_S,
            )  # fmt: skip
        self._stop.wait(REFUSED_RETRY_S)

    def passed(self, message: Message) -> None:
        """A spooled message was taken: after refusals, the broker takes them again."""
        if self.refused_topic is not None:
            logger.info("MQTT: the broker takes %s: sending the spool", message.topic)
            self.refused_topic = None
            metrics.MQTT_REFUSED.set(0)

    def _drop_stray(self, message: Message, reason: str) -> None:
        """A message spooled for another node (``strays_said``) that the broker refuses: the
        ACL written for this node never lets it through, and it would hold this node's events
        behind it for good. It goes, with every message spooled for its topic (a snapshot:
        with its camera's), in one line."""
        group = message.topic if message.kind == "event" else message.topic.rsplit("/", 1)[0]
        dropped = self.spool.delete_under(group)
        metrics.MQTT_PUBLISHES.labels("dropped").inc(dropped)
        logger.warning(
            "MQTT: %s; dropped, with every message spooled for %s: %d in all, so this node's "
            "go on (%d message(s) wait in the spool)",
            self._said(message.topic, reason), group, dropped, len(self.spool),
        )  # fmt: skip

    def _drop_unreadable(self, message: Message, why: object, what: str = "read") -> None:
        """A spooled message that cannot be read (a damaged row, an event that is no JSON
        object) or published (its topic damaged) would stop every message after it: it
        goes, counted as dropped, and the log keeps its topic and first bytes. A row SQLite
        cannot delete takes the whole spool aside (``Spool.delete``)."""
        kind = "event" if message.kind == "event" else "message"
        began = f"; it began {message.payload[:80]!r}" if message.payload else ""
        logger.error(
            "MQTT: spooled %s %d for %r cannot be %s (%s): dropped%s",
            kind, message.row_id, message.topic, what, why, began,
        )  # fmt: skip
        metrics.MQTT_PUBLISHES.labels("dropped").inc()
        self._acked.add((message.generation, message.row_id))  # (as one sent: never again)
        self.delete_acked()

    # -- at the start -------------------------------------------------------------------

    def strays_said(self, strays: Backlog) -> None:
        """Spooled messages for another node than this one: they go out under that node's
        topics, which the box they came from may have delivered already (a restored backup)."""
        logger.warning(
            "MQTT spool %s: %d message(s)%s spooled for %s, not for this node (%s): node_id "
            "or mqtt.topic_prefix changed since, or the spool was copied from another box. "
            "They are sent as they are, under those topics (a broker whose ACL refuses them: "
            "dropped); if the box they came from delivered them already, stop facewatch and "
            "delete them: %ssqlite3 %s %s",
            self.spool.path, strays.count, strays.when(), ", ".join(strays.nodes), self.base,
            as_owner(), shlex.quote(str(self.spool.path)), shlex.quote(self._strays_deleted()),
        )  # fmt: skip

    def _strays_deleted(self) -> str:
        """The SQL that deletes the spooled messages not under this node's topics (a plain
        prefix compare: a GLOB would read a prefix's [ ] * ? as a pattern)."""
        base = f"{self.base}/".replace("'", "''")
        return f"DELETE FROM messages WHERE substr(topic, 1, {len(self.base) + 1}) != '{base}'"


def observe_latency(event: dict[str, Any] | None) -> None:
    # the events of a frame: not those with a reason (left and a confirmed sent as its
    # track leaves wait tracking.lost_after_s by design; a gallery change is no frame's)
    captured = None if event is None else event.get("frame_ts")
    if isinstance(captured, (int, float)) and event and event.get("reason") is None:
        metrics.EVENT_LATENCY.observe(max(0.0, time.time() - captured))


def _check_topic(topic: str) -> None:
    """ValueError for a topic paho sends but a broker takes for a protocol error and closes
    the connection over, again at each attempt: empty (MQTT 5), or holding a control
    character (what a bit flip makes of a ``/``, a ``-`` or a digit)."""
    if not topic:
        raise ValueError("an empty topic")
    bad = next((c for c in topic if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F), None)
    if bad is not None:
        raise ValueError(f"a control character in the topic, {bad!r}")


def wait_acked(info: paho.MQTTMessageInfo, timeout_s: float) -> bool:
    """True once the broker acknowledged the message; False when it has not (yet), or when
    paho could not send it (``info.rc`` says why)."""
    try:
        info.wait_for_publish(timeout_s)
        return info.is_published()
    except (RuntimeError, ValueError):
        time.sleep(min(timeout_s, 0.2))
        return False
