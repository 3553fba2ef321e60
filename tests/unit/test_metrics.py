"""The Prometheus metrics (daemon.metrics): labels, the listener, forgotten people, latency
buckets; the operations guide's metric table, every per-camera series from the start."""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from daemon import metrics
from tests.conftest import REPO


def test_the_node_id_is_a_label_of_build_info_alone() -> None:
    """One Prometheus scraping two nodes tells them apart by node_id: facewatch_build_info
    names it (the dashboard and the alerts join it on instance), also once the model is
    known, and no other series gets a label more."""
    from prometheus_client import generate_latest

    from daemon import metrics

    metrics.init("site-a", ["front-door"], "openvino", "", mqtt=False)
    metrics.set_model("facenet-x")
    lines = generate_latest().decode().splitlines()
    (build,) = [line for line in lines if line.startswith("facewatch_build_info{")]
    assert 'node="site-a"' in build and 'model="facenet-x"' in build, build
    assert [line for line in lines if "node=" in line] == [build]


def test_metrics_at_an_ipv6_address_it_cannot_listen_on_are_named_in_brackets(
    ipv6_loopback,
) -> None:
    """metrics.address "::1" on a port in use said 'cannot listen on ::1:PORT'; the address
    is written as in the URL the log gives when it listens, [::1]:PORT."""
    from daemon import metrics

    with socket.create_server((ipv6_loopback, 0), family=socket.AF_INET6) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"^metrics: cannot listen on \[::1\]:{port}: "):
            metrics.serve("::1", port)


def test_metrics_name_a_forgotten_person_nowhere() -> None:
    """/metrics carries no `_created` series: facewatch_recognitions_created{identity=NAME}
    (the client's default) kept the person's name in Prometheus after the deletion that
    "Forgetting a person" gives, which matches facewatch_recognitions_total alone. Once
    forgotten, no line of /metrics names them."""
    from prometheus_client import generate_latest

    from daemon import metrics

    metrics.init("site-a", ["front-door"], "openvino", "", mqtt=False)
    metrics.RECOGNITIONS.labels("front-door", "Ada Lovelace").inc()
    metrics.EVENT_LATENCY.observe(0.2)
    text = generate_latest().decode()
    assert "_created" not in text
    named = [line for line in text.splitlines() if "Ada Lovelace" in line]
    assert named == [
        'facewatch_recognitions_total{camera="front-door",identity="Ada Lovelace"} 1.0'
    ]
    metrics.forget_identity("Ada Lovelace", ["front-door"])
    assert "Ada Lovelace" not in generate_latest().decode()


def _quantile_shown(q: float, name: str, labels: dict, observe: Callable[[], object]) -> float:
    """The dashboard's histogram_quantile(q, ...) over what ``observe`` adds to the histogram
    ``name`` (its buckets' increase), interpolated within a bucket as Prometheus does."""

    def buckets() -> list[tuple[float, float]]:
        return [
            (float(s.labels["le"]), s.value)
            for family in REGISTRY.collect()
            for s in family.samples
            if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    before = dict(buckets())
    observe()
    counts = [(le, count - before.get(le, 0.0)) for le, count in buckets()]
    rank = q * counts[-1][1]
    lower, below = 0.0, 0.0
    for le, count in counts:
        if count >= rank:
            return (
                lower if math.isinf(le) else lower + (le - lower) * (rank - below) / (count - below)
            )
        lower, below = le, count
    raise AssertionError(counts)


def test_latency_panels_show_an_events_minutes_and_a_stages_fractions_of_a_millisecond() -> None:
    """Events spooled through a broker outage, 2.5 minutes late: the frame-to-event p99 read
    10 s (the top bucket). Match and track take about 0.2 ms: their p50 read 2.5 ms (the first
    bucket ended at 5 ms)."""
    from daemon import metrics

    late = _quantile_shown(
        0.99,
        "facewatch_frame_to_event_seconds",
        {},
        lambda: [metrics.EVENT_LATENCY.observe(150 + k) for k in range(20)],
    )
    assert 150 <= late <= 300, late
    match = _quantile_shown(
        0.5,
        "facewatch_stage_seconds",
        {"stage": "match"},
        lambda: [metrics.STAGE_SECONDS.labels("match").observe(0.00018) for _ in range(20)],
    )
    assert 0.0001 <= match <= 0.00025, match


def test_latency_counts_only_the_events_of_a_frame() -> None:
    """A confirmed sent as its track leaves (undecided: its frame_ts is the last sighting,
    lost_after_s ago) added a ~2 s sample to facewatch_frame_to_event_seconds, as left and
    a gallery change's events would: only the events of a frame are counted."""
    from daemon.mqtt_delivery import observe_latency

    def count() -> float:
        return REGISTRY.get_sample_value("facewatch_frame_to_event_seconds_count") or 0.0

    before = count()
    now = time.time()
    for kind, reason in (("confirmed", "lost"), ("left", "lost"), ("identified", "gallery")):
        observe_latency({"type": kind, "reason": reason, "frame_ts": now - 2})
    assert count() == before
    observe_latency({"type": "confirmed", "reason": None, "frame_ts": now})
    assert count() == before + 1


SUFFIX = {"counter": "_total", "info": "_info"}


def _families() -> dict[str, MetricWrapperBase]:
    """The daemon's metric families by the name they are scraped under."""
    found = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    return {m._name + SUFFIX.get(m._type, ""): m for m in found}


def _table() -> dict[str, list[str]]:
    """The operations guide's metric table: each metric's label names ("camera, reason";
    "stage: detect, embed, …": the values of the last one after its ':')."""
    docs = (REPO / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| `(facewatch_\w+)`(?: \(histogram\))? \|([^|]*)\|", docs, re.M)
    assert rows, "the metric table of docs/operations.md is gone"
    return {
        name: [s.strip() for s in labels.partition(":")[0].split(",") if s.strip()]
        for name, labels in rows
    }


def test_the_operations_guide_lists_every_metric_with_its_labels_and_no_other() -> None:
    families, table = _families(), _table()
    assert sorted(set(families) - set(table)) == [], "metrics the table does not list"
    assert sorted(set(table) - set(families)) == [], "the table lists metrics there are not"
    for name, family in families.items():
        if family._type != "info":  # (its labels are the fields it says, set at the start)
            assert table[name] == list(family._labelnames), name


def test_every_per_camera_series_is_there_at_zero_from_the_start() -> None:
    """A counter born at its first increment is already there at its count, and increase()
    in a dashboard or an alert never sees that first step."""
    metrics.init("site-a", ["side-gate"], "openvino", "", mqtt=False)
    for name, family in _families().items():
        if family._labelnames == ("camera",):
            value = REGISTRY.get_sample_value(name, {"camera": "side-gate"})
            assert value == 0.0, f"{name} for a camera not yet read: {value}"
