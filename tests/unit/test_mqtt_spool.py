"""The MQTT publisher and its spool (daemon.mqtt, mqtt_delivery, mqtt_retained): what is
sent from the spool, what cannot be, and the people published when the spool's disk is full."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.config_file import parse_config
from daemon.events import EventSinks
from daemon.gallery import Gallery
from daemon.gallery_write import Enrollment
from daemon.scheduler import Pipeline
from daemon.spool import Spool
from tests.pipeline_fakes import OneFace as _OneFace
from tests.pipeline_fakes import galleries_closed  # noqa: F401  (a fixture, used by name)

pytestmark = pytest.mark.usefixtures("galleries_closed")


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Spool]:
    """A spool of at most 10 messages in the test's folder, closed after the test (its SQLite
    file and lock stayed open to the worker's end)."""
    with contextlib.closing(Spool(tmp_path / "spool", 10)) as spool:
        yield spool


def test_an_unreadable_list_of_people_published_starts_with_a_warning(tmp_path, caplog) -> None:
    """A cut value in the spool's state (people published) stopped the start with exit
    status 2 and 'mqtt.tls: Unterminated string ...' (systemd left the daemon down): it is
    read as nobody, with a warning naming the spool."""
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    spool = Spool(tmp_path / "spool")
    spool.remember("people", '["alex-lac')
    publisher = MqttPublisher(MqttConfig(), "node", spool)
    assert publisher.retained.people.names == set()
    [said] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said.startswith(f"MQTT spool {spool.path}: the people published before cannot be read")
    spool.remember("people", '["ann"]')  # (as written)
    assert MqttPublisher(MqttConfig(), "node", spool).retained.people.names == {"ann"}
    spool.close()


def test_spool_ids_used_again_keep_the_order_and_each_message_goes_once(
    small_spool, caplog
) -> None:
    """Without AUTOINCREMENT a drained spool's ids start again. Events come while the
    publisher sends, one acknowledged message's delete fails once (a full disk): each
    message reaches the broker once, in the order it was spooled. The failed delete is one
    line, and one when it deletes again (it was a traceback)."""
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    caplog.set_level("INFO", logger="daemon.mqtt")
    spool = small_spool
    publisher = MqttPublisher(MqttConfig(), "node", spool)
    received: list[str] = []

    class Client:  # a broker that acknowledges at once
        def publish(self, topic: str, *args: object, **kwargs: object) -> SimpleNamespace:
            received.append(topic)
            return SimpleNamespace(
                mid=1, rc=0, wait_for_publish=lambda timeout: None, is_published=lambda: True
            )

    publisher.client = Client()  # type: ignore[assignment]
    publisher.connected.set()
    delete, failures = spool.delete, [1]

    def delete_failing_once(row_id: int, generation: int | None = None) -> None:
        if failures:
            failures.pop()
            raise sqlite3.OperationalError("database or disk is full")
        delete(row_id, generation)

    ids = []
    for k, sends in enumerate([1, 0, 1, 2, 1, 1]):
        spool.append(f"e/{k}", b"{}", kind="event")
        ids.append(spool.peek(10)[-1].row_id)
        for _ in range(sends):
            if k == 2:
                spool.delete = delete_failing_once  # type: ignore[method-assign]
                publisher._step()
                spool.delete = delete  # type: ignore[method-assign]
            else:
                publisher._step()
    while len(spool):
        publisher._step()
    assert ids == [1, 1, 2, 3, 1, 1], "(the case under test: ids used again)"
    assert received == [f"e/{k}" for k in range(6)]
    said = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert [(level, exc) for level, _, exc in said] == [("ERROR", None), ("INFO", None)], said
    assert "cannot delete what the broker took (database or disk is full)" in said[0][1]
    assert said[1][1] == f"MQTT: the spool {spool.path} deletes what was sent again"


class AckingClient:
    """A broker that acknowledges at once, behind paho's own checks of what is published."""

    def __init__(self) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.paho = paho.Client(CallbackAPIVersion.VERSION2)  # (not connected)
        self.received: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False):
        self.paho.publish(topic, payload, qos=qos, retain=retain)  # its ValueErrors
        self.received.append((topic, payload))
        return SimpleNamespace(
            mid=1, rc=0, wait_for_publish=lambda timeout: None, is_published=lambda: True
        )


