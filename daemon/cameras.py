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

import dataclasses
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from daemon import metrics
from daemon.config_cameras import CameraConfig, MotionConfig
from daemon.config_file import redact_url
from daemon.journal import REMIND_S
from daemon.low_light import Brightener
from daemon.motion import MotionDetector
from daemon.stream_probe import peer_text, silent_stream, stream_problem
from engines.loader import usable_cpus

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 3_400  # OpenCV's FFmpeg backend tries a read 3 times: a stall shows in 10 s
# FFmpeg's decoder threads per camera, at most (fewer under a smaller CPU budget). OpenCV's
# default is its count of the host's cores, which misses systemd's CPUQuota=: 16 threads a
# camera on a 16-core host under a 2-core quota, some 90 MB more a 1080p camera than one.
# One thread decodes 1080p H.264 at about 190 frames/s on a server core (3456x2234 at 100);
# a second keeps a slower core (an ARM board's) ahead of a 25-30 fps stream.
DECODER_THREADS = 2
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0  # a stream that ends sooner is the same outage (logged once)
FLAP_S = 5.0  # one that ends sooner (a few frames, then dropped): the backoff goes on growing
# a camera whose frames are dropped (the pipeline behind) past metrics.DROPS_HIGH of a minute
# is logged, at most every REMIND_S: otherwise only Prometheus's alert would say it
DROPS_WINDOW_S = 60.0
REASON_CHARS = 200  # the longest reason a metric label carries
# A picture that does not change for this long (BLANK_S when all black, FROZEN_S otherwise;
# BLANK_FRAMES frames at least) marks the camera down: a black frame at a cut, or a camera's
# switch to night, never lasts that long, and a real camera's noise changes some pixel
BLANK_S = 10.0
FROZEN_S = 60.0  # (a static scene of a long-GOP camera might repeat exact frames for seconds)
BLANK_FRAMES = 3
SAMPLE_STRIDE = 4  # every 4th pixel of every 4th row is compared
NO_INTERLACED = "OpenCV's FFmpeg cannot convert interlaced video"
BLANK_DOWN = (  # the camera's down reason (at most REASON_CHARS)
    f"its frames decode all black: an interlaced stream? {NO_INTERLACED}: set the camera/NVR "
    "stream to progressive (or the lens is covered, the scene unlit)"
)
FROZEN_DOWN = (
    f"its picture never changes: an interlaced stream? {NO_INTERLACED}: set the camera/NVR "
    "stream to progressive (or the camera froze: restart it)"
)
STUCK_FILE = f"an interlaced video? {NO_INTERLACED}: re-encode it progressive"
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


@dataclass(frozen=True)
class Frame:
    camera: str
    seq: int
    ts: float  # wall-clock time of capture (seconds since the epoch): what outputs say
    image: np.ndarray
    moved: bool = True  # something in the picture changed (always, without a motion gate)
    mono: float | None = None  # time.monotonic() of capture: what tracks are timed by

    @property
    def clock(self) -> float:
        """The time tracking, expiry and pacing go by: monotonic (a wall clock that NTP
        steps would split or end tracks), the wall clock's for frames made without one."""
        return self.ts if self.mono is None else self.mono


