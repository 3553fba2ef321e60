"""Tracking decisions, the spool and the frame queues, on hand-built inputs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.events import EventSinks
from daemon.gallery import Gallery
from daemon.gallery_write import Enrollment
from engines.mtcnn import FrameDetections
from tests.conftest import REPO


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


def _gallery_of_ann_and_bob(path: Path, model_id: str) -> None:
    with Gallery.create(path, model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
        gallery.enroll([Enrollment("bob", np.eye(8, dtype=np.float32)[1], "b" * 64)])
