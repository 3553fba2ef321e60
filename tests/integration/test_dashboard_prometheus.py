"""The Grafana dashboard against real data: a real Prometheus (the shipped scrape config and
alert rules) scrapes the running daemon, and every query of every panel, with the dashboard's
variables filled in as Grafana does, must return data."""

from __future__ import annotations

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


def test_every_dashboard_query_returns_data_from_the_running_daemon(
    tmp_path, broker, test_model
) -> None:
    gallery = tmp_path / "gallery.sqlite"
    enroll(test_model, gallery, "lin-manuel-miranda")
    cameras = [
        {"name": "stage", "url": str(CLIP), "fps": 5},
        # nothing listens there: the camera stays down and reconnects
        {"name": "yard", "url": "rtsp://127.0.0.1:9/none", "fps": 5},
    ]
    settings = daemon_settings(
        cameras,
        broker.port,
        tmp_path,
        recognition={"model": str(test_model), "gallery": str(gallery), "threshold": 1.0},
    )
    daemon = Daemon(tmp_path, settings)
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{daemon.metrics_port}"])
    subscriber = Subscriber(broker.port, "facewatch/test/events/#")
    started = time.time()
    daemon.start()
    try:
        prometheus.start()
        wait_for(lambda: len(subscriber.events()) >= 3, 120, "events from the daemon")
        wait_for(
            lambda: daemon.metric('facewatch_camera_reconnects_total{camera="yard"}') >= 2,
            60,
            "reconnects of the dead camera",
        )
        time.sleep(12)  # a few rate windows of scrapes after the events

        nodes = label_values(prometheus, variable_query("instance"), {})
        assert nodes == [f"127.0.0.1:{daemon.metrics_port}"]
        picked = {"instance": regex_value(nodes)}
        cams = label_values(prometheus, variable_query("camera"), picked)
        assert cams == ["stage", "yard"]

        selections = [
            {**picked, "camera": regex_value(cams)},  # each value picked
            {"instance": ".*", "camera": ".*"},  # 'All' (the variables' allValue)
        ]
        empty = [
            f"{title}: {fill(expr, chosen)}"
            for chosen in selections
            for title, expr in panel_queries()
            if not range_query(prometheus, title, fill(expr, chosen), started)
        ]
        assert not empty, "queries without data:\n" + "\n".join(empty)

        def values(expr: str) -> dict[str, float]:
            data = prometheus.api("query", query=expr)
            return {
                json.dumps(r["metric"], sort_keys=True): float(r["value"][1])
                for r in data["result"]
            }

        up = values('max_over_time(facewatch_camera_up{camera="stage"}[5m])')
        assert list(up.values()) == [1.0]
        assert list(values('max_over_time(facewatch_camera_up{camera="yard"}[5m])').values()) == [
            0.0
        ]
        down = [json.loads(k) for k in values("facewatch_camera_down_since_seconds")]
        assert [(d["camera"], d["reason"][:43]) for d in down] == [
            ("yard", "cannot open: nothing listens on 127.0.0.1:9")
        ], down
        assert list(values("facewatch_gallery_identities").values()) == [1.0]
        assert list(values("max_over_time(facewatch_mqtt_connected[5m])").values()) == [1.0]

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
        daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]
