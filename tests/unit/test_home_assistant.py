"""Home Assistant discovery configs: their topics and fields, and the states their templates
give (rendered with Jinja2, Home Assistant's template engine, on the daemon's payloads)."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from daemon.camera_frames import Frame
from daemon.config import Config, ConfigError
from daemon.config_file import parse_config
from daemon.config_outputs import MqttConfig
from daemon.events import EventSinks, in_view_json, person_json, person_key
from daemon.gallery import Gallery
from daemon.gallery_write import Enrollment
from daemon.home_assistant import birth_topic, discovery_messages, people_messages
from daemon.mqtt import MqttPublisher
from daemon.scheduler import Pipeline
from daemon.spool import Spool
from engines.mtcnn import FrameDetections
from tests.conftest import REPO
from tests.pipeline_fakes import ScriptedEngines, found

BASE = "facewatch/garage"


def render(template: str, payload: bytes) -> str:
    """What Home Assistant's MQTT entities do: the template with ``value_json`` the payload."""
    environment = ImmutableSandboxedEnvironment()
    return environment.from_string(template).render(value_json=json.loads(payload)).strip()


# what a test opened through the helpers below (topics()'s spools, in the test's own folder;
# _snapshot_pipeline's gallery), closed after it
_TO_CLOSE: list[Callable[[], None]] = []
_FOLDER: list[Path] = []


@pytest.fixture(autouse=True)
def _closed_after(tmp_path: Path) -> Iterator[None]:
    _FOLDER[:] = [tmp_path]
    yield
    while _TO_CLOSE:
        _TO_CLOSE.pop()()


def topics(node: str = "garage") -> MqttPublisher:
    """The daemon's own topic names: a publisher that never connects."""
    spool = Spool(tempfile.mkdtemp(prefix="spool-", dir=_FOLDER[0]), 10)
    _TO_CLOSE.append(spool.close)
    return MqttPublisher(MqttConfig(), node, spool)


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


def garage(snapshots: bool = False, **home_assistant: Any) -> Config:
    return parse_config(
        {
            "node_id": "garage",
            "cameras": [{"name": "front-door", "url": "x"}],
            "recognition": {"model": None},
            "tracking": {"snapshots": snapshots},
            "mqtt": {"home_assistant": {"enabled": True, **home_assistant}},
        }
    )


def _person_config_topic(name: str) -> str:
    return f"homeassistant/binary_sensor/facewatch_garage/person_{person_key(name)}/config"


def _person_image(name: str) -> str:
    return f"homeassistant/image/facewatch_garage/person_{person_key(name)}_snapshot/config"


def test_people_sensors_can_be_turned_off_and_then_none_is_left() -> None:
    found = people_messages(garage(True, people=False), topics(), {"Ada"}, {"Grace"})
    assert len(found) == 4 and all(payload == b"" for _, payload in found)


def test_each_enrolled_person_is_an_occupancy_sensor_and_the_gone_are_removed() -> None:
    config = garage()
    found = dict(people_messages(config, topics(), {"Ada Lovelace", "Zoë"}, {"Grace"}))
    assert len(found) == 6
    for name in ("Ada Lovelace", "Zoë", "Grace"):  # snapshots are off: no image entity
        assert found.pop(_person_image(name)) == b""
    assert found.pop(_person_config_topic("Grace")) == b"", "Grace left: her entity is removed"
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


def test_with_snapshots_each_enrolled_person_shows_their_own_last_face() -> None:
    """An ``image`` per person, of the node's device like their occupancy sensor (Home
    Assistant names it image.facewatch_garage_ada_lovelace_last_face), on their own retained
    topic; removed with the person."""
    found = dict(people_messages(garage(True), topics(), {"Ada Lovelace", "Zoë"}, {"Grace"}))
    assert found.pop(_person_image("Grace")) == b"", "Grace left the gallery: her image too"
    ada = json.loads(found[_person_image("Ada Lovelace")])
    assert ada["image_topic"] == f"{BASE}/people/{person_key('Ada Lovelace')}/snapshot"
    assert ada["image_topic"] == topics().person_snapshot_topic("Ada Lovelace")
    assert (ada["name"], ada["content_type"]) == ("Ada Lovelace last face", "image/jpeg")
    assert ada["device"]["identifiers"] == ["facewatch:garage"]
    assert ada["availability"][0]["topic"] == f"{BASE}/status"
    sensor = json.loads(found[_person_config_topic("Ada Lovelace")])
    assert sensor["device"] == ada["device"], "one device: the node's"
    assert ada["unique_id"] == sensor["unique_id"] + ":snapshot"
    zoe = json.loads(found[_person_image("Zoë")])
    assert zoe["image_topic"] != ada["image_topic"] and zoe["unique_id"] != ada["unique_id"]


