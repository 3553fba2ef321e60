"""What the MQTT publisher says when its connection fails, and what to check.

- ``Outages``: the connection's failures and losses as they are logged: the broker away or
  refusing (a wrong port, password, protocol, TLS files or client certificate: paho does not
  say why, ``Outages.diagnose`` asks again), a connection lost, or taken by another client
  with this client id (a second facewatch with this node_id). Each is said once, again when
  its reason changes, and every REMIND_S while it lasts; paho's callbacks and the sending
  thread's rounds (``MqttPublisher``) call it.
- ``refusal_said``: what a message the broker's ACL refused means to the user, and the ACL
  line that lets it through.

Its lines are the publisher's: they are logged as ``daemon.mqtt``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from daemon.config_file import url_host
from daemon.config_outputs import MqttConfig, TlsConfig
from daemon.journal import Outage
from daemon.mqtt_tls import RenewableContext
from daemon.spool import Spool
from daemon.spool_messages import topic_node

logger = logging.getLogger("daemon.mqtt")

UNSPECIFIED = 128  # MQTT reason code "Unspecified error"
SESSION_TAKEN_OVER = 142  # MQTT 5 reason code: another client connected with this client id
# MQTT 3.1.1 brokers close the connection without a word when another client connects with
# its client id: a connection lost this soon after the broker took it, this many times in a
# row (each reconnection pushes the other client off), is read as that
SHORT_LINK_S = 5.0
TAKEN_OVER_AFTER = 3
HOLDS_S = 60.0  # ... and one that lasts this long says the other client is gone
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


def client_id(node_id: str) -> str:
    """The MQTT client id of the daemon named ``node_id``."""
    return f"facewatch-{node_id}"


def broker_address(config: MqttConfig) -> str:
    """The broker as the log names it, HOST:PORT ([::1]:1883 for an IPv6 address)."""
    return f"{url_host(config.host)}:{config.port}"


class Outages:
    """The connection's failures, losses and takeovers, and their log lines. ``spool`` is
    counted in the reminders; ``stop`` set, nothing more is said of a connection lost."""

    def __init__(
        self,
        config: MqttConfig,
        node_id: str,
        tls: RenewableContext | None,
        spool: Spool,
        stop: threading.Event,
    ) -> None:
        self.config, self.node_id, self.tls = config, node_id, tls
        self.client_id = client_id(node_id)
        self.spool, self._stop = spool, stop
        # while not connected: since when, what was last said of it and what to check (one
        # tuple: the sending thread's reminder reads it as paho's thread replaces it)
        self._outage: tuple[Outage, str, str] | None = None
        self._refused = False  # the broker refused the connection attempt under way
        # another client with this client id: when the broker last took this one's connection,
        # how many in a row were lost soon after, and since when (and how often) it is taken
        self.connected_at = 0.0
        self._short_links = 0
        self._taken: Outage | None = None
        self._taken_times = 0

    # -- what paho's callbacks report ---------------------------------------------------

    def refused_connection(self, reason: object) -> None:
        """The broker answered the connection attempt with a refusal (``reason``)."""
        self._refused = True  # (paho's disconnect after it is no wrong port)
        self._short_links = 0
        cfg = self.config
        user = f" as user {cfg.username}" if cfg.username else " without a user name"
        check = (
            "mqtt.protocol: 3.1.1 for a broker without MQTT 5"
            if "protocol" in str(reason).lower()
            else "mqtt.username, the password's credential and the broker's password file and ACL"
        )
        self._failed(
            f"broker {broker_address(cfg)} refused the connection{user}: {reason}",
            check,
        )

    def connected(self) -> None:
        """The broker took the connection: the outage ends."""
        self.connected_at = time.monotonic()
        level = logging.INFO if self._taken is None else logging.DEBUG  # (again and again)
        logger.log(level, "MQTT: connected to %s", broker_address(self.config))
        self._outage = None

    def cannot_connect(self) -> None:
        """paho retries silently and does not say why: ask again (``diagnose``)."""
        self._short_links = 0  # (a broker away: no other client takes its connections)
        cfg = self.config
        why, check = self.diagnose()
        self._failed(f"cannot connect to {broker_address(cfg)}: {why}", check)

    def disconnected(self, reason: object, was_connected: bool) -> None:
        """paho's disconnection, with its ``reason``: of a connection the broker had taken
        (``was_connected``), or of an attempt."""
        value = getattr(reason, "value", None)
        lost = value == UNSPECIFIED  # what paho says of a lost socket
        refused, self._refused = self._refused, False
        if was_connected and not self._stop.is_set():
            if self._taken_over(value, lost):
                self._say_taken(surely=value == SESSION_TAKEN_OVER)
            else:
                why = "the connection was lost: the broker stopped, or the network"
                self._lost(why if lost else str(reason))
        elif lost and not refused and not self._stop.is_set():  # closed with no MQTT answer
            self._closed_unanswered()

    # -- what the sending thread asks at each of its rounds ------------------------------

    def remind(self) -> None:
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

    def holds(self) -> None:
        """After connections taken by another client: one that lasts ``HOLDS_S`` ends it."""
        if self._taken is None or time.monotonic() - self.connected_at < HOLDS_S:
            return
        logger.info(
            "MQTT: the connection to %s holds again (%g s): no other client with client "
            "id %s took it since (it was taken %d times)",
            broker_address(self.config), HOLDS_S, self.client_id, self._taken_times,
        )  # fmt: skip
        self._taken, self._taken_times = None, 0

    # -- why ----------------------------------------------------------------------------

    def diagnose(self) -> tuple[str, str]:
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

    def _failed(self, why: str, check: str) -> None:
        """Log a failed connection once per outage, and again when the reason changes (e.g.
        the broker was still starting, then refuses the password); each retry at DEBUG (the
        sending thread reminds of the outage every REMIND_S: ``remind``)."""
        outage = self._outage
        if outage is not None and outage[1] == why:
            logger.debug("MQTT: %s; retrying", why)
            return
        logger.warning("MQTT: %s; retrying, events are spooled until then (check %s)", why, check)
        began = Outage() if outage is None else outage[0]
        began.said_now()
        self._outage = (began, why, check)

    def _closed_unanswered(self) -> None:
        """The broker took the connection and closed it without an MQTT answer: with TLS
        1.3, the way a client certificate it refuses ends (after the client's handshake,
        so paho sees a connection lost), which ``diagnose`` tells from a wrong port."""
        cfg = self.config
        if self.tls is not None:
            why, check = self.diagnose()
            if check in (TLS_FILES, CLIENT_FILES):
                self._failed(f"cannot connect to {broker_address(cfg)}: {why}", check)
                return
        self._failed(
            f"{broker_address(cfg)} takes the connection but closes it without answering "
            "as an MQTT broker",
            "mqtt.port: is it a websockets port, a TLS one without mqtt.tls, another service?",
        )

    def _lost(self, why: str) -> None:
        logger.warning("MQTT: disconnected (%s); events are spooled until it is back", why)
        cfg = self.config  # (its reminder names the broker)
        self._outage = (Outage(), f"disconnected from {broker_address(cfg)} ({why})", REACH)

    def _taken_over(self, reason: object, lost: bool) -> bool:
        """Whether another client with this client id took the connection: an MQTT 5 broker
        says so; a 3.1.1 one closes it, and each reconnection pushes the other client off, so
        connections lost soon after they were made, several in a row, are read as that."""
        short = lost and time.monotonic() - self.connected_at < SHORT_LINK_S
        self._short_links = self._short_links + 1 if short else 0
        return reason == SESSION_TAKEN_OVER or self._short_links >= TAKEN_OVER_AFTER

    def _say_taken(self, surely: bool) -> None:
        """Said once, not at each of the disconnections that follow (at DEBUG, the reminder
        every REMIND_S), until a connection holds again (``holds``). Not ``surely`` (no MQTT
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
        self._outage = (Outage(), f"disconnected from {broker_address(cfg)} ({why})", check)
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


def refusal_said(
    config: MqttConfig, base: str, birth_topic: str | None, topic: str, reason: str
) -> str:
    """What a refused ``topic`` means to the user, and the ACL line that lets it through
    (``base``: this node's topics; ``birth_topic``: Home Assistant's, when announced)."""
    who = f"user {config.username}" if config.username else "clients without a user name"
    if topic == f"{base}/status":
        return (
            f"the broker refused this node's status {topic} ({reason}): Home Assistant "
            "shows its entities unavailable, and subscribers take the node for offline "
            f"(its last will goes there too); the broker's ACL must let {who} write "
            f"{base}/#"
        )
    if topic.startswith(f"{base}/"):
        return (
            f"the broker refused {topic} ({reason}): the broker's ACL must let {who} write {base}/#"
        )
    if topic.startswith(f"{config.home_assistant.discovery_prefix}/"):
        levels = topic.split("/")  # DISCOVERY_PREFIX/PLATFORM/facewatch_NODE/ENTITY/config
        pattern = "/".join([*levels[:-4], "+", levels[-3], "#"])
        return (
            f"the broker refused Home Assistant's discovery config {topic} ({reason}): Home "
            f"Assistant finds none of this node's entities; the broker's ACL must let {who} "
            f"write {pattern} (and read {birth_topic or 'DISCOVERY_PREFIX/status'})"
        )
    node = topic_node(topic)
    if node != topic:  # an event or snapshot spooled under another node_id or prefix
        return (
            f"the broker refused {topic} ({reason}), spooled for {node}, not for this node "
            f"({base}: node_id or mqtt.topic_prefix changed since, or the spool came "
            f"from another box); the broker's ACL lets {who} write it only with a line for "
            f"{node}/#"
        )
    return f"the broker refused {topic} ({reason}): the broker's ACL must let {who} write it"


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
