"""Home Assistant MQTT discovery (``mqtt.home_assistant``): with it on, each enabled camera
appears in Home Assistant as four entities of one device, the facewatch node, with no YAML
to write:

- ``binary_sensor`` *CAMERA camera* (connectivity): the camera's ``status`` topic;
- ``binary_sensor`` *CAMERA face* (occupancy): on while a confirmed face is in view;
- ``sensor`` *CAMERA faces*: how many confirmed faces are in view;
- ``sensor`` *CAMERA people*: the names in view, ``unknown`` when only faces nobody
  matches are, ``nobody`` when none is; the in-view state is its attributes.

Their states come from the retained ``cameras/CAMERA/status`` and ``cameras/CAMERA/faces``
topics, and the node's ``status`` (its last will says ``offline``) is their availability.
The configs are retained; the publisher sends them at every connection and again when
Home Assistant announces itself (``DISCOVERY_PREFIX/status`` ``online``). A disabled camera's
configs are sent empty, which removes its entities.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from daemon import __version__
from daemon.config import CameraConfig, HomeAssistantConfig

PEOPLE_TEMPLATE = (
    "{% if value_json.people %}{{ value_json.people | join(', ') }}"
    "{% elif value_json.faces %}unknown{% else %}nobody{% endif %}"
)


def birth_topic(config: HomeAssistantConfig) -> str:
    """Where Home Assistant says ``online`` when it starts."""
    return f"{config.discovery_prefix}/status"


def _entities(status_topic: str, in_view_topic: str, camera: str) -> dict[str, dict[str, Any]]:
    """Each entity's platform and settings, by key."""
    return {
        "connected": {
            "platform": "binary_sensor",
            "name": f"{camera} camera",
            "state_topic": status_topic,
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
        },
        "face": {
            "platform": "binary_sensor",
            "name": f"{camera} face",
            "state_topic": in_view_topic,
            "value_template": "{{ 'ON' if value_json.faces > 0 else 'OFF' }}",
            "device_class": "occupancy",
        },
        "faces": {
            "platform": "sensor",
            "name": f"{camera} faces",
            "state_topic": in_view_topic,
            "value_template": "{{ value_json.faces }}",
            "state_class": "measurement",
            "icon": "mdi:face-recognition",
        },
        "people": {
            "platform": "sensor",
            "name": f"{camera} people",
            "state_topic": in_view_topic,
            "value_template": PEOPLE_TEMPLATE,
            "json_attributes_topic": in_view_topic,
            "icon": "mdi:account-group",
        },
    }


def discovery_messages(
    config: HomeAssistantConfig,
    node_id: str,
    cameras: list[CameraConfig],
    node_status_topic: str,
    camera_status_topic: Callable[[str], str],
    in_view_topic: Callable[[str], str],
) -> list[tuple[str, bytes]]:
    """(topic, payload) of every entity's discovery config, to be published retained."""
    device = {
        "identifiers": [f"facewatch_{node_id}"],
        "name": f"facewatch {node_id}",
        "manufacturer": "facewatch",
        "model": "face recognition daemon",
        "sw_version": __version__,
    }
    common = {
        "availability": [
            {
                "topic": node_status_topic,
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "device": device,
        "origin": {"name": "facewatch", "sw_version": __version__},
        "qos": 1,
    }
    messages = []
    for camera in cameras:
        name = camera.name
        entities = _entities(camera_status_topic(name), in_view_topic(name), name)
        for key, settings in entities.items():
            platform = settings.pop("platform")
            topic = f"{config.discovery_prefix}/{platform}/facewatch_{node_id}/{name}_{key}/config"
            entity = {"unique_id": f"facewatch_{node_id}_{name}_{key}", **settings, **common}
            payload = json.dumps(entity, separators=(",", ":")).encode() if camera.enabled else b""
            messages.append((topic, payload))
    return messages
