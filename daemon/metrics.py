"""Every Prometheus instrument of the daemon, in one place (``facewatch_*``, units in names).

The default registry also carries the client's process collector (CPU seconds, resident
memory, open files) and the Python GC collector.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
from collections.abc import Iterable

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)

from daemon import build_version
from daemon.config_file import url_host

logger = logging.getLogger(__name__)

# No `_created` series (the client's default: one more gauge for each counter and histogram
# series, the time it was first incremented). Nothing reads them, and
# facewatch_recognitions_created{identity=NAME} kept a person's name, with when a camera first
# saw them, after "Forgetting a person" deleted facewatch_recognitions_total's.
disable_created_metrics()

# from 0.1 ms: match and track take about 0.2 ms a batch, and detect and embed on a GPU a few
# ms (with a first bucket of 5 ms, their p50 read 2.5 ms whatever they took)
_STAGE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
# up to an hour: events spooled while the broker was away are observed when it is back, with
# their real delay (ending at 10 s, the p99 of events 2.5 minutes late read 10 s)
_EVENT_BUCKETS = (
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip

BUILD = Info(
    "facewatch_build",
    "facewatch version and runtime, and the node (node_id) whose metrics these are: dashboards "
    "and alerts join it on instance to name the node",
)
_BUILD_FIELDS: dict[str, str] = {}  # BUILD's, kept to change the model once it is loaded
READY = Gauge(
    "facewatch_ready",
    "1 once the engines are warm and the cameras are read; 0 while the daemon starts (a first "
    "start that builds TensorRT plans: minutes)",
)

CAMERA_UP = Gauge(
    "facewatch_camera_up",
    "1 while the camera delivers frames with a picture (not all black or never changing)",
    ["camera"],
)
CAMERA_DOWN_SINCE = Gauge(
    "facewatch_camera_down_since_seconds",
    "while a camera is down: since when (Unix time), and why in 'reason' (the log's words); "
    "one series per camera, none while it is up",
    ["camera", "reason"],
)
CAMERA_RECONNECTS = Counter(
    "facewatch_camera_reconnects_total",
    "reconnection attempts after a failure: every retry, so a camera that stays down adds "
    "about 2 a minute (facewatch_camera_disconnects_total counts the times it was lost)",
    ["camera"],
)
CAMERA_DISCONNECTS = Counter(
    "facewatch_camera_disconnects_total",
    "times a camera that delivered frames stopped (its stream ended, stalled or failed: up to "
    "down); one for a camera that then stays down, however often it is retried",
    ["camera"],
)
FRAMES_DECODED = Counter(
    "facewatch_frames_decoded_total",
    "frames the camera's stream delivered (decoded), before the camera's fps keeps some",
    ["camera"],
)
FRAMES_READ = Counter(
    "facewatch_frames_read_total", "frames decoded and kept after fps decimation", ["camera"]
)
FRAMES_PROCESSED = Counter(
    "facewatch_frames_processed_total", "frames that went through detection", ["camera"]
)
# the share of a camera's frames dropped that is too many: the pipeline cannot keep up (the
# log, `facewatch status` and the alert FacewatchFrameDropsHigh say so past it)
DROPS_HIGH = 0.2


def drops_advice(kept_up_fps: float, cameras: int, full_scan_every: int | None) -> str:
    """What to do about a pipeline that cannot keep up with its cameras (the log and
    ``facewatch status`` say it), sized by the frames a second it took from all ``cameras``
    (0: not known): each camera's ``fps`` at most its share of them. The decoding of each
    stream costs the CPU too. ``detection.full_scan_every`` is suggested only where it is 1
    (None: not known)."""
    if kept_up_fps > 0:
        share = min(60.0, max(0.1, math.floor(10 * kept_up_fps / cameras) / 10))  # (fps's range)
        each = f" for each of the {cameras} cameras" if cameras > 1 else ""
        said = (
            f"it handles {kept_up_fps:.1f} frames/s in all: set cameras[].fps to at most "
            f"{share:g}{each}"
        )
    else:
        said = "lower cameras[].fps"
    said += (
        " (and the camera's own stream to that frame rate, or use its sub-stream: decoding "
        "a full stream costs CPU too)"
    )
    if full_scan_every is None:
        said += ", set detection.full_scan_every: 5 where it is 1"
    elif full_scan_every <= 1:
        said += ", set detection.full_scan_every: 5"
    return said + ", or move to a GPU"


FRAMES_DROPPED = Counter(
    "facewatch_frames_dropped_total",
    "frames dropped because the pipeline was behind (newest frames are kept)",
    ["camera"],
)
FRAMES_STILL = Counter(
    "facewatch_frames_still_total",
    "frames the motion gate kept from the detector: nothing moved and no face was in view "
    "(detection.motion)",
    ["camera"],
)
FRAMES_BRIGHTENED = Counter(
    "facewatch_frames_brightened_total",
    "dark frames (a night camera short of gain) whose levels were stretched before detection "
    "(cameras[].brighten_dark)",
    ["camera"],
)
SCENE_CUTS = Counter(
    "facewatch_scene_cuts_total",
    "scene cuts: frames whose picture cut to another scene (nearly every part unlike the "
    "camera's frame before, and the next frame alike), where the camera's tracks ended "
    "(left, reason cut; tracking.end_at_scene_cuts)",
    ["camera"],
)
FRAMES_REFUSED = Counter(
    "facewatch_frames_refused_total",
    "frames skipped because the engines cannot take their size (larger than the TensorRT "
    "plan was built for: engines.tensorrt.camera_sizes; the log names the size)",
    ["camera"],
)
STAGE_SECONDS = Histogram(
    "facewatch_stage_seconds",
    "time per batch in each stage: detect, embed, match, track, archive (with archive.dir)",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
BATCH_FRAMES = Histogram(
    "facewatch_batch_frames", "frames per detection batch", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32)
)
FACES_DETECTED = Counter(
    "facewatch_faces_detected_total", "faces found (those then ignored included)", ["camera"]
)
FACES_IGNORED = Counter(
    "facewatch_faces_ignored_total",
    "faces dropped: their centre lies in one of the camera's detection.ignore regions",
    ["camera"],
)
FACES_EMBEDDED = Counter("facewatch_faces_embedded_total", "faces run through FaceNet", ["camera"])
FACES_TOO_SMALL = Counter(
    "facewatch_faces_too_small_total",
    "faces due a recognition but smaller than recognition.min_face_px: not matched, no vote",
    ["camera"],
)
FACES_TURNED = Counter(
    "facewatch_faces_turned_total",
    "faces of announced tracks due a recognition but turned further than "
    "recognition.max_turn: not matched, no vote",
    ["camera"],
)
RECOGNITIONS = Counter(
    "facewatch_recognitions_total",
    "recognised faces by identity ('unknown' for faces matching nobody; 'known' for everyone "
    "else with metrics.identities off)",
    ["camera", "identity"],
)
EVENTS = Counter("facewatch_events_total", "identity events emitted", ["camera", "type"])
EVENT_LATENCY = Histogram(
    "facewatch_frame_to_event_seconds",
    "from frame capture to the event's publication (the events of a frame: not 'left' nor a "
    "'confirmed' sent as its track leaves, which wait tracking.lost_after_s by design, nor "
    "those of a gallery change)",
    buckets=_EVENT_BUCKETS,
)
MQTT_CONNECTED = Gauge(  # exported only by a daemon that uses MQTT (init)
    "facewatch_mqtt_connected", "1 while connected to the broker", registry=None
)
MQTT_PUBLISHES = Counter(
    "facewatch_mqtt_publishes_total",
    "MQTT publications by outcome: ok, failed (retried), dropped (spool full, a spooled "
    "message that cannot be read or published, or spooled for another node and refused), "
    "direct (sent "
    "without the spool, whose disk refused them), refused (by the broker's ACL: kept in the "
    "spool, retried)",
    ["outcome"],
)
MQTT_REFUSED = Gauge(
    "facewatch_mqtt_refused",
    "1 while the broker refuses the spool's next message (its ACL; MQTT 5): the spool waits",
)
SPOOL_EVENTS = Gauge(  # (named before snapshots were spooled: a rename breaks dashboards)
    "facewatch_mqtt_spool_events",
    "messages waiting in the on-disk spool: events, and their face snapshots with "
    "tracking.snapshots (two messages an event)",
)
EVENT_OUTPUT_FAILURES = Counter(
    "facewatch_event_output_failures_total",
    "events an output could not take (lost there): spool (its disk full or read-only), "
    "stdout, jsonl_file",
    ["output"],
)
UNCLEAN_STOPS = Counter(  # exported only under the systemd unit (export_unclean_stops)
    "facewatch_unclean_stops_total",
    "runs of this daemon that ended without a clean stop (a crash, a watchdog kill, an exit "
    "with an error, the power), counted at the next start from a file in systemd's state "
    "folder: a systemctl restart or stop is not one",
    registry=None,
)
GALLERY_IDENTITIES = Gauge("facewatch_gallery_identities", "people enrolled in the gallery")
ARCHIVE_VISITS = Counter(
    "facewatch_archive_visits_total", "visits written to the face archive", ["camera"]
)
ARCHIVE_FAILURES = Counter(
    "facewatch_archive_failures_total",
    "face archive failures: behind (visits dropped: too many waiting for the disk), error (the "
    "disk refused to write, read or delete), internal (anything else: see the log)",
    ["reason"],
)
ARCHIVE_FAILING = Gauge(
    "facewatch_archive_failing",
    "1 while the disk refuses the face archive's writer (from a failure until the same step, "
    "writing a visit, deleting old ones, works again)",
)
ARCHIVE_BYTES = Gauge("facewatch_archive_bytes", "size of the face archive on disk")
ARCHIVE_PRUNED = Counter(
    "facewatch_archive_pruned_total",
    "old visits the face archive deleted: size (over archive.max_mb), age (archive.keep_days)",
    ["reason"],
)

for _outcome in ("ok", "failed", "dropped", "direct", "refused"):
    MQTT_PUBLISHES.labels(_outcome)
for _reason in ("behind", "error", "internal"):
    ARCHIVE_FAILURES.labels(_reason)
for _reason in ("size", "age"):
    ARCHIVE_PRUNED.labels(_reason)


def init(node: str, cameras: list[str], backend: str, model_id: str, mqtt: bool = True) -> None:
    """Create the per-camera series at zero, so dashboards see them before the first frame.
    The node (node_id) is a label of ``facewatch_build_info`` only: one series names it, and
    every other series stays as it was. Without ``mqtt``, there is no
    ``facewatch_mqtt_connected`` (rather than a 0 that would say the broker is down)."""
    with contextlib.suppress(KeyError):  # KeyError: not exported yet
        REGISTRY.unregister(MQTT_CONNECTED)
    if mqtt:
        MQTT_CONNECTED.set(0)
        REGISTRY.register(MQTT_CONNECTED)
    READY.set(0)
    _BUILD_FIELDS.update(
        version=build_version(),
        python=platform.python_version(),
        backend=backend,
        model=model_id,
        node=node,
    )
    BUILD.info(_BUILD_FIELDS)
    for camera in cameras:
        for family in (
            CAMERA_RECONNECTS,
            CAMERA_DISCONNECTS,
            FRAMES_DECODED,
            FRAMES_READ,
            FRAMES_PROCESSED,
            FRAMES_DROPPED,
            FRAMES_REFUSED,
            FRAMES_STILL,
            FRAMES_BRIGHTENED,
            SCENE_CUTS,
            FACES_DETECTED,
            FACES_IGNORED,
            FACES_EMBEDDED,
            FACES_TOO_SMALL,
            FACES_TURNED,
        ):
            family.labels(camera)
        ARCHIVE_VISITS.labels(camera)
        CAMERA_UP.labels(camera).set(0)
        RECOGNITIONS.labels(camera, "unknown")
    for stage in ("detect", "embed", "match", "track"):
        STAGE_SECONDS.labels(stage)


def export_unclean_stops(count: int | None) -> None:
    """Export ``facewatch_unclean_stops_total`` at ``count``, the runs before this one that
    did not stop cleanly (``daemon.run_state``); None: not exported (the alert then counts
    the daemon's starts)."""
    with contextlib.suppress(KeyError):  # KeyError: not exported yet
        REGISTRY.unregister(UNCLEAN_STOPS)
    if count is None:
        return
    UNCLEAN_STOPS.reset()
    UNCLEAN_STOPS.inc(count)
    REGISTRY.register(UNCLEAN_STOPS)


def set_model(model_id: str) -> None:
    """The FaceNet model in ``facewatch_build_info``, once the engines are loaded."""
    _BUILD_FIELDS["model"] = model_id
    BUILD.info(_BUILD_FIELDS)


def serve(address: str, port: int) -> None:
    """Serve /metrics; a port in use is a clear error."""
    try:
        start_http_server(port, addr=address)
    except OSError as exc:
        where = f"{url_host(address)}:{port}"
        raise OSError(f"metrics: cannot listen on {where}: {exc.strerror or exc}") from exc
    logger.info("metrics on http://%s:%d/metrics", url_host(address), port)


def forget_identity(name: str, cameras: Iterable[str]) -> None:
    """Remove a person's series (removed from the gallery: no longer named here)."""
    for camera in cameras:
        with contextlib.suppress(KeyError):  # never seen by that camera
            RECOGNITIONS.remove(camera, name)
