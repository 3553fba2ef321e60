"""The MQTT publisher (paho-mqtt 2.x): its own thread sends the spool's messages in order.

Topics, under ``PREFIX/NODE``:
- ``status``: retained ``online`` / ``offline`` (also the last will);
- ``cameras/CAMERA/status``: retained ``online`` / ``offline``;
- ``cameras/CAMERA/faces``: retained JSON, who the camera sees now (``events.in_view_json``);
- ``cameras/CAMERA/snapshot``: retained JPEG, the latest face snapshot (when they are on),
  not one of a ``confirmed`` sent as its face leaves (``events.EventSinks``);
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
configs) do not go through the spool: the latest of each is kept (``mqtt_retained``) and
sent again at every connection.

Here: the publisher, its paho client and callbacks, and its sending thread. Beside it:
``mqtt_delivery`` (a spooled message to the broker: its PUBACK, refusals, damaged rows),
``mqtt_retained`` (the retained state and announcements, the people published),
``mqtt_diagnosis`` (what is said of a connection that fails, is lost or taken over) and
``mqtt_tls`` (the TLS files).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemon import metrics
from daemon.config import ConfigError
from daemon.config_outputs import MqttConfig, TlsConfig
from daemon.events import person_key
from daemon.journal import Outage
from daemon.mqtt_delivery import Delivery, wait_acked
from daemon.mqtt_diagnosis import Outages, broker_address, client_id, refusal_said
from daemon.mqtt_retained import OFFLINE, ONLINE, Retained
from daemon.mqtt_tls import RenewableContext, TlsFileError
from daemon.spool import Spool

logger = logging.getLogger(__name__)

DRAIN_ON_STOP_S = 10.0  # a clean stop sends the spool for at most this long


class MqttPublisher:
    def __init__(self, config: MqttConfig, node_id: str, spool: Spool) -> None:
        self.config, self.spool = config, spool
        self.base = f"{config.topic_prefix.rstrip('/')}/{node_id}"
        self.node_id, self.client_id = node_id, client_id(node_id)
        self.status_topic = f"{self.base}/status"
        self.connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # the retained topics, announcements and people published (the spool's memory of
        # them read now); its lock is taken around `connected`'s changes
        self.retained = Retained(spool, self.base, self.connected, self._wake)
        # names enrolled, names gone -> announcements (Home Assistant's per-person configs)
        self.people_announcements: Callable[[set[str], set[str]], list[tuple[str, bytes]]] | None
        self.people_announcements = None
        self.delivery = Delivery(spool, self.base, self._stop, self._refusal_said)
        # the TLS files, loaded now (an error stops the start); renewed ones at connections
        self.tls = None if config.tls is None else self._load_tls(config.tls)
        self._tls_unusable: str | None = None  # why renewed files cannot be used (said once)
        self.outages = Outages(config, node_id, self.tls, spool, self._stop)
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
        tls = " (TLS)" if cfg.tls else ""
        logger.info("MQTT: connecting to %s%s", broker_address(cfg), tls)
        strays = self.spool.strays(self.base)
        if strays is not None:
            self.delivery.strays_said(strays)
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
            and self.delivery.refused_topic is None  # (what the broker refuses cannot drain)
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        if self.connected.is_set():
            infos = [self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)]
            # cameras whose reader said `offline` as it stopped: sent once
            infos += self.retained.cameras_offline(self.client, self.camera_status_topic)
            deadline = time.monotonic() + timeout_s
            for info in infos:
                wait_acked(info, max(0.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()
        metrics.MQTT_CONNECTED.set(0)

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
        self.retained.cameras.add(camera)
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
        gone = self.retained.replace_people(set(states))
        if self.people_announcements is not None:  # configs first: no entity reads a ""
            self.announce(self.people_announcements(set(states), gone))
        for name in gone:
            self._retain(self.person_topic(name), b"")
            self._retain(self.person_snapshot_topic(name), b"")
        with self.retained.lock:
            if self.connected.is_set():  # sent just now, or by _on_connect meanwhile
                self.retained.gone_sent()
        for name, state in states.items():
            self.set_person(name, state)

    def set_person(self, name: str, state: dict[str, Any]) -> None:
        """Retained presence of one person; republished on every (re)connection."""
        self._retain(self.person_topic(name), json.dumps(state, separators=(",", ":")).encode())

    def set_person_snapshot(self, name: str, jpeg: bytes) -> None:
        """Retained face of an enrolled person, from the latest event that named them (b"":
        none); republished on every (re)connection. A name no longer enrolled gets none:
        its topic was emptied when it left the gallery."""
        if self.retained.enrolled(name):
            self._retain(self.person_snapshot_topic(name), jpeg)

    def _retain(self, topic: str, payload: bytes) -> None:
        self.retained.keep(topic, payload, self.client)

    def announce(self, messages: list[tuple[str, bytes]], birth_topic: str | None = None) -> None:
        """Retained messages (Home Assistant's discovery configs), the latest by topic: sent
        now when connected, at every connection (before the node's ``online``), and whenever
        ``birth_topic`` (Home Assistant's birth message; give it before ``start``) says
        ``online``."""
        self.retained.announce(messages, birth_topic, self.client)

    # -- callbacks (paho's network thread) ------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            self.outages.refused_connection(reason)
            return
        self.outages.connected()
        with self.retained.lock:  # no change slips between these copies and `connected`
            self.retained.resend(client, self.delivery.check)
            # last: what a crash left (someone in view) is replaced before the node is online
            info = client.publish(self.status_topic, ONLINE, qos=1, retain=True)
            self.delivery.check(info.mid, self.status_topic)
            self.connected.set()
        metrics.MQTT_CONNECTED.set(1)
        self._wake.set()

    def _on_publish(
        self, client: paho.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        self.delivery.acknowledged(mid, reason)

    def _refusal_said(self, topic: str, reason: str) -> str:
        return refusal_said(self.config, self.base, self.retained.birth_topic, topic, reason)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic == self.retained.birth_topic and message.payload == ONLINE.encode():
            self.retained.birth(self.client)

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        self.outages.cannot_connect()

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        self.outages.disconnected(reason, self.connected.is_set())
        self.connected.clear()
        metrics.MQTT_CONNECTED.set(0)

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
        self.retained.save_people_due()  # (also while the broker is away: a freed disk takes it)
        if not self.connected.wait(0.5):
            self.outages.remind()
            return
        self.retained.answer_birth(self.client)  # one that came within the gap of the last answer
        self.outages.holds()
        if not self.delivery.delete_acked():  # (never sent again: the spool waits for its disk)
            self._stop.wait(1.0)
            return
        pending = self.spool.peek(1)
        if not pending:
            self.spool.tidy()  # what was sent leaves the WAL
            self._wake.wait(0.5)
            self._wake.clear()
            return
        self.delivery.send(pending[0], self.client)
