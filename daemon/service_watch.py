"""Serving until a stop (``Serving._serve``, a part of ``Service``): SIGHUP's reload (the
gallery, renewed TLS files, and what an edited config file would change), the ``--run-for``
deadline, a frozen process told from a stall, and the stall check: under systemd's watchdog
a stall stops feeding it (``WATCHDOG=1``, ``daemon.systemd_notify.watchdog_healthy``);
without one it is said with every thread's stack and ends the daemon with exit status 1.

Its lines are the service's: they are logged as ``daemon.service``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from daemon import preflight
from daemon.cameras import CameraReader
from daemon.config import Config, ConfigError
from daemon.config_changes import config_changes
from daemon.config_file import load_config
from daemon.mqtt import MqttPublisher
from daemon.scheduler import BatchScheduler
from daemon.systemd_notify import sd_notify, watchdog_healthy

logger = logging.getLogger("daemon.service")

PAUSED_S = 5.0  # the serve loop, which wakes every second, slept longer: the process was frozen
STALL_S = 30.0  # frames have not flowed for this long: the watchdog is no longer fed, or
# without systemd's watchdog the daemon stops itself (exit status 1)
STALLED_STOP_S = 2.0  # how long such a stop waits for the stuck scheduler


class Serving:
    """``Service``'s serve loop, one of its bases: the attributes declared here are set by
    ``Service.__init__``."""

    config: Config
    config_path: str | None
    run_for_s: float | None
    publisher: MqttPublisher | None
    readers: list[CameraReader]
    stalled: bool
    _stop: threading.Event
    _hup: threading.Event

    def _serve(self, scheduler: BatchScheduler) -> None:
        """Until a stop: reloads at SIGHUP, and the stall check (``watchdog_healthy``).
        Under systemd's watchdog a stall stops feeding it, and systemd restarts facewatch;
        without one (Docker, a shell) nothing else would end a hung daemon, so a stall past
        STALL_S is said and ends the run itself (``stalled``: exit status 1, which a restart
        policy restarts)."""
        watchdog_s = int(os.environ.get("WATCHDOG_USEC", "0")) / 1e6
        ping_every = watchdog_s / 2  # systemd's advice
        tick = min(1.0, ping_every) if watchdog_s else 1.0  # a SIGHUP waits at most this
        stall_s = max(STALL_S, watchdog_s)
        feeding = _Feeding(ping_every, tick, next_ping=time.monotonic())
        deadline = time.monotonic() + self.run_for_s if self.run_for_s else float("inf")
        last_tick = time.monotonic()
        while not self._stop.wait(min(tick, max(0.0, deadline - time.monotonic()))):
            if not self._goes_on(scheduler, deadline):
                return
            now = time.monotonic()
            if now - last_tick > PAUSED_S:  # the process was frozen (Ctrl-Z, docker pause)
                _resumed(scheduler, now, paused_s=now - last_tick)
            last_tick = now
            healthy = partial(
                watchdog_healthy, now, scheduler.last_round, scheduler.queues.waiting_since
            )
            if watchdog_s:
                self._feed(feeding, scheduler, now, healthy, stall_s)
            elif not healthy(stall_s):
                self._say_stalled(scheduler, now, stall_s)
                self.stalled = True
                return

    def _goes_on(self, scheduler: BatchScheduler, deadline: float) -> bool:
        """False, said, at the ``--run-for`` deadline or when the scheduler stopped; a
        SIGHUP's reload in between."""
        if time.monotonic() >= deadline:
            logger.info("--run-for %.0f s reached: stopping", self.run_for_s)
            return False
        if self._hup.is_set():
            self._hup.clear()
            self._reload(scheduler)
        if not scheduler.is_alive():
            logger.error("the batch scheduler stopped: %s", scheduler.error)
            return False
        return True

    def _feed(
        self,
        feeding: _Feeding,
        scheduler: BatchScheduler,
        now: float,
        healthy: Callable[[float], bool],
        stall_s: float,
    ) -> None:
        """systemd's watchdog fed when a ping is due and frames flow; when they stop, said
        once (systemd's kill follows), and said again should they flow before it."""
        if now < feeding.next_ping:
            return
        if healthy(stall_s):
            sd_notify("WATCHDOG=1")
            # due by the tick nearest the interval
            feeding.next_ping = now + feeding.ping_every_s - feeding.tick_s / 2
            if feeding.starving:  # before systemd's kill: its ERROR promised one
                logger.warning("the batch scheduler goes on again: the watchdog is fed")
            feeding.starving = False
        elif not feeding.starving:  # once: systemd's kill follows
            self._say_starving(scheduler, now, stall_s)
            feeding.starving = True

    def _reload(self, scheduler: BatchScheduler) -> None:
        """SIGHUP (`systemctl reload facewatch`): the gallery is read again, TLS files
        renewed since they were loaded are loaded for the next MQTT connection, and the
        config file is checked (``_config_edited``: last, as its file checks take a while)."""
        if scheduler.pipeline.facenet is None:
            logger.info("SIGHUP: no FaceNet model in use (detection only): no gallery")
        else:
            logger.info("SIGHUP: re-reading the gallery %s", self.config.recognition.gallery)
            scheduler.request_reload()
        if self.publisher is not None:
            self.publisher.renew_tls()
        self._config_edited()

    def _config_edited(self) -> None:
        """The config file read again, to say what a reload does not apply: an edit that
        makes it invalid or names files that are not there (the daemon runs on, but its
        next start would fail with exit status 2, which systemd does not retry), or the
        keys changed (they take effect at the next restart); nothing when it is as the
        daemon started with it."""
        path = self.config_path
        if path is None:
            return
        try:
            fresh = load_config(path)
            preflight.check_files(fresh)  # (what `run` checks, but cameras and gallery)
        except ConfigError as exc:
            first, *details = str(exc).splitlines()  # (one line in the journal)
            said = "; ".join(line.strip() for line in details)
            said = f"{first}: {said}" if said else first
            logger.error(
                "SIGHUP: %s; the running daemon keeps its config, but a restart would fail "
                "(exit status 2) until the file is fixed (facewatch validate-config %s)",
                said,
                path,
            )
            return
        changed = config_changes(self.config, fresh)
        if changed:
            logger.warning(
                "SIGHUP: config %s changed (%s): a reload does not apply it; these take "
                "effect at the next restart (systemctl restart facewatch)",
                path,
                ", ".join(changed),
            )

    def _say_starving(self, scheduler: BatchScheduler, now: float, stall_s: float) -> None:
        """The watchdog is no longer fed: what hangs, for how long, and what comes next
        (otherwise the journal showed only systemd's 'Watchdog timeout' and an abort)."""
        logger.error(
            "%s: systemd's watchdog is no longer fed and restarts facewatch once WatchdogSec "
            "has passed (the stack of every thread follows in the journal)",
            self._stall(scheduler, now, stall_s),
        )

    def _say_stalled(self, scheduler: BatchScheduler, now: float, stall_s: float) -> None:
        """No systemd watchdog (a container, a shell): a stall is said, with every thread's
        stack, before the daemon stops with exit status 1 (the log blamed the cameras' fps,
        and a hung daemon stayed up for good: Docker restarts no 'unhealthy' container)."""
        logger.error(
            "%s: facewatch stops, with exit status 1, so that its restart policy (Docker's "
            "restart: unless-stopped, systemd's Restart=) starts it again; the stack of every "
            "thread follows",
            self._stall(scheduler, now, stall_s),
        )
        try:
            faulthandler.dump_traceback(all_threads=True)
        except (OSError, ValueError, AttributeError, RuntimeError):  # no real stderr
            logger.debug("no stack dump: stderr has no file descriptor")

    def _stall(self, scheduler: BatchScheduler, now: float, stall_s: float) -> str:
        """What hangs, where, and for how long."""
        delivering = ", ".join(r.config.name for r in self.readers if r.up) or "none"
        if now - scheduler.last_round >= stall_s:
            return (
                f"the batch scheduler has been stuck in one round for "
                f"{now - scheduler.last_round:.0f} s{_stuck_in(scheduler)} (an engine call "
                f"that does not return?) while camera(s) {delivering} deliver frames"
            )
        since = scheduler.queues.waiting_since
        waited = f" for {now - since:.0f} s" if since is not None else ""
        return (
            f"frames have waited{waited} and no batch took them while camera(s) {delivering} "
            "deliver frames"
        )


