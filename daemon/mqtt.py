"""The MQTT publisher (paho-mqtt 2.x): its own thread sends the spool's messages in order.

Topics, under ``PREFIX/NODE``:
- ``status``: retained ``online`` / ``offline`` (also the last will);
- ``cameras/CAMERA/status``: retained ``online`` / ``offline``;
- ``cameras/CAMERA/faces``: retained JSON, who the camera sees now (``events.in_view_json``);
- ``cameras/CAMERA/snapshot``: retained JPEG, the latest face snapshot (when they are on);
- ``people/KEY``: retained JSON, where an enrolled person is in view (``events.person_json``);
- ``people/KEY/snapshot``: retained JPEG, the person's face in the latest event that named
  them (when snapshots are on);
- ``events/CAMERA``: identity events, JSON, QoS 1, not retained;
- ``snapshots/CAMERA/EVENT_ID``: a JPEG of the face, when snapshots are on.

Delivery is at least once: a message leaves the spool only after the broker's PUBACK. A
clean stop first sends what the spool holds (for at most ``DRAIN_ON_STOP_S``, while the
broker is reachable); a message in flight or still unsent then is sent at the next start
(``event_id`` lets a consumer drop the rare duplicate). Messages are sent one at a time, so
order is kept. A message handed to paho just as the connection drops is sent again once it
is back (paho may deliver its own copy too: another rare duplicate). The sending thread
never stops on an error: it logs it and tries again.

Retained state (the camera and people topics) and announcements (Home Assistant's discovery
configs) do not go through the spool: the latest of each is kept here and sent again at
every connection.
"""

from __future__ import annotations

import json
import logging
import shlex
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemon import metrics
from daemon.config import ConfigError, MqttConfig, TlsConfig
from daemon.events import person_key
from daemon.journal import Outage
from daemon.mqtt_tls import RenewableContext, TlsFileError
from daemon.spool import Backlog, Message, Spool, as_owner, topic_node

logger = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
UNSPECIFIED = 128  # MQTT reason code "Unspecified error"
SESSION_TAKEN_OVER = 142  # MQTT 5 reason code: another client connected with this client id
# MQTT 3.1.1 brokers close the connection without a word when another client connects with
# its client id: a connection lost this soon after the broker took it, this many times in a
# row (each reconnection pushes the other client off), is read as that
SHORT_LINK_S = 5.0
TAKEN_OVER_AFTER = 3
HOLDS_S = 60.0  # ... and one that lasts this long says the other client is gone
# Retained state goes at QoS 0: its latest value is sent again at every connection, and paho
# must not keep an older one, sent into a link that died unnoticed, to resend after it.
STATE_QOS = 0
DRAIN_ON_STOP_S = 10.0  # a clean stop sends the spool for at most this long
# Home Assistant's birth messages are answered at most once in this long: a burst of them
# (several Home Assistants, a script, a client looping) gets one answer now and one more
# at the end of the gap, not a full set of discovery configs each
BIRTH_GAP_S = 10.0
# a message the broker refused (its ACL) is offered again this often: it stays in the spool,
# with everything after it, until the ACL lets it through
REFUSED_RETRY_S = 30.0
REFUSALS_KEPT = 64  # refusals of messages nobody waits for (send_now's), the latest kept
# what to check when the broker cannot be reached
REACH = "that the broker runs there and this host reaches it: mqtt.host, mqtt.port"
# ... and when the TLS handshake fails
TLS_FILES = (
    "mqtt.tls.ca_file: the CA that signed the broker's certificate, for its host name; "
    "cert_file and key_file: the client's, when the broker asks for one; files renewed in "
    "place are loaded again at the next attempt"
)
# ... and when the broker refuses the client's certificate after the handshake
CLIENT_FILES = (
    "mqtt.tls.cert_file and key_file: a certificate signed by a CA the broker trusts (its "
    "cafile), not expired, for a user its ACL knows; files renewed in place are loaded again "
    "at the next attempt"
)


