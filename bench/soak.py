"""Soak test with faults: the daemon on 2 looping RTSP cameras for 30 minutes while the MQTT
broker and one camera are restarted every few minutes.

Run from the repository root:

    .venv/bin/python bench/soak.py                  # 30 minutes (+ about 2 to set up and drain)
    .venv/bin/python bench/soak.py --minutes 5      # a short one

Each camera is its own GStreamer RTSP server looping the demo clip (configs/demo), so one can
be restarted while the other goes on. Recognition runs with the test FaceNet (random weights:
the same computation as a trained one) and a gallery of one person. Every --fault-every
seconds, alternately, the broker or camera 2 goes away for --outage seconds.

Reports (and writes to --out, by default bench/.cache/soak.json, git-ignored): resident memory over time, with the growth
between the first and the last 5 minutes after warm-up; events emitted (the daemon's own
JSON-lines log) against events delivered to a persistent MQTT subscriber (lost, duplicated);
camera and broker reconnections; with Home Assistant discovery on, the retained state a
late subscriber reads once the cameras are off (every camera's ``faces`` must say 0, the
enrolled person must be seen by no camera, every discovery config must be there); with
the face archive on (every visit, at most 5 MB), one visit written per `left` event, none
failed, and the archive within its size. Exit status 1 when an event was lost, that state
or the archive is wrong, or memory grew by more than --max-growth-mb. The logs of the
daemon, the broker and the cameras are kept in bench/.cache/soak/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from script_support import CACHE, out_argument, stop_on_sigterm  # noqa: E402  (bench/, the script's folder)

from daemon.archive_files import disk_bytes  # noqa: E402
from daemon.frame_admission import STALL_GRACE_S  # noqa: E402
from tests.facenet_model import build_test_model  # noqa: E402
from tests.integration.services import (  # noqa: E402
    Daemon,
    Mosquitto,
    RtspServer,
    Subscriber,
    daemon_settings,
    enroll,
    free_port,
    wait_for,
)

CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"
SHARED_DATA = REPO.parent / "shared" / "data"
CAMERAS = ("cam1", "cam2")
LOST_AFTER_S = 2.0  # tracking.lost_after_s
ARCHIVE_MB = 5.0  # small: the soak prunes the face archive all along
LOGS = CACHE / "soak"  # the logs of the last run
DEFAULT_OUT = CACHE / "soak.json"  # not bench/results/: keeps the committed one


def received(subscriber: Subscriber) -> list[str]:
    """The event ids delivered so far, repeats included."""
    return [event["event_id"] for event in subscriber.events()]


def archived(daemon: Daemon) -> float:
    values = daemon.metrics()
    return sum(values.get(f'facewatch_archive_visits_total{{camera="{c}"}}', 0.0) for c in CAMERAS)


def archive_state(daemon: Daemon, root: Path, left: int) -> dict[str, Any]:
    """The face archive after the drain: one visit written per `left` event, none failed,
    the disk it takes within archive.max_mb (the oldest pruned)."""
    values = daemon.metrics()
    on_disk = [p.parent for p in root.glob("*/*/*/visit.json")]
    return {
        "left_events": left,
        "visits_written": archived(daemon),
        "visits_on_disk": len(on_disk),
        "failures": sum(
            v for k, v in values.items() if k.startswith("facewatch_archive_failures_total{")
        ),
        "disk_bytes": sum(disk_bytes(folder) for folder in on_disk),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def emitted(jsonl: Path) -> list[str]:
    if not jsonl.is_file():
        return []
    return [json.loads(line)["event_id"] for line in jsonl.read_text().splitlines() if line]


def retained(port: int) -> dict[str, Any]:
    """What a subscriber connecting now reads: the cameras' ``faces`` states, the people's
    cameras, and how many Home Assistant discovery configs the broker keeps."""
    late = Subscriber(port, "#")
    try:
        topics = [f"facewatch/test/cameras/{c}/faces" for c in CAMERAS]
        wait_for(lambda: all(late.last(t) for t in topics), 10, "the retained states")
        time.sleep(1)  # the rest of the retained messages
        messages = list(late.messages)
        configs = {t for t, p, _ in messages if t.endswith("/config") and p}
        people = {t: p for t, p, _ in messages if t.startswith("facewatch/test/people/") and p}
        return {
            "people": {json.loads(p)["name"]: json.loads(p)["cameras"] for p in people.values()},
            "faces": {
                c: json.loads(late.last(t) or b"{}")["faces"]
                for c, t in zip(CAMERAS, topics, strict=True)
            },
            "discovery_configs": len(configs),
        }
    finally:
        late.close()


def soak(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    broker, servers, daemon, jsonl = _set_up(args, folder)
    broker.start()
    for server in servers.values():
        server.start()
    subscriber = Subscriber(broker.port, "facewatch/test/events/#", persistent_id="soak")
    daemon.start()
    try:
        wait_for(lambda: daemon.metric("facewatch_batch_frames_count") > 0, 180, "first batch")
        samples, faults = _observe(args, daemon, broker, servers, jsonl, subscriber)
        final, after_drain, archive, rc = _drain(daemon, broker, servers, jsonl, subscriber, folder)
    finally:
        subscriber.close()
        daemon.stop()
        for server in servers.values():
            server.stop()
        broker.stop()
    LOGS.mkdir(parents=True, exist_ok=True)
    for process in (daemon, broker, *servers.values()):
        (LOGS / process.log_path.name).write_text(process.log())
    report = _report(args, samples, final, daemon.log())
    ids, delivered = emitted(jsonl), received(subscriber)
    report.update(
        events_emitted=len(ids),
        events_delivered=len(set(delivered)),
        events_lost=len(set(ids) - set(delivered)),
        duplicates_received=len(delivered) - len(set(delivered)),
        exit_status=rc,
        retained_after_drain=after_drain,
        archive=archive,
        faults=faults,
        samples=samples,
    )
    return report


def _set_up(
    args: argparse.Namespace, folder: Path
) -> tuple[Mosquitto, dict[str, RtspServer], Daemon, Path]:
    """The test model and its gallery, a broker that persists, a camera server per camera,
    and the daemon's settings (not started)."""
    data = SHARED_DATA if (SHARED_DATA / "README.md").is_file() else None
    model = build_test_model(folder / "model", data)
    gallery = folder / "gallery.sqlite"
    enroll(model, gallery, "lin-manuel-miranda")
    persistence = folder / "broker-db"
    persistence.mkdir()
    broker = Mosquitto(
        folder,
        extra_conf=(
            "allow_anonymous true\npersistence true\n"
            f"persistence_location {persistence}/\nmax_queued_messages 0\n"
        ),
    )
    servers = {c: RtspServer(folder, {c: CLIP}, port=free_port()) for c in CAMERAS}
    jsonl = folder / "events.jsonl"
    settings = daemon_settings(
        [{"name": c, "url": servers[c].url(c), "fps": args.fps} for c in CAMERAS],
        broker.port,
        folder,
        recognition={"model": str(model), "gallery": str(gallery)},
        events={"jsonl_file": str(jsonl)},
        tracking={"confirm_frames": 3, "lost_after_s": LOST_AFTER_S},
        mqtt={"home_assistant": {"enabled": True}},
        # every visit kept, in a small archive: writing and pruning all along
        archive={"dir": str(folder / "archive"), "which": "all", "max_mb": ARCHIVE_MB},
    )
    return broker, servers, Daemon(folder, settings), jsonl


