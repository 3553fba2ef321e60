"""``facewatch status``: how the running daemon is doing, read from its own /metrics.

Two reads ``--interval`` seconds apart give the rates. The exit status says it for scripts
and health checks: 0 all well, 1 something is down (a camera, the broker), a camera's
frames are mostly dropped (the pipeline cannot keep up, or is stalled), or the face archive
cannot write, 3 no daemon answers there. The page is fetched and parsed by
``daemon.metrics_scrape``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from daemon.config import CHOSEN_CONFIG, Config, ConfigError, running_config
from daemon.config_file import load_config, url_host
from daemon.journal import print_error
from daemon.metrics import DROPS_HIGH, drops_advice
from daemon.metrics_scrape import (
    SCRAPE_TIMEOUT_S,
    MetricsUrl,
    NotFacewatch,
    Samples,
    metrics_request,
    scrape,
)
from daemon.peer_exchange import peer_text
from daemon.redaction import redact_url

NOT_RUNNING = 3
MIN_FRAMES_JUDGED = 10  # frames read between the two reads, to say a camera drops too many


def register(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="how the running daemon is doing: cameras, frame rates, MQTT (from its /metrics)",
        description=(
            "Read the running daemon's Prometheus endpoint twice, --interval seconds apart, "
            "and show each camera (up or down; frames read, searched, skipped by the motion "
            "gate and dropped per second; faces per second) and MQTT. Exit status: 0 all "
            "well, 1 a camera or the broker is down, over a fifth of a camera's frames "
            "are dropped (the pipeline cannot keep up, or is stalled), or the face archive "
            "cannot write to its folder, 2 a usage or config "
            "error, 3 no daemon answers (or none within 5 s)."
        ),
    )
    status.add_argument(
        "--config",
        "-c",
        help=f"the daemon's YAML file, for where it serves metrics (default: {CHOSEN_CONFIG})",
    )
    status.add_argument(
        "--url",
        help="read this metrics URL instead, without a config (e.g. "
        "http://camera-box:9708/metrics)",
    )
    status.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="time between the two reads (default: %(default)s)",
    )
    status.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    status.set_defaults(func=_status)


@dataclass
class Camera:
    name: str
    up: bool
    decoded_fps: float  # what its stream sends (a rate far above read_fps: decoding for nothing)
    read_fps: float
    searched_fps: float
    still_fps: float
    dropped_fps: float
    faces_per_s: float
    reconnects: int
    down_since: float | None = None  # while down: since when (Unix time)
    down_reason: str | None = None  # and why (the log's words)
    behind: bool = False  # over DROPS_HIGH of its frames dropped: the pipeline cannot keep up


@dataclass
class Status:
    url: str
    version: str
    backend: str
    model: str
    uptime_s: float
    mqtt: str  # connected, disconnected, off (the daemon does not use MQTT)
    spooled: int
    refused: bool  # the broker refuses the spool's next message (its ACL)
    enrolled: int
    cameras: list[Camera] = field(default_factory=list)
    now: float = 0.0  # the daemon's clock at the second scrape (Unix time)
    full_scan_every: int | None = None  # detection's, as the config says (None: not read)
    archive_failing: bool = False  # the disk refuses the face archive's writer now
    archive_errors: int = 0  # the disk's refusals since the start (failures_total{error})

    def problems(self) -> list[str]:
        found = [_down(c, self.now) for c in self.cameras if not c.up]
        behind = [c for c in self.cameras if c.up and c.behind]
        found += [_behind(c) for c in behind]
        handled = sum(c.searched_fps + c.still_fps for c in self.cameras)
        if behind and handled == 0:  # not slow: fewer fps would not help
            found.append(
                "no frame of any camera went through the pipeline between the two reads "
                "while they deliver frames: it is stalled (an engine call that does not "
                "return? the daemon's log says where it hangs), or its batches take longer "
                "than --interval (read again with --interval 30)"
            )
        elif behind:  # what to do, once: sized by what the pipeline handles of all cameras
            advice = drops_advice(handled, len(self.cameras), self.full_scan_every)
            found.append(f"the pipeline cannot keep up: {advice}")
        if self.mqtt == "disconnected":
            found.append(f"MQTT is disconnected ({self.spooled} message(s) spooled)")
        elif self.mqtt == "connected" and self.refused:
            found.append(
                f"the MQTT broker refuses this node's messages ({self.spooled} message(s) "
                "spooled): its ACL (the daemon's log names the topic)"
            )
        if self.archive_failing:
            found.append(
                f"the face archive cannot write to archive.dir ({self.archive_errors} "
                "failure(s) since the start; the daemon's log says why: a read-only or full "
                "disk?)"
            )
        return found


def _down(camera: Camera, now: float) -> str:
    if camera.down_since is None or camera.down_reason is None:
        return f"camera {camera.name} is down"  # not yet read, or no failure since
    outage = _duration(max(0.0, now - camera.down_since))
    return f"camera {camera.name} is down for {outage}: {camera.down_reason}"


def _dropping(read: float, dropped: float) -> bool:
    """Over ``DROPS_HIGH`` of ``read`` frames dropped, of enough frames to tell (a frame or
    two of a short --interval are no overload): the pipeline cannot keep up."""
    return read >= MIN_FRAMES_JUDGED and dropped > DROPS_HIGH * read


def _behind(camera: Camera) -> str:
    share = min(100, 100 * camera.dropped_fps / camera.read_fps)
    return f"camera {camera.name} cannot be kept up with: {share:.0f} % of its frames dropped"


def read_status(where: MetricsUrl, interval_s: float) -> Status:
    (before, _), start = scrape(where), time.monotonic()
    time.sleep(interval_s)
    after, now = scrape(where)
    reads = _Reads(before, after, elapsed_s=max(time.monotonic() - start, 1e-9))
    build = next((dict(labels) for (name, labels) in after if name == "facewatch_build_info"), None)
    if build is None:
        raise NotFacewatch("Prometheus metrics, but no facewatch_build_info among them")
    mqtt_key = ("facewatch_mqtt_connected", ())
    return Status(
        url=where.plain,
        version=build.get("version", "?"),
        backend=build.get("backend", "?"),
        model=build.get("model") or "none (detection only)",
        uptime_s=max(0.0, now - reads.value("process_start_time_seconds")),
        mqtt="off"
        if mqtt_key not in after
        else "connected"
        if after[mqtt_key] == 1
        else "disconnected",
        spooled=int(reads.value("facewatch_mqtt_spool_events")),
        refused=reads.value("facewatch_mqtt_refused") == 1,
        enrolled=int(reads.value("facewatch_gallery_identities")),
        cameras=reads.cameras(),
        now=now,
        archive_failing=reads.value("facewatch_archive_failing") == 1,
        archive_errors=int(reads.value("facewatch_archive_failures_total", reason="error")),
    )


@dataclass(frozen=True)
class _Reads:
    """Two scrapes ``elapsed_s`` seconds apart: the later one's values, the rates between."""

    before: Samples
    after: Samples
    elapsed_s: float

    def value(self, name: str, **labels: str) -> float:
        return self.after.get((name, tuple(sorted(labels.items()))), 0.0)

    def rate(self, name: str, camera: str) -> float:
        key = (name, (("camera", camera),))
        return max(0.0, self.after.get(key, 0.0) - self.before.get(key, 0.0)) / self.elapsed_s

    def cameras(self) -> list[Camera]:
        """Each camera the daemon reads, by name."""
        names = sorted(
            {
                dict(labels).get("camera", "?")
                for (name, labels) in self.after
                if name == "facewatch_camera_up"
            }
        )
        down = {  # camera: (since, reason)
            dict(labels).get("camera", "?"): (since, dict(labels).get("reason", "?"))
            for (name, labels), since in self.after.items()
            if name == "facewatch_camera_down_since_seconds"
        }
        return [self._camera(c, down.get(c)) for c in names]

    def _camera(self, c: str, down: tuple[float, str] | None) -> Camera:
        """Camera ``c``; ``down``: since when and why it is down, if it is."""
        return Camera(
            name=c,
            up=self.value("facewatch_camera_up", camera=c) == 1,
            decoded_fps=self.rate("facewatch_frames_decoded_total", c),
            read_fps=self.rate("facewatch_frames_read_total", c),
            searched_fps=self.rate("facewatch_frames_processed_total", c),
            still_fps=self.rate("facewatch_frames_still_total", c),
            dropped_fps=self.rate("facewatch_frames_dropped_total", c),
            faces_per_s=self.rate("facewatch_faces_detected_total", c),
            reconnects=int(self.value("facewatch_camera_reconnects_total", camera=c)),
            down_since=down[0] if down is not None else None,
            down_reason=down[1] if down is not None else None,
            behind=_dropping(
                self.rate("facewatch_frames_read_total", c) * self.elapsed_s,
                self.rate("facewatch_frames_dropped_total", c) * self.elapsed_s,
            ),
        )


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min" if minutes else f"{int(seconds)} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} days"


