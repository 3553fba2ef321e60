"""The Grafana dashboard against real data: a real Prometheus (the shipped scrape config and
alert rules) scrapes two running daemons (two nodes, each with a camera of one name), and every
query of every panel, with the dashboard's variables filled in as Grafana does, must return
data, each node's series apart and named apart in the legend."""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import urllib.error

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.services import (
    Daemon,
    Prometheus,
    Subscriber,
    daemon_settings,
    enroll,
    wait_for,
)

pytestmark = pytest.mark.slow

DASHBOARD = json.loads((REPO / "configs" / "grafana" / "facewatch.json").read_text())
CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval is for a 1 s scrape interval, rounded up


def panel_queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in DASHBOARD["panels"]
        for target in panel.get("targets", [])
    ]


def variable_query(name: str) -> str:
    variable = next(v for v in DASHBOARD["templating"]["list"] if v["name"] == name)
    return str(variable["query"])


def regex_value(values: list[str]) -> str:
    """A multi-value variable in a PromQL regex, as Grafana writes it: escaped, (a|b)."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in values]
    return "(" + "|".join(escaped) + ")"


def fill(expr: str, variables: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in variables.items():
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, f"unfilled variable in {expr}"
    return expr


def label_values(prometheus: Prometheus, query: str, variables: dict[str, str]) -> list[str]:
    """Grafana's label_values(SELECTOR, LABEL) variable query, through the series API."""
    found = re.fullmatch(r"label_values\((.+), (\w+)\)", fill(query, variables))
    assert found, query
    selector, label = found.groups()
    return sorted({series[label] for series in prometheus.api("series", **{"match[]": selector})})