def _observe(
    args: argparse.Namespace,
    daemon: Daemon,
    broker: Mosquitto,
    servers: dict[str, RtspServer],
    jsonl: Path,
    subscriber: Subscriber,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """For ``args.minutes``: a sample of the daemon every ``args.sample_every`` seconds, and
    every ``args.fault_every`` seconds the broker or cam2 stopped for ``args.outage``."""
    assert daemon.proc is not None
    samples: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    started = time.monotonic()
    end = started + args.minutes * 60
    next_fault = started + args.fault_every
    turn = 0
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_fault and now + args.outage < end:
            name = "broker" if turn % 2 == 0 else "cam2"
            target = broker if name == "broker" else servers["cam2"]
            target.stop()
            time.sleep(args.outage)
            target.start()
            faults.append({"t_s": round(now - started), "restarted": name})
            print(f"[{(now - started) / 60:5.1f} min] restarted {name}", flush=True)
            turn += 1
            next_fault = now + args.fault_every
        values = daemon.metrics()
        samples.append(
            {
                "t_s": round(time.monotonic() - started, 1),
                "rss_mb": round(rss_mb(daemon.proc.pid), 1),
                "spool": values.get("facewatch_mqtt_spool_events", 0.0),
                "events": len(emitted(jsonl)),
                "received": len(received(subscriber)),
            }
        )
        if len(samples) % 30 == 1:
            last = samples[-1]
            print(
                f"[{last['t_s'] / 60:5.1f} min] RSS {last['rss_mb']:.0f} MB, events "
                f"{last['events']}, received {last['received']}, spool {last['spool']:.0f}",
                flush=True,
            )
        time.sleep(args.sample_every)
    return samples, faults


def _drain(
    daemon: Daemon,
    broker: Mosquitto,
    servers: dict[str, RtspServer],
    jsonl: Path,
    subscriber: Subscriber,
    folder: Path,
) -> tuple[dict[str, float], dict[str, Any], dict[str, Any], int | None]:
    """Cameras off, everything in the spool delivered, and the open tracks left: a silent
    camera keeps its tracks for STALL_GRACE_S (it may only be stalling), then they are lost
    after lost_after_s. Returns the daemon's metrics before, the retained state after, the
    archive's state and the daemon's exit status."""
    final = daemon.metrics()
    for server in servers.values():
        server.stop()
    time.sleep(STALL_GRACE_S + LOST_AFTER_S + 3)
    wait_for(
        lambda: set(emitted(jsonl)) <= set(received(subscriber)),
        180,
        "every emitted event to reach the subscriber",
        every_s=1,
    )
    after_drain = retained(broker.port)
    left = sum(1 for line in jsonl.read_text().splitlines() if '"type":"left"' in line)
    wait_for(lambda: archived(daemon) >= left, 30, "a visit written for each `left`")
    archive = archive_state(daemon, folder / "archive", left)
    return final, after_drain, archive, daemon.stop()


def _report(
    args: argparse.Namespace, samples: list[dict[str, Any]], final: dict[str, float], log: str
) -> dict[str, Any]:
    """The run's figures from the samples, the last metrics and the daemon's log."""
    warm = [s["rss_mb"] for s in samples if s["t_s"] >= args.warmup_s]
    window = max(1, int(300 / args.sample_every))  # 5 minutes of samples
    first, last = statistics.median(warm[:window]), statistics.median(warm[-window:])

    def per_camera(metric: str) -> dict[str, float]:
        return {c: final.get(f'{metric}{{camera="{c}"}}', 0.0) for c in CAMERAS}

    return {
        "minutes": args.minutes,
        "fps": args.fps,
        "camera_reconnects": per_camera("facewatch_camera_reconnects_total"),
        "mqtt_connections": log.count("MQTT: connected to"),
        "frames_processed": per_camera("facewatch_frames_processed_total"),
        "frames_dropped": per_camera("facewatch_frames_dropped_total"),
        "rss_mb_first_5min": round(first, 1),
        "rss_mb_last_5min": round(last, 1),
        "rss_growth_mb": round(last - first, 1),
        "rss_mb_max": max(warm),
        "tracebacks_in_log": log.count("Traceback"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=30, help="soak length")
    parser.add_argument("--fault-every", type=float, default=150, help="seconds between faults")
    parser.add_argument("--outage", type=float, default=20, help="seconds each fault lasts")
    parser.add_argument("--fps", type=float, default=5, help="camera fps")
    parser.add_argument("--sample-every", type=float, default=10, help="seconds between samples")
    parser.add_argument("--warmup-s", type=float, default=120, help="RSS samples ignored first")
    parser.add_argument("--max-growth-mb", type=float, default=50, help="RSS growth that fails")
    out_argument(parser, DEFAULT_OUT.name)
    args = parser.parse_args()
    if args.minutes * 60 < args.warmup_s + 60:
        parser.error("--minutes must leave at least a minute after --warmup-s")
    stop_on_sigterm()
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("samples", "faults")}
    print(json.dumps(summary, indent=1))
    print(f"faults: {len(result['faults'])}; samples in {args.out}")
    failed = result["events_lost"] > 0 or result["rss_growth_mb"] > args.max_growth_mb
    failed = failed or result["exit_status"] != 0 or result["tracebacks_in_log"] > 0
    state = result["retained_after_drain"]
    # the node's status entity, 4 per camera (no snapshots) and the person's; nobody in view
    expected = {
        "people": {"lin-manuel-miranda": []},
        "faces": dict.fromkeys(CAMERAS, 0),
        "discovery_configs": 1 + 4 * len(CAMERAS) + 1,
    }
    failed = failed or state != expected
    archive = result["archive"]
    failed = failed or archive["visits_written"] != archive["left_events"]
    failed = failed or archive["failures"] > 0 or archive["disk_bytes"] > ARCHIVE_MB * 1e6
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
