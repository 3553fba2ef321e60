"""Home Assistant discovery configs: their topics and fields, and the states their templates
give (rendered with Jinja2, Home Assistant's template engine, on the daemon's payloads)."""

from __future__ import annotations

import json
import re
import tempfile
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from daemon.config import Config, ConfigError, MqttConfig
from daemon.config_file import parse_config
from daemon.events import in_view_json, person_json, person_key
from daemon.home_assistant import birth_topic, discovery_messages, people_messages
from daemon.mqtt import MqttPublisher
from daemon.spool import Spool
from tests.conftest import REPO

BASE = "facewatch/garage"


def render(template: str, payload: bytes) -> str:
    """What Home Assistant's MQTT entities do: the template with ``value_json`` the payload."""
    environment = ImmutableSandboxedEnvironment()
    return environment.from_string(template).render(value_json=json.loads(payload)).strip()


_SPOOLS = tempfile.TemporaryDirectory(prefix="facewatch-ha-test-")


def topics(node: str = "garage") -> MqttPublisher:
    """The daemon's own topic names: a publisher that never connects."""
    return MqttPublisher(MqttConfig(), node, Spool(tempfile.mkdtemp(dir=_SPOOLS.name), 10))


def configs(snapshots: bool = False, **mqtt: Any) -> dict[str, Any]:
    config = parse_config(
        {
            "node_id": "garage",
            "cameras": [
                {"name": "front-door", "url": "rtsp://cam/1"},
                {"name": "attic", "url": "rtsp://cam/2", "enabled": False},
            ],
            "recognition": {"model": None},
            "tracking": {"snapshots": snapshots},
            "mqtt": {
                "enabled": mqtt.pop("enabled", True),
                "home_assistant": {"enabled": True, **mqtt},
            },
        }
    )
    messages = discovery_messages(config, topics())
    return {topic: json.loads(payload) if payload else None for topic, payload in messages}


def test_the_node_and_each_enabled_camera_are_devices_with_their_entities() -> None:
    found = configs()
    node = found.pop("homeassistant/binary_sensor/facewatch_garage/status/config")
    assert node["state_topic"] == f"{BASE}/status" and "availability" not in node
    assert node["device"]["identifiers"] == ["facewatch:garage"]
    snapshot = found.pop("homeassistant/image/facewatch_garage/front-door_snapshot/config")
    assert snapshot is None, "snapshots are off: no image entity"
    enabled = {t: c for t, c in found.items() if "/front-door_" in t}
    assert sorted(enabled) == [
        "homeassistant/binary_sensor/facewatch_garage/front-door_connected/config",
        "homeassistant/binary_sensor/facewatch_garage/front-door_face/config",
        "homeassistant/sensor/facewatch_garage/front-door_faces/config",
        "homeassistant/sensor/facewatch_garage/front-door_people/config",
    ]
    # Home Assistant's discovery topic: <prefix>/<component>/[<node_id>/]<object_id>/config
    pattern = re.compile(r"^homeassistant/(binary_sensor|sensor|image)/[\w-]+/[\w-]+/config$")
    assert all(pattern.match(topic) for topic in found)
    entities = list(enabled.values())
    assert {e["unique_id"] for e in entities} == {
        f"facewatch:garage:front-door:{key}" for key in ("connected", "face", "faces", "people")
    }
    # the camera is a device of its own (its own area in Home Assistant), via the node
    assert all(e["device"]["identifiers"] == ["facewatch:garage:front-door"] for e in entities)
    assert all(e["device"]["via_device"] == "facewatch:garage" for e in entities)
    assert all(e["availability"][0]["topic"] == f"{BASE}/status" for e in entities)
    connected = enabled["homeassistant/binary_sensor/facewatch_garage/front-door_connected/config"]
    assert connected["state_topic"] == f"{BASE}/cameras/front-door/status"
    assert (connected["payload_on"], connected["payload_off"]) == ("online", "offline")
    others = [e for e in entities if e is not connected]
    assert {e["state_topic"] for e in others} == {f"{BASE}/cameras/front-door/faces"}


def test_a_disabled_cameras_entities_are_removed() -> None:
    """An empty retained config is how Home Assistant is told to delete an entity."""
    attic = {t: c for t, c in configs().items() if "/attic_" in t}
    assert len(attic) == 5
    assert all(config is None for config in attic.values())


def test_with_snapshots_each_camera_shows_its_last_face() -> None:
    image = configs(snapshots=True)[
        "homeassistant/image/facewatch_garage/front-door_snapshot/config"
    ]
    assert image["image_topic"] == f"{BASE}/cameras/front-door/snapshot"
    assert image["content_type"] == "image/jpeg" and image["name"] == "last face"
    assert (
        configs(snapshots=True)["homeassistant/image/facewatch_garage/attic_snapshot/config"]
        is None
    )


def test_unique_ids_stay_unique_when_names_hold_underscores() -> None:
    """node a + camera b_c and node a_b + camera c: one topic level per node, and ``:`` (which
    names cannot hold) in ``unique_id``."""
    ids = []
    for node, camera in (("a", "b_c"), ("a_b", "c")):
        config = parse_config(
            {
                "node_id": node,
                "cameras": [{"name": camera, "url": "x"}],
                "recognition": {"model": None},
            }
        )
        messages = discovery_messages(config, topics(node))
        ids += [json.loads(payload)["unique_id"] for _, payload in messages if payload]
    assert len(ids) == len(set(ids)) == 10


