"""The daemon's life cycle: build every piece from the config, start them in order, serve
until SIGTERM, then stop them in reverse order, draining what is in flight.

systemd: ``READY=1`` once the engines are warm (the start timeout is extended while a
TensorRT plan is built), ``WATCHDOG=1`` only while frames flow (see
``daemon.systemd_notify.watchdog_healthy``), ``STOPPING=1`` on the way out. Without
systemd's watchdog (a container), frames that stop flowing for STALL_S end the daemon with
exit status 1, for its restart policy. The checks
before anything starts are in ``daemon.preflight``.
"""

from __future__ import annotations

import errno
import faulthandler
import logging
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
from functools import partial
from pathlib import Path
from types import FrameType

import numpy as np

from daemon import build_version, home_assistant, metrics, preflight
from daemon.archive import FaceArchive
from daemon.cameras import CameraReader, FrameQueues, ffmpeg_environment
from daemon.config import WARM_UP_HW, CameraConfig, Config, ConfigError
from daemon.config_file import config_changes, load_config
from daemon.engine_choice import EngineChoice, say_plan_build
from daemon.events import EventSinks, in_view_json, person_json
from daemon.gallery import GalleryError
from daemon.mqtt import DRAIN_ON_STOP_S, MqttPublisher
from daemon.preflight import resolve_model
from daemon.scheduler import BatchScheduler, Pipeline, open_gallery, threshold_said
from daemon.spool import Spool
from daemon.systemd_notify import sd_notify, watchdog_healthy
from engines.base import EngineError
from engines.facenet import FaceNet
from engines.loader import CGROUP_ROOT, PROC_CGROUP
from engines.mtcnn import MTCNN

logger = logging.getLogger(__name__)

PAUSED_S = 5.0  # the serve loop, which wakes every second, slept longer: the process was frozen
STALL_S = 30.0  # frames have not flowed for this long: the watchdog is no longer fed, or
# without systemd's watchdog the daemon stops itself (exit status 1)
STALLED_STOP_S = 2.0  # how long such a stop waits for the stuck scheduler
# A stop's deadlines (the unit's TimeoutStopSec=60s must not be reached: systemd would kill):
STOP_BUDGET_S = 50.0  # the whole stop
READERS_STOP_S = 15.0  # the cameras, all together (a stream read can block)
PUBLISHER_STOP_S = 15.0  # kept to last for MQTT: sending the spool, then `offline`
PLAN_BUILD_S = 1800  # systemd's start timeout is extended by this for each TensorRT build


def _building_plan(onnx_path: Path) -> None:
    """Before a TensorRT plan is built at start: say so, and give systemd the time."""
    say_plan_build(onnx_path)
    sd_notify(f"EXTEND_TIMEOUT_USEC={PLAN_BUILD_S * 1_000_000}")
    sd_notify(f"STATUS=building the TensorRT plan for {onnx_path.name}")


class StartFailed(Exception):
    """The daemon cannot start for now, through no fault of its config (out of memory while
    the engines load): exit status 1, which systemd's Restart=on-failure retries (a
    ConfigError's 2 it never retries)."""


class _StoppedWhileStarting(Exception):
    """SIGTERM came while the engines loaded: the next load is not begun (Ctrl-C is Python's
    KeyboardInterrupt until the daemon runs: it ends the start itself)."""


