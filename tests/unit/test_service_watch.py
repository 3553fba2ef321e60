"""The serve loop's watch on the batch scheduler (daemon.service_watch): systemd's watchdog
fed while frames flow, a stall said and ended, a pause not taken for one."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest

from daemon.camera_frames import Frame
from daemon.config_file import parse_config
from daemon.events import EventSinks
from daemon.scheduler import Pipeline
from daemon.systemd_notify import watchdog_healthy
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("last_round", "waiting_since", "fed"),
    [
        (99.8, 99.0, True),  # frames flow: the waiting ones came a second ago
        (99.8, 50.0, False),  # frames have waited 50 s and no batch took them: stalled
        # nothing waits: every camera down, or one slower than a frame in 30 s (it was
        # taken for a stall, every 30 s, as no batch went through: exit 1 in a container)
        (99.8, None, True),
        (40.0, None, False),  # the scheduler itself stopped coming round
    ],
)
def test_watchdog_is_fed_only_while_frames_flow(last_round, waiting_since, fed) -> None:
    assert watchdog_healthy(100.0, last_round, waiting_since, 30.0) is fed


@pytest.mark.parametrize(
    ("round_ago", "batch_ago", "said"),
    [
        (100.0, 100.0, "the batch scheduler has been stuck in one round for 100 s"),
        (0.0, 100.0, "frames have waited for 100 s and no batch took them while camera(s) door"),
    ],
)
def test_a_watchdog_no_longer_fed_is_said_once(
    monkeypatch, caplog, round_ago, batch_ago, said
) -> None:
    """A hung engine call: the watchdog stopped being fed and systemd aborted the daemon,
    with nothing from facewatch in the journal in between. One ERROR says what hangs, for
    how long, and that systemd restarts facewatch."""
    from daemon import service

    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # fed every 0.1 s while frames flow
    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    daemon.run_for_s = 0.6
    daemon.readers = [SimpleNamespace(up=True, config=SimpleNamespace(name="door"))]  # type: ignore[list-item]

    class Stalled:  # the engine call of a round (or every batch) hangs
        last_round = property(lambda self: time.monotonic() - round_ago)
        queues = SimpleNamespace(waiting_since=time.monotonic() - batch_ago)

        def is_alive(self) -> bool:
            return True

    scheduler = Stalled()
    with caplog.at_level("ERROR", logger="daemon.service"):
        daemon._serve(scheduler)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(said), lines
    assert "systemd's watchdog is no longer fed and restarts facewatch" in lines[0]


def test_a_scheduler_that_goes_on_before_systemds_kill_says_so(monkeypatch, caplog) -> None:
    """The ERROR says systemd restarts facewatch; a scheduler that recovers first left that
    promise in the journal with no restart after it and no word of the recovery."""
    from daemon import service

    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    daemon.run_for_s = 0.8
    daemon.readers = [SimpleNamespace(up=True, config=SimpleNamespace(name="door"))]  # type: ignore[list-item]
    recovers = time.monotonic() + 0.4

    class Recovering:  # one round hangs 100 s (as it seems), then rounds go on
        def _ago(self) -> float:
            now = time.monotonic()
            return now - 100.0 if now < recovers else now

        last_round = property(_ago)
        queues = SimpleNamespace(waiting_since=None)

        def is_alive(self) -> bool:
            return True

    with caplog.at_level("WARNING", logger="daemon.service"):
        daemon._serve(Recovering())  # type: ignore[arg-type]
    said = [(r.levelname, r.getMessage()[:40]) for r in caplog.records]
    assert said == [
        ("ERROR", "the batch scheduler has been stuck in on"),
        ("WARNING", "the batch scheduler goes on again: the w"),
    ], said


class _ServeClock:
    """The serve loop's clock (``service_watch.time``) and its stop event at once: each wait
    moves the clock on by its timeout, so minutes of serving take no time, whatever the
    machine's load; ``pings``: when systemd's watchdog was fed."""

    def __init__(self, monkeypatch, daemon) -> None:
        from daemon import service_watch

        self.now = self.started = 1000.0
        self.pings: list[float] = []
        monkeypatch.setattr(service_watch, "time", self)
        monkeypatch.setattr(service_watch, "sd_notify", self._notify)
        daemon._stop = self

    def monotonic(self) -> float:
        return self.now

    def wait(self, timeout: float) -> bool:
        self.now += timeout
        return False

    def is_set(self) -> bool:
        return False

    def _notify(self, message: str) -> bool:
        if message == "WATCHDOG=1":
            self.pings.append(self.now)
        return True


def _rounds_ago(clock: _ServeClock, seconds: float) -> object:
    """A scheduler alive, its round under way for ``seconds``, no frame waiting."""

    class Scheduler:
        last_round = property(lambda self: clock.now - seconds)
        queues = SimpleNamespace(waiting_since=None)

        def is_alive(self) -> bool:
            return True

    return Scheduler()


@pytest.mark.parametrize("watchdog_usec", ["200000", "60000000"])
def test_systemds_watchdog_is_fed_every_half_of_watchdogsec(monkeypatch, watchdog_usec) -> None:
    """WatchdogSec=0.2s or the unit's 60s, the scheduler coming round: the watchdog is fed
    from the first tick on, at least every half of WatchdogSec (systemd's advice); fed only
    every WatchdogSec, the least jitter would let systemd kill a healthy daemon."""
    from daemon import service

    monkeypatch.setenv("WATCHDOG_USEC", watchdog_usec)
    watchdog_s = int(watchdog_usec) / 1e6
    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    daemon.run_for_s = 10 * watchdog_s
    clock = _ServeClock(monkeypatch, daemon)
    daemon._serve(_rounds_ago(clock, 0.0))  # type: ignore[arg-type]
    fed = [clock.started, *clock.pings, clock.now]
    assert clock.now == pytest.approx(clock.started + daemon.run_for_s)
    assert max(b - a for a, b in itertools.pairwise(fed)) <= watchdog_s / 2 + 1e-6, fed


def test_a_round_longer_than_stall_s_but_inside_watchdogsec_still_feeds_it(
    monkeypatch, caplog
) -> None:
    """Under the unit's WatchdogSec=60s a round of 45 s is no stall yet (STALL_S, 30 s, is
    for a daemon without systemd's watchdog): the watchdog is fed and nothing is said, so
    systemd does not restart a daemon whose long round would end in time."""
    from daemon import service

    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    daemon.run_for_s = 5.0
    daemon.readers = []
    clock = _ServeClock(monkeypatch, daemon)
    with caplog.at_level("WARNING", logger="daemon.service"):
        daemon._serve(_rounds_ago(clock, 45.0))  # type: ignore[arg-type]
    assert clock.pings and caplog.records == []


def test_a_scheduler_that_died_ends_the_serve_loop_at_its_next_tick(monkeypatch, caplog) -> None:
    """The batch scheduler's thread ended with an error (a crash in the pipeline): the serve
    loop says so and ends at its next tick (the daemon exits, its restart policy starts it
    again), not at --run-for, and not after a stall's 30 s blamed on a round stuck."""
    from daemon import service

    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    daemon.run_for_s = 600.0
    clock = _ServeClock(monkeypatch, daemon)
    scheduler = SimpleNamespace(
        is_alive=lambda: False, error=RuntimeError("boom"), last_round=clock.now,
        queues=SimpleNamespace(waiting_since=clock.now),
    )  # fmt: skip
    with caplog.at_level("ERROR", logger="daemon.service"):
        daemon._serve(scheduler)  # type: ignore[arg-type]
    assert clock.now - clock.started == 1.0  # (its tick)
    assert [r.getMessage() for r in caplog.records] == ["the batch scheduler stopped: boom"]


def test_a_hung_engine_call_without_systemds_watchdog_is_said_and_ends_the_run(
    monkeypatch, caplog, detector
) -> None:
    """In a container (no WATCHDOG_USEC) a detector call that never returned left the daemon
    up and hung for good, its log blaming the cameras' fps. Past STALL_S one ERROR says
    where the scheduler is stuck (the engine's call), which cameras deliver, and that
    facewatch stops with exit status 1 for its restart policy; the serve loop ends."""
    from daemon import service, service_watch
    from daemon.camera_frames import FrameQueues
    from daemon.scheduler import BatchScheduler

    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.setattr(service_watch, "STALL_S", 0.5)
    config = parse_config(
        {"cameras": [{"name": "door", "url": "x.mp4"}], "recognition": {"model": None}}
    )
    daemon = service.Service(config, run_for_s=20.0)
    daemon.readers = [SimpleNamespace(up=True, config=SimpleNamespace(name="door"))]  # type: ignore[list-item]
    release = threading.Event()

    def hangs(*args: object, **kwargs: object) -> None:  # a GPU or driver fault
        release.wait(30)
        raise RuntimeError("released by the test")

    queues = FrameQueues(["door"], per_camera=2)
    scheduler = BatchScheduler(Pipeline(config, detector, None, EventSinks()), queues)
    with mock.patch.object(detector, "_pyramids", hangs):
        scheduler.start()
        queues.put(Frame("door", 0, 0.0, np.zeros((360, 640, 3), np.uint8)))
        started = time.monotonic()
        try:
            with caplog.at_level("ERROR", logger="daemon.service"):
                daemon._serve(scheduler)
        finally:
            release.set()
            scheduler.join(10)
    assert time.monotonic() - started < 10, "the run ends, not --run-for"
    assert daemon.stalled
    lines = [r.getMessage() for r in caplog.records if r.name == "daemon.service"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("the batch scheduler has been stuck in one round for "), lines
    qualname = "MTCNN.detect" if sys.version_info >= (3, 11) else "detect"  # (no co_qualname)
    assert f" in {qualname} (engines/mtcnn.py:" in lines[0], lines
    assert "while camera(s) door deliver frames" in lines[0], lines
    assert "facewatch stops, with exit status 1, so that its restart policy" in lines[0]


def test_facewatch_run_without_systemd_exits_1_soon_after_an_engine_call_hangs(
    tmp_path,
) -> None:
    """The review's reproducer: `facewatch run` (no systemd) whose detector blocks for good
    after a few calls. It stayed up, and a later stop exited 0 after 35 s, a clean stop
    for run-state. It now ends itself after STALL_S with exit status 1, naming the stall
    and every thread's stack on stderr."""
    config = tmp_path / "facewatch.yaml"
    clip = REPO / "configs" / "demo" / "hamilton_360p.mp4"
    config.write_text(
        f"cameras: [{{name: door, url: {str(clip)!r}}}]\nrecognition: {{model: null}}\n"
        "mqtt: {enabled: false}\nmetrics: {enabled: false}\nevents: {stdout: false}\n"
    )
    program = (
        "import sys, threading; from daemon import cli, service_watch; import engines.mtcnn as m\n"
        "service_watch.STALL_S = 2.0\n"
        "real, calls = m.MTCNN.detect, []\n"
        "def detect(self, *a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) > 5: threading.Event().wait()\n"
        "    return real(self, *a, **k)\n"
        "m.MTCNN.detect = detect\n"
        f"sys.exit(cli.main(['run', '--config', {str(config)!r}, '--run-for', '120']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "NOTIFY_SOCKET")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=REPO,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 100, "ended by the stall, not by --run-for"
    assert "the batch scheduler has been stuck in one round for" in done.stderr
    assert "facewatch stops, with exit status 1" in done.stderr
    assert "in detect" in done.stderr, "the stacks: where the scheduler's thread hangs"


def test_systemds_watchdog_abort_leaves_every_threads_stack_on_stderr(tmp_path) -> None:
    """systemd aborts a hung daemon (SIGABRT): Python's default was a bare abort, and the
    journal never said which thread hung where. `run` enables faulthandler first."""
    program = (
        "import os, signal, threading, time; from daemon import run_cli\n"
        "run_cli._dump_stacks_on_abort()\n"
        "def hung_engine_call(): time.sleep(60)\n"
        "threading.Thread(target=hung_engine_call, daemon=True).start(); time.sleep(0.2)\n"
        "os.kill(os.getpid(), signal.SIGABRT)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == -6
    assert "Fatal Python error: Aborted" in done.stderr, done.stderr
    assert "in hung_engine_call" in done.stderr, done.stderr


def test_a_daemon_paused_and_resumed_is_not_taken_for_a_stalled_one(monkeypatch, caplog) -> None:
    """Ctrl-Z then fg, or `docker pause` / `unpause`: every thread was frozen, the monotonic
    clock went on, and at the resume the serve loop found the scheduler's last round older
    than STALL_S: 'stuck in one round', every thread's stack, exit status 1. The serve
    loop's own sleep says the process was paused; its stall check starts again from then."""
    from daemon import service, service_watch

    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.setattr(service_watch, "STALL_S", 0.25)
    monkeypatch.setattr(service_watch, "PAUSED_S", 0.2)
    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    daemon.run_for_s = 20.0
    daemon.readers = [SimpleNamespace(up=True, config=SimpleNamespace(name="door"))]  # type: ignore[list-item]
    scheduler = SimpleNamespace(
        last_round=time.monotonic(), queues=SimpleNamespace(waiting_since=time.monotonic()),
        is_alive=lambda: True,
    )  # fmt: skip
    waits = iter([False, True])  # one tick in which the process is frozen 0.3 s, then a stop

    class Frozen:
        def wait(self, timeout: float) -> bool:
            stop = next(waits)
            if not stop:
                time.sleep(0.3)
            return stop

        def is_set(self) -> bool:
            return False

    daemon._stop = Frozen()  # type: ignore[assignment]
    with caplog.at_level("INFO", logger="daemon.service"):
        daemon._serve(scheduler)  # type: ignore[arg-type]
    assert not daemon.stalled
    # (0.3 s frozen, and on a loaded machine a little more before the loop looks)
    paused = re.search(r"resumed after ([0-9.]+) s paused", caplog.text)
    assert paused is not None and 0.3 <= float(paused.group(1)) < 1.5, caplog.text