def test_the_discovery_prefix_is_configurable_and_checked() -> None:
    assert all(t.startswith("ha/") for t in configs(discovery_prefix="ha"))
    assert all(re.match(r"ha/\w", t) for t in configs(discovery_prefix="ha/"))  # not ha//
    assert all(t.startswith("/ha/") for t in configs(discovery_prefix="/ha/")), "kept as given"
    with pytest.raises(ConfigError, match=r"mqtt\.home_assistant\.discovery_prefix"):
        configs(discovery_prefix="ha/#")
    with pytest.raises(ConfigError, match=r"needs MQTT: set mqtt\.enabled: true"):
        configs(enabled=False)
    assert birth_topic(
        parse_config({"cameras": [{"name": "a", "url": "x"}]}).mqtt.home_assistant
    ) == ("homeassistant/status")


@pytest.mark.parametrize(
    ("identities", "face", "faces", "people"),
    [
        ([], "OFF", "0", "nobody"),
        # not `unknown`: Home Assistant's own "no value" state, which its guards drop
        ([None], "ON", "1", "stranger"),
        (["zoe", None, "Ada Lovelace"], "ON", "3", "Ada Lovelace, zoe"),
    ],
)
def test_the_entities_states_from_the_in_view_payload(identities, face, faces, people) -> None:
    found = configs()
    payload = json.dumps(in_view_json("front-door", identities, 1.0)).encode()
    prefix = "homeassistant/{}/facewatch_garage/front-door_{}/config"
    assert render(found[prefix.format("binary_sensor", "face")]["value_template"], payload) == face
    assert render(found[prefix.format("sensor", "faces")]["value_template"], payload) == faces
    assert render(found[prefix.format("sensor", "people")]["value_template"], payload) == people


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Ada Lovelace", "ada_lovelace-"),
        ("Zoë", "zoe-"),
        ("Zoe", "zoe-"),
        ("张伟", ""),  # no ASCII letters: the hash alone
        ("a/b+#c", "a_b_c-"),
    ],
)
def test_a_persons_key_is_one_safe_topic_level_and_tells_names_apart(name, slug) -> None:
    key = person_key(name)
    assert re.fullmatch(r"[a-z0-9_-]+", key), key
    assert key.startswith(slug) and len(key) == len(slug) + 8
    assert person_key(name) == key, "the same name, the same key"


def test_person_keys_tell_apart_what_names_do() -> None:
    assert person_key("Zoë") != person_key("Zoe")
    nfd = "Zoe\u0308"  # a name stored before names were normalised: the same person
    assert person_key(nfd) == person_key("Zoë")
    long = person_key("a" * 39 + " b")  # cut at 40, then no trailing _ before the hash
    assert re.fullmatch(r"a{39}-[0-9a-f]{8}", long), long


def garage(**home_assistant: Any) -> Config:
    return parse_config(
        {
            "node_id": "garage",
            "cameras": [{"name": "front-door", "url": "x"}],
            "recognition": {"model": None},
            "mqtt": {"home_assistant": {"enabled": True, **home_assistant}},
        }
    )


def test_people_sensors_can_be_turned_off_and_then_none_is_left() -> None:
    found = people_messages(garage(people=False), topics(), {"Ada"}, {"Grace"})
    assert len(found) == 2 and all(payload == b"" for _, payload in found)


def test_each_enrolled_person_is_an_occupancy_sensor_and_the_gone_are_removed() -> None:
    config = garage()
    found = dict(people_messages(config, topics(), {"Ada Lovelace", "Zoë"}, {"Grace"}))
    assert len(found) == 3
    gone = f"homeassistant/binary_sensor/facewatch_garage/person_{person_key('Grace')}/config"
    assert found.pop(gone) == b"", "Grace left the gallery: her entity is removed"
    entities = {json.loads(p)["name"]: json.loads(p) for p in found.values()}
    ada = entities["Ada Lovelace"]
    assert (
        ada["state_topic"] == ada["json_attributes_topic"] == topics().person_topic("Ada Lovelace")
    )
    assert ada["device_class"] == "occupancy" and ada["device"]["identifiers"] == [
        "facewatch:garage"
    ]
    assert ada["unique_id"] != entities["Zoë"]["unique_id"]
    seen = json.dumps(person_json("Ada Lovelace", ["front-door"])).encode()
    away = json.dumps(person_json("Ada Lovelace", [])).encode()
    assert (render(ada["value_template"], seen), render(ada["value_template"], away)) == (
        "ON",
        "OFF",
    )


def test_the_docs_automation_fires_on_fresh_events_of_its_person_only() -> None:
    """docs/operations.md's automation example (read from the docs, as a user copies it):
    Ada's events, not her `left`, nor an event delivered from the spool an hour late."""
    import yaml

    docs = (REPO / "docs" / "operations.md").read_text()
    block = docs.split("# Home Assistant automation: Ada at the front door\n", 1)[1]
    automation = yaml.safe_load(block.split("```", 1)[0])
    [trigger] = automation["triggers"]

    def fires(**event: Any) -> bool:
        payload = {"type": "identified", "identity": "Ada", "frame_ts": 1000.0}
        payload |= {"published_ts": 1000.4, **event}
        return render(trigger["value_template"], json.dumps(payload).encode()) == "Ada"

    assert fires() and fires(type="confirmed")
    assert not fires(type="left"), "a left event names who left"
    assert not fires(identity="Bob")
    assert not fires(published_ts=4600.0), "spooled an hour, sent after a broker outage"
