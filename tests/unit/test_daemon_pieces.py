"""Tracking decisions, the spool and the frame queues, on hand-built inputs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.camera_frames import Frame
from daemon.config import ConfigError
from daemon.config_file import parse_config
from daemon.events import EventSinks, face_snapshot, in_view_json
from daemon.gallery import Gallery
from daemon.gallery_write import Enrollment
from daemon.scheduler import Pipeline
from daemon.spool import Spool
from engines.mtcnn import FrameDetections
from tests.conftest import REPO
from tests.unit.test_tracking import faces


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


def test_full_scan_every_n_frames_and_search_around_tracks_in_between(detector) -> None:
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4"}],
            "detection": {"full_scan_every": 3},
            "recognition": {"model": None},
        }
    )
    pipeline = Pipeline(config, detector, None, EventSinks())
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    seen = []
    for k in range(7):
        ok, image = clip.read()
        assert ok
        prior = pipeline._prior(Frame("door", k, float(k), image))
        seen.append(None if prior is None else len(prior))
        pipeline.trackers["door"].update(float(k), detector.detect([image])[0])
    faces = len(pipeline.trackers["door"].tracks)
    assert faces > 0
    assert seen[0] is None and seen[3] is None and seen[6] is None
    assert all(n is not None and n > 0 for n in (seen[1], seen[2], seen[4], seen[5]))

    # without a motion gate (every frame "moved"), between full scans a frame of a camera
    # with no face in view is not given to the detector (there is nothing to search around;
    # its pyramid was built for nothing)
    ungated = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4"}],
            "detection": {"full_scan_every": 3, "motion": False},
            "recognition": {"model": None},
        }
    )
    pipeline = Pipeline(ungated, detector, None, EventSinks())
    given: list[int] = []
    real_detect = detector.detect
    blank = np.zeros((360, 640, 3), np.uint8)

    def counting(images, priors=None):  # type: ignore[no-untyped-def]
        given.append(len(images))
        return real_detect(images, priors=priors)

    with mock.patch.object(detector, "detect", counting):
        for k in range(7):
            pipeline.process([Frame("door", k, float(k), blank)])
    assert given == [1, 1, 1], "the full scans only (frames 0, 3, 6)"
    assert pipeline._last_search["door"] == 6.0, "each frame counts as searched"

    # with one, the first 3 frames that moved after a still one are searched whole
    # (someone may have come in: tests/unit/test_motion.py), then, while the view moves on
    # with no one in it (a street, trees in the wind), every 3rd again; each frame by its
    # own place in the run, also when a batch holds two of the camera's frames (identify
    # on a video, a pipeline behind)
    def searched_whole(batch: int) -> list[int]:
        pipeline = Pipeline(config, detector, None, EventSinks())
        whole: list[int] = []

        def recording(images, priors=None):  # type: ignore[no-untyped-def]
            whole.extend(int(i[0, 0, 0]) for i, p in zip(images, priors, strict=True) if p is None)
            return real_detect(images, priors=priors)

        frames = [  # (frames 7 and 8 still: not searched)
            Frame("door", k, k / 10, np.full((360, 640, 3), k, np.uint8), moved=k not in (7, 8))
            for k in range(12)
        ]
        with mock.patch.object(detector, "detect", recording):
            for start in range(0, len(frames), batch):
                pipeline.process(frames[start : start + batch])
        return whole

    assert searched_whole(1) == [0, 1, 2, 5, 9, 10, 11]
    assert searched_whole(2) == [0, 1, 2, 5, 9, 10, 11]
    # one with faces in view is searched around them between full scans: every frame
    pipeline = Pipeline(config, detector, None, EventSinks())
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    given.clear()
    with mock.patch.object(detector, "detect", counting):
        for k in range(7):
            pipeline.process([Frame("door", k, float(k), clip.read()[1])])
    assert given == [1] * 7 and pipeline.trackers["door"].tracks[0].hits == 7

    # several cameras: their full scans fall in different batches
    config.cameras[0] = config.cameras[0].model_copy(update={"name": "d"})
    config.cameras.extend(config.cameras[0].model_copy(update={"name": n}) for n in "bc")
    pipeline = Pipeline(config, detector, None, EventSinks())
    blank = np.zeros((360, 640, 3), np.uint8)
    still = [Frame(c, 0, 0.0, blank, moved=False) for c in "dbc"]  # (moved: searched whole)
    rounds = [[pipeline._prior(frame) is None for frame in still] for _ in range(6)]
    assert rounds == [[True, False, False], [False, True, False], [False, False, True]] * 2


def test_a_persons_presence_follows_their_tracks_on_every_camera() -> None:
    """Ada on two cameras, then gone from one: her state names the other; names not in the
    gallery (removed since their track began) are not published."""
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "a.mp4"}, {"name": "yard", "url": "b.mp4"}],
            "recognition": {"model": None},
            "tracking": {"confirm_frames": 1, "min_votes": 1, "vote_window": 1, "lost_after_s": 1},
        }
    )

    class State:
        def __init__(self) -> None:
            self.people: dict[str, list[str]] = {}

        def set_person(self, name: str, state: dict) -> None:
            self.people[name] = state["cameras"]

        def set_in_view(self, camera: str, state: dict) -> None:
            pass

    state = State()
    pipeline = Pipeline(config, None, None, EventSinks(state=state))  # type: ignore[arg-type]
    pipeline._enrolled = {"Ada"}

    def step(camera: str, ts: float, who: str) -> None:  # a frame with one face, recognised
        tracker = pipeline.trackers[camera]
        tracks = tracker.update(ts, faces((10, 10, 50, 50)))
        tracker.record(tracks[0], who, 0.5)
        pipeline._changed(camera, tracker.decide(tracks), ts)

    step("door", 0.0, "Ada")
    assert state.people == {"Ada": ["door"]}
    step("yard", 0.0, "Bob")
    assert state.people == {"Ada": ["door"]}, "Bob is not enrolled: not published"
    step("yard", 0.1, "Ada")  # the yard's face turns out to be Ada
    assert state.people == {"Ada": ["door", "yard"]}
    step("yard", 1.0, "Ada")
    pipeline.expire(1.05)  # the door's face was last seen at 0.0: it left
    assert state.people == {"Ada": ["yard"]}
    step("yard", 1.1, "Bob")  # the yard's face turns out not to be Ada after all
    assert state.people == {"Ada": []}


def test_faces_centred_in_a_cameras_ignore_regions_are_dropped(detector) -> None:
    """A region over the left half of the demo clip: the faces there make no tracks and are
    counted; the others are tracked as before."""
    left_half = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]
    config = parse_config(
        {
            "cameras": [
                {"name": "all", "url": "x.mp4"},
                {"name": "half", "url": "x.mp4", "detection": {"ignore": [left_half]}},
            ],
            "recognition": {"model": None},
        }
    )
    pipeline = Pipeline(config, detector, None, EventSinks())
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    ignored_before = REGISTRY.get_sample_value("facewatch_faces_ignored_total", {"camera": "half"})
    centres = {"all": [], "half": []}
    for k in range(0, 120):
        ok, image = clip.read()
        assert ok
        if k % 10:
            continue
        pipeline.process([Frame(camera, k, float(k), image) for camera in ("all", "half")])
        for camera, seen in centres.items():
            seen += [(t.bbox_xyxy[0] + t.bbox_xyxy[2]) / 2 / image.shape[1]
                     for t in pipeline.trackers[camera].tracks if t.last_seen == float(k)]  # fmt: skip
    on_the_left = sum(x < 0.5 for x in centres["all"])
    assert on_the_left > 0 and len(centres["all"]) > on_the_left, "faces on both sides"
    assert sorted(centres["half"]) == sorted(x for x in centres["all"] if x >= 0.5)
    ignored = REGISTRY.get_sample_value("facewatch_faces_ignored_total", {"camera": "half"})
    assert ignored - (ignored_before or 0) == on_the_left


def test_a_face_that_stays_put_for_half_an_hour_is_said_with_the_region_that_drops_it(
    detector, caplog
) -> None:
    """A photo on the wall: the same picture for 30 min. Each face of it is said once, after
    30 min and not before, with the detection.ignore region that covers it; that region,
    pasted into the camera's config, drops that face and keeps the other."""
    frame = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4")).read()[1]
    camera = {"name": "hall", "url": "rtsp://cam.lan/stream"}

    def run(regions: list, minutes: float) -> Pipeline:
        cams = [{**camera, "detection": {"ignore": regions}}] if regions else [camera]
        config = parse_config({"cameras": cams, "recognition": {"model": None}})
        pipeline = Pipeline(config, detector, None, EventSinks())
        for k in range(int(minutes * 60 / 15) + 1):  # a frame every 15 s (the motion gate's)
            pipeline.process([Frame("hall", k, 1000.0 + 15 * k, frame)])
        return pipeline

    with caplog.at_level("WARNING", logger="daemon.scheduler"):
        run([], 29.5)
        assert not caplog.records
        run([], 45)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said  # the clip's first frame: two faces, each said once
    assert all(m.startswith("camera hall: a face has stayed at one place for 30 min") for m in said)
    corners = re.search(r"detection\.ignore: (\[\[.*\]\]) \(", said[0])
    assert corners, said[0]
    region = json.loads(corners.group(1))
    pipeline = run([region], 0.5)
    [kept] = pipeline.trackers["hall"].tracks  # one face dropped, the other tracked
    x = (kept.bbox_xyxy[0] + kept.bbox_xyxy[2]) / 2 / frame.shape[1]
    assert not region[0][0] <= x <= region[1][0]