def legend(template: str, labels: dict[str, str]) -> str:
    """A series' name in a panel's legend, as Grafana writes it from the legendFormat."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def range_query(prometheus: Prometheus, title: str, expr: str, start: float) -> list[float]:
    """The finite values a panel would draw for ``expr`` since ``start``."""
    try:
        data = prometheus.api("query_range", query=expr, start=start, end=time.time(), step="2s")
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"panel {title!r}: {expr}: {exc.read().decode()}") from None
    return [
        float(value)
        for series in data["result"]
        for _, value in series["values"]
        if math.isfinite(float(value))
    ]


def test_every_dashboard_query_returns_data_from_two_running_daemons(
    tmp_path, broker, test_model
) -> None:
    gallery = tmp_path / "gallery.sqlite"
    enroll(test_model, gallery, "lin-manuel-miranda")
    recognition = {"model": str(test_model), "gallery": str(gallery), "threshold": 1.0}
    stage = {"name": "stage", "url": str(CLIP), "fps": 5}
    cameras = [
        stage,
        # nothing listens there: the camera stays down and reconnects
        {"name": "yard", "url": "rtsp://127.0.0.1:9/none", "fps": 5},
    ]
    daemon = Daemon(
        tmp_path, daemon_settings(cameras, broker.port, tmp_path, recognition=recognition)
    )
    # a second node with a camera of the same name (two sites' "front-door")
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second_settings = daemon_settings([stage], broker.port, second_dir, recognition=recognition)
    second = Daemon(second_dir, {**second_settings, "node_id": "second"})
    targets = [f"127.0.0.1:{d.metrics_port}" for d in (daemon, second)]
    prometheus = Prometheus(tmp_path, targets)
    subscriber = Subscriber(broker.port, "facewatch/+/events/#")
    started = time.time()
    daemon.start()
    second.start()
    try:
        prometheus.start()
        wait_for(
            lambda: {e["node"] for e in subscriber.events()} == {"test", "second"},
            120,
            "events from both daemons",
        )
        wait_for(
            lambda: daemon.metric('facewatch_camera_reconnects_total{camera="yard"}') >= 2,
            60,
            "reconnects of the dead camera",
        )
        wait_for(
            lambda: label_values(prometheus, variable_query("node"), {}) == ["second", "test"],
            60,
            "both nodes scraped",
        )
        nodes = label_values(prometheus, variable_query("node"), {})
        assert nodes == ["second", "test"]
        instances = label_values(prometheus, variable_query("instance"), {"node": ".*"})
        assert instances == sorted(targets)
        # the hidden instance variable follows the nodes picked; the camera variable, it
        only_second = {"node": regex_value(["second"])}
        assert label_values(prometheus, variable_query("instance"), only_second) == [targets[1]]
        picked = {"node": regex_value(nodes), "instance": regex_value(instances)}
        cams = label_values(prometheus, variable_query("camera"), picked)
        assert cams == ["stage", "yard"]
        picked_second = {"instance": regex_value([targets[1]])}
        assert label_values(prometheus, variable_query("camera"), picked_second) == ["stage"]

        everything = {"instance": regex_value(instances), "camera": ".*"}  # 'All' everywhere
        selections = [{**picked, "camera": regex_value(cams)}, everything]  # each value picked

        def without_data() -> list[str]:
            return [
                f"{title}: {fill(expr, chosen)}"
                for chosen in selections
                for title, expr in panel_queries()
                if not range_query(prometheus, title, fill(expr, chosen), started)
            ]

        # the rates have data once a few scrapes came after the events (about 10 s)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not without_data(), 120, "data for every query", every_s=2)
        empty = without_data()
        assert not empty, "queries without data:\n" + "\n".join(empty)

        # each panel keeps the two nodes' "stage" cameras apart, under names of their own
        merged = []
        for panel in DASHBOARD["panels"]:
            for target in panel.get("targets", []):
                title, template = panel["title"], target["legendFormat"]
                found = prometheus.api("query", query=fill(target["expr"], everything))["result"]
                series = [r["metric"] for r in found]
                names = [legend(template, labels) for labels in series]
                if template and len(set(names)) < len(names):
                    merged.append(f"{title}: series named alike in the legend: {sorted(names)}")
                at_stage = [s.get("node") for s in series if s.get("camera") == "stage"]
                if "{{camera}}" in template and sorted(set(at_stage)) != ["second", "test"]:
                    merged.append(f"{title}: the nodes of camera stage: {at_stage}")
        assert not merged, "two nodes' cameras of one name:\n" + "\n".join(merged)

        def values(expr: str) -> dict[str, float]:
            data = prometheus.api("query", query=expr)
            return {
                json.dumps(r["metric"], sort_keys=True): float(r["value"][1])
                for r in data["result"]
            }

        up = values('max_over_time(facewatch_camera_up{camera="stage"}[5m])')
        assert list(up.values()) == [1.0, 1.0]
        assert list(values('max_over_time(facewatch_camera_up{camera="yard"}[5m])').values()) == [
            0.0
        ]
        down = [json.loads(k) for k in values("facewatch_camera_down_since_seconds")]
        assert [(d["camera"], d["reason"][:43]) for d in down] == [
            ("yard", "cannot open: nothing listens on 127.0.0.1:9")
        ], down
        # the table's "down since", as Grafana reads its date unit (milliseconds): the yard's
        # outage began after the start (it read January 1970)
        why = next(p for p in DASHBOARD["panels"] if p["title"] == "Cameras down: why")
        shown = values(fill(why["targets"][0]["expr"], everything)).values()
        assert [started - 5 < v / 1000 <= time.time() for v in shown] == [True], shown
        assert list(values("facewatch_gallery_identities").values()) == [1.0, 1.0]
        assert list(values("max_over_time(facewatch_mqtt_connected[5m])").values()) == [1.0, 1.0]

        rules = prometheus.api("rules")["groups"]
        health = {r["name"]: r["health"] for g in rules for r in g["rules"]}
        rules_file = REPO / "configs" / "prometheus" / "facewatch-alerts.yml"
        alerts = {
            r["alert"] for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"]
        }
        assert set(health) == alerts and set(health.values()) == {"ok"}, health
    finally:
        subscriber.close()
        prometheus.stop()
        second.stop()
        daemon.stop()
    for node in (daemon, second):
        assert "Traceback" not in node.log(), node.log()[-3000:]