def print_table(status: Status) -> None:
    print(f"facewatch {status.version} at {status.url}: up {_duration(status.uptime_s)}")
    print(f"  engines {status.backend}, model {status.model}, {status.enrolled} enrolled")
    mqtt = "off (mqtt.enabled: false)" if status.mqtt == "off" else status.mqtt
    print(f"  MQTT {mqtt}, {status.spooled} message(s) spooled")
    width = max([len("camera")] + [len(c.name) for c in status.cameras])
    print(
        f"  {'camera':<{width}}  state  decoded/s  read/s  searched/s  still/s  dropped/s  "
        "faces/s  reconnects"
    )
    for c in status.cameras:
        print(
            f"  {c.name:<{width}}  {'up' if c.up else 'DOWN':<5}  {c.decoded_fps:9.1f}  "
            f"{c.read_fps:6.1f}  "
            f"{c.searched_fps:10.1f}  {c.still_fps:7.1f}  {c.dropped_fps:9.1f}  "
            f"{c.faces_per_s:7.1f}  {c.reconnects:10d}"
        )
    for problem in status.problems():
        print(f"  problem: {problem}")


def metrics_url(config: Config, config_path: str) -> str:
    """Where the daemon of this config serves its metrics (ConfigError when it does not)."""
    if not config.metrics.enabled:
        raise ConfigError(
            f"{config_path}: metrics.enabled is false: the daemon serves no metrics to read "
            "its status from"
        )
    host = config.metrics.address
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    return f"http://{url_host(host)}:{config.metrics.port}/metrics"