@pytest.mark.parametrize(
    ("regions", "expected"),
    [
        ([[[0, 0], [1, 0]]], "region 0: expected 3 or more"),
        ([[[0, 0], [1, 0], [1, 1]], [[0, 0], [640, 0], [640, 360]]], "region 1: corners are"),
        ([[[0, 0, 1], [1, 0], [1, 1]]], "expected a list of regions, each a list of [x, y]"),
        ([[0.5, 0.09, 0.62, 0.40]], "expected a list of regions"),  # a box, not a region
        ("0.5,0.09,0.62,0.09,0.62,0.4", "expected a list of regions"),  # Frigate's masks
        ([[[0.5, 0.1], [0.6, 0.4], [0.6, 0.1], [0.5, 0.4]]], "region 0: its edges cross"),
        ([[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]], "region 0: encloses no area"),
    ],
)
def test_ignore_regions_are_checked(regions, expected) -> None:
    camera = {"name": "door", "url": "x.mp4", "detection": {"ignore": regions}}
    with pytest.raises(ConfigError, match=r"cameras\[0\] \(door\)\.detection\.ignore") as error:
        parse_config({"cameras": [camera]})
    assert expected in str(error.value)


def test_a_batch_with_two_frames_of_a_camera_reports_each_frames_own_face(
    detector, tmp_path
) -> None:
    """The track holds its latest box; events, snapshots and archived images of the earlier
    frame must use that frame's own."""
    from daemon.archive import FaceArchive

    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4"}],
            "recognition": {"model": None},
            "tracking": {"confirm_frames": 1},
            "archive": {"dir": str(tmp_path / "archive"), "min_gap_s": 0, "per_visit": 10},
        }
    )
    archive = FaceArchive(config.archive, "node", None)
    archive.start()
    events = tmp_path / "events.jsonl"
    pipeline = Pipeline(config, detector, None, EventSinks(jsonl_file=str(events)), archive=archive)
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    images = []
    for k in range(27):
        ok, image = clip.read()
        assert ok
        if k in (20, 26):  # one face that moves between the two
            images.append(image)
    found = [detector.detect([image])[0] for image in images]
    assert [len(f) for f in found] == [1, 1]
    assert np.abs(found[0].bbox_xyxy - found[1].bbox_xyxy).max() > 20
    now = round(time.time(), 1)
    pipeline.process([Frame("door", k, now + k / 5, image) for k, image in enumerate(images)])
    pipeline.expire(now + 1, stopping=True)
    archive.stop(timeout_s=10)
    [confirmed] = [json.loads(line) for line in events.read_text().splitlines()][:1]
    assert confirmed["type"] == "confirmed" and confirmed["frame_ts"] == pytest.approx(now)
    assert confirmed["bbox_xyxy"] == pytest.approx(found[0].bbox_xyxy[0].tolist(), abs=0.06)
    [visit] = (tmp_path / "archive").glob("*/door/*/visit.json")
    archived = json.loads(visit.read_text())["images"]
    for image, faces_there in zip(archived, found, strict=True):
        assert image["bbox_xyxy"] == pytest.approx(faces_there.bbox_xyxy[0].tolist(), abs=0.06)