def _sending(spool: Spool) -> tuple[object, AckingClient]:
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    publisher = MqttPublisher(MqttConfig(), "node", spool)
    publisher.client = client = AckingClient()  # type: ignore[assignment]
    publisher.connected.set()
    return publisher, client


def _dropped() -> float:
    return REGISTRY.get_sample_value("facewatch_mqtt_publishes_total", {"outcome": "dropped"}) or 0


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("topic = 'facewatch/node/ev#nts/door'", "cannot be published (Publish topic cannot"),
        ("topic = CAST(x'666163e5' AS TEXT)", "cannot be read ('utf-8' codec can't decode"),
        ("topic = 'facewatch/node/events/do' || char(13) || 'r'", "cannot be published (a control"),
        ("qos = 7", "cannot be published (Invalid QoS level.)"),
    ],
)
def test_a_spooled_message_that_cannot_be_read_or_published_is_dropped_and_the_rest_go(
    tmp_path, caplog, damage, said
) -> None:
    """One flipped bit in a spooled event (its topic given a wildcard, a byte that is no
    UTF-8, a control character; its QoS) stopped every MQTT event after it, for good and
    across restarts, after one log line: it is dropped, logged with its id and topic, and
    counted, and the rest go."""
    spool = Spool(tmp_path / "spool")
    for n in range(1, 5):
        spool.append("facewatch/node/events/door", b'{"n": %d}' % n, kind="event")
    with contextlib.closing(sqlite3.connect(spool.path)) as db, db:
        db.execute(f"UPDATE messages SET {damage} WHERE id = 2")
    publisher, client = _sending(spool)
    dropped = _dropped()
    for _ in range(10):
        publisher._step()  # type: ignore[attr-defined]
    assert [json.loads(payload)["n"] for _, payload in client.received] == [1, 3, 4]
    assert len(spool) == 0
    assert _dropped() == dropped + 1
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith("MQTT: spooled event 2 for '") and f" {said}" in line, line
    spool.close()