def _stuck_in(scheduler: BatchScheduler) -> str:
    """Where the scheduler's thread is now: its innermost call in facewatch's own code
    (``daemon``, ``engines``), e.g. ' in MTCNN.detect (engines/mtcnn.py:210)'; '' when it
    cannot be told."""
    frame = sys._current_frames().get(getattr(scheduler, "ident", None) or -1)
    root = Path(__file__).resolve().parent.parent
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.parent.name in ("daemon", "engines") and path.parent.parent == root:
            where = f"{path.parent.name}/{path.name}:{frame.f_lineno}"
            name = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)  # (3.11+)
            return f" in {name} ({where})"
        frame = frame.f_back
    return ""


@dataclass
class _Feeding:
    """The serve loop's feeding of systemd's watchdog: a ping every ``ping_every_s`` (the
    loop wakes every ``tick_s``), the next one due at ``next_ping``; ``starving``: no longer
    fed, said."""

    ping_every_s: float
    tick_s: float
    next_ping: float
    starving: bool = False


def _resumed(scheduler: BatchScheduler, now: float, paused_s: float) -> None:
    """The process was frozen (Ctrl-Z, docker pause) for ``paused_s``: said, and not taken
    for a stall (the scheduler's round and the frames' wait start again ``now``)."""
    logger.info("resumed after %.1f s paused (stopped, or the container paused)", paused_s)
    scheduler.last_round = max(scheduler.last_round, now)  # not a stall
    if scheduler.queues.waiting_since is not None:
        scheduler.queues.waiting_since = max(scheduler.queues.waiting_since, now)