def test_an_ignore_region_at_the_frames_edge_takes_faces_the_edge_cuts_off() -> None:
    """MTCNN's boxes reach past the frame for a face the edge cuts off: the centre of the
    part inside the frame counts, and a region's far edge (x or y = 1) is inside it."""
    strips = [[[0, 0], [0.3, 0], [0.3, 1], [0, 1]], [[0.7, 0], [1, 0], [1, 1], [0.7, 1]]]
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4", "detection": {"ignore": strips}}],
            "recognition": {"model": None},
        }
    )
    pipeline = Pipeline(config, None, None, EventSinks())  # type: ignore[arg-type]
    frame = Frame("door", 1, 0.0, np.zeros((360, 640, 3), np.uint8))
    kept = pipeline._not_ignored(
        frame, faces((-60, 100, 40, 220), (600, 100, 700, 220), (300, 100, 340, 140))
    )
    assert kept.bbox_xyxy.tolist() == [[300, 100, 340, 140]]


def test_log_lines_carry_the_time_except_in_the_journal(tmp_path) -> None:
    """Under systemd the journal stamps each line (JOURNAL_STREAM names stderr's device and
    inode) and takes its priority from a <N> prefix, on every line of a traceback too; in a
    terminal, a container or a file, the line carries the time itself."""
    program = (
        "import logging, sys; from daemon.cli import log_formatter; "
        "handler = logging.StreamHandler(); handler.setFormatter(log_formatter()); "
        "logging.basicConfig(handlers=[handler], level='DEBUG'); "
        "log = logging.getLogger('daemon.x'); log.warning('camera door: down'); "
        "log.info('MQTT: connected'); log.debug('a batch'); \n"
        "try:\n 1 / 0\n"
        "except ZeroDivisionError:\n log.exception('engine failed')"
    )
    log = tmp_path / "stderr.log"

    def lines(journal: str | None) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal is not None:
            env["JOURNAL_STREAM"] = journal
        with log.open("w") as stderr:
            subprocess.run(
                [sys.executable, "-c", program],
                stderr=stderr,
                env=env,
                check=True,
                cwd=REPO,
                timeout=300,
            )
        return log.read_text().splitlines()

    stamped = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d WARNING daemon.x: camera door: down"
    assert re.fullmatch(stamped, lines(None)[0])
    assert re.fullmatch(stamped, lines("1:2")[0])  # the journal is someone else's stream
    stat = log.stat()
    journal = lines(f"{stat.st_dev}:{stat.st_ino}")
    assert journal[:4] == [
        "<4>WARNING daemon.x: camera door: down",
        "<6>INFO daemon.x: MQTT: connected",
        "<7>DEBUG daemon.x: a batch",
        "<3>ERROR daemon.x: engine failed",
    ]
    assert journal[-1] == "<3>ZeroDivisionError: division by zero"
    assert all(line.startswith("<3>") for line in journal[4:]), "the traceback's lines too"


def test_why_facewatch_stopped_is_an_error_in_the_journal_and_plain_in_a_terminal(
    tmp_path,
) -> None:
    """`journalctl -p err` showed systemd's 'Failed with result' and none of facewatch's
    reasons: a fatal error was printed without a <N> prefix (priority info), a config
    error's second line too, an engine's message with its blank lines, and an uncaught
    traceback. At a shell the lines read as before, without a prefix."""
    config = tmp_path / "bad.yaml"
    config.write_text("cameras: [{name: door, url: door.mp4}]\nmqtt:\n  pasword: x\n")
    program = (
        "import sys; from daemon import cli; from daemon.journal import print_error\n"
        f"assert cli.main(['run', '--config', {str(config)!r}]) == 2\n"
        "print_error('model.onnx: cannot load the model\\nModel can\\'t be parsed\\n\\n')\n"
        "1 / 0\n"
    )
    log = tmp_path / "stderr.log"

    def lines(journal: bool) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        with log.open("w") as stderr:
            if journal:
                stat = log.stat()
                env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
            subprocess.run(
                [sys.executable, "-c", program], stderr=stderr, env=env, cwd=REPO, timeout=300
            )
        return log.read_text().splitlines()

    said = [
        f"error: {config}: invalid configuration",
        "  mqtt.pasword: unknown key (did you mean password?)",
        "error: model.onnx: cannot load the model",
        "Model can't be parsed",
    ]
    terminal = lines(journal=False)
    assert terminal[:4] == said, terminal
    crash = "CRITICAL daemon.cli: facewatch stopped by an unexpected error"
    assert re.fullmatch(rf"\S+ \S+ {crash}", terminal[4]), terminal  # with its time
    assert terminal[-1] == "ZeroDivisionError: division by zero"
    journal = lines(journal=True)
    assert journal[:4] == [f"<3>{line}" for line in said], journal
    assert journal[4] == f"<2>{crash}"
    assert journal[-1] == "<2>ZeroDivisionError: division by zero"
    assert all(line.startswith("<2>") for line in journal[4:]), "the traceback's lines too"


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


def test_only_a_run_that_did_not_stop_cleanly_counts_for_the_restart_alert(
    tmp_path, monkeypatch, caplog
) -> None:
    """FacewatchRestarting paged for three `systemctl restart`s in an hour while tuning. Under
    the unit (its state folder), a start counts the run before only when it did not stop
    cleanly: an exit with an error, or none at all (a crash, a watchdog kill: the process
    ends without a word), and facewatch_unclean_stops_total carries the count on."""
    import argparse

    import daemon.service
    from daemon import run_cli

    codes: list[int | None] = []

    class Service:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.left_behind: list[str] = []

        def run(self) -> int:
            code = codes.pop(0)
            if code is None:  # killed: nothing after this runs
                raise SystemExit("killed")
            return code

    config = tmp_path / "facewatch.yaml"
    config.write_text("cameras: [{name: door, url: x.mp4}]\nrecognition: {model: null}\n")
    monkeypatch.setattr(daemon.service, "Service", Service)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    args = argparse.Namespace(config=str(config), run_for=None, log_level="INFO")

    def run(code: int | None) -> float | None:
        """One run ending with ``code``; the count its start exported."""
        codes.append(code)
        with contextlib.suppress(SystemExit):
            run_cli._run(args)
        return REGISTRY.get_sample_value("facewatch_unclean_stops_total")

    assert [run(0), run(0), run(0)] == [0, 0, 0]  # restarts by hand
    assert "run-state.json" not in caplog.text  # (the first start has no file: no warning)
    assert [run(None), run(1), run(0), run(0)] == [0, 1, 2, 2]  # a crash, then an error
    monkeypatch.delenv("STATE_DIRECTORY")  # outside the unit: nothing is written
    state = (tmp_path / "state" / "run-state.json").read_text()
    run(None)
    assert (tmp_path / "state" / "run-state.json").read_text() == state
    assert sorted(os.listdir(tmp_path)) == ["facewatch.yaml", "state"]


