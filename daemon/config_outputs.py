"""The configuration's sections of what the daemon gives out: ``mqtt`` (its TLS, Home
Assistant discovery), ``metrics``, ``events``, ``logging`` and ``archive`` (the faces of each
visit on disk)."""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationInfo, field_validator

from daemon.config_section import Section, _field


class ArchiveConfig(Section):
    dir: str | None = _field(
        None,
        "keep the faces of each visit (a track, from its first frame to `left`) here, one "
        "folder per visit, to review and to enroll from; null = off; relative to the config; "
        "the daemon owns it (it deletes old visits while it runs: set back to null, the "
        "visits kept so far stay, for `rm -r` or `facewatch archive prune --dir`)",
    )
    which: Literal["unknown", "all"] = _field(
        "unknown",
        "unknown: the visits none of whose events named anyone (every visit without a FaceNet "
        "model); all: every visit",
    )
    per_visit: int = _field(
        5, "most images kept per visit: the best ones (large, frontal, sharp, whole)", ge=1, le=50
    )
    min_gap_s: float = _field(
        1.0, "at most one image (the best) per this many seconds of a visit", ge=0, le=3600
    )
    max_mb: float = _field(
        1000, "the oldest visits are deleted when they take more disk than this", gt=0
    )
    keep_days: float = _field(
        7, "visits that started longer ago are deleted (faces are personal data)", gt=0, le=3650
    )

    @field_validator("dir")
    @classmethod
    def _a_folder(cls, folder: str | None) -> str | None:
        if folder is not None and not folder.strip():
            raise ValueError("expected a folder (null turns the archive off)")
        return folder


class TlsConfig(Section):
    ca_file: str | None = _field(None, "CA certificate to trust (PEM); null = system CAs")
    cert_file: str | None = _field(None, "client certificate (PEM), for brokers that ask")
    key_file: str | None = _field(
        None, "client key (PEM, unencrypted: there is no passphrase setting)"
    )
    insecure: bool = _field(False, "skip the host name check (testing only)")


def _an_address(value: object) -> object:
    """A host name or address as sockets take it: an IPv6 address written in brackets, as in
    a URL ([::1]), is the address (::1); one YAML read as something else (unquoted, digits
    and ':' are a number in base 60, [fd00::10] a list) is refused with how to write it."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            "a number: YAML reads digits and ':' unquoted as one (in base 60): write an IPv6 "
            'address in quotes, "2001:0:0:0:0:0:0:1"'
        )
    if isinstance(value, list):
        raise ValueError(
            'a list: YAML reads [...] unquoted as one: write an IPv6 address in quotes, "::1"'
        )
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        return value[1:-1]
    return value


def _topic_root(topic: str) -> str:
    """A topic that others go under (a trailing / dropped): no wildcard, no empty level, and
    not one of the broker's own ($SYS...), where brokers drop what clients publish."""
    if any(c in topic for c in "+#\0"):
        raise ValueError("MQTT topics cannot hold the wildcards + and # (or NUL)")
    topic = topic.rstrip("/")
    if not topic:
        raise ValueError("expected a topic such as facewatch or home/facewatch")
    if topic.startswith("$") and not topic.startswith("${"):  # (an unresolved reference)
        raise ValueError(
            "topics that start with $ are the broker's own: it drops what is sent there"
        )
    if "//" in topic:
        raise ValueError("an empty topic level (//)")
    return topic


class HomeAssistantConfig(Section):
    enabled: bool = _field(
        False,
        "announce the daemon to Home Assistant (MQTT discovery): per camera, connected, face "
        "in view, number of faces, people in view, last face; per enrolled person, in view",
    )
    discovery_prefix: str = _field(
        "homeassistant", "Home Assistant's discovery prefix (its MQTT settings)", min_length=1
    )
    people: bool = _field(
        True, "an occupancy sensor per enrolled person (off: none, e.g. for a large gallery)"
    )

    _topic = field_validator("discovery_prefix")(_topic_root)


class MqttConfig(Section):
    enabled: bool = _field(True, "publish to an MQTT broker")
    host: str = _field(
        "127.0.0.1", 'broker host name or address (IPv6 in quotes: "fd00::10", "::1")'
    )
    port: int = _field(1883, "broker port (8883 for TLS, usually)", ge=1, le=65535)
    username: str | None = _field(None, "user name")
    password: str | None = _field(None, "password: use ${credential:mqtt_password} or ${ENV}")
    tls: TlsConfig | None = _field(None, "TLS settings; null = plain TCP")
    topic_prefix: str = _field("facewatch", "every topic starts with PREFIX/NODE_ID/", min_length=1)
    keepalive_s: int = _field(30, "MQTT keepalive", ge=5, le=3600)
    protocol: Literal["5", "3.1.1"] = _field(
        "3.1.1",
        "MQTT version: 5 tells the daemon of a message the broker's ACL refuses (it logs it "
        "and keeps the events spooled; a mosquitto 2.0 message_size_limit below a snapshot's "
        "size makes it drop the connection again and again); 3.1.1 (a broker acknowledges a "
        "refused message as sent, and drops it: nothing is said)",
    )

    _topic = field_validator("topic_prefix")(_topic_root)
    _host = field_validator("host", mode="before")(_an_address)

    @field_validator("protocol", mode="before")
    @classmethod
    def _a_version(cls, value: object) -> object:
        return str(value) if isinstance(value, (int, float)) else value  # (YAML's 5 or 3.1)

    spool_dir: str = _field(
        "spool", "events wait here while the broker is away; relative to the config"
    )
    spool_max_events: int = _field(
        100_000,
        "spool bound, in messages (an event and its face snapshot are two); when full the "
        "oldest is dropped",
        ge=10,
    )
    home_assistant: HomeAssistantConfig = _field(
        HomeAssistantConfig(), "Home Assistant MQTT discovery"
    )

    @field_validator("home_assistant")
    @classmethod
    def _needs_mqtt(cls, value: HomeAssistantConfig, info: ValidationInfo) -> HomeAssistantConfig:
        if value.enabled and not info.data.get("enabled", True):
            raise ValueError("enabled: true needs MQTT: set mqtt.enabled: true as well")
        return value


class MetricsConfig(Section):
    enabled: bool = _field(True, "serve Prometheus metrics")
    address: str = _field(
        "127.0.0.1",
        'listen address (0.0.0.0 exposes it to the network; IPv6 in quotes: "::" every '
        'interface, IPv4 too where the system allows, "::1" loopback)',
    )
    _address = field_validator("address", mode="before")(_an_address)
    port: int = _field(9708, "listen port", ge=1, le=65535)
    identities: bool = _field(
        True,
        "name enrolled people in facewatch_recognitions_total (who was seen, when: personal "
        "data, kept by Prometheus); false: 'known' and 'unknown' only",
    )


class EventsConfig(Section):
    stdout: bool = _field(False, "also print each event as a JSON line on stdout")
    jsonl_file: str | None = _field(None, "also append each event to this JSON-lines file")


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _field("INFO", "log verbosity")
