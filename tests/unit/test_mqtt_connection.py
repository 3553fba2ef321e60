"""The MQTT publisher's connection to its broker (daemon.mqtt, mqtt_diagnosis, mqtt_tls):
what its log says of an outage, a refusal, a taken connection, and when it says it again."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from daemon.config import ConfigError
from daemon.spool import Spool

_SPOOLS: list[Spool] = []  # the tests' publishers' spools, closed after each test


@pytest.fixture(autouse=True)
def _spools_closed() -> Iterator[None]:
    yield
    while _SPOOLS:
        _SPOOLS.pop().close()


def spool_in(folder: Path, max_messages: int = 100_000) -> Spool:
    _SPOOLS.append(Spool(folder, max_messages))
    return _SPOOLS[-1]


def test_tls_files_that_cannot_be_used_are_a_config_error_naming_mqtt_tls(tmp_path) -> None:
    """Only the TLS set-up's errors are called ``mqtt.tls`` (exit status 2, not restarted):
    the spool's, read in the same step, were too."""
    from daemon.config_outputs import MqttConfig, TlsConfig
    from daemon.mqtt import MqttPublisher

    (tmp_path / "ca.crt").write_bytes(b"not a certificate")
    config = MqttConfig(tls=TlsConfig(ca_file=str(tmp_path / "ca.crt")))
    spool = spool_in(tmp_path / "spool")
    with pytest.raises(ConfigError, match=r"^mqtt\.tls\.ca_file: .*ca\.crt: not a PEM certificate"):
        MqttPublisher(config, "node", spool)
    spool.close()


def test_mqtt_failures_are_logged_once_per_outage_and_when_the_reason_changes(
    tmp_path, caplog
) -> None:
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    config = MqttConfig(port=1, username="cam", password="s3cret")
    publisher = MqttPublisher(config, "node", spool_in(tmp_path / "spool", 10))
    with caplog.at_level("WARNING", logger="daemon.mqtt"):
        for _ in range(3):  # paho retries: nothing listens on port 1
            publisher._on_connect_fail(publisher.client, None)

        class NotAuthorized:  # paho's reason code for a wrong password
            is_failure = True

            def __str__(self) -> str:
                return "Not authorized"

        for _ in range(2):  # named with the broker and the user, once
            publisher._on_connect(publisher.client, None, None, NotAuthorized(), None)

        class OldBroker(NotAuthorized):  # a broker without MQTT 5 (mosquitto before 1.6)
            def __str__(self) -> str:
                return "Unsupported protocol version"

        publisher._on_connect(publisher.client, None, None, OldBroker(), None)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[2].endswith("(check mqtt.protocol: 3.1.1 for a broker without MQTT 5)")
    assert messages[0].startswith("MQTT: cannot connect to 127.0.0.1:1: ")
    assert "refused" in messages[0] and "events are spooled until then" in messages[0]
    assert messages[1].startswith(
        "MQTT: broker 127.0.0.1:1 refused the connection as user cam: Not authorized; "
        "retrying, events are spooled until then (check mqtt.username, "
    ), messages
    assert "s3cret" not in caplog.text


def test_an_ipv6_broker_is_named_in_brackets_in_every_line(tmp_path, caplog) -> None:
    """mqtt.host: "::1" read 'cannot connect to ::1:1883' (port 1883 of host ::1:1883? of
    ::1?): each line that names the broker writes an IPv6 address as in a URL, [::1]:1883."""
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    publisher = MqttPublisher(MqttConfig(host="::1", port=1), "node", spool_in(tmp_path / "s", 10))

    class Client:  # a connection that publishes nowhere
        def publish(self, *args: object, **kwargs: object) -> SimpleNamespace:
            return SimpleNamespace(mid=1)

    lost = SimpleNamespace(value=128)  # paho's reason for a lost socket
    refusal = SimpleNamespace(is_failure=True)  # (as paho's reason code "Not authorized")
    with caplog.at_level("INFO", logger="daemon.mqtt"):
        publisher._on_connect_fail(publisher.client, None)  # nothing listens on port 1
        publisher._on_connect(publisher.client, None, None, refusal, None)
        publisher._on_disconnect(publisher.client, None, None, lost, None)  # (the refusal's)
        publisher._on_disconnect(publisher.client, None, None, lost, None)  # no MQTT answer
        publisher.client = Client()  # type: ignore[assignment]
        publisher._on_connect(publisher.client, None, None, SimpleNamespace(), None)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 4, said
    assert said[0].startswith("MQTT: cannot connect to [::1]:1: "), said
    assert said[1].startswith("MQTT: broker [::1]:1 refused the connection "), said
    assert said[2].startswith("MQTT: [::1]:1 takes the connection but closes it "), said
    assert said[3] == "MQTT: connected to [::1]:1"