class FrameQueues:
    """The newest frames of every camera, and the scheduler's wait for them."""

    def __init__(
        self, cameras: list[str], per_camera: int, full_scan_every: int | None = None
    ) -> None:
        """``full_scan_every``: detection's, for the advice when the pipeline is behind
        (None: not known)."""
        self._queues: dict[str, deque[Frame]] = {c: deque() for c in cameras}
        self._turns: deque[str] = deque(cameras)  # served longest ago first
        self._per_camera = per_camera
        self._full_scan_every = full_scan_every
        self._ready = threading.Condition()
        self._taken = 0  # frames the pipeline took, of all cameras
        # time.monotonic() since which frames have waited for the pipeline (None: none wait,
        # or the last take left some and took others): what tells a stalled pipeline
        self.waiting_since: float | None = None
        # per camera: [window start (monotonic), frames put, frames dropped, last warned,
        # frames taken of all cameras at the start]
        self._drops = {c: [time.monotonic(), 0, 0, -REMIND_S, 0] for c in cameras}
        # per camera since the start: [frames put, frames dropped] (said at the stop: a run
        # shorter than DROPS_WINDOW_S, `--run-for 8`, was never warned of its drops)
        self._totals = {c: [0, 0] for c in cameras}
        self._started = time.monotonic()

    def put(self, frame: Frame) -> None:
        with self._ready:
            queue = self._queues[frame.camera]
            dropped_one = len(queue) >= self._per_camera
            if dropped_one:
                dropped = queue.popleft()
                metrics.FRAMES_DROPPED.labels(frame.camera).inc()
                if dropped.moved and not frame.moved:  # the motion is not dropped with it
                    frame = dataclasses.replace(frame, moved=True)
            queue.append(frame)
            if self.waiting_since is None:
                self.waiting_since = time.monotonic()
            self._count_drops(frame.camera, dropped_one)
            self._ready.notify()

    def _count_drops(self, camera: str, dropped: bool) -> None:
        """Warn (at most every REMIND_S) of a camera whose frames were mostly dropped in a
        minute: the pipeline cannot keep up with it (the advice sized by the frames it took
        in that time, of all cameras)."""
        totals = self._totals[camera]
        totals[0] += 1
        totals[1] += dropped
        window = self._drops[camera]
        window[1] += 1
        window[2] += dropped
        now = time.monotonic()
        if now - window[0] < DROPS_WINDOW_S:
            return
        start, put, lost, warned, taken = window
        if lost > metrics.DROPS_HIGH * put and now - warned >= REMIND_S:
            if self._taken == taken:  # not slow: stalled (fewer fps would not help)
                why = (
                    "the pipeline took no frame of any camera in that time: it is stalled (an "
                    "engine call that does not return?), not slow"
                )
            else:
                handled = (self._taken - taken) / (now - start) if now > start else 0.0
                advice = metrics.drops_advice(handled, len(self._queues), self._full_scan_every)
                why = f"the pipeline cannot keep up ({advice})"
            logger.warning(
                "camera %s: %.0f %% of its frames dropped in the last %.0f s: %s",
                camera, min(100, 100 * lost / put), now - start, why,
            )  # fmt: skip
            warned = now
        self._drops[camera] = [now, 0, 0, warned, self._taken]

    def say_drops(self) -> None:
        """At the stop: one line for each camera some of whose frames were dropped in the
        whole run, how many of how many (the minute's warning never comes in a shorter run).
        A WARNING, with the 60-s warning's advice, past metrics.DROPS_HIGH of its frames."""
        with self._ready:
            now = time.monotonic()
            for camera, (put, lost) in self._totals.items():
                if not lost:
                    continue
                said = f"camera {camera}: {lost} of {put} frames dropped"
                if lost <= metrics.DROPS_HIGH * put:
                    logger.info("%s (the pipeline was behind at times)", said)
                    continue
                if not self._taken:
                    why = "the pipeline took no frame of any camera: it was stalled, not slow"
                else:
                    handled = self._taken / max(now - self._started, 1e-3)
                    advice = metrics.drops_advice(handled, len(self._queues), self._full_scan_every)
                    why = f"the pipeline could not keep up: {advice}"
                logger.warning("%s in %.0f s (%s)", said, now - self._started, why)

    def pending(self) -> int:
        with self._ready:
            return sum(len(q) for q in self._queues.values())

    def cameras_waiting(self) -> set[str]:
        """The cameras with a frame waiting for the pipeline."""
        with self._ready:
            return {camera for camera, queue in self._queues.items() if queue}

    def take(self, max_frames: int, max_wait_s: float, idle_s: float = 0.5) -> list[Frame]:
        """Up to ``max_frames`` frames, one per camera in turn, starting with the cameras
        served longest ago (a batch smaller than the number of cameras does not starve the
        last ones). Waits up to ``idle_s`` for a first frame, then up to ``max_wait_s`` more
        to fill the batch."""
        with self._ready:
            if not self._ready.wait_for(self._any, idle_s):
                return []
            deadline = time.monotonic() + max_wait_s
            while self._count() < max_frames:
                left = deadline - time.monotonic()
                if left <= 0 or not self._ready.wait(left):
                    break
            batch: list[Frame] = []
            while len(batch) < max_frames and self._any():
                for camera in list(self._turns):
                    queue = self._queues[camera]
                    if queue and len(batch) < max_frames:
                        batch.append(queue.popleft())
                        self._turns.remove(camera)  # to the back of the line
                        self._turns.append(camera)
            self._taken += len(batch)
            self.waiting_since = time.monotonic() if self._any() else None
            return batch

    def _any(self) -> bool:
        return any(self._queues.values())

    def _count(self) -> int:
        return sum(len(q) for q in self._queues.values())


