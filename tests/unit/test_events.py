"""The event outputs (daemon.events): the in-view state, failing outputs, their metrics,
face snapshots, the events file (the event against its schema: test_event_schema.py)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.events import EventSinks, in_view_json
from daemon.spool import Spool


@pytest.mark.parametrize(
    ("identities", "people", "unknown"),
    [
        ([], [], 0),
        ([None], [], 1),
        (["zoe", None, "ann", None], ["ann", "zoe"], 2),
        (["ann", "ann"], ["ann"], 0),  # two faces voted the same name: one name, two faces
    ],
)
def test_in_view_state_counts_faces_names_and_unknowns(identities, people, unknown) -> None:
    state = in_view_json("door", identities, 12.34567)
    assert state == {
        "camera": "door",
        "faces": len(identities),
        "people": people,
        "unknown": unknown,
        "ts": 12.346,
    }


def test_an_event_output_that_fails_loses_its_copy_and_the_daemon_goes_on(tmp_path, caplog) -> None:
    """A full disk under the JSON-lines file (/dev/full), a spool whose file went read-only:
    the event still reaches the other outputs, each failure is counted and logged once per
    outage, and nothing is raised into the engine thread (it once stopped the daemon)."""
    import logging

    def failures(output: str) -> float:
        value = REGISTRY.get_sample_value(
            "facewatch_event_output_failures_total", {"output": output}
        )
        return value or 0.0

    spool = Spool(tmp_path / "spool", 100)
    good = tmp_path / "events.jsonl"
    direct: list[tuple[str, dict]] = []  # what went to the broker without the spool
    sinks = EventSinks(
        spool=spool,
        topic_for=lambda camera: f"t/{camera}",
        jsonl_file=str(good),
        direct=lambda topic, payload: direct.append((topic, json.loads(payload))) is None,
    )
    sinks._file.close()
    sinks._file = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115  (a disk that is full)
    event = {"camera": "door", "type": "confirmed", "event_id": "e1", "seq": 1}
    before = failures("jsonl_file")
    with caplog.at_level(logging.ERROR, logger="daemon.events"):
        sinks.emit(event)
        sinks.emit(dict(event, event_id="e2", seq=2))
    assert failures("jsonl_file") == before + 2
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said  # the file and its key, what to do: it said 'jsonl_file'
    assert said[0].startswith(f"events: the events file {good} (events.jsonl_file) cannot take")
    assert said[0].endswith(
        f"check the free space of {tmp_path} (df -h) and that it can be written"
    )
    assert len(spool) == 2, "the spool still got both"
    assert direct == [], "spooled: not sent a second time"

    spool._db.close()  # the spool's file no longer writable: sqlite raises
    with contextlib.suppress(OSError):  # (its buffered line cannot be written: /dev/full)
        sinks._file.close()
    sinks._file = good.open("a", encoding="utf-8")
    before = failures("spool")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="daemon.events"):
        sinks.emit(dict(event, event_id="e3", seq=3))
    assert failures("spool") == before + 1
    line = json.loads(good.read_text().splitlines()[-1])
    assert line["event_id"] == "e3" and abs(line["published_ts"] - time.time()) < 60
    [(topic, sent)] = direct  # the spool refused it: straight to the broker
    assert topic == "t/door" and sent["event_id"] == "e3" and "published_ts" in sent
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said[0][1].startswith(f"events: the spool {spool.path} (mqtt.spool_dir) cannot take")
    assert f"check the free space of {spool.folder}" in said[0][1]
    assert said[1:] == [
        ("INFO", f"events: the events file {good} (events.jsonl_file) takes them again")
    ]
    sinks.close()
    spool.close()


def test_an_event_output_that_keeps_failing_is_said_again_every_remind_s(
    tmp_path, monkeypatch, caplog
) -> None:
    """An events file on a full disk was logged at its first lost event and never again: a
    week of lost events showed nothing in `journalctl --since today`. While it fails, it is
    said again every REMIND_S (at the next event lost), with how many events were lost there
    since when (local time); after it writes again, a new outage counts anew."""
    from datetime import datetime

    from daemon import journal
    from daemon.journal import REMIND_S

    wall0, clock = 1_746_100_000.0, [0.0]  # the fake clock: its wall time is wall0 + clock
    fake = SimpleNamespace(monotonic=lambda: clock[0], time=lambda: wall0 + clock[0])
    monkeypatch.setattr(journal, "time", fake, raising=False)

    def local(at: float) -> str:
        return datetime.fromtimestamp(wall0 + at).strftime("%Y-%m-%d %H:%M")

    path = tmp_path / "events.jsonl"
    sinks = EventSinks(jsonl_file=str(path))

    class Full:  # the events file's disk is full
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            pass

    full, good = Full(), sinks._file
    sinks._file = full  # type: ignore[assignment]
    event = {"camera": "door", "type": "confirmed", "event_id": "e1", "seq": 1}

    def events_at(*times: float) -> None:
        for at in times:
            clock[0] = at
            sinks.emit(event)

    with caplog.at_level("DEBUG", logger="daemon.events"):
        events_at(*range(60, 720, 60))  # one a minute: the 11th lost REMIND_S after the 1st
        events_at(700, 2000)
        sinks._file = good  # space freed
        events_at(2100)
        sinks._file = full  # type: ignore[assignment]
        events_at(2200, 2200 + REMIND_S - 1, 2200 + REMIND_S)
    file = f"the events file {path} (events.jsonl_file)"
    full_disk = "[Errno 28] No space left on device"
    check = f"; check the free space of {tmp_path} (df -h) and that it can be written"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", f"events: {file} cannot take them ({full_disk}): they are lost there{check}"),
        ("ERROR", f"events: {file} still cannot take them ({full_disk}): 11 events since "
         f"{local(60)}, they are lost there{check}"),
        ("ERROR", f"events: {file} still cannot take them ({full_disk}): 13 events since "
         f"{local(60)}, they are lost there{check}"),
        ("INFO", f"events: {file} takes them again"),
        ("ERROR", f"events: {file} cannot take them ({full_disk}): they are lost there{check}"),
        ("ERROR", f"events: {file} still cannot take them ({full_disk}): 3 events since "
         f"{local(2200)}, they are lost there{check}"),
    ]  # fmt: skip
    sinks.close()
    good.close()


def test_each_event_output_exports_its_failures_at_zero_from_the_start(tmp_path) -> None:
    """A healthy daemon exported no facewatch_event_output_failures_total: the series was
    born at its first failures, already at their count, and FacewatchEventOutputFailing
    (increase() over it) missed a burst within one scrape (events lost with no alert). Each
    output configured has its series at 0 from the start; those not configured have none."""
    from daemon import metrics

    def exported() -> dict[str, float | None]:
        return {
            output: REGISTRY.get_sample_value(
                "facewatch_event_output_failures_total", {"output": output}
            )
            for output in ("spool", "stdout", "jsonl_file")
        }

    metrics.EVENT_OUTPUT_FAILURES.clear()  # (other tests' failures)
    EventSinks(jsonl_file=str(tmp_path / "events.jsonl")).close()
    assert exported() == {"spool": None, "stdout": None, "jsonl_file": 0.0}
    spool = Spool(tmp_path / "spool", 10)
    EventSinks(spool=spool, topic_for=lambda camera: f"t/{camera}", stdout=True).close()
    spool.close()
    assert exported() == {"spool": 0.0, "stdout": 0.0, "jsonl_file": 0.0}


def test_events_and_the_spools_drops_are_counted(tmp_path) -> None:
    """facewatch_events_total counts each event; an event that pushes the oldest out of a
    full spool counts a dropped publish, and the spool's gauge says what it holds."""

    def sample(name: str, labels: dict) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    events = ("facewatch_events_total", {"camera": "porch", "type": "left"})
    dropped = ("facewatch_mqtt_publishes_total", {"outcome": "dropped"})
    counted, lost = sample(*events), sample(*dropped)
    spool = Spool(tmp_path / "spool", max_messages=2)
    sinks = EventSinks(spool=spool, topic_for=lambda camera: f"t/{camera}")
    for k in range(3):
        sinks.emit({"camera": "porch", "type": "left", "event_id": f"e{k}", "seq": k})
    assert sample(*events) == counted + 3
    assert sample(*dropped) == lost + 1
    assert sample("facewatch_mqtt_spool_events", {}) == len(spool) == 2
    spool.close()