def test_a_state_folder_that_cannot_be_written_leaves_the_restart_alert_counting_starts(
    tmp_path, monkeypatch, caplog
) -> None:
    """A state folder that cannot be written (gone, read-only after a disk error, full):
    each start exported the same count (0, or N+1), which never moved, and its presence
    turned off the alert's count of starts, so a crash loop paged nobody. Then no count is
    exported, and the log says what that does to the alert."""
    from daemon.run_state import RunState

    def count() -> float | None:
        return REGISTRY.get_sample_value("facewatch_unclean_stops_total")

    state = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    state.mkdir()
    RunState.start().close()  # a crash: never stopped cleanly
    assert count() == 0
    for name in ("run-state.json", "run-state.lock"):
        (state / name).unlink()
    state.rmdir()  # (root writes a read-only folder: gone, it cannot be written either)
    with caplog.at_level("WARNING", logger="daemon.run_state"):
        for _ in range(3):  # crashing starts
            RunState.start()
            assert count() is None
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3 and said[0].startswith(
        f"{state / 'run-state.json'}: cannot be written ("
    ), said
    assert said[0].endswith(
        "): unclean stops are not counted, and without facewatch_unclean_stops_total the alert "
        "FacewatchRestarting counts every start of this daemon, a systemctl restart too"
    ), said


@pytest.mark.parametrize("written", ["null", '"3"', "-1", "2.5", "[1]"])
def test_a_hand_edited_run_state_is_read_as_unreadable(tmp_path, monkeypatch, caplog, written):
    """`{"unclean_stops": null}` (an operator resetting the count by hand) raised a
    TypeError at every start under the unit: a crash loop. It is unreadable: the count
    starts again from 0, and the log says why."""
    from daemon.run_state import RunState

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    path = tmp_path / "run-state.json"
    content = written if written == "[1]" else f'{{"running": true, "unclean_stops": {written}}}'
    path.write_text(content)
    with caplog.at_level("WARNING", logger="daemon.run_state"):
        assert RunState.start().unclean == 0
    why = "not a JSON object" if written == "[1]" else f"unclean_stops is {written}, not a count"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: cannot be read ({why}): unclean stops counted from 0"
    ]
    assert REGISTRY.get_sample_value("facewatch_unclean_stops_total") == 0
    assert json.loads(path.read_text()) == {
        "running": True,
        "unclean_stops": 0,
        "machine": RunState(None).machine,
    }


def test_a_second_daemon_under_the_same_state_folder_leaves_the_first_ones_count_alone(
    tmp_path, monkeypatch, caplog
) -> None:
    """Two daemons under one state folder (a copied unit that kept StateDirectory=) shared
    run-state.json: the second's start took the first's run for a crash ("did not stop
    cleanly"), and its clean stop hid the first's real crash from the next start. The file
    is the first's: the second says so, counts nothing (no series: the alert counts its
    starts), and the first's crash is counted."""
    from daemon.run_state import RunState

    def count() -> float | None:
        return REGISTRY.get_sample_value("facewatch_unclean_stops_total")

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    first = RunState.start()
    assert count() == 0
    with caplog.at_level("WARNING", logger="daemon.run_state"):
        second = RunState.start()
        assert count() is None
        second.stopped_cleanly()
        second.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'run-state.json'}: in use by another facewatch (pid {os.getpid()}) with "
        "the same state folder ($STATE_DIRECTORY): this daemon does not count its unclean "
        "stops, and without facewatch_unclean_stops_total the alert FacewatchRestarting "
        "counts every start of this daemon, a systemctl restart too; give each daemon's unit "
        "its own StateDirectory="
    ]
    first.close()  # killed: its lock goes with the process, its file says it ran
    caplog.clear()
    with caplog.at_level("WARNING", logger="daemon.run_state"):
        assert RunState.start().unclean == 1
    assert "the previous run did not stop cleanly" in caplog.text
    assert count() == 1


def test_a_run_state_copied_from_another_machine_while_it_ran_is_no_crash_here(
    tmp_path, monkeypatch, caplog
) -> None:
    """A state folder copied while the daemon ran, restored on a new box: its run-state.json
    said a run was under way, and the first start there counted a crash that never was
    (facewatch_unclean_stops_total 1, "did not stop cleanly" while checking the move). The
    file names the machine that wrote it: another one's run is not counted; this machine's,
    or a file that names none (an older facewatch's), is."""
    from daemon import claims, run_state

    machine_id = tmp_path / "machine-id"
    machine_id.write_text("b0x2\n")
    monkeypatch.setattr(claims, "MACHINE_ID_FILE", machine_id)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    path = state / "run-state.json"
    for written_on, counted in [("b0x1", 0), ("b0x2", 1), (None, 1)]:
        found = {"running": True, "unclean_stops": 0}
        if written_on is not None:
            found["machine"] = written_on
        path.write_text(json.dumps(found))
        caplog.clear()
        with caplog.at_level("INFO", logger="daemon.run_state"):
            started = run_state.RunState.start()
            started.close()
        assert started.unclean == counted, written_on
        said = [r.getMessage() for r in caplog.records]
        if written_on == "b0x1":
            assert said == [
                f"{path}: written on another machine (machine-id b0x1), a copy taken while its "
                "daemon ran: its run there is not counted as an unclean stop here"
            ]
        else:
            assert "the previous run did not stop cleanly" in said[0], said
    assert json.loads(path.read_text())["machine"] == "b0x2"