def test_a_spool_damaged_under_a_message_is_set_aside_while_running_and_events_go_on(
    tmp_path, caplog
) -> None:
    """A bad block in a face snapshot's overflow page: SQLite can neither read nor delete
    its row, and no MQTT event was sent again, ever. The spool is moved aside as at start,
    saying how many messages it held, what it remembered stays, and events go on."""
    spool = Spool(tmp_path / "spool")
    spool.remember("people", '["ann"]')
    spool.append("facewatch/node/snapshots/door/e1", bytes(range(256)) * 20)
    for n in range(2):
        spool.append("facewatch/node/events/door", b'{"n": %d}' % n, kind="event")
    spool.close()
    data = bytearray(spool.path.read_bytes())
    tree = {2, 5, 10, 13}  # the b-tree pages' first byte; the snapshot's overflow pages follow
    overflow = next(k for k in range(2, len(data) // 1024) if data[k * 1024] not in tree)
    data[overflow * 1024 : overflow * 1024 + 4] = b"\xff" * 4  # its next page: none such
    spool.path.write_bytes(bytes(data))
    spool = Spool(tmp_path / "spool")
    assert len(spool) == 3
    publisher, client = _sending(spool)
    publisher._step()  # type: ignore[attr-defined]
    spool.append("facewatch/node/events/door", b'{"n": 9}', kind="event")
    for _ in range(3):
        publisher._step()  # type: ignore[attr-defined]
    assert [json.loads(payload)["n"] for _, payload in client.received] == [9]
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert said[0].startswith("MQTT: spooled message 1 for 'facewatch/node/snapshots/door/e1' ")
    assert "cannot be read (database disk image is malformed): dropped" in said[0]
    assert said[1].startswith(f"MQTT spool {spool.path} is damaged (database disk image is")
    assert "the 3 message(s) the old one held are not sent" in said[1]
    assert len(said) == 2, said
    assert spool.recall("people") == '["ann"]'
    assert any(".damaged-" in p.name for p in spool.folder.iterdir())
    spool.close()


def test_a_sending_error_that_lasts_is_said_again_every_remind_s(
    tmp_path, monkeypatch, caplog
) -> None:
    """The sending thread logged an error once and then retried every second in silence,
    for good: a week of it shows in today's journal."""
    from daemon import journal
    from daemon.journal import REMIND_S

    clock = [0.0]
    fake = SimpleNamespace(monotonic=lambda: clock[0], time=lambda: 1_746_100_000 + clock[0])
    monkeypatch.setattr(journal, "time", fake)
    spool = Spool(tmp_path / "spool")
    publisher, _ = _sending(spool)

    def step() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    def wait(timeout: float) -> bool:
        clock[0] += timeout
        if clock[0] > 2.5 * REMIND_S:
            publisher._stop.set()  # type: ignore[attr-defined]
        return False

    monkeypatch.setattr(publisher, "_step", step)
    monkeypatch.setattr(publisher._stop, "wait", wait)  # type: ignore[attr-defined]
    publisher._run()  # type: ignore[attr-defined]
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert said[0] == "MQTT: sending failed; trying again"
    assert len(said) == 3, said
    assert said[1].startswith("MQTT: sending still fails (disk I/O error; first at ")
    spool.close()


def test_deletions_are_sent_at_the_next_connection_then_forgotten(small_spool) -> None:
    """A visitor gallery: someone enrolled and removed each day. Each removal empties their
    retained topic (and Home Assistant config); those were sent again at every connection
    for good (2002 messages a reconnection after 1000 removals)."""
    from types import SimpleNamespace

    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    publisher = MqttPublisher(MqttConfig(port=1), "node", small_spool)
    publisher.people_announcements = lambda names, gone: [
        *((f"ha/{name}/config", b"{}") for name in names),
        *((f"ha/{name}/config", b"") for name in gone),
    ]
    sent: list[str] = []  # the topics published
    client = SimpleNamespace(
        subscribe=lambda *a, **k: None,
        publish=lambda topic, *a, **k: sent.append(topic) or SimpleNamespace(mid=len(sent)),
    )
    for day in range(30):
        publisher.set_people({f"visitor{day}": {"cameras": []}})
    publisher.set_camera_status("gate", True)

    def connection() -> set[str]:
        sent.clear()
        publisher._on_connect(client, None, None, SimpleNamespace(is_failure=False), None)  # type: ignore[arg-type]
        return set(sent)

    first = connection()  # the deletions of the last connection's time, sent once more
    assert "ha/visitor0/config" in first and publisher.person_topic("visitor0") in first
    second = connection()
    assert second == {
        "ha/visitor29/config",
        publisher.person_topic("visitor29"),
        publisher.camera_status_topic("gate"),
        publisher.status_topic,
    }


def _fill_disk(spool: Spool) -> None:
    """The spool's disk full: SQLite's page limit stands in for its last free blocks (a
    small row still fits in a page it has, ten kB do not)."""
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {pages}")


# names enough that their list does not fit in a page the spool has
VISITORS = [f"visitor {k:03d} of the open day at the museum" for k in range(200)]


def test_a_gallery_change_while_the_spools_disk_is_full_is_applied_and_saved_later(
    tmp_path, caplog
) -> None:
    """The spool's disk full (events go straight to the broker): the next enroll, gallery
    remove or SIGHUP stopped the batch scheduler, the reload half applied, because the spool
    could not save whom the publisher had published. The reload is applied whole (the new
    people's topics set, the removed one's deleted), the failure is said once, and the list
    is saved when the spool takes it again."""
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    path = tmp_path / "gallery.sqlite"
    axes = np.eye(8, dtype=np.float32)
    with Gallery.create(path, _OneFace.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", axes[0], "a" * 64)])
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "door.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
        }
    )
    spool = Spool(tmp_path / "spool")
    publisher = MqttPublisher(MqttConfig(port=1), "node", spool)
    sinks = EventSinks(spool=spool, topic_for=publisher.event_topic, state=publisher)
    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    assert spool.recall("people") == '["ann"]'

    _fill_disk(spool)
    with Gallery.open(path, writable=True) as gallery:
        gallery.enroll([Enrollment(n, axes[1], f"{k:064x}") for k, n in enumerate(VISITORS)])
        gallery.remove("ann")
    with caplog.at_level("INFO"):
        pipeline.reload_gallery()  # `facewatch enroll` and `gallery remove`
        pipeline.reload_gallery()  # then a SIGHUP
    assert pipeline.emitter.enrolled == set(VISITORS)
    assert publisher.retained.topics[publisher.person_topic("ann")] == b""
    assert publisher.retained.topics[publisher.person_snapshot_topic("ann")] == b""
    assert all(publisher.person_topic(name) in publisher.retained.topics for name in VISITORS)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"MQTT: the spool {spool.path} (mqtt.spool_dir) cannot save the people published "
        "(database or disk is full): kept in memory and saved once it can (until then, a "
        "person enrolled since and removed while facewatch is stopped keeps their retained "
        f"topics on the broker); check the free space of {spool.folder} (df -h) and that it "
        "can be written"
    ]
    assert spool.recall("people") == '["ann"]'

    spool._db.execute("PRAGMA max_page_count = 1000000")  # space freed
    with caplog.at_level("INFO"):
        publisher._step()  # a round of the sending thread (the broker away)
    assert json.loads(spool.recall("people") or "") == sorted([*VISITORS, "ann"])  # (her
    assert f"MQTT: the spool {spool.path} takes the people published again" in caplog.text
    spool.close()  # deletions are not sent yet: the next start sends them)


