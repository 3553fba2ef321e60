"""The Grafana dashboard's structure: what the builder writes, what Grafana's own schema
types accept, variables, layout, and queries that only name metrics the daemon exports.
(tests/integration/test_dashboard_prometheus.py runs the queries against real data.)"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import daemon.metrics
from tests.conftest import REPO

GRAFANA = REPO / "configs" / "grafana"
DASHBOARD = json.loads((GRAFANA / "facewatch.json").read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
# Grafana's date units (dateTimeAsIso, dateTimeFromNow...) read a value as milliseconds since
# the epoch
DATE_UNIT_MS = 1000
sdk = pytest.importorskip(
    "grafana_foundation_sdk", reason="grafana-foundation-sdk is not installed (the dev extra)"
)


def _builder():  # configs/grafana/build_dashboard.py, imported from its path
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_dashboard"] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_json_is_what_the_builder_writes() -> None:
    assert (GRAFANA / "facewatch.json").read_text() == _builder().render(), (
        "run .venv/bin/python configs/grafana/build_dashboard.py and commit the result"
    )


def test_grafana_schema_types_keep_every_key() -> None:
    """Grafana's Foundation SDK decodes the JSON into its dashboard schema types; a key it
    does not know (a typo, a field of another version) would be lost on the way back."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    decoded = Dashboard.from_json(DASHBOARD)
    assert json.loads(json.dumps(decoded, cls=JSONEncoder)) == DASHBOARD


def test_variables_datasource_node_and_camera() -> None:
    """The Node variable lists node_ids (facewatch_build_info's node); the nodes picked give
    the hidden instance variable, which every query filters on, and the camera variable."""
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("node", "instance", "camera"):
        assert variables[name]["type"] == "query"
        assert variables[name]["multi"] and variables[name]["includeAll"]
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    assert [v.get("hide", 0) for v in variables.values()] == [0, 0, 2, 0]
    assert variables["node"]["label"] == "Node"
    assert variables["node"]["query"] == "label_values(facewatch_build_info, node)"
    assert variables["instance"]["query"] == (
        'label_values(facewatch_build_info{node=~"$node"}, instance)'
    )
    # "All" instances are those of the nodes picked, not ".*" (every instance)
    assert "allValue" not in variables["instance"]
    assert variables["camera"]["query"] == (
        'label_values(facewatch_camera_up{instance=~"$instance"}, camera)'
    )


def test_each_series_is_one_nodes_and_named_by_it() -> None:
    """Two nodes may each have a camera "front-door": no panel adds them together, and each
    legend names the node (its node_id, joined from facewatch_build_info) before the camera."""
    for panel in PANELS:
        for target in panel["targets"]:
            expr, legend = target["expr"], target["legendFormat"]
            for kept in re.findall(r"\b(?:sum|max|min|avg|count) by \(([^)]*)\)", expr):
                assert {"instance", "job"} <= set(kept.split(", ")), (panel["title"], expr)
            assert re.search(r"\b(sum|max|min|avg|count)\s*\(", expr) is None, panel["title"]
            assert expr.endswith(
                ") * on (instance, job) group_left(node) max by (instance, job, node) "
                '(facewatch_build_info{instance=~"$instance"})'
            ), panel["title"]
            if panel["type"] != "table":
                assert legend.startswith("{{node}} ") or legend == "{{node}}", panel["title"]


def test_layout_ids_and_datasources() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not cells & area, f"panel {panel['title']!r} overlaps another"
        cells |= area
    for panel in PANELS:
        assert panel["description"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_queries_name_only_exported_metrics_and_honour_the_variables() -> None:
    families = [v for v in vars(daemon.metrics).values() if isinstance(v, MetricWrapperBase)]
    suffixes = {"counter": ["_total"], "info": ["_info"], "gauge": [""],
                "histogram": ["_bucket", "_sum", "_count"]}  # fmt: skip
    exported = {"process_cpu_seconds_total", "process_resident_memory_bytes"}
    per_camera = set()
    for family in families:
        (described,) = family.describe()
        names = {described.name + suffix for suffix in suffixes[described.type]}
        exported |= names
        if "camera" in family._labelnames:  # no public accessor for a family's labels
            per_camera |= names
    titles = set()
    for panel in PANELS:
        titles.add(panel["title"])
        for target in panel["targets"]:
            expr = target["expr"]
            names = set(re.findall(r"\b((?:facewatch|process)_\w+)", expr))
            assert names and names <= exported, f"{panel['title']}: {names - exported}"
            assert 'instance=~"$instance"' in expr, panel["title"]
            if names & per_camera:
                assert 'camera=~"$camera"' in expr, panel["title"]
    for wanted in (
        "Camera up", "Disconnects and reconnection attempts", "Frames per second",
        "Stage latency per batch", "Batch size", "Faces per second", "Recognitions per second",
        "Unknown faces", "Frame to event latency", "MQTT publications", "Spool depth", "CPU",
        "Memory",
    ):  # fmt: skip
        assert wanted in titles


def test_no_panel_changes_magnitude_with_the_zoom() -> None:
    """Grafana widens $__rate_interval as the time range grows (1 min at 1 h, about 10 min
    at 7 days): an increase() over it read 2 reconnection attempts at one zoom and 20 at
    another for the same outage. Counts are rates, per second or per minute as the unit
    says."""
    for panel in PANELS:
        for target in panel["targets"]:
            windows = re.findall(r"\bincrease\([^\[]*\[([^\]]*)\]", target["expr"])
            assert not [w for w in windows if w.startswith("$__")], (panel["title"], windows)
    panel = next(p for p in PANELS if p["title"] == "Disconnects and reconnection attempts")
    assert panel["fieldConfig"]["defaults"]["unit"] == "cpm"  # Grafana's counts per minute
    assert all(t["expr"].startswith("(rate(") for t in panel["targets"])
    assert all(") * 60) * on (instance, job)" in t["expr"] for t in panel["targets"])


def test_provisioning_files() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources.yaml").read_text())
    assert datasources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards.yaml").read_text())
    assert providers["providers"][0]["type"] == "file"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_a_cameras_down_since_is_shown_as_the_time_the_outage_began(tmp_path) -> None:
    """facewatch_camera_down_since_seconds is Unix seconds; the table's date unit reads
    milliseconds. promtool evaluates the panel's query as Prometheus would: what Grafana then
    shows is the outage's start (it said January 1970, '57 years ago', for every outage)."""
    panel = next(p for p in PANELS if p["title"] == "Cameras down: why")
    assert panel["fieldConfig"]["defaults"]["unit"].startswith("dateTime")
    (target,) = panel["targets"]
    expr = target["expr"].replace("$instance", ".*").replace("$camera", ".*")
    began = 1_796_093_347.0  # 2026-12-01 02:49:07 UTC, as the daemon exports it
    reason = "cannot open: connection refused"
    labels = f'job="facewatch", instance="box:9708", camera="gate", reason="{reason}"'
    build = 'job="facewatch", instance="box:9708", node="garage-box", version="1.0"'
    case = {
        "rule_files": [],
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"facewatch_build_info{{{build}}}", "values": "1x5"},
                    {
                        "series": f"facewatch_camera_down_since_seconds{{{labels}}}",
                        "values": f"{began:.0f}x5",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "2m",
                        "exp_samples": [
                            {
                                "labels": f'{{{labels}, node="garage-box"}}',
                                "value": began * DATE_UNIT_MS,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "panel.test.yml").write_text(yaml.safe_dump(case))
    result = subprocess.run(
        ["promtool", "test", "rules", "panel.test.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