def test_an_empty_machine_id_names_no_machine(tmp_path, monkeypatch) -> None:
    """Container images ship an empty /etc/machine-id: a daemon there knows no machine, so
    a run-state.json left running by a crash is counted, wherever it was written (an empty
    id is not another machine's), and the file it writes names none."""
    from daemon import claims, run_state

    machine_id = tmp_path / "machine-id"
    machine_id.write_text("\n")
    monkeypatch.setattr(claims, "MACHINE_ID_FILE", machine_id)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    path = tmp_path / "run-state.json"
    path.write_text(json.dumps({"running": True, "unclean_stops": 0, "machine": "b0x1"}))
    started = run_state.RunState.start()
    started.close()
    assert started.unclean == 1
    assert json.loads(path.read_text())["machine"] is None


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


def _demo_pipeline(detector, count: int) -> tuple[Pipeline, list[dict], list[np.ndarray]]:
    """A detection-only pipeline of one camera whose events are recorded, and the demo
    clip's first ``count`` frames (two faces)."""
    config = parse_config(
        {"cameras": [{"name": "door", "url": "x.mp4"}], "recognition": {"model": None}}
    )
    sinks = _Recorded()
    events = sinks.events

    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    frames = [clip.read()[1] for _ in range(count)]
    return Pipeline(config, detector, None, sinks), events, frames


def test_faces_in_view_through_a_short_stall_are_one_visit(detector) -> None:
    """A camera that hangs for 6 s while people are in view (then hands over its frames):
    their tracks go on, no `left` and new `confirmed` for the same people. A camera silent
    past the stall grace (it is down by then) ends them as usual."""
    pipeline, events, frames = _demo_pipeline(detector, 12)
    for k in range(4):  # 0.6 s of two faces: confirmed
        pipeline.process([Frame("door", k, 1000.0 + 0.2 * k, frames[k])])
    confirmed = {e["track_id"] for e in events if e["type"] == "confirmed"}
    assert confirmed
    pipeline.expire(1006.6)  # 6 s without a frame
    for k in range(4, 8):
        pipeline.process([Frame("door", k, 1006.6 + 0.2 * (k - 4), frames[k])])
    assert [e["type"] for e in events if e["track_id"] in confirmed].count("left") == 0
    assert {e["track_id"] for e in events if e["type"] == "confirmed"} == confirmed
    pipeline.expire(1007.2 + 13)  # then silent past the grace: the visits end
    assert {e["track_id"] for e in events if e["type"] == "left"} == confirmed


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


@pytest.mark.parametrize("step_s", [-3600.0, 30.0])
def test_a_wall_clock_step_splits_no_track(detector, step_s) -> None:
    """NTP steps the wall clock while people are in view (back an hour, or on by 30 s, as on
    a board without a real-time clock): their tracks go on by the monotonic clock, with no
    second `confirmed` nor early `left`; the events carry their frame's wall-clock time, and
    a visit's `left` the clock of its first frame, so that it lasts what it lasted (it was
    3600 s before its start, or 30 s too long)."""
    pipeline, events, frames = _demo_pipeline(detector, 8)
    for k in range(8):  # 5 fps; the wall clock jumps between frames 0 and 1
        wall = 1_700_000_000.0 + 0.2 * k + (step_s if k >= 1 else 0.0)
        pipeline.process([Frame("door", k, wall, frames[k], mono=500.0 + 0.2 * k)])
    pipeline.expire(500.0 + 0.2 * 7 + 0.5)  # (the monotonic clock's now)
    confirmed = [e for e in events if e["type"] == "confirmed"]
    assert confirmed and len({e["track_id"] for e in confirmed}) == len(confirmed)
    assert not [e for e in events if e["type"] == "left"], "nobody left"
    assert all(e["first_seen_ts"] == 1_700_000_000.0 for e in confirmed)  # wall times
    pipeline.expire(500.0 + 0.2 * 7 + 13)  # silent past the stall grace: gone
    left = [e for e in events if e["type"] == "left"]
    assert {e["track_id"] for e in left} == {e["track_id"] for e in confirmed}
    assert all(e["frame_ts"] == 1_700_000_000.0 + 1.4 for e in left)  # last seen, 1.4 s on
    # confirmed after the step: the time of the frame that confirmed them, on the new clock
    assert all(abs(e["frame_ts"] - 1_700_000_000.0 - step_s) < 2 for e in confirmed)


class _Recorded(EventSinks):
    """The events a pipeline emits, in order, and with their snapshots in ``sent``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []
        self.sent: list[tuple[dict, bytes | None]] = []

    def emit(self, event: dict, snapshot: bytes | None = None) -> None:
        self.events.append(event)
        self.sent.append((event, snapshot))


class _OneFace:
    """The scheduler's engines, scripted: one face in the middle of every frame, ``side``
    pixels wide; its embedding is ann's (the first axis). Counts the faces embedded."""

    model_id = "scripted-facenet"

    def __init__(self) -> None:
        self.side, self.embedded = 60.0, 0

    def refuses(self, image_hw: tuple[int, int]) -> None:
        return None

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        half = self.side / 2
        bbox = np.array([[320 - half, 180 - half, 320 + half, 180 + half]], np.float32)
        landmarks = np.zeros((1, 5, 2), np.float32)
        return [FrameDetections(bbox, np.ones(1, np.float32), landmarks) for _ in images]

    def embed_picks(self, picks: list) -> np.ndarray:
        self.embedded += len(picks)
        return np.stack([np.eye(8, dtype=np.float32)[0] for _ in picks])