def test_a_start_with_the_spools_disk_full_publishes_its_first_state(tmp_path) -> None:
    """systemd restarting a daemon whose spool's disk is full (the spool opens, but takes
    nothing): each start died with a traceback before any camera was watched. It starts,
    and the broker gets the state it shows first, a person removed meanwhile deleted."""
    from daemon import service
    from daemon.mqtt import MqttPublisher

    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    spool = Spool(tmp_path / "spool")
    spool.remember("people", '["bob"]')  # what the run before published
    _fill_disk(spool)
    publisher = MqttPublisher(daemon.config.mqtt, "node", spool)
    daemon._initial_state(publisher, VISITORS)
    retained = publisher.retained.topics
    assert retained[publisher.person_topic("bob")] == b""
    assert all(publisher.person_topic(name) in retained for name in VISITORS)
    assert retained[publisher.camera_status_topic("door")] == b"offline"
    assert spool.recall("people") == '["bob"]'
    spool.close()


def test_a_spool_holding_another_nodes_messages_is_said_at_start_with_the_line_to_delete_them(
    tmp_path, caplog
) -> None:
    """A spool copied from another box (or node_id renamed while events waited): its
    messages went out under the old node's topics, a second time where the old box had
    delivered them, without a word. The start names how many, for which node, of when, and
    the sqlite3 line that deletes them; that line leaves this node's own messages."""
    from daemon.config_outputs import MqttConfig
    from daemon.mqtt import MqttPublisher

    spool = Spool(tmp_path / "spool", 100)
    for n, ts in enumerate((1_764_600_000.0, 1_764_686_400.0)):
        spool.append("home/fw/boxa/events/door", json.dumps({"frame_ts": ts}).encode(), "event")
        spool.append(f"home/fw/boxa/snapshots/door/e{n}", b"\xff\xd8 a face")
    spool.append("home/fw/box/events/door", b"{}", "event")  # (box is a prefix of boxa)
    spool.append("home/fw/boxb/events/door", b'{"n": 1}', "event")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # nothing listens: no broker sends them meanwhile
    config = MqttConfig(port=closed.getsockname()[1], topic_prefix="home/fw")
    publisher = MqttPublisher(config, "boxb", spool)
    with caplog.at_level("WARNING", logger="daemon.mqtt"):
        publisher.start()
        publisher.stop(timeout_s=1, drain_s=0)
    closed.close()
    spool.close()
    [said] = [r.getMessage() for r in caplog.records if "not for this node" in r.getMessage()]
    first, last = (
        time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) for t in (1_764_600_000, 1_764_686_400)
    )
    assert said.startswith(
        f"MQTT spool {spool.path}: 5 message(s) (events of {first} to {last}) spooled for "
        "home/fw/box, home/fw/boxa, not for this node (home/fw/boxb): node_id or "
        "mqtt.topic_prefix changed since, or the spool was copied from another box"
    ), said
    command = said.split("delete them: ", 1)[1]
    subprocess.run(["sh", "-c", command], check=True, timeout=30)
    again = Spool(tmp_path / "spool", 100)
    assert [(m.topic, m.payload) for m in again.peek(10)] == [
        ("home/fw/boxb/events/door", b'{"n": 1}')
    ]
    assert again.strays("home/fw/boxb") is None
    again.close()
