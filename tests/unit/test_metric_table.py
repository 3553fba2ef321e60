"""The daemon's metrics as docs/operations.md's table lists them (the one place a Grafana or
alert author reads what there is), and every per-camera series there from the start."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from daemon import metrics
from tests.conftest import REPO

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