def test_faces_smaller_than_min_face_px_are_not_recognised_and_cast_no_vote(tmp_path) -> None:
    """A 20 px face (a face in the crowd, a hand): never matched, its track announced with
    identity null once seen in vote_window frames (it was matched to whoever lay nearest, ann here); a camera whose own
    min_face_px lets it through names ann. A named face that then shrinks keeps its name:
    its small frames cast no vote and are counted."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OneFace.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    config = parse_config(
        {
            "cameras": [
                {"name": "far", "url": "far.mp4"},
                {"name": "near", "url": "near.mp4", "recognition": {"min_face_px": 10}},
            ],
            "recognition": {"model": None, "gallery": str(path)},
        }
    )
    assert config.recognition.min_face_px == 30
    sinks = _Recorded()
    events = sinks.events

    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    image = np.zeros((360, 640, 3), np.uint8)
    too_small = REGISTRY.get_sample_value("facewatch_faces_too_small_total", {"camera": "far"})
    engines.side = 20.0
    for k in range(15):  # announced undecided once seen in vote_window frames
        pipeline.process([Frame("far", k, 1000.0 + k / 5, image)])
        assert len(events) == (k == 14)
    assert [(e["type"], e["identity"], e["distance"]) for e in events] == [
        ("confirmed", None, None)
    ]
    assert engines.embedded == 0
    after = REGISTRY.get_sample_value("facewatch_faces_too_small_total", {"camera": "far"})
    assert after == (too_small or 0) + 15
    for k in range(6):
        pipeline.process([Frame("near", k, 1000.0 + k / 5, image)])
    assert [(e["camera"], e["identity"]) for e in events[1:]] == [("near", "ann")]

    pipeline.expire(2000.0, stopping=True)
    events.clear()
    engines.side = 40.0
    for k in range(5):
        pipeline.process([Frame("far", k, 3000.0 + k / 5, image)])
    assert [(e["type"], e["identity"]) for e in events] == [("confirmed", "ann")]
    embedded, engines.side = engines.embedded, 27.0  # the same track (size within 1.5x)
    for k in range(5, 40):
        pipeline.process([Frame("far", k, 3000.0 + k / 5, image)])
    assert [(e["type"], e["identity"]) for e in events] == [("confirmed", "ann")]
    assert engines.embedded == embedded


def _day_and_night(tmp_path: Path) -> tuple[Path, Pipeline, list[dict]]:
    """A face 0.084 from ann, enrolled, seen 15 times by a day camera (the default threshold
    0.2) and a night camera made stricter (0.05): the gallery, the pipeline, its events."""
    path = tmp_path / "gallery.sqlite"
    ann = np.eye(8, dtype=np.float32)[0] + 0.3 * np.eye(8, dtype=np.float32)[1]
    with Gallery.create(path, _OneFace.model_id, 8, 0.154) as gallery:
        gallery.enroll([Enrollment("ann", ann / np.linalg.norm(ann), "a" * 64)])
    config = parse_config(
        {
            "cameras": [
                {"name": "day", "url": "day.mp4"},
                {"name": "night", "url": "night.mp4", "recognition": {"threshold": 0.05}},
            ],
            "recognition": {"model": None, "gallery": str(path), "threshold": 0.2},
        }
    )
    sinks = _Recorded()
    events = sinks.events

    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    image = np.zeros((360, 640, 3), np.uint8)
    for k in range(15):
        pipeline.process([Frame("day", k, 1000.0 + k / 5, image)])
        pipeline.process([Frame("night", k, 1000.0 + k / 5, image)])
    return path, pipeline, events


def test_a_cameras_own_threshold_names_its_faces_only_within_it(tmp_path) -> None:
    """A night camera made stricter (cameras[].recognition.threshold): a face 0.084 from ann
    is named by the day camera (recognition.threshold 0.2) and is a stranger to the night
    camera (0.05) (every camera had the one threshold: the night camera's poor faces were
    named as the wrong person as readily as the day camera's)."""
    _, _, events = _day_and_night(tmp_path)
    assert [(e["camera"], e["type"], e["identity"]) for e in events] == [
        ("day", "confirmed", "ann"),
        ("night", "confirmed", None),
    ]


def test_a_gallery_reload_names_who_came_and_who_went(tmp_path, caplog) -> None:
    """An old backup copied over the live gallery brought back a person forgotten since,
    and the reload said only `gallery PATH: 2 people`: nothing showed who was back (or
    gone). A reload names them, +came and -went; the first read at start lists nobody."""
    import shutil

    def gallery(path: Path, names: list[str]) -> Path:
        with Gallery.create(path, _OneFace.model_id, 8, 0.154) as made:
            for k, name in enumerate(names):
                one = np.eye(8, dtype=np.float32)[k % 8]
                made.enroll([Enrollment(name, one, f"{k}{name}".ljust(64, "0"))])
        return path

    live = gallery(tmp_path / "gallery.sqlite", ["ann", "bob", "obama"])
    backup = gallery(tmp_path / "backup.sqlite", ["alex-lacamoire", "ann", "bob"])
    config = parse_config(
        {"cameras": [{"name": "door", "url": "x.mp4"}], "recognition": {"gallery": str(live)}}
    )
    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, EventSinks())  # type: ignore[arg-type]

    def reloaded() -> list[str]:
        caplog.clear()
        with caplog.at_level("INFO", logger="daemon.scheduler"):
            pipeline.reload_gallery()
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("gallery")]

    threshold = "threshold 0.154 (the gallery's)"
    assert reloaded() == [f"gallery {live}: 3 people, {threshold}"]
    shutil.copyfile(backup, live)  # a restore of a backup taken before the erasure
    assert reloaded() == [f"gallery {live}: 3 people (+alex-lacamoire, -obama), {threshold}"]
    assert reloaded() == [f"gallery {live}: 3 people, {threshold}"]  # (a SIGHUP: no change)
    names = [f"p{k:02d}" for k in range(12)]
    shutil.copyfile(gallery(tmp_path / "many.sqlite", names), live)
    assert reloaded() == [
        f"gallery {live}: 12 people (+p00, +p01, +p02, +p03, +p04, +p05, +p06, +p07, +p08, "
        f"+p09 and 5 more), {threshold}"
    ]


def test_a_gallery_reload_names_the_faces_in_view_at_their_cameras_threshold(tmp_path) -> None:
    """A stranger 0.084 from ann, left unnamed by a strict night camera (threshold 0.05, the
    default 0.2), stays unnamed when someone else is enrolled and the daemon reloads the
    gallery (the faces in view were matched again at the default: named ann at the reload,
    and held by a full window of such votes)."""
    path, pipeline, events = _day_and_night(tmp_path)
    with Gallery.open(path, _OneFace.model_id, writable=True) as gallery:
        gallery.enroll([Enrollment("bob", np.eye(8, dtype=np.float32)[5], "b" * 64)])
    pipeline.reload_gallery()
    image = np.zeros((360, 640, 3), np.uint8)
    for k in range(15, 30):
        pipeline.process([Frame("day", k, 1000.0 + k / 5, image)])
        pipeline.process([Frame("night", k, 1000.0 + k / 5, image)])
    assert [(e["camera"], e["type"], e["identity"]) for e in events] == [
        ("day", "confirmed", "ann"),
        ("night", "confirmed", None),
    ]
    assert pipeline.trackers["night"].in_view() == [None]


