"""Builds configs/grafana/facewatch.json with Grafana's Foundation SDK (the `dev` extra).

Edit the panels here, then run:  .venv/bin/python configs/grafana/build_dashboard.py
tests/unit/test_dashboard.py fails while the committed JSON differs from what this writes;
tests/integration/test_dashboard_prometheus.py runs every query against a Prometheus scraping two
daemons (two nodes with a camera of one name: each panel must keep them apart).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    VariableHide,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).with_name("facewatch.json")
UID = "facewatch-daemon"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# label filters every query carries: the node(s) and camera(s) picked at the top (the node
# variable picks node_ids; the hidden instance variable holds their instances)
NODE = 'instance=~"$instance"'
CAM = f'{NODE}, camera=~"$camera"'
RATE = "[$__rate_interval]"
# what every sum keeps: one series per node (two nodes' cameras may share a name), and the
# labels the node's name is joined on
BY = "instance, job"
# facewatch_build_info is 1 and names the node (its node_id); max: one series a node even when
# an old version's or model's series is still there (a Prometheus restarted just then)
NODE_NAME = f"on ({BY}) group_left(node) max by ({BY}, node) (facewatch_build_info{{{NODE}}})"

# a camera's legend: two nodes may each have a camera of that name
CAMERA = "{{node}} {{camera}}"

Panel = timeseries.Panel | stat.Panel | statetimeline.Panel | table.Panel


def named(expr: str) -> str:
    """``expr``'s series, each with the label ``node``: its daemon's node_id."""
    return f"({expr}) * {NODE_NAME}"


def query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    )


def with_queries(panel: Panel, title: str, help_text: str, *queries: tuple[str, str]) -> Panel:
    panel.title(title).description(help_text).datasource(DATASOURCE)
    for index, (expr, legend) in enumerate(queries):
        panel.with_target(query(expr, legend, chr(ord("A") + index)))
    return panel


def graph(title: str, unit: str, help_text: str, *queries: tuple[str, str]) -> Panel:
    panel = timeseries.Panel().unit(unit).min(0).height(8).span(12)
    return with_queries(panel, title, help_text, *queries)


def state(title: str, help_text: str, *queries: tuple[str, str]) -> Panel:
    panel = statetimeline.Panel().min(0).max(1).height(6).span(12)
    return with_queries(panel, title, help_text, *queries)


def quantiles(metric: str, by: str, legend: str) -> list[tuple[str, str]]:
    """p50 and p99 of a histogram, per node."""
    selector = f"{metric}_bucket{{{NODE}}}"
    return [
        (
            named(f"histogram_quantile({q}, sum by ({BY}, le{by}) (rate({selector}{RATE})))"),
            f"{{{{node}}}} {legend} p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    ]


def process(metric: str) -> str:
    """A process_* series of the facewatch nodes only (other jobs export the same names):
    the join on facewatch_build_info keeps those it names."""
    return named(metric)


def why_down() -> Panel:
    """The cameras down now: since when, and why (the daemon's words)."""
    panel = table.Panel().unit("dateTimeFromNow").height(6).span(12)
    panel.title("Cameras down: why").datasource(DATASOURCE).description(
        "Each camera that is down now, since when, and why: the reason the daemon logs "
        "(facewatch_camera_down_since_seconds). Empty while every camera is up."
    )
    # Grafana's date units read milliseconds since the epoch; the daemon exports seconds
    # (read as they are, every outage began in January 1970)
    panel.with_target(
        query(named(f"facewatch_camera_down_since_seconds{{{CAM}}} * 1000"), "", "A")
        .instant()
        .format(PromQueryFormat.TABLE)
    )
    hidden = {"Time": True, "__name__": True, "job": True}
    options = {"excludeByName": hidden, "renameByName": {"Value": "down since"}}
    return panel.with_transformation(DataTransformerConfig(id_val="organize", options=options))


def cameras_row() -> list[Panel]:
    return [
        state(
            "Camera up",
            "1 while the camera delivers frames (facewatch_camera_up).",
            (named(f"facewatch_camera_up{{{CAM}}}"), CAMERA),
        ),
        why_down(),
        graph(
            "Disconnects and reconnection attempts",
            "cpm",  # a rate: an increase over $__rate_interval grew with the zoom
            "Per camera, per minute: the times a camera that delivered frames was lost (lost; "
            "FacewatchCameraFlapping fires past 6 in 30 minutes), and the attempts to "
            "reconnect (every retry: about 2 a minute while a camera stays down).",
            (
                named(f"rate(facewatch_camera_disconnects_total{{{CAM}}}{RATE}) * 60"),
                f"{CAMERA} lost",
            ),
            (
                named(f"rate(facewatch_camera_reconnects_total{{{CAM}}}{RATE}) * 60"),
                f"{CAMERA} attempts",
            ),
        ),
        graph(
            "Frames per second",
            "short",
            "Frames kept after fps decimation (read), through detection (processed), "
            "kept from detection by the motion gate (still: nothing moved, no face in view), "
            "dropped because the pipeline was behind, and refused because they are larger "
            "than the TensorRT plan takes (engines.tensorrt.camera_sizes).",
            (named(f"rate(facewatch_frames_read_total{{{CAM}}}{RATE})"), f"{CAMERA} read"),
            (
                named(f"rate(facewatch_frames_processed_total{{{CAM}}}{RATE})"),
                f"{CAMERA} processed",
            ),
            (named(f"rate(facewatch_frames_still_total{{{CAM}}}{RATE})"), f"{CAMERA} still"),
            (named(f"rate(facewatch_frames_dropped_total{{{CAM}}}{RATE})"), f"{CAMERA} dropped"),
            (named(f"rate(facewatch_frames_refused_total{{{CAM}}}{RATE})"), f"{CAMERA} refused"),
        ),
        graph(
            "Dropped frames",
            "percentunit",
            "Share of the frames read that were dropped (newest frames are kept).",
            (
                named(
                    f"rate(facewatch_frames_dropped_total{{{CAM}}}{RATE}) / "
                    f"clamp_min(rate(facewatch_frames_read_total{{{CAM}}}{RATE}), 1e-9)"
                ),
                CAMERA,
            ),
        ),
    ]


def pipeline_row() -> list[Panel]:
    return [
        graph(
            "Stage latency per batch",
            "s",
            "Time per batch in detect, embed, match and track (p50, p99).",
            *quantiles("facewatch_stage_seconds", ", stage", "{{stage}}"),
        ),
        graph(
            "Frame to event latency",
            "s",
            "From frame capture to the event's publication ('left' events excluded); events "
            "spooled while the broker was away count with their delay (minutes) once it is back.",
            *quantiles("facewatch_frame_to_event_seconds", "", "frame→event"),
        ),
        graph(
            "Batch size",
            "short",
            "Frames per detection batch, across each node's cameras.",
            (
                named(
                    f"sum by ({BY}) (rate(facewatch_batch_frames_sum{{{NODE}}}{RATE})) / "
                    f"sum by ({BY}) (rate(facewatch_batch_frames_count{{{NODE}}}{RATE}))"
                ),
                "{{node}} mean",
            ),
            *quantiles("facewatch_batch_frames", "", "frames")[1:],
        ),
        graph(
            "Faces per second",
            "short",
            "Faces found by MTCNN, faces dropped in the camera's ignore regions, faces too "
            "small to recognise (under recognition.min_face_px: named nobody), faces turned "
            "too far to recognise (past recognition.max_turn: no vote), and faces run through "
            "FaceNet, per camera.",
            (named(f"rate(facewatch_faces_detected_total{{{CAM}}}{RATE})"), f"{CAMERA} detected"),
            (named(f"rate(facewatch_faces_ignored_total{{{CAM}}}{RATE})"), f"{CAMERA} ignored"),
            (named(f"rate(facewatch_faces_too_small_total{{{CAM}}}{RATE})"), f"{CAMERA} too small"),
            (named(f"rate(facewatch_faces_turned_total{{{CAM}}}{RATE})"), f"{CAMERA} turned"),
            (named(f"rate(facewatch_faces_embedded_total{{{CAM}}}{RATE})"), f"{CAMERA} embedded"),
        ),
    ]


def recognition_row() -> list[Panel]:
    recognitions = f"facewatch_recognitions_total{{{CAM}}}"
    unknown = f'facewatch_recognitions_total{{{CAM}, identity="unknown"}}'
    return [
        graph(
            "Recognitions per second",
            "short",
            "Recognised faces by camera and identity ('unknown' matches nobody).",
            (
                named(f"sum by ({BY}, camera, identity) (rate({recognitions}{RATE}))"),
                f"{CAMERA} {{{{identity}}}}",
            ),
        ),
        graph(
            "Unknown faces",
            "percentunit",
            "Share of the recognitions that matched nobody in the gallery.",
            (
                named(
                    f"sum by ({BY}, camera) (rate({unknown}{RATE})) / "
                    f"sum by ({BY}, camera) (rate({recognitions}{RATE}))"
                ),
                CAMERA,
            ),
        ),
        graph(
            "Events per second",
            "short",
            "Identity events by type: confirmed, identified, changed, left.",
            (
                named(f"sum by ({BY}, camera, type) (rate(facewatch_events_total{{{CAM}}}{RATE}))"),
                f"{CAMERA} {{{{type}}}}",
            ),
        ),
        with_queries(
            stat.Panel().height(8).span(12),
            "Enrolled people",
            "Identities in the gallery (re-read within 2 s of a change).",
            (named(f"facewatch_gallery_identities{{{NODE}}}"), "{{node}}"),
        ),
        graph(
            "Face archive",
            "short",
            "Visits written to the face archive per minute, and visits not written (behind: "
            "the disk is too slow; error: the disk refused). Empty without archive.dir.",
            (
                named(
                    f"sum by ({BY}, camera) (rate(facewatch_archive_visits_total{{{CAM}}}{RATE}))"
                    " * 60"
                ),
                f"{CAMERA} written",
            ),
            (
                named(
                    f"sum by ({BY}, reason) (rate(facewatch_archive_failures_total{{{NODE}}}{RATE}))"
                    " * 60"
                ),
                "{{node}} not written: {{reason}}",
            ),
        ),
    ]


def mqtt_row() -> list[Panel]:
    return [
        state(
            "MQTT connected, refused",
            "connected: 1 while connected to the broker; events spool on disk while it is 0. "
            "refused: 1 while the broker's ACL refuses the events (MQTT 5): connected, but they "
            "wait in the spool and no subscriber gets them.",
            (named(f"facewatch_mqtt_connected{{{NODE}}}"), "{{node}} connected"),
            (named(f"facewatch_mqtt_refused{{{NODE}}}"), "{{node}} refused"),
        ),
        graph(
            "Spool depth",
            "short",
            "Events waiting in the on-disk spool for the broker.",
            (named(f"facewatch_mqtt_spool_events{{{NODE}}}"), "{{node}}"),
        ),
        graph(
            "MQTT publications",
            "short",
            "Publications per second by outcome: ok, failed (retried), dropped (spool full, a "
            "damaged spooled message, another node's the broker refuses), direct (the spool's "
            "disk refused them), refused (ACL: kept, offered again).",
            (
                named(
                    f"sum by ({BY}, outcome) (rate(facewatch_mqtt_publishes_total{{{NODE}}}{RATE}))"
                ),
                "{{node}} {{outcome}}",
            ),
        ),
    ]


def process_row() -> list[Panel]:
    return [
        graph(
            "CPU",
            "percentunit",
            "CPU time of the daemon process (1 = one core busy).",
            (process(f"rate(process_cpu_seconds_total{RATE})"), "{{node}}"),
        ),
        graph(
            "Memory",
            "bytes",
            "Resident memory of the daemon process.",
            (process("process_resident_memory_bytes"), "{{node}}"),
        ),
    ]


def variables() -> list[db.DatasourceVariable | db.QueryVariable]:
    def labels(name: str, label: str, query_text: str) -> db.QueryVariable:
        return (
            db.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(query_text)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .current(VariableOption(selected=True, text="All", value="$__all"))
        )

    # The instances of the nodes picked, hidden: the queries filter on it, as only
    # facewatch_build_info names the node. Without an allValue, its "All" is each of them
    # (a|b), where ".*" would be every instance whatever the nodes picked.
    instances = labels(
        "instance", "Instance", 'label_values(facewatch_build_info{node=~"$node"}, instance)'
    ).hide(VariableHide.HIDE_VARIABLE)
    return [
        db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        labels("node", "Node", "label_values(facewatch_build_info, node)").all_value(".*"),
        instances,
        labels(
            "camera", "Camera", f"label_values(facewatch_camera_up{{{NODE}}}, camera)"
        ).all_value(".*"),
    ]


def build() -> db.Dashboard:
    board = (
        db.Dashboard("facewatch")
        .uid(UID)
        .description("The facewatch daemon: cameras, pipeline, recognition, MQTT, process.")
        .tags(["facewatch", "face-recognition"])
        .refresh("30s")
        .time("now-1h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .variables(variables())  # type: ignore[arg-type]
    )
    rows = [
        ("Cameras", cameras_row()),
        ("Pipeline", pipeline_row()),
        ("Recognition", recognition_row()),
        ("MQTT", mqtt_row()),
        ("Process", process_row()),
    ]
    ids = iter(range(1, 100))
    for title, panels in rows:
        board.with_row(db.Row(title).id(next(ids)))
        for panel in panels:
            board.with_panel(panel.id(next(ids)))
    return board


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
