"""The motion gate in the real daemon: a quiet camera beside the same camera without the
gate, on a clip where people come into a still scene; events to a JSON-lines file, no MQTT."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.clips import doorway_clip
from tests.integration.services import FACEWATCH, Daemon, daemon_settings, free_port, wait_for

pytestmark = pytest.mark.slow

STILL_S = 6.0


def test_a_quiet_camera_skips_still_frames_and_still_sees_people_come_in(tmp_path) -> None:
    clip = doorway_clip(tmp_path / "doorway.mp4", STILL_S)
    cameras = [
        {"name": "gated", "url": str(clip), "fps": 5},
        {"name": "open", "url": str(clip), "fps": 5, "detection": {"motion": {"enabled": False}}},
    ]
    events = tmp_path / "events.jsonl"
    settings = daemon_settings(
        cameras,
        free_port(),
        tmp_path,
        detection={"motion": {"check_every_s": 60}},
        mqtt={"enabled": False},
        events={"jsonl_file": str(events)},
    )
    daemon = Daemon(tmp_path, settings)
    daemon.start()
    try:
        first: dict[str, float] = {}

        def both_confirmed() -> bool:
            lines = events.read_text().splitlines() if events.exists() else []
            for event in map(json.loads, lines):
                if event["type"] == "confirmed":
                    first.setdefault(event["camera"], event["frame_ts"])
            return len(first) == 2

        wait_for(both_confirmed, 90, "a face confirmed on both cameras")
        metrics = daemon.metrics()
        status = subprocess.run(
            [str(FACEWATCH), "status", "--config", str(daemon.config_path), "--json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]

    def count(name: str, camera: str) -> float:
        return metrics[f'facewatch_{name}_total{{camera="{camera}"}}']

    # the empty scene: about STILL_S x 5 frames of each camera, the gated one's not searched
    assert count("frames_still", "open") == 0
    assert STILL_S * 5 * 0.6 <= count("frames_still", "gated") <= STILL_S * 5 + 2
    searched = count("frames_processed", "gated") / count("frames_processed", "open")
    assert searched < 0.8, metrics
    # the people who came in were found as soon as without the gate (the cameras started
    # within a fraction of a second of each other): a gate that missed them would find them
    # at its next check, check_every_s (60 s) later; 10 s leaves room for a loaded machine
    assert abs(first["gated"] - first["open"]) < 10.0, first
    # no MQTT: no "broker down" for Prometheus or `facewatch status` to report
    assert "facewatch_mqtt_connected" not in metrics
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["mqtt"] == "off" and report["problems"] == []
    assert {c["name"] for c in report["cameras"]} == {"gated", "open"}