def test_a_face_snapshot_shows_the_face_with_a_margin_within_the_frame() -> None:
    """The snapshot published with an event: the face and a quarter of its size around it,
    cut at the frame's edges, at most 160 px; none (b"") for a box no longer in the frame,
    rather than an error in the engine thread."""
    from daemon.events import face_snapshot

    frame = np.zeros((360, 640, 3), np.uint8)

    def shape(jpeg: bytes) -> tuple[int, ...]:
        return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape

    assert shape(face_snapshot(frame, np.array([100, 100, 200, 200]))) == (150, 150, 3)
    assert shape(face_snapshot(frame, np.array([0, 20, 100, 120]))) == (145, 125, 3)
    assert shape(face_snapshot(frame, np.array([100, 0, 400, 300]))) == (128, 160, 3)
    assert face_snapshot(frame, np.array([700, 10, 760, 70])) == b""


def test_the_events_file_is_owner_only_and_a_line_cut_short_swallows_no_event(tmp_path) -> None:
    """It says who was where and when: 0600 in a new 0700 folder whatever the umask (the
    spool and the gallery are). A power cut mid-line left `{"event_id":"b","se`, and the
    next event was glued to it: no JSON-lines reader saw it."""
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "notes" / "events.jsonl"
        sinks = EventSinks(jsonl_file=str(path))
        event = {"camera": "door", "type": "confirmed", "event_id": "a", "seq": 1}
        sinks.emit(event)
        sinks.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with path.open("a") as out:
        out.write('{"event_id":"b","se')  # the power goes
    sinks = EventSinks(jsonl_file=str(path))
    sinks.emit(dict(event, event_id="c", seq=3))
    sinks.close()
    lines = path.read_text().splitlines()
    assert lines[1] == '{"event_id":"b","se'
    assert [json.loads(lines[k])["event_id"] for k in (0, 2)] == ["a", "c"]
