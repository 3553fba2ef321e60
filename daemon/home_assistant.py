"""Home Assistant MQTT discovery (``mqtt.home_assistant``): with it on, the daemon appears in
Home Assistant by itself, with no YAML to write. The node is a device with one entity,
*status* (connectivity: the node's ``status``, whose last will says ``offline``), and each
enabled camera is a device, connected via the node, with five entities:

- ``binary_sensor`` *camera* (connectivity): the camera's ``status`` topic;
- ``binary_sensor`` *face* (occupancy): on while a confirmed face is in view;
- ``sensor`` *faces*: how many confirmed faces are in view;
- ``sensor`` *people*: the names in view, ``stranger`` when only faces nobody matches are,
  ``nobody`` when none is; the in-view state is its attributes;
- ``image`` *last face*, with ``tracking.snapshots`` on: the latest face snapshot (not that
  of a face announced only as it leaves: ``daemon.events``).

Each enrolled person (unless ``people`` is off) is a ``binary_sensor`` (occupancy) of the
node, named after them: on while a camera sees them, with the cameras as attributes; with
``tracking.snapshots`` on, also an ``image`` *NAME last face*: their face in the latest
event that named them (for a notification's picture: the camera's *last face* may be
someone else's by then). The list follows the gallery at every reload.

Their states come from the retained ``cameras/CAMERA/status``, ``cameras/CAMERA/faces``,
``cameras/CAMERA/snapshot``, ``people/KEY`` and ``people/KEY/snapshot`` topics, and they are available while the
node's ``status`` says ``online``. The configs are retained; the publisher sends them at
every connection and again when Home Assistant announces itself
(``DISCOVERY_PREFIX/status`` ``online``). The configs of entities to remove (a disabled
camera's, a person's no longer enrolled) are sent empty, which deletes them.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from daemon import build_version
from daemon.config import Config
from daemon.config_outputs import HomeAssistantConfig
from daemon.events import person_key

# Home Assistant refuses a state longer than 255 characters (the full list is an attribute).
# Not `unknown` for faces nobody matches: that is Home Assistant's own "no value" state,
# which its UI, has_value() and the usual not_to: [unknown, unavailable] guards treat as none
PEOPLE_TEMPLATE = (
    "{% if value_json.people %}{{ (value_json.people | join(', '))[:255] }}"
    "{% elif value_json.faces %}stranger{% else %}nobody{% endif %}"
)
ORIGIN = {"name": "facewatch", "sw_version": build_version()}


class Topics(Protocol):
    """The daemon's topics (``MqttPublisher``)."""

    status_topic: str

    def camera_status_topic(self, camera: str) -> str: ...
    def in_view_topic(self, camera: str) -> str: ...
    def last_snapshot_topic(self, camera: str) -> str: ...
    def person_topic(self, name: str) -> str: ...
    def person_snapshot_topic(self, name: str) -> str: ...


def birth_topic(config: HomeAssistantConfig) -> str:
    """Where Home Assistant says ``online`` when it starts."""
    return f"{config.discovery_prefix}/status"


def _connectivity(name: str, status_topic: str) -> dict[str, Any]:
    """A connectivity sensor on an ``online`` / ``offline`` status topic."""
    return {
        "platform": "binary_sensor",
        "name": name,
        "state_topic": status_topic,
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
    }


def _camera_entities(topics: Topics, camera: str) -> dict[str, dict[str, Any]]:
    """A camera's entities (with their platform), by key."""
    in_view_topic = topics.in_view_topic(camera)
    connected = _connectivity("camera", topics.camera_status_topic(camera))
    return {
        "connected": {**connected, "entity_category": "diagnostic"},
        "face": {
            "platform": "binary_sensor",
            "name": "face",
            "state_topic": in_view_topic,
            "value_template": "{{ 'ON' if value_json.faces > 0 else 'OFF' }}",
            "device_class": "occupancy",
        },
        "faces": {
            "platform": "sensor",
            "name": "faces",
            "state_topic": in_view_topic,
            "value_template": "{{ value_json.faces }}",
            "state_class": "measurement",
            "icon": "mdi:face-recognition",
        },
        "people": {
            "platform": "sensor",
            "name": "people",
            "state_topic": in_view_topic,
            "value_template": PEOPLE_TEMPLATE,
            "json_attributes_topic": in_view_topic,
            "icon": "mdi:account-group",
        },
        "snapshot": {
            "platform": "image",
            "name": "last face",
            "image_topic": topics.last_snapshot_topic(camera),
            "content_type": "image/jpeg",
        },
    }


