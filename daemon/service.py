"""The daemon's life cycle: build every piece from the config, start them in order, serve
until SIGTERM, then stop them in reverse order, draining what is in flight.

systemd: ``READY=1`` once the engines are warm (the start timeout is extended while a
TensorRT plan is built), ``WATCHDOG=1`` only while frames flow (see
``daemon.systemd_notify.watchdog_healthy``), ``STOPPING=1`` on the way out. Without
systemd's watchdog (a container), frames that stop flowing for STALL_S end the daemon with
exit status 1, for its restart policy. The checks
before anything starts are in ``daemon.preflight``.

Here: ``Service``, the outputs it builds (events, MQTT, metrics, the face archive), its start
in order and its stop in reverse order. Beside it, parts of ``Service``: ``service_start``
(the engines' load, a stop asked during it, memory running out) and ``service_watch`` (the
serve loop until a stop: SIGHUP's reload, the stall check, STALL_S).
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from functools import partial
from pathlib import Path
from types import FrameType

from daemon import build_version, home_assistant, metrics, preflight, preflight_warnings
from daemon.archive import FaceArchive
from daemon.camera_frames import FrameQueues
from daemon.camera_open import ffmpeg_environment
from daemon.cameras import CameraReader
from daemon.config import Config, ConfigError
from daemon.config_cameras import CameraConfig
from daemon.events import EventSinks, in_view_json, person_json
from daemon.gallery_file import GalleryError
from daemon.gallery_open import open_gallery, threshold_said
from daemon.mqtt import DRAIN_ON_STOP_S, MqttPublisher
from daemon.scheduler import BatchScheduler, Pipeline
from daemon.service_start import EngineLoading, StoppedWhileStarting
from daemon.service_watch import STALLED_STOP_S, Serving
from daemon.spool import Spool
from daemon.systemd_notify import sd_notify
from engines.facenet import FaceNet

logger = logging.getLogger(__name__)

# A stop's deadlines (the unit's TimeoutStopSec=60s must not be reached: systemd would kill):
STOP_BUDGET_S = 50.0  # the whole stop
READERS_STOP_S = 15.0  # the cameras, all together (a stream read can block)
PUBLISHER_STOP_S = 15.0  # kept to last for MQTT: sending the spool, then `offline`


class Service(EngineLoading, Serving):
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
        try:  # (mqtt.tls files changed since preflight read them: a ConfigError)
            publisher = MqttPublisher(cfg.mqtt, cfg.node_id, self.spool)
        except BaseException:
            self.spool.close()  # its SQLite file and lock were left open to the process's end
            self.spool = None
            raise
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
        preflight_warnings.log_warnings(cfg, logger)
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
        except StoppedWhileStarting:  # SIGTERM during the load (a TensorRT build: minutes)
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
        self._stop_readers()
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
        self._close_spool()
        sinks.close()
        self.left_behind = [r.name for r in (*self.readers, scheduler) if r.is_alive()]
        self.left_behind += [] if archive_ended else ["face-archive"]
        logger.info("facewatch stopped")

    def _stop_readers(self) -> None:
        """Every camera reader stopped, each waited for within ``READERS_STOP_S`` in all;
        those a stream read still holds are warned of and left behind."""
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

    def _close_spool(self) -> None:
        """The spool closed, with a warning of the messages it keeps for the next start."""
        if self.spool is None:
            return
        left = len(self.spool)
        if left:
            logger.warning(
                "%d message(s) (events and their face snapshots) kept in the spool %s for "
                "the next start",
                left,
                self.spool.path,
            )
        self.spool.close()
