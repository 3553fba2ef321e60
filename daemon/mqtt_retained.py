"""The MQTT publisher's retained state, which does not go through the spool: the latest
payload of each retained topic (the cameras' status, who they see and their latest
snapshot; each person's presence and face) and of each announcement (Home Assistant's
discovery configs), sent now when connected and again at every connection, and the answer
to Home Assistant's birth message (``Retained``); who was published, as the spool
remembers them between runs, so that the topics of a person removed while facewatch was
stopped are deleted at its next start (``PublishedPeople``).

Its lines are the publisher's: they are logged as ``daemon.mqtt``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho

from daemon.journal import Outage
from daemon.spool import Spool

logger = logging.getLogger("daemon.mqtt")

ONLINE, OFFLINE = "online", "offline"
# Retained state goes at QoS 0: its latest value is sent again at every connection, and paho
# must not keep an older one, sent into a link that died unnoticed, to resend after it.
STATE_QOS = 0
# Home Assistant's birth messages are answered at most once in this long: a burst of them
# (several Home Assistants, a script, a client looping) gets one answer now and one more
# at the end of the gap, not a full set of discovery configs each
BIRTH_GAP_S = 10.0


class Retained:
    """The latest retained payload by topic (``topics``; b"": a deletion, sent until the
    next connection), the announcements by topic, the cameras seen and the people published
    (``people``). ``lock`` is the publisher's too: ``connected`` is set under it, so no
    change slips between the copies a connection sends and the moment it counts as
    connected; ``wake`` wakes the sending thread (a save of the people is due)."""

    def __init__(
        self, spool: Spool, base: str, connected: threading.Event, wake: threading.Event
    ) -> None:
        self.lock = threading.Lock()
        self.connected, self._wake = connected, wake
        self.topics: dict[str, bytes] = {}  # topic -> latest payload
        self.announcements: dict[str, bytes] = {}  # topic -> payload
        self.cameras: set[str] = set()
        self.birth_topic: str | None = None
        self._birth_answered = -BIRTH_GAP_S  # monotonic time of the last answer
        self._birth_pending = False  # a birth message came within the gap: answer at its end
        self.people = PublishedPeople(spool, base)

    def keep(self, topic: str, payload: bytes, client: paho.Client) -> None:
        """The latest ``payload`` of ``topic``: sent now when connected and it changed."""
        with self.lock:  # with a connection's: no change slips between its copy and `connected`
            if self.topics.get(topic) == payload:
                return
            self.topics[topic] = payload
            if self.connected.is_set():
                client.publish(topic, payload, qos=STATE_QOS, retain=True)

    def announce(
        self, messages: list[tuple[str, bytes]], birth_topic: str | None, client: paho.Client
    ) -> None:
        """The latest announcements by topic, sent now when connected and changed."""
        with self.lock:
            self.birth_topic = birth_topic or self.birth_topic
            for topic, payload in messages:
                if self.announcements.get(topic) != payload:
                    self.announcements[topic] = payload
                    if self.connected.is_set():
                        client.publish(topic, payload, qos=STATE_QOS, retain=True)

    def resend(self, client: paho.Client, check: Callable[[int, str], None]) -> None:
        """At a connection (hold ``lock``): listen for the birth message, and send the
        announcements (``check``: the first, so a broker that refuses it says so) and the
        retained topics; their deletions, sent when made and now again, are forgotten, or
        each person ever removed would be sent again at every connection."""
        if self.birth_topic is not None:
            client.subscribe(self.birth_topic, qos=1)
        self.send_announcements(client, check)
        self._birth_pending = False  # answered by these
        for topic, payload in self.topics.items():
            client.publish(topic, payload, qos=STATE_QOS, retain=True)
        self.topics = {t: p for t, p in self.topics.items() if p}
        self.announcements = {t: p for t, p in self.announcements.items() if p}
        self.gone_sent()

    def send_announcements(
        self, client: paho.Client, check: Callable[[int, str], None] | None = None
    ) -> None:
        """The announcements; with ``check``, the first at QoS 1 (the node's own config,
        whose older copy paho might resend is the same), so a broker that refuses it says so."""
        for topic, payload in self.announcements.items():
            qos = 1 if check is not None and payload else STATE_QOS
            info = client.publish(topic, payload, qos=qos, retain=True)
            if check is not None and qos == 1:
                check(info.mid, topic)
                check = None

    def cameras_offline(
        self, client: paho.Client, status_topic: Callable[[str], str]
    ) -> list[paho.MQTTMessageInfo]:
        """At a stop: ``offline`` for each camera whose reader did not say it as it stopped
        (QoS 1: the stop waits for them), once."""
        infos = []
        with self.lock:
            for camera in self.cameras:
                topic = status_topic(camera)
                if self.topics.get(topic) != OFFLINE.encode():
                    self.topics[topic] = OFFLINE.encode()
                    infos.append(client.publish(topic, OFFLINE, qos=1, retain=True))
        return infos

    # -- Home Assistant's birth message ---------------------------------------------------

    def birth(self, client: paho.Client) -> None:
        """Home Assistant said ``online`` on ``birth_topic`` (paho's network thread)."""
        with self.lock:
            self._birth_pending = True
        self.answer_birth(client)

    def answer_birth(self, client: paho.Client) -> None:
        """Announce the entities again for a birth message, unless one was answered within
        ``BIRTH_GAP_S``: then the publisher's thread does it when the gap ends."""
        with self.lock:
            now = time.monotonic()
            if not self._birth_pending or now - self._birth_answered < BIRTH_GAP_S:
                return
            if not self.connected.is_set():
                return  # the connection announces everything anyway
            logger.info("MQTT: %s is online: announcing the entities again", self.birth_topic)
            self._birth_pending, self._birth_answered = False, now
            self.send_announcements(client)

    # -- the people published -------------------------------------------------------------

    def replace_people(self, names: set[str]) -> set[str]:
        """Those enrolled now: the people no longer enrolled, whose topics are to be deleted
        (also those whose deletions were not sent on a connection yet)."""
        with self.lock:
            return self.people.replace(names)

    def enrolled(self, name: str) -> bool:
        with self.lock:
            return name in self.people.names

    def gone_sent(self) -> None:
        """The removed people's deletions went out on a connection (hold ``lock``): the
        sending thread lets the spool forget them (``save_people_due``)."""
        if self.people.gone_sent():
            self._wake.set()

    def save_people_due(self) -> None:
        """The sending thread saves who was published when the spool's copy is out of date:
        it forgets the removed people once their deletions were sent (until then, the next
        start sends them again), and a save that failed (the spool's disk full) is tried
        again until it succeeds."""
        with self.lock:  # (replace_people's save, too: the latest set is what stays)
            if self.people.save_due:
                self.people.remember()


class PublishedPeople:
    """Whom this node published (``names``: their retained ``people/KEY`` topics), and the
    people removed whose deletions were not sent on a connection yet (``unsent_gone``), as
    the spool remembers them: a removed person is kept until their deletions were sent, so
    a restart while the broker is away does not leave their topics and face on it. Used
    under ``Retained.lock``."""

    def __init__(self, spool: Spool, base: str) -> None:
        self.spool, self.base = spool, base
        self.names: set[str] = self._recall()  # published
        self.unsent_gone: set[str] = set()  # removed; their deletions not sent on a connection
        # the spool's copy of them is out of date (the deletions were sent: it may forget
        # them; or saving failed, its disk full): the sending thread saves them
        self.save_due = False
        self._unsaved: Outage | None = None  # since when saving them fails (its log lines)

    def replace(self, names: set[str]) -> set[str]:
        """Those enrolled now, saved; the people removed (``unsent_gone`` now)."""
        gone = (self.names | self.unsent_gone) - names
        self.names, self.unsent_gone = set(names), gone
        self.remember()
        return gone

    def gone_sent(self) -> bool:
        """The removed people's deletions were sent: True when the spool may forget some."""
        if not self.unsent_gone:
            return False
        self.unsent_gone = set()
        self.save_due = True
        return True

    def _recall(self) -> set[str]:
        """Whom an earlier run published, as the spool remembers them; what cannot be read
        (damaged) is taken as nobody, with a warning: the daemon starts all the same."""
        said = self.spool.recall("people")
        try:
            people = json.loads(said or "[]")
            if not isinstance(people, list) or not all(isinstance(p, str) for p in people):
                raise ValueError(f"a JSON {type(people).__name__}, not a list of names")
        except ValueError as exc:
            logger.warning(
                "MQTT spool %s: the people published before cannot be read (%s): taken as "
                "nobody, so a person removed from the gallery while facewatch was stopped "
                "keeps their retained topics (%s/people/KEY) until cleared by hand",
                self.spool.path, exc, self.base,
            )  # fmt: skip
            return set()
        return set(people)

    def remember(self) -> None:
        """Save who was published, and whose deletions wait, in the spool. A spool that
        cannot take it (its disk full or failing) does not stop a gallery reload or the
        start: the sets stay in memory and the sending thread saves them once it can; said
        once, again every REMIND_S while it lasts, and when it is saved."""
        try:
            self.spool.remember("people", json.dumps(sorted(self.names | self.unsent_gone)))
        except (OSError, sqlite3.Error) as exc:
            self.save_due = True
            self._unsaved_said(exc)
            return
        self.save_due = False
        if self._unsaved is not None:
            logger.info("MQTT: the spool %s takes the people published again", self.spool.path)
            self._unsaved = None

    def _unsaved_said(self, exc: Exception) -> None:
        """Log a failed save of who was published: at its first failure, then every
        REMIND_S (the sending thread tries again at each of its rounds, silently)."""
        spool, still = self.spool, ""
        if self._unsaved is None:
            self._unsaved = Outage()
        elif self._unsaved.due():
            still = f"still (since {self._unsaved.since()}) "
        else:
            return
        logger.error(
            "MQTT: the spool %s (mqtt.spool_dir) %scannot save the people published (%s): "
            "kept in memory and saved once it can (until then, a person enrolled since and "
            "removed while facewatch is stopped keeps their retained topics on the broker); "
            "check the free space of %s (df -h) and that it can be written",
            spool.path, still, exc, spool.folder,
        )  # fmt: skip