def test_a_broker_that_stays_away_is_said_again_every_remind_s(tmp_path, monkeypatch, caplog):
    """A broker down for a week was logged once, at its start: `journalctl --since today`
    showed nothing of it. While the publisher is not connected, the outage's latest line
    comes again every REMIND_S (each retry between at DEBUG), saying since when (local time)
    and how many messages wait in the spool; a new outage after a connection starts anew."""
    from datetime import datetime

    from daemon import journal
    from daemon.config_outputs import MqttConfig
    from daemon.journal import REMIND_S
    from daemon.mqtt import MqttPublisher
    from daemon.mqtt_diagnosis import REACH

    wall0, clock = 1_746_100_000.0, [0.0]  # the fake clock: its wall time is wall0 + clock
    fake = SimpleNamespace(monotonic=lambda: clock[0], time=lambda: wall0 + clock[0])
    monkeypatch.setattr(journal, "time", fake, raising=False)

    def local(at: float) -> str:
        return datetime.fromtimestamp(wall0 + at).strftime("%Y-%m-%d %H:%M")

    spool = spool_in(tmp_path / "spool", 10)
    for k in range(3):
        spool.append(f"t/{k}", b"{}", kind="event")
    publisher = MqttPublisher(MqttConfig(host="broker.lan"), "node", spool)
    refused = ("[Errno 111] Connection refused", REACH)
    monkeypatch.setattr(publisher.outages, "diagnose", lambda: refused)
    monkeypatch.setattr(
        publisher.connected, "wait", lambda timeout=None: publisher.connected.is_set()
    )

    class Client:  # a connection that publishes nowhere
        def publish(self, *args: object, **kwargs: object) -> SimpleNamespace:
            return SimpleNamespace(mid=1)  # (as paho's MQTTMessageInfo)

    publisher.client = Client()  # type: ignore[assignment]
    with caplog.at_level("DEBUG", logger="daemon.mqtt"):
        clock[0] = 5.0
        while clock[0] < 5.0 + 2 * REMIND_S + 1:  # paho's retries, every 30 s
            publisher._on_connect_fail(publisher.client, None)
            publisher._step()
            if clock[0] == 5.0 + REMIND_S:
                spool.append("t/3", b"{}", kind="event")  # one more waits
            clock[0] += 30.0
        publisher._on_connect(publisher.client, None, None, SimpleNamespace(), None)
        clock[0] += 3600.0  # an hour connected
        lost = SimpleNamespace(value=128)  # paho's reason for a lost socket
        publisher._on_disconnect(publisher.client, None, None, lost, None)
        back = clock[0]
        while clock[0] < back + REMIND_S:  # paho gets no answer at all: no retry fails
            clock[0] += 30.0
            publisher._step()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelname != "DEBUG"]
    refused = "cannot connect to broker.lan:1883: [Errno 111] Connection refused"
    then = (
        "retrying, events are spooled until then (check that the broker runs there and this "
        "host reaches it: mqtt.host, mqtt.port)"
    )
    gone = "disconnected from broker.lan:1883 (the connection was lost: the broker stopped"
    assert said[:3] == [
        ("WARNING", f"MQTT: {refused}; {then}"),
        (
            "WARNING",
            f"MQTT: {refused} (still, since {local(5)}; 3 messages wait in the spool); {then}",
        ),
        (
            "WARNING",
            f"MQTT: {refused} (still, since {local(5)}; 4 messages wait in the spool); {then}",
        ),
    ], said
    assert said[3:5] == [
        ("INFO", "MQTT: connected to broker.lan:1883"),
        ("WARNING", "MQTT: disconnected (the connection was lost: the broker stopped, or the "
         "network); events are spooled until it is back"),
    ], said  # fmt: skip
    [(level, reminder)] = said[5:]
    assert level == "WARNING" and reminder.startswith(
        f"MQTT: {gone}, or the network) (still, since {local(back)}; 4 "
    )
    quiet = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert quiet.count(f"MQTT: {refused}; retrying") == 40, quiet