class Service:
    def __init__(
        self, config: Config, run_for_s: float | None = None, config_path: str | None = None
    ) -> None:
        self.config, self.run_for_s, self.config_path = config, run_for_s, config_path
        self._stop = threading.Event()
        self._hup = threading.Event()
        self.publisher: MqttPublisher | None = None
        self.spool: Spool | None = None
        self.readers: list[CameraReader] = []
        self.archive: FaceArchive | None = None
        self._loading: str | None = None  # what the engines load now (the stop waits for it)
        # the threads a stop had to leave running (a call in OpenCV or an engine that did not
        # return): the process must then end without Python's clean-up (``run_cli``)
        self.left_behind: list[str] = []
        self.stalled = False  # a stall without systemd's watchdog ended the run (``_serve``)
        # the start-up summary's: which engines run, and the match threshold in use
        self._engines_said = self._threshold_said = ""

    # -- building -----------------------------------------------------------------------

    def load_engines(self) -> tuple[MTCNN, FaceNet | None]:
        """The config's detector and FaceNet (None without a model), warmed up; a
        ConfigError names what is wrong. A stop asked meanwhile begins no further load
        (``_StoppedWhileStarting``); one asked during a load is said, and waits for it
        (SIGTERM; Ctrl-C, said too, interrupts it). Memory running out is no config error:
        ``StartFailed``."""
        cfg = self.config
        choice = EngineChoice.of_config(cfg, self.config_path, on_build=self._building_plan)
        try:
            with _StopWatch(self):
                self._loading = f"the detector (MTCNN in {cfg.engines.mtcnn_dir})"
                detector = choice.detector()
                self._stop_point()
                model = resolve_model(cfg)
                facenet = None
                if model is not None:
                    self._loading = f"the FaceNet model {model}"
                    facenet = choice.facenet(model)
                    self._stop_point()
                self._engines_said = choice.said(facenet)
                self._loading = "the engines' warm-up"
                self._warm_up(detector, facenet)
        except (EngineError, MemoryError, RuntimeError) as exc:
            if _out_of_memory(exc):  # not the config's fault: a restart may find memory
                raise StartFailed(
                    f"out of memory while loading {self._loading} ({_memory_said(exc)}): "
                    f"{str(exc) or type(exc).__name__}"
                ) from None
            if not isinstance(exc, EngineError):
                raise
            raise ConfigError(str(exc)) from None
        finally:
            self._loading = None
        return detector, facenet

    def _stop_point(self) -> None:
        """Between two loads: a stop asked meanwhile ends the start here."""
        if self._stop.is_set():
            raise _StoppedWhileStarting

    def _building_plan(self, onnx_path: Path) -> None:
        self._stop_point()  # (a detector's three plans: not the next one)
        self._loading = f"the TensorRT plan build of {onnx_path}"
        _building_plan(onnx_path)

    def _warm_up(self, detector: MTCNN, facenet: FaceNet | None) -> None:
        started = time.monotonic()
        rng = np.random.default_rng(0)
        detector.detect([rng.integers(0, 255, (*WARM_UP_HW, 3), dtype=np.uint8)])
        if facenet is not None:
            height, width = facenet.image_size_hw
            facenet.embed(np.zeros((2, height, width, 3), np.uint8))
        logger.info("engines warm in %.1f s", time.monotonic() - started)

    def _start_outputs(self, enrolled: list[str]) -> EventSinks:
        """The event outputs, and the MQTT publisher started with the state it must show
        first (``enrolled``: the gallery's names)."""
        cfg = self.config
        if not cfg.mqtt.enabled:
            return EventSinks(stdout=cfg.events.stdout, jsonl_file=cfg.events.jsonl_file)
        try:
            self.spool = Spool(cfg.mqtt.spool_dir, cfg.mqtt.spool_max_events)
        except OSError as exc:
            raise preflight.output_error("mqtt.spool_dir", exc) from None
        publisher = MqttPublisher(cfg.mqtt, cfg.node_id, self.spool)  # (mqtt.tls: ConfigError)
        self.publisher = publisher
        self._initial_state(publisher, enrolled)
        sinks = EventSinks(
            spool=self.spool,
            topic_for=publisher.event_topic,
            snapshot_topic_for=publisher.snapshot_topic,
            on_spooled=publisher.notify,
            direct=publisher.send_now,
            state=publisher,
            stdout=cfg.events.stdout,
            jsonl_file=cfg.events.jsonl_file,
        )
        publisher.start()  # last: `online` only once everything else is in place
        return sinks

    def _initial_state(self, publisher: MqttPublisher, enrolled: list[str]) -> None:
        """What the broker shows before ``online``: no camera up, nobody in view (which also
        ends what a crash left), nothing of disabled cameras or of people no longer enrolled,
        and Home Assistant's configs."""
        cfg, started = self.config, time.time()
        ha = cfg.mqtt.home_assistant
        if ha.enabled:
            publisher.announce(
                home_assistant.discovery_messages(cfg, publisher), home_assistant.birth_topic(ha)
            )
            publisher.people_announcements = partial(home_assistant.people_messages, cfg, publisher)
        for camera in cfg.cameras:
            if not camera.enabled:
                publisher.forget_camera(camera.name)
                continue
            publisher.set_camera_status(camera.name, False)
            publisher.set_in_view(camera.name, in_view_json(camera.name, [], started))
            if not cfg.tracking.snapshots:  # one from a run with them on
                publisher.set_last_snapshot(camera.name, b"")
        publisher.set_people({name: person_json(name, []) for name in enrolled})
        if not cfg.tracking.snapshots:
            for name in enrolled:
                publisher.set_person_snapshot(name, b"")

    # -- running ------------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.config
        self._install_signals()  # now: a SIGHUP or SIGTERM while the engines load is no kill
        preflight.check(cfg)
        preflight.log_warnings(cfg, logger)
        preflight.prepare_outputs(cfg)
        # claimed before the engines load: refused at once (a prune at work waited for)
        with preflight.outputs_claimed(cfg):
            return self._run_claimed()

    def _run_claimed(self) -> int:
        cfg = self.config
        cameras = [c for c in cfg.cameras if c.enabled]
        names = [c.name for c in cameras]
        metrics.init(cfg.node_id, names, cfg.engines.backend, "", mqtt=cfg.mqtt.enabled)
        if cfg.metrics.enabled:  # before the engines: a first start's TensorRT builds take
            self._serve_metrics()  # minutes, which Prometheus sees as starting, not down
        try:
            detector, facenet = self.load_engines()
            self._stop_point()
        except _StoppedWhileStarting:  # SIGTERM during the load (a TensorRT build: minutes)
            logger.info("stopped while starting: nothing was running yet")
            return 0
        metrics.set_model(facenet.model_id if facenet else "")
        enrolled = self._enrolled(facenet)
        sinks = self._start_outputs(enrolled)
        if cfg.archive.dir:
            self._start_archive(facenet)
        self._log_filters(cameras)
        pipeline = Pipeline(cfg, detector, facenet, sinks, archive=self.archive)
        queues = FrameQueues(
            [c.name for c in cameras], cfg.batching.queue_frames, cfg.detection.full_scan_every
        )
        scheduler = BatchScheduler(pipeline, queues)
        on_status = self.publisher.set_camera_status if self.publisher else None
        self.readers = [CameraReader(c, queues, on_status, cfg.motion(c)) for c in cameras]
        ffmpeg_environment()  # read from the environment: set before the threads start
        scheduler.start()
        for reader in self.readers:
            reader.start()
        signal.signal(signal.SIGINT, self._on_stop_signal)
        sd_notify("READY=1")
        metrics.READY.set(1)
        logger.info(self._summary(names))
        try:
            self._serve(scheduler)
        finally:
            self._shutdown(scheduler, sinks)
        return 1 if scheduler.error is not None or self.stalled else 0

    def _summary(self, cameras: list[str]) -> str:
        """The start-up line: which code, cameras, engines and match threshold run (after an
        upgrade or a `gallery calibrate`, the journal says what ran when)."""
        threshold = f"; {self._threshold_said}" if self._threshold_said else ""
        return (
            f"facewatch {build_version()} running: {len(cameras)} camera(s) "
            f"({', '.join(cameras)}), node {self.config.node_id}; {self._engines_said}{threshold}"
        )

    def _enrolled(self, facenet: FaceNet | None) -> list[str]:
        """The gallery's names (for the initial MQTT state); fails now, a ConfigError, on a
        wrong or damaged gallery, read whole as the scheduler will (found only there, the
        daemon ran with nobody enrolled). The scheduler thread opens its own: SQLite
        connections are per thread."""
        cfg = self.config
        if facenet is None or not Path(cfg.recognition.gallery).exists():
            return []
        gallery = None
        try:
            gallery = open_gallery(cfg, facenet.model_id)
            if gallery is None:
                return []
            gallery.load()
            self._threshold_said = threshold_said(gallery, self.config.cameras)
            return [identity.name for identity in gallery.identities()]
        except GalleryError as exc:
            raise ConfigError(f"recognition.gallery: {exc}") from None
        finally:
            if gallery is not None:
                gallery.close()

    def _serve_metrics(self) -> None:
        """Serve /metrics; an address that is not one of this host's is the config's error."""
        address, port = self.config.metrics.address, self.config.metrics.port
        try:
            metrics.serve(address, port)
        except OSError as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, socket.gaierror)
                or getattr(cause, "errno", 0) == errno.EADDRNOTAVAIL
            ):
                raise ConfigError(f"metrics.address: {exc}") from None
            raise

    def _start_archive(self, facenet: FaceNet | None) -> None:
        cfg = self.config
        if facenet is None:
            self.archive = FaceArchive(cfg.archive, cfg.node_id, None)
        else:  # its images rated on the crops of the model enroll will use
            self.archive = FaceArchive(
                cfg.archive, cfg.node_id, facenet.model_id, facenet.align_face
            )
        self.archive.start()
        logger.info(
            "face archive %s: keeps %s, up to %d images a visit, at most %g MB and %g day(s)",
            cfg.archive.dir,
            "every visit" if cfg.archive.which == "all" else "the visits nobody was named in",
            cfg.archive.per_visit,
            cfg.archive.max_mb,
            cfg.archive.keep_days,
        )

    def _log_filters(self, cameras: list[CameraConfig]) -> None:
        """Say which cameras drop faces in ignore regions and which are motion-gated."""
        for camera in cameras:
            if camera.detection.ignore:
                regions = len(camera.detection.ignore)
                logger.info(
                    "camera %s: faces in %d ignore region(s) are dropped", camera.name, regions
                )
        gated = [c.name for c in cameras if self.config.motion(c).enabled]
        if gated:
            logger.info(
                "motion gate on %s: still frames skip detection while no face is in view",
                ", ".join(gated),
            )

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
        next_ping = time.monotonic()
        deadline = time.monotonic() + self.run_for_s if self.run_for_s else float("inf")
        starving = False
        last_tick = time.monotonic()
        while not self._stop.wait(min(tick, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                logger.info("--run-for %.0f s reached: stopping", self.run_for_s)
                return
            if self._hup.is_set():
                self._hup.clear()
                self._reload(scheduler)
            if not scheduler.is_alive():
                logger.error("the batch scheduler stopped: %s", scheduler.error)
                return
            now = time.monotonic()
            if now - last_tick > PAUSED_S:  # the process was frozen (Ctrl-Z, docker pause):
                logger.info(
                    "resumed after %.1f s paused (stopped, or the container paused)",
                    now - last_tick,
                )
                scheduler.last_round = max(scheduler.last_round, now)  # not a stall
                if scheduler.queues.waiting_since is not None:
                    scheduler.queues.waiting_since = max(scheduler.queues.waiting_since, now)
            last_tick = now
            healthy = partial(
                watchdog_healthy, now, scheduler.last_round, scheduler.queues.waiting_since
            )
            if not watchdog_s:
                if not healthy(stall_s):
                    self._say_stalled(scheduler, now, stall_s)
                    self.stalled = True
                    return
                continue
            if now < next_ping:
                continue
            if healthy(stall_s):
                sd_notify("WATCHDOG=1")
                next_ping = now + ping_every - tick / 2  # due by the tick nearest the interval
                if starving:  # before systemd's kill: its ERROR promised one
                    logger.warning("the batch scheduler goes on again: the watchdog is fed")
                starving = False
            elif not starving:  # once: systemd's kill follows
                self._say_starving(scheduler, now, stall_s)
                starving = True

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

    def _install_signals(self) -> None:
        """SIGTERM and SIGHUP from the start; Ctrl-C (SIGINT) interrupts the start at once,
        and once the daemon runs stops it cleanly, like SIGTERM."""

        def reload(signum: int, frame: FrameType | None) -> None:
            self._hup.set()  # the serve loop passes it on within a second

        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGHUP, reload)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        self._stop.set()

    def _shutdown(self, scheduler: BatchScheduler, sinks: EventSinks) -> None:
        """Cameras, then the scheduler (it processes what is queued and sends ``left`` for
        open tracks), then MQTT, each within its share of ``STOP_BUDGET_S``."""
        sd_notify("STOPPING=1")
        end = time.monotonic() + STOP_BUDGET_S
        for reader in self.readers:
            reader.stop()
        readers_end = time.monotonic() + READERS_STOP_S
        for reader in self.readers:
            reader.join(timeout=max(0.0, readers_end - time.monotonic()))
        stuck = [r.name for r in self.readers if r.is_alive()]
        if stuck:
            logger.warning(
                "%s did not stop within %.0f s (a stream read blocks); left behind",
                ", ".join(stuck),
                READERS_STOP_S,
            )
        scheduler.queues.say_drops()  # (a run shorter than a minute is warned of no drops)
        scheduler.stop()
        wait_s = max(0.0, end - PUBLISHER_STOP_S - time.monotonic())
        if self.stalled:  # stuck in a call: waiting would only delay the restart
            wait_s = min(wait_s, STALLED_STOP_S)
        scheduler.join(timeout=wait_s)
        if scheduler.is_alive():
            logger.warning("the batch scheduler did not finish in time; queued frames are dropped")
        if self.archive is not None:  # it writes its last visits while MQTT drains
            self.archive.finish()
        if self.publisher is not None:
            left_s = max(0.0, end - time.monotonic())
            drain_s = min(DRAIN_ON_STOP_S, max(0.0, left_s - 10.0))
            self.publisher.stop(timeout_s=min(5.0, left_s / 3), drain_s=drain_s)
        archive_ended = True
        if self.archive is not None:
            archive_ended = self.archive.join(timeout_s=max(0.0, end - time.monotonic()))
        if self.spool is not None:
            left = len(self.spool)
            if left:
                logger.warning(
                    "%d message(s) (events and their face snapshots) kept in the spool %s for "
                    "the next start",
                    left,
                    self.spool.path,
                )
            self.spool.close()
        sinks.close()
        self.left_behind = [r.name for r in (*self.readers, scheduler) if r.is_alive()]
        self.left_behind += [] if archive_ended else ["face-archive"]
        logger.info("facewatch stopped")


class _StopWatch:
    """While the engines load, a stop signal is said at once, with what it waits for: a
    load (a TensorRT build: minutes) is one call that Python's signal handler cannot
    interrupt, and runs only after. The signal's number reaches this thread through
    ``signal.set_wakeup_fd``, written as the signal arrives."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._thread = threading.Thread(target=self._watch, name="stop-watch", daemon=True)
        self._previous: int | None = -1

    def __enter__(self) -> _StopWatch:
        try:
            self._previous = signal.set_wakeup_fd(self._write.fileno())
        except ValueError:  # not the main thread (a test's): the loads are not watched
            self._previous = None
            return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.set_wakeup_fd(self._previous)
        self._write.close()  # the watch ends
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self._read.close()

    def _watch(self) -> None:
        said = False
        while True:
            try:
                signals = self._read.recv(64)
            except OSError:
                return
            if not signals:
                return
            stops = [n for n in signals if n in (signal.SIGTERM, signal.SIGINT)]
            loading = self.service._loading
            if stops and loading and not said:
                logger.info("%s", _stop_said(stops[0], loading))
                said = True


def _stop_said(signum: int, loading: str) -> str:
    """What a stop signal during a load does: SIGTERM waits for the load to end; Ctrl-C
    (Python's KeyboardInterrupt until ``run`` takes SIGINT over) cuts it short, as soon as
    the step under way returns to Python."""
    name = signal.Signals(signum).name
    if signum == signal.SIGINT:
        return (
            f"{name} during the load of {loading}: facewatch is interrupted as soon as the "
            "step under way returns (a TensorRT build: when it ends)"
        )
    return (
        f"{name} during the load of {loading}: facewatch stops once it ends (the load cannot "
        "be cut short)"
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


# what engines say when memory runs out: OpenVINO's and ONNX Runtime's C++ (std::bad_alloc),
# CUDA's (cudaErrorMemoryAllocation, CUDA_ERROR_OUT_OF_MEMORY), PyTorch's, the OS's (ENOMEM)
_OUT_OF_MEMORY = re.compile(
    r"bad_alloc|out of memory|out_of_memory|outofmemory|memoryallocation|"
    r"cannot allocate memory|failed to allocate",
    re.IGNORECASE,
)


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what an engine's error wraps) is memory running out."""
    while exc is not None:
        if isinstance(exc, MemoryError) or _OUT_OF_MEMORY.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _memory_said(exc: BaseException) -> str:
    """How much memory there was, and the limits smaller than the machine's that apply."""
    said = []
    available = _meminfo_mb("MemAvailable")
    if available is not None:
        said.append(f"{available} MB free on this machine")
    limit = _cgroup_memory_mb()
    if limit is not None:
        said.append(
            f"a memory limit of {limit[0]} MB, {limit[1]} MB in use (MemoryMax=, docker --memory)"
        )
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        said.append(f"an address-space limit of {soft >> 20} MB (LimitAS=, ulimit -v)")
    if re.search(r"cuda|gpu|tensorrt", str(exc), re.IGNORECASE):
        said.append("GPU memory: nvidia-smi shows which processes hold it")
    return "; ".join(said) or "free memory unknown"


def _meminfo_mb(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0]) >> 10  # (kB)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_memory_mb() -> tuple[int, int] | None:
    """This process's cgroup's memory limit and use, in MB (v2's memory.max and
    memory.current, v1's memory.limit_in_bytes and usage_in_bytes), or None without one."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, group = [*line.split(":", 2), "", ""][:3]
        if not controllers:  # v2
            folder, files = CGROUP_ROOT / group.lstrip("/"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # v1
            folder = CGROUP_ROOT / "memory" / group.lstrip("/")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        try:
            limit, used = (int((folder / name).read_text()) for name in files)
        except (OSError, ValueError):  # "max": no limit; or a group it cannot read
            continue
        if limit < 1 << 60:  # (v1's "no limit" is a huge number)
            return limit >> 20, used >> 20
    return None