class _Passer:
    """The scheduler's engines, scripted: one face in the middle of the frame while
    ``present``, straight on or (``turned``) a profile, its nose 3 half eye distances off
    the eyes' middle; its embedding is on axis ``axis`` (0: ann's)."""

    model_id = "scripted-facenet"
    FRONTAL = ((305, 170), (335, 170), (320, 185), (308, 198), (332, 198))
    PROFILE = ((330, 170), (345, 170), (360, 185), (335, 198), (350, 198))

    def __init__(self, axis: int, turned: bool) -> None:
        self.axis, self.turned, self.present = axis, turned, True

    def refuses(self, image_hw: tuple[int, int]) -> None:
        return None

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        if not self.present:
            empty = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
            return [FrameDetections(*empty, np.zeros((0, 5, 2), np.float32)) for _ in images]
        bbox = np.array([[290, 150, 370, 230]], np.float32)
        landmarks = np.array([self.PROFILE if self.turned else self.FRONTAL], np.float32)
        return [FrameDetections(bbox, np.ones(1, np.float32), landmarks) for _ in images]

    def embed_picks(self, picks: list) -> np.ndarray:
        return np.stack([np.eye(8, dtype=np.float32)[self.axis] for _ in picks])


def _passing(tmp_path: Path, engines: _Passer, steps: list[tuple[bool, bool]]) -> list[dict]:
    """The events of one face at 5 fps, frame by frame (present, turned), expired as the
    engine thread does; each event with the frame it came at (``_at``)."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, engines.model_id, 8, 0.154) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    config = parse_config(
        {
            "cameras": [{"name": "hall", "url": "rtsp://hall/stream"}],
            # every face of a track recognised (its votes the faces, frame by frame)
            "recognition": {"model": None, "gallery": str(path), "reembed_every": 1},
        }
    )
    sinks = _Recorded()
    events = sinks.events

    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    image = np.zeros((360, 640, 3), np.uint8)
    for k, (engines.present, engines.turned) in enumerate(steps):
        pipeline.process([Frame("hall", k, 1000.0 + k / 5, image)])
        pipeline.expire(1000.0 + k / 5)
        for event in events:
            event.setdefault("_at", k)
    return events


def test_a_stranger_who_crosses_the_view_side_on_is_announced_while_there(tmp_path) -> None:
    """A stranger walks across a hall camera's view side-on, in view 8 frames at 5 fps: a
    stranger (confirmed, identity null, with the distance to the nearest enrolled face)
    after unknown_votes recognitions, while still in view (a face turned past max_turn cast
    no vote: nothing was sent until he had gone, then confirmed and left together, and the
    people sensor never showed him)."""
    steps = [(True, True)] * 8 + [(False, False)] * 15
    events = _passing(tmp_path, _Passer(axis=3, turned=True), steps)
    said = [(e["type"], e["identity"], e["_at"]) for e in events]
    assert said[0] == ("confirmed", None, 4), said
    assert events[0]["distance"] == pytest.approx(2.0)
    assert [e["type"] for e in events] == ["confirmed", "left"]


def test_a_named_face_that_turns_away_keeps_its_name(tmp_path) -> None:
    """Ann, named after looking at the camera for 5 frames, turns to a profile that the
    model matches to nobody, for 4 s: still ann (a turned face casts no vote once its track
    is announced: "changed" to unknown while she stood there)."""
    engines = _Passer(axis=0, turned=False)
    steps = [(True, False)] * 5 + [(True, True)] * 20
    original = engines.embed_picks
    engines.embed_picks = lambda picks: (  # type: ignore[method-assign]
        original(picks) if not engines.turned else np.stack([np.eye(8)[3] for _ in picks])
    )
    events = _passing(tmp_path, engines, steps)
    assert [(e["type"], e["identity"]) for e in events] == [("confirmed", "ann")]


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


def test_a_confirmed_sent_as_its_face_leaves_has_the_snapshot_of_its_last_face(tmp_path) -> None:
    """A face never decided (too small to recognise, seen a moment) is confirmed as it
    leaves, with no frame then: it came without a snapshot (half of a busy camera's
    confirmed), and a consumer waiting on snapshots/CAMERA/EVENT_ID waited for ever. Its
    snapshot is its face in the last frame that showed it."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OneFace.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    config = parse_config(
        {
            "cameras": [{"name": "far", "url": "far.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
            "tracking": {"snapshots": True},
        }
    )
    sinks = _Recorded()
    sent = sinks.sent

    engines = _OneFace()
    engines.side = 20.0  # below min_face_px: no vote, undecided
    pipeline = Pipeline(config, engines, engines, sinks)  # type: ignore[arg-type]
    pipeline.reload_gallery()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (360, 640, 3), np.uint8) for _ in range(4)]
    for k, image in enumerate(images):
        pipeline.process([Frame("far", k, 1000.0 + k / 5, image)])
    assert sent == []
    pipeline.expire(1015.0)  # its camera silent past the stall grace: the face is gone
    assert [(e["type"], e["reason"]) for e, _ in sent] == [("confirmed", "lost"), ("left", "lost")]
    (_, snapshot), (_, none) = sent
    last_face = np.array([310.0, 170.0, 330.0, 190.0])
    assert snapshot == face_snapshot(images[-1], last_face)
    assert none is None
    assert pipeline._undecided_face == {}, "nothing kept once the track is gone"


def test_the_faces_in_view_state_never_goes_back_in_time() -> None:
    """A camera's retained `faces` carried its frames' times, and at an expiry the clock's,
    which runs ahead of the frames still in the pipeline: a consumer keeping the newest
    state by `ts` dropped an update saying three faces were in view."""
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "a.mp4"}],
            "recognition": {"model": None},
            "tracking": {"confirm_frames": 1, "lost_after_s": 1},
        }
    )
    states: list[dict] = []

    class State:
        def set_in_view(self, camera: str, state: dict) -> None:
            states.append(state)

    pipeline = Pipeline(config, None, None, EventSinks(state=State()))  # type: ignore[arg-type]
    tracker = pipeline.trackers["door"]
    tracks = tracker.update(0.0, faces((10, 10, 50, 50)))
    pipeline._changed("door", tracker.decide(tracks), 100.0)
    pipeline._changed("door", tracker.expire(5.0), 102.5)  # the clock at the expiry
    tracks = tracker.update(5.1, faces((10, 10, 50, 50)))  # a frame taken before it
    pipeline._changed("door", tracker.decide(tracks), 102.1)
    assert [(s["faces"], s["ts"]) for s in states] == [(1, 100.0), (0, 102.5), (1, 102.5)]