def test_a_connection_another_client_takes_is_said_so_once_not_a_broker_outage(
    tmp_path, monkeypatch, caplog
) -> None:
    """MQTT 5 brokers say 'Session taken over' (reason 142) when another client connects
    with this one's client id: a second facewatch with the same node_id. It was logged as
    'disconnected (Session taken over)' at each push, once a second. It names the node_id
    to change, once, the pushes after it at DEBUG. Connections lost long after they were
    made, or with the broker away between them, are the broker's or the network's."""
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher
    from daemon.mqtt_diagnosis import SHORT_LINK_S

    publisher = MqttPublisher(MqttConfig(protocol="5"), "twin", spool_in(tmp_path / "spool", 10))
    monkeypatch.setattr(publisher.outages, "diagnose", lambda: ("refused", "the broker"))

    class Client:  # a connection that publishes nowhere
        def publish(self, *args: object, **kwargs: object) -> SimpleNamespace:
            return SimpleNamespace(mid=1)

    publisher.client = Client()  # type: ignore[assignment]

    def link(
        publisher: MqttPublisher, reason: int, held_s: float = 0.0, broker_away: bool = False
    ) -> None:
        client = publisher.client
        publisher._on_connect(client, None, None, SimpleNamespace(), None)
        publisher.outages.connected_at -= held_s
        publisher._on_disconnect(client, None, None, SimpleNamespace(value=reason), None)
        if broker_away:
            publisher._on_connect_fail(client, None)

    with caplog.at_level("DEBUG", logger="daemon.mqtt"):
        for _ in range(3):
            link(publisher, 142)
    said = [
        (r.levelname, r.getMessage()) for r in caplog.records if "disconnected" in r.getMessage()
    ]
    taken = (
        "MQTT: disconnected: another MQTT client with client id facewatch-twin takes the "
        "connection (a second facewatch with node_id twin? give each its own node_id)"
    )
    assert [level for level, _ in said] == ["WARNING", "DEBUG", "DEBUG"], said
    assert said[0][1].startswith(f"{taken}; it connects again at once"), said
    connected = [r.levelname for r in caplog.records if "connected to" in r.getMessage()]
    assert connected == ["INFO", "DEBUG", "DEBUG"], "while taken, each connection at DEBUG"

    caplog.clear()
    lonely = MqttPublisher(MqttConfig(), "solo", spool_in(tmp_path / "solo", 10))
    monkeypatch.setattr(lonely.outages, "diagnose", lambda: ("refused", "the broker"))
    lonely.client = publisher.client
    with caplog.at_level("WARNING", logger="daemon.mqtt"):
        for _ in range(4):
            link(lonely, 128, held_s=SHORT_LINK_S + 1)  # lost, each after a while
        for _ in range(4):
            link(lonely, 128, broker_away=True)  # lost at once, the broker refusing between
    assert "another MQTT client" not in caplog.text
    assert caplog.text.count("the connection was lost: the broker stopped, or the network") == 8


def test_an_acl_that_keeps_refusing_is_said_again_every_remind_s(tmp_path, monkeypatch, caplog):
    """MQTT 5: the broker's ACL refuses the spooled event, offered again every 30 s. The error
    comes once, then every REMIND_S (since when, how many messages wait), not at each offer;
    it is said anew when the broker takes it and later refuses another."""
    from datetime import datetime

    from daemon import journal
    from daemon.config_outputs import MqttConfig
    from daemon.journal import REMIND_S
    from daemon.mqtt import MqttPublisher
    from daemon.mqtt_delivery import REFUSED_RETRY_S

    wall0, clock = 1_746_100_000.0, [0.0]
    fake = SimpleNamespace(monotonic=lambda: clock[0], time=lambda: wall0 + clock[0])
    monkeypatch.setattr(journal, "time", fake, raising=False)
    spool = spool_in(tmp_path / "spool", 10)
    for _ in range(2):
        spool.append("facewatch/node/events/door", b"{}", kind="event")
    publisher = MqttPublisher(MqttConfig(host="broker.lan", protocol="5"), "node", spool)
    monkeypatch.setattr(publisher._stop, "wait", lambda timeout=None: False)
    [message] = spool.peek(1)
    with caplog.at_level("DEBUG", logger="daemon.mqtt"):
        while clock[0] <= 2 * REMIND_S:
            publisher.delivery.keep_refused(message, "Not authorized")
            clock[0] += REFUSED_RETRY_S
        publisher.delivery.passed(message)
        publisher.delivery.keep_refused(message, "Not authorized")
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    since = datetime.fromtimestamp(wall0).strftime("%Y-%m-%d %H:%M")
    again = (
        f"MQTT: the broker still refuses {message.topic} (Not authorized; since {since}; 2 "
        f"message(s) wait in the spool), offered again every {REFUSED_RETRY_S:g} s"
    )
    assert len(said) == 4, said
    assert said[0].startswith(f"MQTT: the broker refused {message.topic} (Not authorized)")
    assert said[1:3] == [again, again]
    assert said[3] == said[0]


