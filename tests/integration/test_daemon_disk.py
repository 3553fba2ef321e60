"""The daemon and a full disk at start: a real (small) file system filled to the last block
and inode. A disk that fills while the daemon runs is handled by each output (it logs and
goes on); one that is full when it starts must not pass for a config error, which systemd
does not restart: the daemon would stay down after the space is freed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from daemon.config_outputs import MqttConfig
from daemon.events import EventSinks
from daemon.mqtt import MqttPublisher
from daemon.spool import Spool
from tests.conftest import REPO
from tests.integration.services import FACEWATCH, Subscriber, daemon_settings, fill, wait_for

pytestmark = pytest.mark.slow

CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"


def run_daemon(tmp_path: Path, **sections: object) -> subprocess.CompletedProcess[str]:
    settings = daemon_settings([{"name": "cam", "url": str(CLIP), "fps": 5}], 9, tmp_path)
    for name, value in sections.items():
        settings[name] = {**settings.get(name, {}), **value}  # type: ignore[dict-item]
    config = tmp_path / "facewatch.yaml"
    config.write_text(yaml.safe_dump(settings))
    return subprocess.run(
        [str(FACEWATCH), "run", "--config", str(config), "--run-for", "1"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_a_full_disk_at_start_exits_1_for_systemd_to_retry_and_then_runs(
    tmp_path, small_disk
) -> None:
    spool_dir = small_disk / "spool"
    Spool(spool_dir).close()  # the spool of an earlier run, then the disk filled
    fill(small_disk)
    full = run_daemon(tmp_path, mqtt={"spool_dir": str(spool_dir)})
    assert full.returncode == 1, full.stderr[-2000:]
    assert "mqtt.spool_dir: MQTT spool" in full.stderr and "systemd starts facewatch again" in (
        full.stderr
    )
    archive = run_daemon(tmp_path, archive={"dir": str(small_disk / "archive")})
    assert archive.returncode == 1, archive.stderr[-2000:]
    assert "archive.dir:" in archive.stderr and "No space left on device" in archive.stderr
    for path in small_disk.iterdir():  # space freed: what systemd's next start finds
        if path.is_file():
            path.unlink()
    freed = run_daemon(
        tmp_path, mqtt={"spool_dir": str(spool_dir)}, archive={"dir": str(small_disk / "archive")}
    )
    assert freed.returncode == 0, freed.stderr[-2000:]


def test_events_reach_the_broker_while_the_spools_disk_is_full(
    tmp_path, broker, small_disk, caplog
) -> None:
    """Home Assistant's automations went silent when the disk filled, the broker connected
    all along: events reach MQTT only through the spool. They now go straight to the broker
    while the spool cannot take them."""
    subscriber = Subscriber(broker.port, "facewatch/node/events/#")
    spool = Spool(small_disk / "spool", 1000)
    publisher = MqttPublisher(MqttConfig(port=broker.port), "node", spool)
    sinks = EventSinks(
        spool=spool, topic_for=publisher.event_topic, on_spooled=publisher.notify,
        direct=publisher.send_now,
    )  # fmt: skip
    before = REGISTRY.get_sample_value(
        "facewatch_event_output_failures_total", {"output": "spool"}
    ) or 0.0  # fmt: skip
    publisher.start()
    try:
        wait_for(publisher.connected.is_set, 30, "the publisher connected")
        fill(small_disk)
        for k in range(60):
            sinks.emit({"camera": "cam", "type": "confirmed", "event_id": f"e{k}", "seq": k,
                        "frame_ts": time.time(), "payload": "x" * 2000})  # fmt: skip
        wait_for(lambda: len(subscriber.events()) >= 60, 20, "every event")
    finally:
        publisher.stop()
        subscriber.close()
        spool.close()
    assert sorted(e["seq"] for e in subscriber.events()) == list(range(60))
    refused = (REGISTRY.get_sample_value(
        "facewatch_event_output_failures_total", {"output": "spool"}
    ) or 0.0) - before  # fmt: skip
    assert refused > 0, "the disk took them all: nothing was tested"
    assert "sent to the broker without it while connected" in caplog.text


def test_an_event_the_spool_takes_without_its_snapshot_is_sent_once(tmp_path, broker) -> None:
    """The disk has room for the event's row, not for its snapshot (SQLite's page limit
    stands in for the last free blocks): the event goes through the spool only, once; the
    snapshot goes straight to the broker, and the retained last face follows it."""
    subscriber = Subscriber(broker.port, "facewatch/node/#")
    spool = Spool(tmp_path / "spool", 1000)
    publisher = MqttPublisher(MqttConfig(port=broker.port), "node", spool)
    sinks = EventSinks(
        spool=spool, topic_for=publisher.event_topic, on_spooled=publisher.notify,
        snapshot_topic_for=publisher.snapshot_topic, state=publisher, direct=publisher.send_now,
    )  # fmt: skip
    publisher.start()
    try:
        wait_for(publisher.connected.is_set, 30, "the publisher connected")
        pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
        spool._db.execute(f"PRAGMA max_page_count = {pages}")  # small rows fit, 6 kB do not
        face = b"\xff\xd8" + os.urandom(6000)
        sinks.emit({"camera": "cam", "type": "confirmed", "event_id": "e1", "seq": 1,
                    "identity": None, "frame_ts": time.time()}, face)  # fmt: skip
        wait_for(lambda: subscriber.last("facewatch/node/snapshots/cam/e1") == face, 10, "face")
        wait_for(lambda: subscriber.events(), 10, "the event")
        wait_for(lambda: subscriber.last("facewatch/node/cameras/cam/snapshot") == face, 10,
                 "the retained last face")  # fmt: skip
        time.sleep(1)  # a second copy would be here by now
    finally:
        publisher.stop()
        subscriber.close()
        spool.close()
    assert [e["event_id"] for e in subscriber.events()] == ["e1"]
