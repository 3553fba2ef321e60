"""Home Assistant's view of the daemon, through a real mosquitto: the discovery configs, the
states their templates give while a person is in view and after the stop, and the configs
sent again when Home Assistant restarts on a broker that lost them."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from daemon import mqtt_retained
from daemon.cli import main
from daemon.config_outputs import MqttConfig
from daemon.events import person_key
from daemon.mqtt import MqttPublisher
from daemon.spool import Spool
from tests.conftest import REPO
from tests.integration.services import (
    Daemon,
    Partition,
    Subscriber,
    daemon_settings,
    enroll,
    wait_for,
)
from tests.unit.test_home_assistant import render

pytestmark = pytest.mark.slow

CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"
FACES = "facewatch/test/cameras/clip/faces"


def _discovered(subscriber: Subscriber) -> dict[str, Any]:
    """The latest config of each entity, as Home Assistant keeps them (None: removed)."""
    found: dict[str, Any] = {}
    for topic, payload, _ in list(subscriber.messages):
        if topic.startswith("homeassistant/") and topic.endswith("/config"):
            found[topic] = json.loads(payload) if payload else None
    return found


def _state(subscriber: Subscriber, entity: dict[str, Any]) -> str | None:
    """The entity's state from the latest message on its state topic, as Home Assistant
    would show it."""
    payload = subscriber.last(entity["state_topic"])
    if payload is None:
        return None
    if "value_template" in entity:
        return render(entity["value_template"], payload)
    return {entity["payload_on"]: "ON", entity["payload_off"]: "OFF"}[payload.decode()]


def _person_config(name: str) -> str:
    return f"homeassistant/binary_sensor/facewatch_test/person_{person_key(name)}/config"


def _person_image(name: str) -> str:
    return f"homeassistant/image/facewatch_test/person_{person_key(name)}_snapshot/config"


def _snapshots_naming(subscriber: Subscriber, name: str) -> list[bytes]:
    """The JPEGs sent with the events that named ``name`` (``snapshots/CAMERA/EVENT_ID``)."""
    named = {e["event_id"] for e in subscriber.events() if e["identity"] == name}
    with subscriber._lock:
        return [p for t, p, _ in subscriber.messages if t.rsplit("/", 1)[-1] in named]


def test_home_assistant_sees_who_is_in_view_and_keeps_the_entities_across_its_restart(
    tmp_path, broker, test_model
) -> None:
    gallery = tmp_path / "gallery.sqlite"
    enroll(test_model, gallery, "alex-lacamoire")
    cameras = [
        {"name": "clip", "url": str(CLIP), "fps": 5},
        {"name": "attic", "url": str(CLIP), "enabled": False},
    ]
    settings = daemon_settings(
        cameras,
        broker.port,
        tmp_path,
        # threshold 4: every face matches the one enrolled person (the test model is untrained)
        recognition={"model": str(test_model), "gallery": str(gallery), "threshold": 4.0},
        mqtt={"home_assistant": {"enabled": True}},
        tracking={"snapshots": True},
    )
    subscriber = Subscriber(broker.port, "#")
    daemon = Daemon(tmp_path, settings)
    daemon.start()
    try:
        wait_for(lambda: subscriber.last("facewatch/test/status") == b"online", 60, "online")
        found = _discovered(subscriber)
        clip = {t.rsplit("/", 2)[1]: c for t, c in found.items() if "/clip_" in t}
        assert sorted(clip) == [
            "clip_connected",
            "clip_face",
            "clip_faces",
            "clip_people",
            "clip_snapshot",
        ]
        assert all(config is not None for config in clip.values())
        attic = [c for t, c in found.items() if "/attic_" in t]
        assert len(attic) == 5 and all(c is None for c in attic), "a disabled camera: removed"
        assert subscriber.last("facewatch/test/cameras/attic/faces") == b"", "and its state"
        node = found["homeassistant/binary_sensor/facewatch_test/status/config"]
        assert _state(subscriber, node) == "ON"
        for key, entity in clip.items():
            assert entity["availability"][0]["topic"] == "facewatch/test/status"
            if key != "clip_snapshot":
                assert subscriber.last(entity["state_topic"]) is not None, entity["state_topic"]

        wait_for(
            lambda: _state(subscriber, clip["clip_people"]) == "alex-lacamoire",
            60,
            "the people sensor naming the enrolled person",
        )
        assert _state(subscriber, clip["clip_face"]) == "ON"
        assert int(_state(subscriber, clip["clip_faces"]) or 0) >= 1
        assert _state(subscriber, clip["clip_connected"]) == "ON"
        face = subscriber.last(clip["clip_snapshot"]["image_topic"])
        assert face is not None and face.startswith(b"\xff\xd8"), "the last face, as a JPEG"
        named = [e for e in subscriber.events() if e["identity"] == "alex-lacamoire"]
        assert named, "the in-view state follows the events"
        # the person's own last face: one sent with an event that named them (a notification
        # that attaches it shows them, whoever else the camera saw since)
        alex_image = _discovered(subscriber)[_person_image("alex-lacamoire")]
        assert alex_image["name"] == "alex-lacamoire last face"
        alex_face = alex_image["image_topic"]
        wait_for(
            lambda: subscriber.last(alex_face) in _snapshots_naming(subscriber, "alex-lacamoire"),
            30,
            "alex's retained face, from an event naming him",
        )

        # each enrolled person is an occupancy sensor, and the list follows the gallery
        alex, lin = _person_config("alex-lacamoire"), _person_config("lin-manuel-miranda")
        assert lin not in _discovered(subscriber), "not enrolled yet"
        wait_for(lambda: _state(subscriber, _discovered(subscriber)[alex]) == "ON", 30, "alex on")
        alex_topic = _discovered(subscriber)[alex]["state_topic"]
        assert json.loads(subscriber.last(alex_topic) or b"{}")["cameras"] == ["clip"]
        alex_seen = 'facewatch_recognitions_total{camera="clip",identity="alex-lacamoire"}'
        assert daemon.metric(alex_seen) > 0
        enroll(test_model, gallery, "lin-manuel-miranda")
        assert main(["gallery", "remove", "alex-lacamoire", "--gallery", str(gallery)]) == 0
        daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_for(lambda: _discovered(subscriber).get(lin), 30, "the new person's entity")
        wait_for(lambda: _discovered(subscriber)[alex] is None, 30, "the removed one's gone")
        # (each sent just after the config's deletion: it may be a moment behind it here)
        alex_image_config = _person_image("alex-lacamoire")
        wait_for(lambda: _discovered(subscriber)[alex_image_config] is None, 10, "his image gone")
        wait_for(lambda: subscriber.last(alex_topic) == b"", 10, "the removed one's state gone")
        wait_for(lambda: subscriber.last(alex_face) == b"", 10, "the removed one's face gone")
        # threshold 4 and one person enrolled: every face is lin-manuel-miranda now
        wait_for(lambda: _state(subscriber, _discovered(subscriber)[lin]) == "ON", 60, "lin on")
        assert subscriber.last(alex_topic) == b"", "the removed one's state stays gone"
        assert subscriber.last(alex_face) == b"", "and his face"
        assert alex_seen not in daemon.metrics(), "the removed person is off /metrics too"

        # Home Assistant restarts on a broker that lost its retained messages: it says
        # online on its birth topic, and the daemon sends the configs again
        people_topic = "homeassistant/sensor/facewatch_test/clip_people/config"
        mqtt_publish.single(people_topic, b"", retain=True, port=broker.port)
        wait_for(lambda: _discovered(subscriber)[people_topic] is None, 10, "the config cleared")
        mqtt_publish.single("homeassistant/status", b"online", port=broker.port)
        wait_for(lambda: _discovered(subscriber)[people_topic], 10, "the config sent again")
    finally:
        code = daemon.stop()
        with contextlib.suppress(AssertionError):  # the stop's `offline` follows the spool's
            wait_for(  # last events and snapshots: they are all here once it is
                lambda: subscriber.last("facewatch/test/status") == b"offline", 10, "offline"
            )
        subscriber.close()
    assert code == 0, daemon.log()[-3000:]

    # after the stop, what a Home Assistant starting now reads from the broker (retained)
    late = Subscriber(broker.port, "#")
    try:
        wait_for(lambda: late.last("facewatch/test/status") == b"offline", 10, "offline")
        wait_for(lambda: late.last(FACES), 10, "the retained in-view state")
        found = _discovered(late)
        assert len(found) == 8, "the node's, the enabled camera's and lin's, not the attic's"
        by_key = {t.rsplit("/", 2)[1]: c for t, c in found.items()}
        assert _state(late, by_key["status"]) == "OFF"
        assert _state(late, by_key["clip_people"]) == "nobody", "the stop ended every track"
        assert _state(late, by_key["clip_face"]) == "OFF"
        assert _state(late, by_key["clip_faces"]) == "0"
        assert _state(late, by_key["clip_connected"]) == "OFF"
        assert _state(late, found[_person_config("lin-manuel-miranda")]) == "OFF"
        assert (late.last(by_key["clip_snapshot"]["image_topic"]) or b"").startswith(b"\xff\xd8")
        lin_face = found[_person_image("lin-manuel-miranda")]["image_topic"]
        lin_faces = _snapshots_naming(subscriber, "lin-manuel-miranda")
        if lin_faces:  # (none when the faces in view at the reload stayed: their events,
            # reason gallery, have no frame and no snapshot)
            wait_for(lambda: late.last(lin_face), 10, "lin's retained face")
            assert late.last(lin_face) in lin_faces, "a face sent with an event naming lin"
        else:
            assert late.last(lin_face) is None, "no event of a frame named lin: no face"
        assert late.last(alex_face) is None, "the removed one's face is not retained"
    finally:
        late.close()


def test_a_state_sent_into_a_silently_dead_link_never_replaces_a_newer_one(
    tmp_path, broker
) -> None:
    """The link to the broker dies without a word (a router reboots): a state published
    before the client notices is lost with the link, and the one the daemon holds when it
    reconnects is what the broker keeps, not a stale copy delivered after it."""
    link = Partition(broker.port)
    config = MqttConfig(port=link.port, keepalive_s=5)
    spool = Spool(tmp_path / "spool", 100)
    publisher = MqttPublisher(config, "test", spool)
    publisher.set_in_view("cam", {"faces": 0})
    publisher.start()
    try:
        wait_for(publisher.connected.is_set, 10, "the connection")
        link.cut()
        publisher.set_in_view("cam", {"faces": 1})  # into the dead link, unnoticed yet
        wait_for(lambda: not publisher.connected.is_set(), 30, "the client to notice")
        publisher.set_in_view("cam", {"faces": 2})  # the state at the reconnection
        link.heal()
        wait_for(publisher.connected.is_set, 30, "the reconnection")
        time.sleep(1.0)  # anything the client kept from before is sent again by now
    finally:
        publisher.stop(timeout_s=2, drain_s=0)
        spool.close()
        link.close()
    retained = Subscriber(broker.port, FACES.replace("clip", "cam"))
    try:
        found = wait_for(lambda: retained.last(FACES.replace("clip", "cam")), 10, "the state")
    finally:
        retained.close()
    assert json.loads(found) == {"faces": 2}


def test_a_burst_of_birth_messages_is_answered_twice_not_each_time(
    tmp_path, broker, monkeypatch
) -> None:
    """Home Assistant's birth message makes the daemon announce its entities again; a burst of
    them (several Home Assistants, a script looping) is answered at once and once more at the
    end of the gap, not with a full set of configs each (40 births were 40 sets)."""
    monkeypatch.setattr(mqtt_retained, "BIRTH_GAP_S", 2.0)
    config_topic = "homeassistant/sensor/facewatch_test/cam_people/config"
    spool = Spool(tmp_path / "s", 100)
    publisher = MqttPublisher(MqttConfig(port=broker.port), "test", spool)
    publisher.announce([(config_topic, b"{}")], birth_topic="homeassistant/status")
    subscriber = Subscriber(broker.port, config_topic)
    publisher.start()
    try:
        wait_for(publisher.connected.is_set, 10, "the connection")
        wait_for(lambda: subscriber.last(config_topic), 10, "the config at the connection")
        mqtt_publish.multiple(
            [("homeassistant/status", b"online", 1, False)] * 40, port=broker.port
        )

        def sent() -> list[bytes]:
            return [p for t, p, _ in list(subscriber.messages) if t == config_topic]

        wait_for(lambda: len(sent()) >= 3, 10, "the answer after the gap")
        time.sleep(2.0)  # a gap more: a fourth answer would be here by now
        assert len(sent()) == 3, "the connection's, the first birth's, and one after the gap"
        mqtt_publish.single("homeassistant/status", b"online", port=broker.port)
        wait_for(lambda: len(subscriber.messages) == 4, 10, "a later birth answered at once")
    finally:
        publisher.stop(timeout_s=2, drain_s=0)
        spool.close()
        subscriber.close()


def test_people_removed_while_the_daemon_was_stopped_are_deleted_at_the_next_start(
    tmp_path, broker
) -> None:
    """The publisher remembers (in its spool folder) whose retained topics it published: at
    the next start, those no longer enrolled are deleted from the broker, their Home
    Assistant config before their state, and a Home Assistant starting later finds neither."""
    from functools import partial

    from daemon import home_assistant
    from daemon.config_file import parse_config
    from daemon.events import person_json

    config = parse_config(
        {
            "node_id": "test",
            "cameras": [{"name": "clip", "url": str(CLIP)}],
            "mqtt": {"port": broker.port, "home_assistant": {"enabled": True}},
        }
    )
    subscriber = Subscriber(broker.port, "#")
    ada, zoe = (f"facewatch/test/people/{person_key(n)}" for n in ("Ada", "Zoë"))
    ada_config, zoe_config = _person_config("Ada"), _person_config("Zoë")
    zoe_face = f"{zoe}/snapshot"

    def run(people: list[str]) -> None:  # a start, as the service makes it, and a stop
        spool = Spool(tmp_path / "spool", 100)
        publisher = MqttPublisher(config.mqtt, "test", spool)
        publisher.people_announcements = partial(home_assistant.people_messages, config, publisher)
        publisher.set_people({name: person_json(name, []) for name in people})
        for name in people:  # (as an event naming them does)
            publisher.set_person_snapshot(name, b"\xff\xd8" + name.encode())
        publisher.start()
        wait_for(lambda: subscriber.last("facewatch/test/status") == b"online", 30, "online")
        publisher.stop()
        spool.close()
        wait_for(lambda: subscriber.last("facewatch/test/status") == b"offline", 10, "offline")

    try:
        run(["Ada", "Zoë"])
        assert _discovered(subscriber)[zoe_config]["state_topic"] == zoe
        assert json.loads(subscriber.last(zoe) or b"{}") == {"name": "Zoë", "cameras": []}
        with subscriber._lock:
            subscriber.messages.clear()
        run(["Ada"])  # Zoë was removed from the gallery meanwhile
        topics = [(t, p) for t, p, _ in subscriber.messages]
        assert topics.index((zoe_config, b"")) < topics.index((zoe, b"")), "config, then state"
        assert (zoe_face, b"") in topics, "and her face"
        assert _discovered(subscriber)[ada_config]["state_topic"] == ada
    finally:
        subscriber.close()
    late = Subscriber(broker.port, "#")  # what the broker retains now
    try:
        wait_for(lambda: late.last(ada) and ada_config in _discovered(late), 10, "Ada's, retained")
        assert late.last(zoe) is None and zoe_config not in _discovered(late)
        wait_for(lambda: late.last(f"{ada}/snapshot") == b"\xff\xd8Ada", 10, "Ada's face")
        assert late.last(zoe_face) is None, "Zoë's face is not retained"
    finally:
        late.close()


def test_a_person_removed_while_the_broker_is_away_is_deleted_after_a_restart(
    tmp_path, broker
) -> None:
    """The broker is away when a person is removed, and the daemon restarts before it is
    back (an update, a reboot): once it is, their presence, face and Home Assistant
    entities are deleted from it all the same (the spool kept them to delete)."""
    from functools import partial

    from daemon import home_assistant
    from daemon.config_file import parse_config
    from daemon.events import person_json
    from tests.integration.services import free_port

    def publisher_on(port: int) -> tuple[Spool, MqttPublisher]:
        config = parse_config(
            {
                "node_id": "test",
                "cameras": [{"name": "clip", "url": str(CLIP)}],
                "mqtt": {"port": port, "home_assistant": {"enabled": True}},
            }
        )
        spool = Spool(tmp_path / "spool", 100)
        publisher = MqttPublisher(config.mqtt, "test", spool)
        publisher.people_announcements = partial(home_assistant.people_messages, config, publisher)
        return spool, publisher

    def stop(spool: Spool, publisher: MqttPublisher) -> None:
        publisher.stop(timeout_s=2, drain_s=0)
        spool.close()

    both = {name: person_json(name, []) for name in ("Ada", "Zoë")}
    zoe = f"facewatch/test/people/{person_key('Zoë')}"
    spool, publisher = publisher_on(broker.port)  # all is up: Zoë's topics are retained
    publisher.set_people(both)
    publisher.set_person_snapshot("Zoë", b"\xff\xd8Zo")
    publisher.start()
    wait_for(publisher.connected.is_set, 30, "the connection")
    stop(spool, publisher)
    away = free_port()  # the broker is away: nothing listens there
    spool, publisher = publisher_on(away)
    publisher.set_people(both)
    publisher.start()
    publisher.set_people({"Ada": both["Ada"]})  # gallery remove Zoë, and the reload
    stop(spool, publisher)
    spool, publisher = publisher_on(away)  # a restart while the broker is still away
    publisher.set_people({"Ada": both["Ada"]})
    publisher.start()
    stop(spool, publisher)
    spool, publisher = publisher_on(broker.port)  # the broker is back
    publisher.set_people({"Ada": both["Ada"]})
    publisher.start()
    try:
        wait_for(publisher.connected.is_set, 30, "the connection")
        time.sleep(0.5)
    finally:
        stop(spool, publisher)
    late = Subscriber(broker.port, "#")  # what the broker retains now
    try:
        ada_config = _person_config("Ada")
        wait_for(lambda: ada_config in _discovered(late), 10, "Ada's config, retained")
        kept = [t for t, _, _ in late.messages if "zo" in t.lower() and "ada" not in t.lower()]
        assert late.last(zoe) is None and late.last(f"{zoe}/snapshot") is None, kept
        assert _person_config("Zoë") not in _discovered(late), kept
        assert _person_image("Zoë") not in _discovered(late), kept
    finally:
        late.close()