def _status(args: argparse.Namespace) -> int:
    if args.url and args.config:
        print_error("give --config or --url, not both")
        return 2
    if not (math.isfinite(args.interval) and 0 < args.interval <= 3600):
        print_error(f"--interval {args.interval}: from above 0 to 3600 seconds")
        return 2
    config = None
    try:
        if args.url:
            request = metrics_request(args.url)
        else:
            path = args.config or str(running_config())
            config = load_config(path, secrets=False)
            request = metrics_request(metrics_url(config, path))
    except (ConfigError, ValueError) as exc:
        print_error(str(exc))
        return 2
    given = args.url if args.url is None or "://" in args.url else f"http://{args.url}"
    shown = redact_url(given) if given else request.plain
    try:
        status = read_status(request, args.interval)
    except NotFacewatch as exc:
        return _unanswered(args, shown, f"{shown} answers, but not as facewatch: {exc}")
    except OSError as exc:  # nothing there
        if isinstance(exc, TimeoutError):
            reason = f"no whole answer within {SCRAPE_TIMEOUT_S:g} s"
        else:
            reason = peer_text(f"{getattr(exc, 'strerror', None) or exc}", 200)
        problem = f"no facewatch daemon answers at {shown}: {reason}"
        return _unanswered(args, shown, f"{problem} (is it running? systemctl status facewatch)")
    if config is not None:  # (for the advice when the pipeline is behind)
        status.full_scan_every = config.detection.full_scan_every
    if args.json:
        report = {**asdict(status), "url": shown, "running": True, "problems": status.problems()}
        print(json.dumps(report, indent=1))
    else:
        print_table(status)
    return 1 if status.problems() else 0


def _unanswered(args: argparse.Namespace, shown: str, problem: str) -> int:
    print_error(problem)
    if args.json:  # a health check piping into jq still gets an answer
        print(json.dumps({"url": shown, "running": False, "problems": [problem]}, indent=1))
    return NOT_RUNNING
