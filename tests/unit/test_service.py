"""The daemon's stop and reload (daemon.service): the stop's deadline, a reload of an edited
config, what a stop leaves in the spool."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from daemon.camera_frames import FrameQueues
from daemon.config_file import parse_config
from daemon.events import EventSinks
from daemon.spool import Spool
from tests.conftest import open_files


def test_a_stop_keeps_its_deadline_when_cameras_hang(monkeypatch, caplog, tmp_path) -> None:
    """16 cameras whose stream reads block share one reader deadline (not 16 in a row), the
    scheduler's wait is cut to what the budget leaves, a face archive stuck on its disk gets
    what is left, and the stuck cameras are named: a stop ends before systemd's
    TimeoutStopSec would kill the daemon."""
    from daemon import service
    from daemon.archive import FaceArchive

    monkeypatch.setattr(service, "STOP_BUDGET_S", 3.0)
    monkeypatch.setattr(service, "READERS_STOP_S", 1.0)
    monkeypatch.setattr(service, "PUBLISHER_STOP_S", 1.0)
    release = threading.Event()

    class HungReader(threading.Thread):
        def __init__(self, k: int) -> None:
            super().__init__(name=f"camera-cam{k}", daemon=True)

        def run(self) -> None:
            release.wait(60)

        def stop(self) -> None:
            pass  # a read blocked in the stream: the flag is not looked at

    class BusyScheduler(HungReader):
        queues = FrameQueues(["cam0"], 2)

    config = parse_config(
        {"cameras": [{"name": "cam0", "url": "x.mp4"}], "archive": {"dir": str(tmp_path)}}
    )
    daemon = service.Service(config)
    daemon.readers = [HungReader(k) for k in range(16)]
    scheduler = BusyScheduler(99)
    daemon.archive = FaceArchive(config.archive, "node", None)
    monkeypatch.setattr(daemon.archive, "_scan", lambda: release.wait(60))  # a hung disk
    daemon.archive.start()
    for thread in [*daemon.readers, scheduler]:
        thread.start()
    started = time.monotonic()
    try:
        daemon._shutdown(scheduler, EventSinks())  # type: ignore[arg-type]
        took = time.monotonic() - started
    finally:
        release.set()
    assert 1.9 <= took < 3.5  # readers 1 s together, scheduler until budget - publisher's 1 s
    assert "camera-cam0, camera-cam1" in caplog.text and "did not stop within 1 s" in caplog.text
    assert "the batch scheduler did not finish in time" in caplog.text
    assert "face archive: 0 visit(s) not written in time" in caplog.text
    # what `facewatch run` then ends at once, without Python's clean-up (run_cli._exit_now)
    assert daemon.left_behind == [
        *(f"camera-cam{k}" for k in range(16)),
        "camera-cam99",
        "face-archive",
    ]


def test_a_reload_says_what_an_edited_config_changes_and_that_a_restart_applies_it(
    tmp_path, caplog
) -> None:
    """`systemctl reload` after an edit of the config said only 're-reading the gallery':
    the old values stayed in use unsaid, and an invalid edit was found at the next restart
    (weeks later, a reboot), which exited 2 and systemd did not retry. A reload names the
    changed keys and says they need a restart, or names the file's error and says a restart
    would fail, as it does for a file the config names that is not there (a CA not copied
    yet: it was 'these take effect at the next restart'); the daemon keeps its config."""
    import signal

    from daemon import service
    from daemon.config_file import load_config

    path = tmp_path / "facewatch.yaml"
    text = (
        "cameras: [{name: door, url: 'rtsp://h/1', fps: 10}, {name: yard, url: 'rtsp://h/2'}]\n"
        "recognition: {model: null}\nmqtt: {host: broker.lan, password: old-Secret-1}\n"
    )
    path.write_text(text)
    daemon = service.Service(load_config(path), config_path=str(path))
    now = time.monotonic()  # (the scheduler comes round: no stall to end the serve loop)
    scheduler = SimpleNamespace(
        pipeline=SimpleNamespace(facenet=None), is_alive=lambda: True, last_round=now + 60,
        queues=SimpleNamespace(waiting_since=None),
    )  # fmt: skip

    def reload() -> list[str]:
        caplog.clear()
        daemon._stop.clear()
        os.kill(os.getpid(), signal.SIGHUP)  # `systemctl reload facewatch`
        daemon.run_for_s = 1.5
        daemon._serve(scheduler)  # type: ignore[arg-type]
        return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if "SIGHUP" in r.msg]

    kept = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGHUP)}
    try:
        daemon._install_signals()
        with caplog.at_level("INFO", logger="daemon.service"):
            unchanged = reload()
            path.write_text(
                "cameras: [{name: door, url: 'rtsp://h/1', fps: 2}, {name: gate, url: 'rtsp://h/3'}]\n"
                "recognition: {model: null, threshold: 0.3}\n"
                "mqtt: {host: mqtt.lan, password: new-Secret-2}\n"
            )  # fmt: skip
            changed = reload()
            path.write_text(path.read_text() + "colour: red\n")
            invalid = reload()
            path.write_text(text.replace("1}\n", "1, tls: {ca_file: brokerca.crt}}\n"))
            missing = reload()
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)
    assert unchanged == ["INFO SIGHUP: no FaceNet model in use (detection only): no gallery"]
    assert changed[-1] == (
        f"WARNING SIGHUP: config {path} changed (recognition.threshold, mqtt.host, "
        "mqtt.password, cameras[door].fps, cameras[gate] (added), cameras[yard] (removed)): a "
        "reload does not apply it; these take effect at the next restart (systemctl restart "
        "facewatch)"
    ), changed
    assert invalid[-1] == (
        f"ERROR SIGHUP: {path}: invalid configuration: colour: unknown key; the running daemon "
        "keeps its config, but a restart would fail (exit status 2) until the file is fixed "
        f"(facewatch validate-config {path})"
    ), invalid
    assert missing[-1] == (
        f"ERROR SIGHUP: mqtt.tls.ca_file: {tmp_path / 'brokerca.crt'}: not found; the running "
        "daemon keeps its config, but a restart would fail (exit status 2) until the file is "
        f"fixed (facewatch validate-config {path})"
    ), missing
    assert "Secret" not in " ".join(changed + invalid + missing)
    assert daemon.config.cameras[0].fps == 10  # (as it started)


def test_what_a_stop_leaves_in_the_spool_is_counted_as_messages(tmp_path, caplog) -> None:
    """An event and its face snapshot left in the spool at a stop (the broker away): the log
    said '2 event(s) kept' where the next start sent one event, and the spool's gauge said
    events too. Both say messages: events and their snapshots."""
    from daemon import metrics, service

    class Scheduler(threading.Thread):
        queues = FrameQueues(["cam0"], 2)

        def stop(self) -> None:
            pass

    daemon = service.Service(parse_config({"cameras": [{"name": "cam0", "url": "x.mp4"}]}))
    daemon.spool = Spool(tmp_path / "spool", 100)
    sinks = EventSinks(
        spool=daemon.spool,
        topic_for=lambda camera: f"t/{camera}",
        snapshot_topic_for=lambda camera, event_id: f"s/{camera}/{event_id}",
    )
    event = {"camera": "cam0", "type": "confirmed", "event_id": "e1", "seq": 1, "identity": None}
    sinks.emit(event, snapshot=b"jpeg")
    assert REGISTRY.get_sample_value("facewatch_mqtt_spool_events") == 2
    (gauge,) = metrics.SPOOL_EVENTS.describe()
    assert gauge.documentation.startswith("messages waiting in the on-disk spool: events, and ")
    scheduler = Scheduler()
    scheduler.start()
    daemon._shutdown(scheduler, sinks)  # type: ignore[arg-type]
    assert "2 message(s) (events and their face snapshots) kept in the spool" in caplog.text


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts this process's files")
def test_a_publisher_that_cannot_be_made_leaves_the_spool_closed(tmp_path) -> None:
    """mqtt.tls files that preflight read but the publisher cannot use (replaced between the
    two): the start ends with mqtt.tls's ConfigError, and the spool opened for it is closed
    then, not left open (its SQLite file and its lock) until the process ends."""
    from daemon import service
    from daemon.config import ConfigError

    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(b"not a certificate")
    config = parse_config(
        {
            "cameras": [{"name": "cam0", "url": "x.mp4"}],
            "mqtt": {"spool_dir": str(tmp_path / "spool"), "tls": {"ca_file": str(ca_file)}},
        }
    )
    daemon = service.Service(config)
    before = open_files()
    with pytest.raises(ConfigError, match=r"^mqtt\.tls\.ca_file: "):
        daemon._start_outputs([])
    assert open_files() == before and daemon.spool is None