def test_a_message_paho_could_not_send_is_not_acknowledged_and_raises_nothing() -> None:
    """paho's info for a publish made as the connection dropped raises on every question;
    the sender must read it as 'not acknowledged' (and send again), not die."""
    import paho.mqtt.client as paho

    from daemon.mqtt_delivery import wait_acked

    info = paho.MQTTMessageInfo(7)
    info.rc = paho.MQTT_ERR_NO_CONN
    assert wait_acked(info, 0.05) is False
    queued = paho.MQTTMessageInfo(8)
    queued.rc = paho.MQTT_ERR_QUEUE_SIZE
    assert wait_acked(queued, 0.05) is False


def test_a_camera_status_changed_while_the_connection_is_set_up_is_not_lost(tmp_path) -> None:
    """The first frame of a camera often arrives while the publisher is connecting: its
    ``online`` must reach the broker, not fall between the retained states sent at the
    connection and the moment the publisher counts as connected."""
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    publisher = MqttPublisher(MqttConfig(), "test", spool_in(tmp_path / "spool", 10))
    publisher.set_camera_status("cam", False)
    sent: list[tuple[str, bytes]] = []
    camera = threading.Thread(target=publisher.set_camera_status, args=("cam", True))

    class Client:  # records what is published; the camera comes up as its status is sent
        def publish(self, topic: str, payload: str | bytes, **kwargs: object) -> SimpleNamespace:
            sent.append((topic, payload.encode() if isinstance(payload, str) else payload))
            if topic.endswith("/cameras/cam/status") and camera.ident is None:
                camera.start()
                time.sleep(0.2)  # the camera's thread runs now, mid-connection
            return SimpleNamespace(mid=len(sent))  # (as paho's MQTTMessageInfo)

        def subscribe(self, topic: str, qos: int) -> None:
            pass

    client = Client()
    publisher.client = client  # type: ignore[assignment]
    publisher._on_connect(client, None, None, None, None)  # type: ignore[arg-type]
    camera.join(5)
    status = [payload for topic, payload in sent if topic == "facewatch/test/cameras/cam/status"]
    assert status[-1] == b"online", status
    topics = [topic for topic, _ in sent]
    assert topics.index("facewatch/test/status") > topics.index(
        "facewatch/test/cameras/cam/status"
    ), "the node is online only once the state a crash may have left is replaced"


def test_a_broker_port_that_is_no_mqtt_broker_is_said(tmp_path, caplog) -> None:
    """mqtt.port set to something that takes the connection and closes it (a web server, a
    websockets or TLS listener): the log said only 'connecting to', while events spooled."""
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        for _ in range(3):
            try:
                connection, _ = listener.accept()
            except OSError:  # (the test's end: fewer connections came)
                return
            with connection:
                connection.recv(1024)
                connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = MqttConfig(port=listener.getsockname()[1])
    publisher = MqttPublisher(config, "node", spool_in(tmp_path / "spool", 10))
    with caplog.at_level("WARNING", logger="daemon.mqtt"):
        publisher.start()
        try:
            deadline = time.monotonic() + 15
            while "without answering" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            publisher.stop(timeout_s=1, drain_s=0)
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # (ends an accept() the thread waits in)
            listener.close()
            thread.join(10)
    said = [r.getMessage() for r in caplog.records if "without answering" in r.getMessage()]
    assert said and said[0].startswith(f"MQTT: 127.0.0.1:{config.port} takes the connection")
    assert len(said) == 1, "once, as any failure of the same kind"