class MqttPublisher:
    def __init__(self, config: MqttConfig, node_id: str, spool: Spool) -> None:
        self.config, self.spool = config, spool
        self.base = f"{config.topic_prefix.rstrip('/')}/{node_id}"
        self.node_id, self.client_id = node_id, f"facewatch-{node_id}"
        self.status_topic = f"{self.base}/status"
        self.connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # spool rows the broker acknowledged (or dropped ones), not yet deleted
        self._acked: set[tuple[int, int]] = set()  # (spool generation, row id)
        self._cameras: set[str] = set()
        self._retained: dict[str, bytes] = {}  # topic -> latest payload
        self._announcements: dict[str, bytes] = {}  # topic -> payload
        self._birth_topic: str | None = None
        self._birth_answered = -BIRTH_GAP_S  # monotonic time of the last answer
        self._birth_pending = False  # a birth message came within the gap: answer at its end
        # published, and those whose deletion is not sent yet (remembered until it is)
        self._people: set[str] = self._recall_people()
        self._unsent_gone: set[str] = set()  # removed; their deletions not sent on a connection
        # the spool's copy of them is out of date (the deletions were sent: it may forget
        # them; or saving failed, its disk full): the sending thread saves them
        self._save_people = False
        self._unsaved: Outage | None = None  # since when saving them fails (its log lines)
        # names enrolled, names gone -> announcements (Home Assistant's per-person configs)
        self.people_announcements: Callable[[set[str], set[str]], list[tuple[str, bytes]]] | None
        self.people_announcements = None
        self._lock = threading.Lock()
        # while not connected: since when, what was last said of it and what to check (one
        # tuple: the sending thread's reminder reads it as paho's thread replaces it)
        self._outage: tuple[Outage, str, str] | None = None
        self._refused = False  # the broker refused the connection attempt under way
        # PUBACKs that said no (MQTT 5): mid -> reason, for the sending thread; and the mids
        # of the connection's own checked messages (node status, a discovery config) -> topic
        self._refusals: dict[int, str] = {}
        self._checked: dict[int, str] = {}
        self._refusal_lock = threading.Lock()  # (taken in on_publish: never around a publish)
        self._refused_topic: str | None = None  # the spooled event refused, until one passes
        self._refused_since = Outage()  # (of the refusal of _refused_topic: its reminders)
        self._snapshots_refused = False  # a snapshot was refused (and dropped): said once
        self._undeleted = False  # the spool cannot delete what was sent (its disk): said
        # the TLS files, loaded now (an error stops the start); renewed ones at connections
        self.tls = None if config.tls is None else self._load_tls(config.tls)
        self._tls_unusable: str | None = None  # why renewed files cannot be used (said once)
        # another client with this client id: when the broker last took this one's connection,
        # how many in a row were lost soon after, and since when (and how often) it is taken
        self._connected_at = 0.0
        self._short_links = 0
        self._taken: Outage | None = None
        self._taken_times = 0
        self.client = self._make_client(node_id)
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)

    def _load_tls(self, tls: TlsConfig) -> RenewableContext:
        """The TLS files as they are now; a CA, certificate or key that cannot be used is a
        ConfigError naming ``mqtt.tls`` (exit status 2)."""
        try:
            return RenewableContext(tls, self.renew_tls)
        except TlsFileError as exc:  # (it names the file and its key)
            raise ConfigError(str(exc)) from None
        except (OSError, ValueError) as exc:  # (ssl.SSLError is both)
            raise ConfigError(f"mqtt.tls: {exc}") from None

    def _recall_people(self) -> set[str]:
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

    def _make_client(self, node_id: str) -> paho.Client:
        cfg = self.config
        protocol = paho.MQTTv5 if cfg.protocol == "5" else paho.MQTTv311
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol
        )
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if self.tls is not None:  # (paho keeps one context for every reconnection)
            client.tls_set_context(cast(ssl.SSLContext, self.tls))
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # -- topics -------------------------------------------------------------------------

    def event_topic(self, camera: str) -> str:
        return f"{self.base}/events/{camera}"

    def snapshot_topic(self, camera: str, event_id: str) -> str:
        return f"{self.base}/snapshots/{camera}/{event_id}"

    def camera_status_topic(self, camera: str) -> str:
        return f"{self.base}/cameras/{camera}/status"

    def in_view_topic(self, camera: str) -> str:
        return f"{self.base}/cameras/{camera}/faces"

    def last_snapshot_topic(self, camera: str) -> str:
        return f"{self.base}/cameras/{camera}/snapshot"

    def person_topic(self, name: str) -> str:
        return f"{self.base}/people/{person_key(name)}"

    def person_snapshot_topic(self, name: str) -> str:
        return f"{self.person_topic(name)}/snapshot"

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        logger.info("MQTT: connecting to %s:%d%s", cfg.host, cfg.port, " (TLS)" if cfg.tls else "")
        strays = self.spool.strays(self.base)
        if strays is not None:
            self._say_strays(strays)
        self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self.client.loop_start()
        self._thread.start()

    def stop(self, timeout_s: float = 5.0, drain_s: float = DRAIN_ON_STOP_S) -> None:
        """While the broker is connected, send what the spool holds (for at most ``drain_s``);
        then stop sending, publish ``offline`` (node and cameras) and disconnect. Messages still
        unsent stay in the spool for the next start."""
        deadline = time.monotonic() + drain_s
        self._wake.set()
        while (
            self.connected.is_set()
            and len(self.spool)
            and self._refused_topic is None  # (what the broker refuses cannot drain)
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        if self.connected.is_set():
            infos = [self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)]
            with self._lock:  # cameras whose reader said `offline` as it stopped: sent once
                for camera in self._cameras:
                    topic = self.camera_status_topic(camera)
                    if self._retained.get(topic) != OFFLINE.encode():
                        self._retained[topic] = OFFLINE.encode()
                        infos.append(self.client.publish(topic, OFFLINE, qos=1, retain=True))
            deadline = time.monotonic() + timeout_s
            for info in infos:
                _wait(info, max(0.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()
        metrics.MQTT_CONNECTED.set(0)

    def _say_strays(self, strays: Backlog) -> None:
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

    def notify(self) -> None:
        """New messages are in the spool."""
        self._wake.set()

    def send_now(self, topic: str, payload: bytes) -> bool:
        """Publish without the spool (it could not take the message): QoS 1, which paho
        resends until acknowledged while this connection lasts. False when not connected."""
        if not self.connected.is_set():
            return False
        sent = self.client.publish(topic, payload, qos=1).rc == paho.MQTT_ERR_SUCCESS
        metrics.MQTT_PUBLISHES.labels("direct" if sent else "failed").inc()
        return sent

    def set_camera_status(self, camera: str, up: bool) -> None:
        """Retained camera status; republished on every (re)connection."""
        self._cameras.add(camera)
        self._retain(self.camera_status_topic(camera), (ONLINE if up else OFFLINE).encode())

    def set_in_view(self, camera: str, state: dict[str, Any]) -> None:
        """Retained in-view state of a camera; republished on every (re)connection."""
        self._retain(self.in_view_topic(camera), json.dumps(state, separators=(",", ":")).encode())

    def set_last_snapshot(self, camera: str, jpeg: bytes) -> None:
        """Retained latest face snapshot of a camera; republished on every (re)connection."""
        self._retain(self.last_snapshot_topic(camera), jpeg)

    def forget_camera(self, camera: str) -> None:
        """A disabled camera: its retained topics are emptied, which deletes them."""
        for topic in (
            self.camera_status_topic(camera),
            self.in_view_topic(camera),
            self.last_snapshot_topic(camera),
        ):
            self._retain(topic, b"")

    def set_people(self, states: dict[str, dict[str, Any]]) -> None:
        """Every enrolled person's presence, at start and at each gallery reload: the retained
        topics (and announcements) of people no longer enrolled are deleted, also of those
        removed while the daemon was stopped (the spool remembers who was published, and keeps
        a removed person until their deletions were sent on a connection: a restart while the
        broker is away does not leave their topics and face on it)."""
        with self._lock:
            gone = (self._people | self._unsent_gone) - states.keys()
            self._people, self._unsent_gone = set(states), gone
            self._remember_people()
        if self.people_announcements is not None:  # configs first: no entity reads a ""
            self.announce(self.people_announcements(set(states), gone))
        for name in gone:
            self._retain(self.person_topic(name), b"")
            self._retain(self.person_snapshot_topic(name), b"")
        with self._lock:
            if self.connected.is_set():  # sent just now, or by _on_connect meanwhile
                self._gone_sent()
        for name, state in states.items():
            self.set_person(name, state)

    def _gone_sent(self) -> None:
        """The removed people's deletions went out on a connection (hold ``_lock``): the
        sending thread lets the spool forget them (``_save_people_due``)."""
        if self._unsent_gone:
            self._unsent_gone = set()
            self._save_people = True
            self._wake.set()

    def _save_people_due(self) -> None:
        """The sending thread saves who was published when the spool's copy is out of date:
        it forgets the removed people once their deletions were sent (until then, the next
        start sends them again), and a save that failed (the spool's disk full) is tried
        again until it succeeds."""
        with self._lock:  # (set_people's save, too: the latest set is what stays)
            if self._save_people:
                self._remember_people()

    def _remember_people(self) -> None:
        """Save who was published, and whose deletions wait, in the spool (hold ``_lock``).
        A spool that cannot take it (its disk full or failing) does not stop a gallery
        reload or the start: the sets stay in memory and the sending thread saves them once
        it can; said once, again every REMIND_S while it lasts, and when it is saved."""
        try:
            self.spool.remember("people", json.dumps(sorted(self._people | self._unsent_gone)))
        except (OSError, sqlite3.Error) as exc:
            self._save_people = True
            self._unsaved_said(exc)
            return
        self._save_people = False
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

    def set_person(self, name: str, state: dict[str, Any]) -> None:
        """Retained presence of one person; republished on every (re)connection."""
        self._retain(self.person_topic(name), json.dumps(state, separators=(",", ":")).encode())

    def set_person_snapshot(self, name: str, jpeg: bytes) -> None:
        """Retained face of an enrolled person, from the latest event that named them (b"":
        none); republished on every (re)connection. A name no longer enrolled gets none:
        its topic was emptied when it left the gallery."""
        with self._lock:
            enrolled = name in self._people
        if enrolled:
            self._retain(self.person_snapshot_topic(name), jpeg)

    def _retain(self, topic: str, payload: bytes) -> None:
        with self._lock:  # with _on_connect's: no change slips between its copy and `connected`
            if self._retained.get(topic) == payload:
                return
            self._retained[topic] = payload
            if self.connected.is_set():
                self.client.publish(topic, payload, qos=STATE_QOS, retain=True)

    def announce(self, messages: list[tuple[str, bytes]], birth_topic: str | None = None) -> None:
        """Retained messages (Home Assistant's discovery configs), the latest by topic: sent
        now when connected, at every connection (before the node's ``online``), and whenever
        ``birth_topic`` (Home Assistant's birth message; give it before ``start``) says
        ``online``."""
        with self._lock:
            self._birth_topic = birth_topic or self._birth_topic
            for topic, payload in messages:
                if self._announcements.get(topic) != payload:
                    self._announcements[topic] = payload
                    if self.connected.is_set():
                        self.client.publish(topic, payload, qos=STATE_QOS, retain=True)

    # -- callbacks (paho's network thread) ------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = True  # (paho's disconnect after it is no wrong port)
            self._short_links = 0
            cfg = self.config
            user = f" as user {cfg.username}" if cfg.username else " without a user name"
            check = (
                "mqtt.protocol: 3.1.1 for a broker without MQTT 5"
                if "protocol" in str(reason).lower()
                else "mqtt.username, the password's credential and the broker's password file "
                "and ACL"
            )
            self._failed(
                f"broker {cfg.host}:{cfg.port} refused the connection{user}: {reason}",
                check,
            )
            return
        self._connected_at = time.monotonic()
        level = logging.INFO if self._taken is None else logging.DEBUG  # (again and again)
        logger.log(level, "MQTT: connected to %s:%d", self.config.host, self.config.port)
        self._outage = None
        with self._lock:  # no change slips between these copies and `connected`
            if self._birth_topic is not None:
                client.subscribe(self._birth_topic, qos=1)
            self._send_announcements(client, check=True)
            self._birth_pending = False  # answered by these
            for topic, payload in self._retained.items():
                client.publish(topic, payload, qos=STATE_QOS, retain=True)
            # a deletion (an empty payload: a person removed, a camera disabled) has been
            # sent when it was made and now again: forgotten, or each person ever removed
            # would be sent again at every connection
            self._retained = {t: p for t, p in self._retained.items() if p}
            self._announcements = {t: p for t, p in self._announcements.items() if p}
            self._gone_sent()
            # last: what a crash left (someone in view) is replaced before the node is online
            info = client.publish(self.status_topic, ONLINE, qos=1, retain=True)
            self._check(info.mid, self.status_topic)
            self.connected.set()
        metrics.MQTT_CONNECTED.set(1)
        self._wake.set()

    def _send_announcements(self, client: paho.Client, check: bool = False) -> None:
        """The announcements; with ``check``, the first at QoS 1 (the node's own config,
        whose older copy paho might resend is the same), so a broker that refuses it says so."""
        for topic, payload in self._announcements.items():
            qos = 1 if check and payload else STATE_QOS
            info = client.publish(topic, payload, qos=qos, retain=True)
            if qos == 1:
                self._check(info.mid, topic)
                check = False

    def _check(self, mid: int, topic: str) -> None:
        """Log it if the broker refuses this message (``_on_publish``; called in paho's
        network thread, so its PUBACK cannot come first)."""
        with self._refusal_lock:
            self._checked[mid] = topic

    def _on_publish(
        self, client: paho.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
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
            logger.error("MQTT: %s", self._refusal_said(topic, str(reason)))

    def _refusal_said(self, topic: str, reason: str) -> str:
        """What a refused ``topic`` means to the user, and the ACL line that lets it through."""
        cfg = self.config
        who = f"user {cfg.username}" if cfg.username else "clients without a user name"
        if topic == self.status_topic:
            return (
                f"the broker refused this node's status {topic} ({reason}): Home Assistant "
                "shows its entities unavailable, and subscribers take the node for offline "
                f"(its last will goes there too); the broker's ACL must let {who} write "
                f"{self.base}/#"
            )
        if topic.startswith(f"{self.base}/"):
            return (
                f"the broker refused {topic} ({reason}): the broker's ACL must let {who} "
                f"write {self.base}/#"
            )
        if topic.startswith(f"{cfg.home_assistant.discovery_prefix}/"):
            levels = topic.split("/")  # DISCOVERY_PREFIX/PLATFORM/facewatch_NODE/ENTITY/config
            pattern = "/".join([*levels[:-4], "+", levels[-3], "#"])
            return (
                f"the broker refused Home Assistant's discovery config {topic} ({reason}): Home "
                f"Assistant finds none of this node's entities; the broker's ACL must let {who} "
                f"write {pattern} (and read {self._birth_topic or 'DISCOVERY_PREFIX/status'})"
            )
        node = topic_node(topic)
        if node != topic:  # an event or snapshot spooled under another node_id or prefix
            return (
                f"the broker refused {topic} ({reason}), spooled for {node}, not for this node "
                f"({self.base}: node_id or mqtt.topic_prefix changed since, or the spool came "
                f"from another box); the broker's ACL lets {who} write it only with a line for "
                f"{node}/#"
            )
        return f"the broker refused {topic} ({reason}): the broker's ACL must let {who} write it"

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic == self._birth_topic and message.payload == ONLINE.encode():
            with self._lock:
                self._birth_pending = True
            self._answer_birth()

    def _answer_birth(self) -> None:
        """Announce the entities again for a birth message, unless one was answered within
        ``BIRTH_GAP_S``: then the publisher's thread does it when the gap ends."""
        with self._lock:
            now = time.monotonic()
            if not self._birth_pending or now - self._birth_answered < BIRTH_GAP_S:
                return
            if not self.connected.is_set():
                return  # the connection announces everything anyway
            logger.info("MQTT: %s is online: announcing the entities again", self._birth_topic)
            self._birth_pending, self._birth_answered = False, now
            self._send_announcements(self.client)

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        """paho retries silently and does not say why: ask again (``_diagnose``)."""
        self._short_links = 0  # (a broker away: no other client takes its connections)
        cfg = self.config
        why, check = self._diagnose()
        self._failed(f"cannot connect to {cfg.host}:{cfg.port}: {why}", check)

    def renew_tls(self) -> bool:
        """Load the TLS files again when they changed since they were loaded (a CA, client
        certificate or key renewed in place): the next connection uses them (the one up, if
        any, goes on). True when they were loaded. Files that cannot be used (a certificate
        whose new key is not written yet) are said once, and tried again at the next call;
        those loaded before stay in use. Before each connection attempt, and at SIGHUP."""
        if self.tls is None:
            return False
        try:
            changed = self.tls.renew()
        except ValueError as exc:
            if str(exc) != self._tls_unusable:
                self._tls_unusable = str(exc)
                logger.warning(
                    "MQTT: %s; the connection keeps using the TLS files as they were loaded "
                    "before, and tries these again at each attempt",
                    exc,
                )
            return False
        self._tls_unusable = None
        if changed:
            logger.info(
                "MQTT: %s changed since loaded: the next connection uses the renewed files",
                ", ".join(changed),
            )
        return bool(changed)

    def _failed(self, why: str, check: str) -> None:
        """Log a failed connection once per outage, and again when the reason changes (e.g.
        the broker was still starting, then refuses the password); each retry at DEBUG (the
        sending thread reminds of the outage every REMIND_S: ``_remind``)."""
        outage = self._outage
        if outage is not None and outage[1] == why:
            logger.debug("MQTT: %s; retrying", why)
            return
        logger.warning("MQTT: %s; retrying, events are spooled until then (check %s)", why, check)
        began = Outage() if outage is None else outage[0]
        began.said_now()
        self._outage = (began, why, check)

    def _remind(self) -> None:
        """While not connected, every REMIND_S: the outage's latest reason again, since when
        and what waits for the broker (a broker away for a week shows in today's journal)."""
        outage = self._outage
        if outage is None or self._stop.is_set() or not outage[0].due():
            return
        began, why, check = outage
        waiting = len(self.spool)
        logger.warning(
            "MQTT: %s (still, since %s; %d %s in the spool); retrying, events are spooled "
            "until then (check %s)",
            why, began.since(), waiting, "message waits" if waiting == 1 else "messages wait",
            check,
        )  # fmt: skip

    def _closed_unanswered(self) -> None:
        """The broker took the connection and closed it without an MQTT answer: with TLS
        1.3, the way a client certificate it refuses ends (after the client's handshake,
        so paho sees a connection lost), which ``_diagnose`` tells from a wrong port."""
        cfg = self.config
        if self.tls is not None:
            why, check = self._diagnose()
            if check in (TLS_FILES, CLIENT_FILES):
                self._failed(f"cannot connect to {cfg.host}:{cfg.port}: {why}", check)
                return
        self._failed(
            f"{cfg.host}:{cfg.port} takes the connection but closes it without answering "
            "as an MQTT broker",
            "mqtt.port: is it a websockets port, a TLS one without mqtt.tls, another service?",
        )

    def _diagnose(self) -> tuple[str, str]:
        """Why a connection fails, and what to check: a plain TCP connection, and a TLS
        handshake with the context paho uses (the files as loaded), for its error message
        or the broker's refusal of the client certificate that follows it."""
        cfg = self.config
        try:
            with socket.create_connection((cfg.host, cfg.port), timeout=5) as sock:
                if self.tls is None:
                    return "the broker closed the connection", REACH
                refusal = self.tls.handshake(sock, cfg.host)
                if refusal is not None:
                    return _refused_certificate(cfg.tls, refusal), CLIENT_FILES
                return "the broker closed the connection after the TLS handshake", REACH
        except ssl.SSLError as exc:
            return str(exc), TLS_FILES
        except OSError as exc:
            return str(exc), REACH

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        value = getattr(reason, "value", None)
        lost = value == UNSPECIFIED  # what paho says of a lost socket
        refused, self._refused = self._refused, False
        if self.connected.is_set() and not self._stop.is_set():
            if self._taken_over(value, lost):
                self._say_taken(surely=value == SESSION_TAKEN_OVER)
            else:
                why = "the connection was lost: the broker stopped, or the network"
                self._lost(why if lost else str(reason))
        elif lost and not refused and not self._stop.is_set():  # closed with no MQTT answer
            self._closed_unanswered()
        self.connected.clear()
        metrics.MQTT_CONNECTED.set(0)

    def _lost(self, why: str) -> None:
        logger.warning("MQTT: disconnected (%s); events are spooled until it is back", why)
        cfg = self.config  # (its reminder names the broker)
        self._outage = (Outage(), f"disconnected from {cfg.host}:{cfg.port} ({why})", REACH)

    def _taken_over(self, reason: object, lost: bool) -> bool:
        """Whether another client with this client id took the connection: an MQTT 5 broker
        says so; a 3.1.1 one closes it, and each reconnection pushes the other client off, so
        connections lost soon after they were made, several in a row, are read as that."""
        short = lost and time.monotonic() - self._connected_at < SHORT_LINK_S
        self._short_links = self._short_links + 1 if short else 0
        return reason == SESSION_TAKEN_OVER or self._short_links >= TAKEN_OVER_AFTER

    def _say_taken(self, surely: bool) -> None:
        """Said once, not at each of the disconnections that follow (at DEBUG, the reminder
        every REMIND_S), until a connection holds again (``_holds``). Not ``surely`` (no MQTT
        5 reason): a broker that closes every connection at once for its own reason (a
        message over its max_packet_size, an ACL refusal some brokers disconnect for) looks
        the same, so its log is named as the other place to look."""
        node = self.node_id
        why = (
            f"another MQTT client with client id {self.client_id} takes the connection (a "
            f"second facewatch with node_id {node}? give each its own node_id)"
        )
        if not surely:
            why = (
                "each connection is closed within seconds of being made: another MQTT client "
                f"with client id {self.client_id} taking it (a second facewatch with node_id "
                f"{node}? give each its own node_id), or the broker closing it (its log says "
                "why: a message over its max_packet_size, an ACL refusal)"
            )
        self._taken_times += 1
        cfg = self.config
        check = "node_id: each facewatch on this broker needs its own"
        self._outage = (Outage(), f"disconnected from {cfg.host}:{cfg.port} ({why})", check)
        if self._taken is None:
            self._taken = Outage()
            logger.warning(
                "MQTT: disconnected: %s; it connects again at once, and is pushed off again, "
                "while the other one runs (events are spooled meanwhile)", why,
            )  # fmt: skip
        elif self._taken.due():
            logger.warning(
                "MQTT: disconnected: %s (still, since %s; %d times)",
                why, self._taken.since(), self._taken_times,
            )  # fmt: skip
        else:
            logger.debug("MQTT: disconnected: %s (%d times)", why, self._taken_times)

    def _holds(self) -> None:
        """After connections taken by another client: one that lasts ``HOLDS_S`` ends it."""
        if self._taken is None or time.monotonic() - self._connected_at < HOLDS_S:
            return
        logger.info(
            "MQTT: the connection to %s:%d holds again (%g s): no other client with client "
            "id %s took it since (it was taken %d times)",
            self.config.host, self.config.port, HOLDS_S, self.client_id, self._taken_times,
        )  # fmt: skip
        self._taken, self._taken_times = None, 0

    # -- the sending thread ---------------------------------------------------------------

    def _run(self) -> None:
        last_error, failing = "", Outage()
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # never die: a dead sender would spool forever
                if repr(exc) != last_error:
                    logger.exception("MQTT: sending failed; trying again")
                    last_error, failing = repr(exc), Outage()
                elif failing.due():  # (a week of it shows in today's journal)
                    logger.error(
                        "MQTT: sending still fails (%s; first at %s, tried again every "
                        "second; %d message(s) wait in the spool)",
                        exc, failing.since(), len(self.spool),
                    )  # fmt: skip
                self._stop.wait(1.0)

    def _step(self) -> None:
        metrics.SPOOL_EVENTS.set(len(self.spool))
        self._save_people_due()  # (also while the broker is away: a freed disk takes it)
        if not self.connected.wait(0.5):
            self._remind()
            return
        self._answer_birth()  # one that came within the gap of the last answer
        self._holds()
        if not self._delete_acked():  # (never sent again: the spool waits for its disk)
            self._stop.wait(1.0)
            return
        pending = self.spool.peek(1)
        if not pending:
            self.spool.tidy()  # what was sent leaves the WAL
            self._wake.wait(0.5)
            self._wake.clear()
            return
        self._send(pending[0])

    def _delete_acked(self) -> bool:
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

    def _send(self, message: Message) -> None:
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
            info = self.client.publish(
                message.topic, payload, qos=message.qos, retain=message.retain
            )
        except (ValueError, TypeError) as exc:  # a topic with a wildcard, a bad QoS: damaged
            self._drop_unreadable(message, exc, "published")
            return
        # paho keeps a QoS 1 message it could not send and sends it again after reconnecting:
        # wait for that rather than publish a second copy.
        while not self._stop.is_set():
            if _wait(info, 1.0):
                with self._refusal_lock:
                    refused = self._refusals.pop(info.mid, None)
                if refused is not None:
                    self._keep_refused(message, refused)
                    return
                self._passed(message)
                self._acked.add((message.generation, message.row_id))  # (until deleted: a
                metrics.MQTT_PUBLISHES.labels("ok").inc()  # failed delete: sent again)
                self._observe_latency(event)
                self._delete_acked()
                return
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN):
                break  # not sent (no connection, queue full): the spool keeps it for later
        metrics.MQTT_PUBLISHES.labels("failed").inc()

    def _keep_refused(self, message: Message, reason: str) -> None:
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
                    self._refusal_said(message.topic, reason),
                )
                self._snapshots_refused = True
            self.spool.delete(message.row_id, message.generation)
            return
        metrics.MQTT_REFUSED.set(1)
        if message.topic != self._refused_topic:
            logger.error(
                "MQTT: %s; it stays in the spool with the %d message(s) there, offered again "
                "every %g s",
                self._refusal_said(message.topic, reason), len(self.spool), REFUSED_RETRY_S,
            )  # fmt: skip
            self._refused_topic, self._refused_since = message.topic, Outage()
        elif self._refused_since.due():  # (an ACL left wrong for a week shows in today's log)
            logger.error(
                "MQTT: the broker still refuses %s (%s; since %s; %d message(s) wait in the "
                "spool), offered again every %g s",
                message.topic, reason, self._refused_since.since(), len(self.spool),
                REFUSED_RETRY_S,
            )  # fmt: skip
        self._stop.wait(REFUSED_RETRY_S)

    def _drop_stray(self, message: Message, reason: str) -> None:
        """A message spooled for another node (``_say_strays``) that the broker refuses: the
        ACL written for this node never lets it through, and it would hold this node's events
        behind it for good. It goes, with every message spooled for its topic (a snapshot:
        with its camera's), in one line."""
        group = message.topic if message.kind == "event" else message.topic.rsplit("/", 1)[0]
        dropped = self.spool.delete_under(group)
        metrics.MQTT_PUBLISHES.labels("dropped").inc(dropped)
        logger.warning(
            "MQTT: %s; dropped, with every message spooled for %s: %d in all, so this node's "
            "go on (%d message(s) wait in the spool)",
            self._refusal_said(message.topic, reason), group, dropped, len(self.spool),
        )  # fmt: skip

    def _passed(self, message: Message) -> None:
        """A spooled message was taken: after refusals, the broker takes them again."""
        if self._refused_topic is not None:
            logger.info("MQTT: the broker takes %s: sending the spool", message.topic)
            self._refused_topic = None
            metrics.MQTT_REFUSED.set(0)

    @staticmethod
    def _observe_latency(event: dict[str, Any] | None) -> None:
        # the events of a frame: not those with a reason (left and a confirmed sent as its
        # track leaves wait tracking.lost_after_s by design; a gallery change is no frame's)
        captured = None if event is None else event.get("frame_ts")
        if isinstance(captured, (int, float)) and event and event.get("reason") is None:
            metrics.EVENT_LATENCY.observe(max(0.0, time.time() - captured))

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
        self._delete_acked()


def _refused_certificate(tls: TlsConfig | None, refusal: ssl.SSLError) -> str:
    """The broker's alert after the TLS handshake (an unknown CA, an expired or revoked
    certificate, none given), with the certificate it refused."""
    if tls is None or not tls.cert_file:
        return (
            "the broker refused this client after the TLS handshake (it sent no certificate: "
            f"mqtt.tls.cert_file): {refusal}"
        )
    return (
        f"the broker refused the client certificate {tls.cert_file} after the TLS handshake: "
        f"{refusal}"
    )


def _check_topic(topic: str) -> None:
    """ValueError for a topic paho sends but a broker takes for a protocol error and closes
    the connection over, again at each attempt: empty (MQTT 5), or holding a control
    character (what a bit flip makes of a ``/``, a ``-`` or a digit)."""
    if not topic:
        raise ValueError("an empty topic")
    bad = next((c for c in topic if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F), None)
    if bad is not None:
        raise ValueError(f"a control character in the topic, {bad!r}")


def _wait(info: paho.MQTTMessageInfo, timeout_s: float) -> bool:
    """True once the broker acknowledged the message; False when it has not (yet), or when
    paho could not send it (``info.rc`` says why)."""
    try:
        info.wait_for_publish(timeout_s)
        return info.is_published()
    except (RuntimeError, ValueError):
        time.sleep(min(timeout_s, 0.2))
        return False