def test_the_daemon_matches_on_one_blas_thread() -> None:
    """OpenBLAS's workers busy-waited after each gallery match of 2,500 faces or more: with
    1,000 people the daemon spent 58 ms of CPU a frame instead of 33. Importing facewatch
    (before numpy) keeps numpy to one thread; a value set in the environment is kept."""
    import subprocess
    import sys

    probe = (
        "import daemon, os, numpy as np\n"
        "np.ones((4, 128), np.float32) @ np.ones((128, 5000), np.float32)\n"
        "print(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: OpenBLAS starts no worker threads anyway")
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.stdout.split() == ["1", "1"], out.stderr
    env["OPENBLAS_NUM_THREADS"] = "2"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.stdout.split() == ["2", "2"], out.stderr


def test_status_names_a_broker_that_refuses_the_nodes_messages() -> None:
    """Connected, but the broker's ACL refuses what the spool offers (facewatch_mqtt_refused
    1): `facewatch status` says so, where it said only 'MQTT connected' with a rising spool."""
    from daemon.status_cli import Status

    fields = dict(url="u", version="v", backend="b", model="m", uptime_s=1.0, enrolled=0)
    refusing = Status(mqtt="connected", spooled=7, refused=True, **fields)  # type: ignore[arg-type]
    assert refusing.problems() == [
        "the MQTT broker refuses this node's messages (7 message(s) spooled): its ACL (the "
        "daemon's log names the topic)"
    ]
    assert Status(mqtt="connected", spooled=0, refused=False, **fields).problems() == []  # type: ignore[arg-type]


def test_status_names_a_face_archive_the_disk_refuses() -> None:
    """The archive's folder read-only (or full) while the daemon runs: one ERROR a minute in
    the log, and `facewatch status` said nothing of it (the spool's problems it names)."""
    from daemon.status_cli import Status

    fields = dict(url="u", version="v", backend="b", model="m", uptime_s=1.0, enrolled=0)
    failing = Status(
        mqtt="off", spooled=0, refused=False, archive_failing=True, archive_errors=9, **fields
    )  # type: ignore[arg-type]
    assert failing.problems() == [
        "the face archive cannot write to archive.dir (9 failure(s) since the start; the "
        "daemon's log says why: a read-only or full disk?)"
    ]
    assert Status(mqtt="off", spooled=0, refused=False, archive_errors=9, **fields).problems() == []  # type: ignore[arg-type]


def test_a_reload_that_meets_a_writer_after_reading_the_gallery_goes_on(
    tmp_path, monkeypatch, caplog
) -> None:
    """The reload's log line read the gallery a second time (how many have their own
    threshold), outside the wait for a writer: an enroll committing just then stopped the
    engine thread, and the daemon with it. The line says what the one read found."""
    import sqlite3

    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OneFace.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
        gallery.set_threshold("ann", 0.2)
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "a.mp4"}],
            "recognition": {"model": None, "gallery": str(path)},
        }
    )
    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, EventSinks())  # type: ignore[arg-type]
    writer = sqlite3.connect(path, isolation_level=None)
    load = Gallery.load

    def load_then_a_writer_locks_the_file(self: Gallery) -> list[str]:
        names = load(self)
        writer.execute("BEGIN EXCLUSIVE")  # an enroll committing right now
        return names

    monkeypatch.setattr(Gallery, "load", load_then_a_writer_locks_the_file)
    with caplog.at_level("INFO", logger="daemon.scheduler"):
        pipeline.reload_gallery()
    writer.execute("COMMIT")
    writer.close()
    [said] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gallery")]
    assert said.startswith(f"gallery {path}: 1 person, threshold ") and said.endswith(
        "(the gallery's), 1 with their own"
    ), said
    assert pipeline.gallery is not None and pipeline._enrolled == {"ann"}


def _gallery_of_ann_and_bob(path: Path, model_id: str) -> None:
    with Gallery.create(path, model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
        gallery.enroll([Enrollment("bob", np.eye(8, dtype=np.float32)[1], "b" * 64)])


def test_a_gallery_damaged_while_the_daemon_runs_leaves_the_old_one_in_use(
    tmp_path, caplog
) -> None:
    """A blob of the wrong length written into the gallery while the daemon ran stopped the
    engine thread (a ValueError traceback, exit 1, and at each restart again: a loop), after
    facewatch_gallery_identities had already counted the file's people. The reload logs why
    it is not taken and goes on with the gallery it had, and its count."""
    path = tmp_path / "gallery.sqlite"
    with Gallery.create(path, _OneFace.model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
    config = parse_config(
        {"cameras": [{"name": "door", "url": "a.mp4"}], "recognition": {"gallery": str(path)}}
    )
    engines = _OneFace()
    pipeline = Pipeline(config, engines, engines, EventSinks())  # type: ignore[arg-type]
    pipeline.reload_gallery()
    assert REGISTRY.get_sample_value("facewatch_gallery_identities") == 1
    path.unlink()
    _gallery_of_ann_and_bob(path, _OneFace.model_id)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE embeddings SET vector = ? WHERE id = 2", (bytes(28),))
    assert pipeline.gallery_changed()
    with caplog.at_level("INFO", logger="daemon.scheduler"):
        pipeline.reload_gallery()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"gallery not reloaded: {path}: bob's face 1 (of 1): 28 bytes, 32 expected; the "
        "gallery file is damaged: restore an export into a new gallery (`facewatch gallery "
        "import FILE --gallery NEW`), or `facewatch gallery remove 'bob'` and enroll them again"
    ]
    assert pipeline.gallery is not None and pipeline._enrolled == {"ann"}
    [match] = pipeline.gallery.match(np.eye(8, dtype=np.float32)[:1])
    assert match.identity == "ann"
    assert REGISTRY.get_sample_value("facewatch_gallery_identities") == 1
    assert not pipeline.gallery_changed()  # (the same file is not tried again)