class _TwoPeople(ScriptedEngines):
    """Two faces in every frame, the left one ann's, the right one bob's (their embeddings:
    the first two axes)."""

    boxes = ((100, 100, 160, 160), (460, 100, 520, 160))

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        return [found(self.boxes) for _ in images]

    def embed_picks(self, picks: list) -> np.ndarray:
        axes = np.eye(8, dtype=np.float32)
        return np.stack([axes[0 if d.bbox_xyxy[k][0] < 320 else 1] for _, d, k in picks])


def _colour(jpeg: bytes) -> str:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    blue, _, red = image.reshape(-1, 3).mean(axis=0)
    return "red" if red > blue else "blue"


def _snapshot_pipeline(path, engines, people: bool = False):  # type: ignore[no-untyped-def]
    """A pipeline on camera door with the gallery at ``path``, snapshots and Home Assistant
    on, its messages to a recording publisher (``people``: with each person's announcement),
    and a frame whose left half is red, its right half blue."""
    config = parse_config(
        {
            "node_id": "garage",
            "cameras": [{"name": "door", "url": "door.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
            "tracking": {"snapshots": True},
            "mqtt": {"home_assistant": {"enabled": True}},
        }
    )
    publisher = topics()
    if people:
        publisher.people_announcements = partial(people_messages, config, publisher)
    sinks = EventSinks(
        spool=publisher.spool,
        topic_for=publisher.event_topic,
        snapshot_topic_for=publisher.snapshot_topic,
        state=publisher,
    )
    pipeline = Pipeline(config, engines, engines, sinks)
    pipeline.reload_gallery()
    _TO_CLOSE.append(pipeline.close_gallery)
    image = np.zeros((360, 640, 3), np.uint8)
    image[:, :320] = (0, 0, 255)  # BGR: the left half red
    image[:, 320:] = (255, 0, 0)
    return publisher, pipeline, image


def test_each_persons_snapshot_is_their_own_face_and_goes_with_them(tmp_path) -> None:
    """ann (left, red) and bob (right, blue) in the same frames: ann's retained snapshot is
    ann's face, bob's is bob's (the camera's last face is one of them, whichever event was
    last: what a notification attached before). bob removed from the gallery: his image
    entity and his retained snapshot are deleted, and nothing brings them back."""
    path = tmp_path / "gallery.sqlite"
    ann, bob = np.eye(8, dtype=np.float32)[:2]
    with Gallery.create(path, _TwoPeople.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", ann, "a" * 64), Enrollment("bob", bob, "b" * 64)])
    engines = _TwoPeople()
    publisher, pipeline, image = _snapshot_pipeline(path, engines, people=True)
    for k in range(10):
        pipeline.process([Frame("door", k, 1000.0 + k / 5, image)])
    retained = publisher.retained.topics  # what the broker gets, retained, at the next connection
    assert _colour(retained[publisher.person_snapshot_topic("ann")]) == "red"
    assert _colour(retained[publisher.person_snapshot_topic("bob")]) == "blue"
    assert retained[publisher.last_snapshot_topic("door")] in (
        retained[publisher.person_snapshot_topic("ann")],
        retained[publisher.person_snapshot_topic("bob")],
    )

    with Gallery.open(path, writable=True) as gallery:
        gallery.remove("bob")
    pipeline.reload_gallery()
    for k in range(10, 15):  # bob's face is still there, a stranger now
        pipeline.process([Frame("door", k, 1000.0 + k / 5, image)])
    assert publisher.retained.topics[publisher.person_snapshot_topic("bob")] == b""
    assert publisher.retained.announcements[_person_image("bob")] == b""
    assert _colour(publisher.retained.topics[publisher.person_snapshot_topic("ann")]) == "red"
    publisher.set_person_snapshot("bob", b"\xff\xd8late")  # a late event of his: not kept
    assert publisher.retained.topics[publisher.person_snapshot_topic("bob")] == b""


class _StrangerAndGlimpse(ScriptedEngines):
    """A stranger's face on the left (an embedding nobody enrolled has), and while ``glimpse``
    is set a face on the right too small to recognise."""

    stranger, small = (100, 100, 160, 160), (490, 120, 510, 140)

    def __init__(self) -> None:
        self.glimpse = True

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        boxes = [self.stranger, self.small] if self.glimpse else [self.stranger]
        return [found(boxes) for _ in images]

    def embed_picks(self, picks: list) -> np.ndarray:
        return np.stack([np.eye(8, dtype=np.float32)[2] for _ in picks])


def test_a_face_announced_only_as_it_leaves_does_not_replace_the_cameras_last_face(
    tmp_path,
) -> None:
    """A stranger (red) is decided and announced; then a face seen a moment and never
    decided (blue: the top of a head, a dark background, a second box on a face) is
    confirmed as it leaves. The camera's last face, the stranger recipe's picture, stays
    the stranger's: it became the junk crop. That event still has its own snapshot."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _StrangerAndGlimpse.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    engines = _StrangerAndGlimpse()
    publisher, pipeline, image = _snapshot_pipeline(path, engines)
    for k in range(20):  # the small face in the first 5 frames, lost 2 s after (5 fps)
        engines.glimpse = k < 5
        pipeline.process([Frame("door", k, 1000.0 + k / 5, image)])

    messages = publisher.spool.peek(100)
    events = [json.loads(m.payload) for m in messages if m.kind == "event"]
    said = [(e["type"], e["identity"], e["reason"], e["confidence"]) for e in events]
    assert said == [
        ("confirmed", None, None, 1.0),  # the stranger, decided
        ("confirmed", None, "lost", 0.0),  # the small face, as it leaves
        ("left", None, "lost", 0.0),
    ]
    snapshots = {m.topic: m.payload for m in messages if m.kind == "raw"}
    stranger, glimpse = (
        snapshots[publisher.snapshot_topic("door", e["event_id"])] for e in events[:2]
    )
    assert (_colour(stranger), _colour(glimpse)) == ("red", "blue"), "each event has its face"
    last_face = publisher.retained.topics[publisher.last_snapshot_topic("door")]
    assert _colour(last_face) == "red" and last_face == stranger, "the stranger's face"


def test_without_snapshots_a_start_deletes_the_faces_an_earlier_run_left() -> None:
    """snapshots turned off since the last run: the retained faces it left (a camera's last
    face, each person's) are emptied at the start, as their image entities are removed."""
    from daemon.service import Service

    publisher = topics()
    Service(garage())._initial_state(publisher, ["Ada"])
    assert publisher.retained.topics[publisher.last_snapshot_topic("front-door")] == b""
    assert publisher.retained.topics[publisher.person_snapshot_topic("Ada")] == b""
    publisher = topics()
    Service(garage(True))._initial_state(publisher, ["Ada"])
    assert publisher.person_snapshot_topic("Ada") not in publisher.retained.topics, "kept"


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


def _docs_automation(title: str) -> dict[str, Any]:
    """An automation of docs/operations.md, by its title comment, as a user copies it."""
    import yaml

    docs = (REPO / "docs" / "operations.md").read_text()
    block = docs.split(f"# Home Assistant automation: {title}\n", 1)[1]
    return yaml.safe_load(block.split("```", 1)[0])


def _entity_id(platform: str, config: dict[str, Any]) -> str:
    """The entity id Home Assistant makes of a discovered entity: its device's name and its
    own, slugified."""
    name = f"{config['device']['name']} {config['name']}"
    return f"{platform}.{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}"


def test_the_docs_arrival_and_stranger_automations_name_the_daemons_entities() -> None:
    """The arrival example's sensor and image are Ada's entities on node garage-box (her
    image exists with snapshots on); the stranger example waits for the people sensor's
    state for a face nobody matches."""
    config = parse_config(
        {
            "node_id": "garage-box",
            "cameras": [{"name": "front-door", "url": "x"}],
            "recognition": {"model": None},
            "tracking": {"snapshots": True},
            "mqtt": {"home_assistant": {"enabled": True}},
        }
    )
    found = [
        json.loads(p) for _, p in people_messages(config, topics("garage-box"), {"Ada"}, set())
    ]
    sensor, image = sorted(found, key=lambda entity: "image_topic" in entity)
    arrival = _docs_automation("Ada arrives, with her face")
    [trigger] = arrival["triggers"]
    assert trigger["entity_id"] == _entity_id("binary_sensor", sensor)
    assert (trigger["from"], trigger["to"]) == ("off", "on")
    image_url = arrival["actions"][0]["data"]["data"]["image"]
    assert image_url == f"/api/image_proxy/{_entity_id('image', image)}"
    assert arrival["mode"] == "single" and "delay" in arrival["actions"][-1]

    stranger = _docs_automation("a stranger at the front door")
    [trigger] = stranger["triggers"]
    people = configs()["homeassistant/sensor/facewatch_garage/front-door_people/config"]
    payload = json.dumps(in_view_json("front-door", [None], 1.0)).encode()
    assert trigger["to"] == render(people["value_template"], payload)
    assert trigger["for"] and trigger["entity_id"] == _entity_id("sensor", people)


def test_the_docs_frigate_restream_camera_is_a_valid_camera() -> None:
    """docs/operations.md's camera on Frigate's go2rtc restream (a Frigate camera name with
    `_`), as a user pastes it into a config."""
    import yaml

    docs = (REPO / "docs" / "operations.md").read_text()
    section = docs.split("### From Frigate / Double Take\n", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config({**yaml.safe_load(block), "recognition": {"model": None}})
    [camera] = config.cameras
    assert (camera.name, camera.url) == ("front_door", "rtsp://frigate.lan:8554/front_door")
