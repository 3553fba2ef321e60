"""Camera readers: one thread per camera decodes its stream through OpenCV's FFmpeg backend
(V4L2 for /dev/video*), keeps only the newest frames, and reconnects on any failure.

RTSP goes over TCP with open and read timeouts (a stream that stalls is noticed within about
10 s). OpenCV's FFmpeg backend opens every capture under one process-wide lock, unless told
that FFmpeg is thread-safe (it is, since FFmpeg 4): a camera whose open took long (one that
hangs after answering, one whose first keyframe never comes) held every other camera's open
(a healthy camera's reconnection, a video file's replay) for up to its 10 s open timeout, at
each retry. ``ffmpeg_environment`` says so, and the cameras open side by side. A network
camera is first asked whether it answers at all (``silent_stream``): one that does not is
said within 3 s, and not opened. A stream that opens but decodes no frame is said as such
(``NO_FRAME``: a keyframe that never comes), not as a stall. A video file plays in a loop at
its native frame rate, as a live camera (that is how the demo runs; ``facewatch identify``
finds who is in a recording).
Frames are decimated to the camera's target fps before they are queued, turned upright
(``rotate``), a dark one brightened (``daemon.low_light``), each marked with whether it
moved (``daemon.motion``); when the pipeline is behind, the oldest queued frame is dropped
and counted, so the scheduler always sees recent frames.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from daemon import metrics
from daemon.camera_frames import Frame, FrameQueues, FrameSchedule
from daemon.camera_open import NO_INTERLACED, StuckPicture, open_capture, source_kind
from daemon.config_cameras import CameraConfig, MotionConfig
from daemon.journal import REMIND_S
from daemon.low_light import Brightener
from daemon.motion import MotionDetector
from daemon.peer_exchange import peer_text
from daemon.redaction import redact_url

logger = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0  # a stream that ends sooner is the same outage (logged once)
FLAP_S = 5.0  # one that ends sooner (a few frames, then dropped): the backoff goes on growing
REASON_CHARS = 200  # the longest reason a metric label carries
BLANK_DOWN = (  # the camera's down reason (at most REASON_CHARS)
    f"its frames decode all black: an interlaced stream? {NO_INTERLACED}: set the camera/NVR "
    "stream to progressive (or the lens is covered, the scene unlit)"
)
FROZEN_DOWN = (
    f"its picture never changes: an interlaced stream? {NO_INTERLACED}: set the camera/NVR "
    "stream to progressive (or the camera froze: restart it)"
)
STALLED = "stream ended or stalled"
NO_FRAME = (  # a stream that opened and then decoded nothing (at most REASON_CHARS)
    "its stream opened, but no frame decoded: no keyframe came (a long I-frame interval, a "
    "smart codec's H.264+/H.265+?) or a codec FFmpeg cannot decode: set the camera's I-frame "
    "interval to 1-2 s, H.264"
)
TURNS = {  # cameras[].rotate: clockwise degrees
    90: cv2.ROTATE_90_CLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_COUNTERCLOCKWISE,
}


class CameraReader(threading.Thread):
    def __init__(
        self,
        config: CameraConfig,
        queues: FrameQueues,
        on_status: Callable[[str, bool], None] | None = None,
        motion: MotionConfig | None = None,
    ) -> None:
        super().__init__(name=f"camera-{config.name}", daemon=True)
        self.config, self.queues = config, queues
        self.motion = MotionDetector.gate(motion, config.fps)
        self._brighten = Brightener(config.name, config.brighten_dark)
        self.on_status = on_status or (lambda camera, up: None)
        self.kind = source_kind(config.url)
        self._stop_event = threading.Event()
        self._seq = 0
        self.up = False
        self._said: tuple[str, float] | None = None  # the failure last logged, and when
        self._down: tuple[str, float] | None = None  # the reason exported, since when (monotonic)
        # up and down are logged at INFO as the outage's warning is (a flapping stream: once)
        self._lost = False  # down, not logged yet: the outage's first _backoff says it
        self._loud = True  # its last outage was logged at INFO, so its return is too
        self._stuck = StuckPicture()
        self._plays = 0  # a video file's plays to its end
        self.stuck: str | None = None  # while its picture is stuck: why it is down for that

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        failures = 0
        while not self._stop_event.is_set():
            try:
                capture = open_capture(self.config.url, self._stop_event.is_set)
            except Exception as exc:  # OSError, or a bug: retried, never the thread's end
                if self._stop_event.is_set():  # (an open in flight at the stop: no "retrying")
                    break
                self._set_up(False)
                failures += 1
                self._backoff(failures, f"cannot open: {exc}")
                continue
            opened = time.monotonic()
            try:
                delivered = self._read(capture)
                why = STALLED if delivered or self.kind != "stream" else NO_FRAME
            except Exception as exc:  # a bug: the camera is marked down and read again
                logger.exception("camera %s: reading failed", self.config.name)
                delivered, why = 0, f"reading failed ({type(exc).__name__}: {exc})"
            finally:
                capture.release()
            if self._stop_event.is_set():
                break
            if self.kind == "file" and delivered:
                failures = 0  # end of a file: play it again at once
                self._played(delivered)
                continue
            self._set_up(False)
            lasted = time.monotonic() - opened if delivered else 0.0
            if lasted >= STABLE_S:
                failures, self._said = 1, None  # a new outage: logged as one
            elif lasted >= FLAP_S:
                failures = 1  # it streamed a while: back at once
            else:  # (a camera that drops each connection at once, e.g. at its client limit)
                failures += 1
            self._backoff(failures, why)
        self._set_up(False)

    def _played(self, frames: int) -> None:
        """A video file played to its end, and played again: said at INFO the first time
        (with what to use for a recording), then at DEBUG, so a short clip fills no log."""
        self._plays += 1
        if self._plays == 1:
            logger.info(
                "camera %s: %s played to its end (%d frames): played again from the start, "
                "in a loop, as a live camera (its events carry the time of the run; to find "
                "who is in a recording and when, use facewatch identify %s)",
                self.config.name, self.config.url, frames, self.config.url,
            )  # fmt: skip
        else:
            logger.debug(
                "camera %s: %s played to its end: play %d begins",
                self.config.name, self.config.url, self._plays + 1,
            )  # fmt: skip

    def _backoff(self, failures: int, why: str) -> None:
        delay = BACKOFF_MIN_S * 2 ** min(failures - 1, 10)
        delay *= random.uniform(0.75, 1.25)  # jitter: cameras that failed together spread out
        delay = min(BACKOFF_MAX_S, delay)
        now = time.monotonic()
        said = self._said
        quiet = said is not None and said[0] == why and now - said[1] < REMIND_S
        if self._lost:
            logger.log(
                logging.DEBUG if quiet else logging.INFO, "camera %s: down", self.config.name
            )
            self._lost, self._loud = False, not quiet
        elif not quiet:
            self._loud = True
        if quiet:
            logger.debug("camera %s: %s; retrying in %.1f s", self.config.name, why, delay)
        else:  # once per outage, again when the reason changes, and every REMIND_S
            again = f" (still, after {failures} attempts)" if said and said[0] == why else ""
            logger.warning(
                "camera %s: %s%s; retrying in %.1f s", self.config.name, why, again, delay
            )
            self._said = (why, now)
        self._export_down(why)
        metrics.CAMERA_RECONNECTS.labels(self.config.name).inc()
        self._stop_event.wait(delay)

    def _export_down(self, why: str) -> None:
        """``facewatch_camera_down_since_seconds``: one series while the camera is down,
        labelled with the latest reason, valued with the outage's start (``facewatch
        status`` shows both). The reason names no URL: the camera label says whose it is."""
        reason = peer_text(why.replace(f"{redact_url(self.config.url)}: ", ""), REASON_CHARS)
        started = self._down[1] if self._down is not None else time.monotonic()
        if self._down is None or self._down[0] != reason:
            self._clear_down()
            self._down = (reason, started)
        # the start, on the wall clock as it is now (at every retry: NTP may have set it
        # right since the outage began, at a board's boot)
        since = time.time() - (time.monotonic() - started)
        metrics.CAMERA_DOWN_SINCE.labels(self.config.name, reason).set(since)

    def _clear_down(self) -> None:
        if self._down is not None:
            metrics.CAMERA_DOWN_SINCE.remove(self.config.name, self._down[0])
            self._down = None

    def _set_up(self, up: bool) -> None:
        if up:
            self._clear_down()
        if up != self.up:
            self.up = up
            metrics.CAMERA_UP.labels(self.config.name).set(int(up))
            if not up and not self._stop_event.is_set():  # (a stop loses no camera)
                metrics.CAMERA_DISCONNECTS.labels(self.config.name).inc()
            if up:
                level = logging.INFO if self._loud else logging.DEBUG
                logger.log(level, "camera %s: up", self.config.name)
            elif self._stop_event.is_set():
                logger.info("camera %s: down", self.config.name)
            else:
                self._lost = True  # said with the outage's line, by _backoff
            self.on_status(self.config.name, up)

    def _read(self, capture: cv2.VideoCapture) -> int:
        """Read until the stream fails or ends; returns the number of frames decoded. The
        frames kept are turned as ``rotate`` says, and queued."""
        native_fps = capture.get(cv2.CAP_PROP_FPS)
        pace = 1.0 / native_fps if self.kind == "file" and 1 <= native_fps <= 240 else 0.0
        schedule = FrameSchedule(self.config.fps)
        started = time.monotonic()
        decoded = 0
        if self.motion is not None:
            self.motion.reset()  # a new connection: compare with its own frames only
        self._stuck.new_source()
        while not self._stop_event.is_set():
            if pace:
                self._stop_event.wait(max(0.0, started + decoded * pace - time.monotonic()))
            if not capture.grab():  # decoded; converted to BGR only when it is kept
                return decoded
            decoded += 1
            metrics.FRAMES_DECODED.labels(self.config.name).inc()
            if self.stuck is None:
                self._set_up(True)
            now = time.monotonic()  # the schedule; the frame's time is the wall clock's
            if not schedule.keeps(now):
                continue
            ok, image = capture.retrieve()
            if not ok or image is None:
                return decoded
            if self.config.rotate:  # before all else: the motion gate, regions, events
                image = cv2.rotate(image, TURNS[self.config.rotate])
            self._seq += 1
            metrics.FRAMES_READ.labels(self.config.name).inc()
            if self._check_picture(image, now):
                continue  # no picture (a stale one may hold faces: no events of it)
            image = self._brighten(image)  # (after the check: a black frame stays black)
            moved = self.motion.moved(image) if self.motion is not None else True
            frame = Frame(self.config.name, self._seq, time.time(), image, moved, time.monotonic())
            self.queues.put(frame)
        return decoded

    def _check_picture(self, image: np.ndarray, now: float) -> bool:
        """A picture that never changes (``StuckPicture``: an interlaced stream, which
        OpenCV's FFmpeg cannot convert, read as if all were well) marks the camera down, its
        reason BLANK_DOWN or FROZEN_DOWN, warned once; the first frame that changes brings it
        back up. A run of black frames goes on across a reconnect and a file's replays.
        Whether the camera is down for it (its frames are not handed on)."""
        if self._stuck.see(image, now):
            if self.stuck is not None:
                self.stuck = None
                logger.info("camera %s: its picture changes again", self.config.name)
                self._set_up(True)
            return False
        if self.stuck is None and self._stuck.lasted(now):
            self.stuck = BLANK_DOWN if self._stuck.black else FROZEN_DOWN
            self._set_up(False)
            if self._lost:  # said now, with its warning (no _backoff says it)
                logger.info("camera %s: down", self.config.name)
                self._lost, self._loud = False, True
            since = now - (self._stuck.since or now)
            logger.warning(
                "camera %s: %s (%.0f s, %d frames)",
                self.config.name, self.stuck, since, self._stuck.count,
            )  # fmt: skip
        if self.stuck is None:
            return False
        self.stuck = BLANK_DOWN if self._stuck.black else FROZEN_DOWN
        self._export_down(self.stuck)  # (again after a reconnect, which exported its own)
        return True