def _config(
    prefix: str, node_id: str, names: list[str], entity: dict[str, Any]
) -> tuple[str, bytes]:
    """The discovery topic and payload of one entity, named by ``names`` under the node:
    joined by ``_`` in the topic (its own level per node) and by ``:`` in ``unique_id``
    (which node and camera names cannot hold, so no two entities share one)."""
    platform = entity.pop("platform")
    topic = f"{prefix}/{platform}/facewatch_{node_id}/{'_'.join(names)}/config"
    unique_id = ":".join(["facewatch", node_id, *names])
    payload = {"unique_id": unique_id, **entity, "origin": ORIGIN, "qos": 1}
    return topic, json.dumps(payload, separators=(",", ":")).encode()


def _node_device(node_id: str) -> dict[str, Any]:
    return {
        "identifiers": [f"facewatch:{node_id}"],
        "name": node_id if node_id == "facewatch" else f"facewatch {node_id}",
        "manufacturer": "facewatch",
        "model": "face recognition daemon",
        "sw_version": build_version(),
    }


def _availability(topics: Topics) -> list[dict[str, str]]:
    return [
        {
            "topic": topics.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]


def discovery_messages(config: Config, topics: Topics) -> list[tuple[str, bytes]]:
    """(topic, payload) of every entity's discovery config, to be published retained; empty
    for the entities to remove (a disabled camera's; the snapshot's without snapshots)."""
    prefix, node_id = config.mqtt.home_assistant.discovery_prefix, config.node_id
    node = {**_connectivity("status", topics.status_topic), "device": _node_device(node_id)}
    node_device = node["device"]["identifiers"][0]
    messages = [_config(prefix, node_id, ["status"], node)]
    availability = _availability(topics)
    for camera in config.cameras:
        name = camera.name
        device = {
            "identifiers": [f"{node_device}:{name}"],
            "name": name,
            "manufacturer": "facewatch",
            "model": "camera",
            "via_device": node_device,
        }
        for key, entity in _camera_entities(topics, name).items():
            entity.update(device=device, availability=availability)
            topic, payload = _config(prefix, node_id, [name, key], entity)
            wanted = camera.enabled and (key != "snapshot" or config.tracking.snapshots)
            messages.append((topic, payload if wanted else b""))
    return messages


def _person_entities(topics: Topics, name: str) -> dict[str, dict[str, Any]]:
    """A person's entities (with their platform), by the key their ids end in."""
    return {
        "": {
            "platform": "binary_sensor",
            "name": name,
            "state_topic": topics.person_topic(name),
            "value_template": "{{ 'ON' if value_json.cameras else 'OFF' }}",
            "json_attributes_topic": topics.person_topic(name),
            "device_class": "occupancy",
            "icon": "mdi:account",
        },
        "snapshot": {
            "platform": "image",
            "name": f"{name} last face",
            "image_topic": topics.person_snapshot_topic(name),
            "content_type": "image/jpeg",
        },
    }


def people_messages(
    config: Config, topics: Topics, names: set[str], gone: set[str]
) -> list[tuple[str, bytes]]:
    """The discovery configs of the enrolled people, of the node's device: an occupancy
    ``binary_sensor`` each (on while a camera sees them) and, with snapshots, an ``image``
    of their face in the latest event that named them; empty ones for ``gone`` (and for the
    images without snapshots)."""
    prefix, node_id = config.mqtt.home_assistant.discovery_prefix, config.node_id
    if not config.mqtt.home_assistant.people:  # none, and none an earlier run announced
        names, gone = set(), names | gone
    messages = []
    for name in sorted(names | gone):
        for key, entity in _person_entities(topics, name).items():
            entity.update(device=_node_device(node_id), availability=_availability(topics))
            ids = ["person", person_key(name), *([key] if key else [])]
            topic, payload = _config(prefix, node_id, ids, entity)
            wanted = name in names and (key != "snapshot" or config.tracking.snapshots)
            messages.append((topic, payload if wanted else b""))
    return messages