class FrameSchedule:
    """Which of a source's frames are kept to process ``fps`` of them a second: one on
    schedule (a late frame may make up for the one before), and never one closer than half a
    period to the last kept (a stream delivers its buffered frames in a burst at connect).
    The times are the caller's clock: the monotonic one for a camera, a recording's own for
    ``identify`` on a video."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._next_due = 0.0
        self._kept: float | None = None  # the time of the last frame kept

    def keeps(self, now: float) -> bool:
        """Whether the frame at ``now`` is kept (then it counts as kept)."""
        period, kept = self.period, self._kept
        if kept is not None and (now < self._next_due or now - kept < period / 2):
            return False
        self._next_due = (
            now + period if kept is None else max(self._next_due + period, now - period)
        )
        self._kept = now
        return True


def source_kind(url: str) -> str:
    """'stream' (rtsp/http...), 'device' (/dev/videoN, or a stable name of one such as
    /dev/v4l/by-id/usb-...: anything under /dev/) or 'file'."""
    if "://" in url:
        return "stream"
    if url.startswith("/dev/"):
        return "device"
    return "file"


def ffmpeg_environment() -> None:
    """OpenCV's FFmpeg settings, before the first capture opens (once, before the camera
    threads start: they are read from the environment). RTSP over TCP; captures opened side
    by side, not one at a time. OpenCV's and FFmpeg's
    own messages name no camera (and FFmpeg's go to stdout, among the JSON events): they
    are off; the reader logs each failure with its camera and reason."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    # without it OpenCV opens one capture at a time: a camera whose keyframe is slow to come
    # held every other camera's open for seconds (FFmpeg's opens are thread-safe since 4.0)
    os.environ.setdefault("OPENCV_FFMPEG_IS_THREAD_SAFE", "1")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def _never() -> bool:
    return False


def open_capture(url: str, stopping: Callable[[], bool] = _never) -> cv2.VideoCapture:
    """An opened capture or OSError naming the source and, as far as it can be told, why.
    An rtsp or http(s) camera that does not answer (or hangs) is not opened: it is said
    within 3 s, and other cameras' opens do not wait for it. Once ``stopping()`` says a
    stop was asked, nothing more is opened or asked (the stop would wait for it)."""
    ffmpeg_environment()
    kind = source_kind(url)
    if kind == "stream":
        silent = silent_stream(url)
        if silent is not None:
            raise OSError(f"{redact_url(url)}: {silent}")
    if stopping():
        raise OSError(f"{redact_url(url)}: not opened: stopping")
    if kind == "device":
        capture = cv2.VideoCapture(url, cv2.CAP_V4L2)
    else:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
        params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        params += [cv2.CAP_PROP_N_THREADS, decoder_threads()]
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not capture.isOpened():
        capture.release()
        if kind == "file" and not Path(url).is_file():
            raise OSError(f"{url}: no such file")
        if stopping():  # (asking why takes seconds more)
            raise OSError(f"{redact_url(url)}: not opened: stopping")
        raise OSError(f"{redact_url(url)}: {why_not_open(url, kind)}")
    return capture


def decoder_threads() -> int:
    """FFmpeg's decoder threads for each camera: DECODER_THREADS, fewer when this process
    may use fewer cores (a CPU quota, taskset)."""
    return min(usable_cpus(), DECODER_THREADS)


def why_not_open(url: str, kind: str) -> str:
    """Why a source did not open, as far as asking it tells (``stream_problem``)."""
    if kind == "device":
        return _device_problem(url)
    if kind != "stream":
        return "cannot open as video"
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("rtsp", "http", "https"):
        return f"cannot open as video ({scheme}:// cameras are not asked why)"
    return stream_problem(url) or (
        "cannot open as video, though the camera answers for this path (its codec, or its "
        "limit of clients?)"
    )


class StuckPicture:
    """Frames that do not change: all black, or each the same as the one before to the
    pixel (on a sparse grid). That is what OpenCV's FFmpeg returns for interlaced video, with
    a read that says it succeeded: black, or a stale buffer's picture over and over. A dark
    scene is neither: its noise and black level change some pixels from frame to frame."""

    def __init__(self) -> None:
        self.since: float | None = None  # when the run of stuck frames began
        self.count = 0  # frames in it
        self.black = True  # all of them all black
        self._last: np.ndarray | None = None
        self._last_at: float | None = None  # when the latest frame was seen
        self._gap_from: float | None = None  # a new source's: the previous one's last frame

    def new_source(self) -> None:
        """A reconnect, or a file played again: its first frame is compared with none (another
        capture's stale picture may differ from the last), and neither ends a run nor adds to
        it, unless black. The time between the two sources is not the run's: a camera back
        from an outage is not stuck for having been away."""
        self._last = None
        self._gap_from = self._last_at

    def see(self, image: np.ndarray, now: float) -> bool:
        """Count one frame; whether it shows the picture changing (a run of stuck frames, if
        any, ends)."""
        sample = np.ascontiguousarray(image[::SAMPLE_STRIDE, ::SAMPLE_STRIDE])
        black = not sample.any()
        compared, self._last = self._last, sample
        if self._gap_from is not None and self.since is not None:
            self.since += now - self._gap_from  # (the outage between the sources)
        self._gap_from, self._last_at = None, now
        if not black:
            if compared is None:
                return False
            if not np.array_equal(sample, compared):
                self.since, self.count, self.black = None, 0, True
                return True
        if self.since is None:
            self.since = now
        self.count += 1
        self.black = self.black and black
        return False

    def lasted(self, now: float) -> bool:
        """The run has lasted long enough to say so (BLANK_S all black, else FROZEN_S)."""
        if self.since is None or self.count < BLANK_FRAMES:
            return False
        return now - self.since >= (BLANK_S if self.black else FROZEN_S)


def check_file_source(url: str) -> None:
    """For a local file: it exists, and its frames within its first BLANK_S seconds decode to
    a picture that changes (a config error otherwise, unlike a stream, which may come up
    later). A video of one frame is taken as it is, unless black."""
    if source_kind(url) != "file":
        return
    capture = open_capture(url)
    stuck, decoded = StuckPicture(), 0
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        most = round(BLANK_S * (fps if 1 <= fps <= 240 else 25.0))
        while decoded < most:
            ok, image = capture.read()
            if not ok or image is None:
                break
            decoded += 1
            if stuck.see(image, 0.0):
                return
    finally:
        capture.release()
    if not decoded:
        raise OSError(f"{url}: no video frame could be decoded")
    if decoded > 1 or stuck.count:
        how = "all black" if stuck.black else "the same picture"
        raise OSError(f"{url}: its first {decoded} frames decode {how}: {STUCK_FILE}")


def _device_problem(path: str) -> str:
    """Why a V4L2 device did not open: not there (unplugged?), not readable by this user,
    or there but not a capture device OpenCV can read."""
    if not os.path.exists(path):
        return "no such device (unplugged, or another /dev/videoN?)"
    if not os.access(path, os.R_OK | os.W_OK):
        return "permission denied (add the daemon's user to the video group)"
    return "cannot open as video (a device without a capture stream, or busy?)"


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
