"""Opening a camera's source: what kind it is (a stream, a V4L2 device, a file), OpenCV's
FFmpeg settings, the capture opened with its timeouts and decoder threads or the reason it did
not open, and the check that a video file decodes to a picture that changes (``StuckPicture``:
what OpenCV's FFmpeg returns for interlaced video)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from daemon.peer_exchange import camera_ca_file
from daemon.redaction import redact_url
from daemon.stream_probe import silent_stream, stream_problem
from engines.loader import usable_cpus

OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 3_400  # OpenCV's FFmpeg backend tries a read 3 times: a stall shows in 10 s
# FFmpeg's decoder threads per camera, at most (fewer under a smaller CPU budget). OpenCV's
# default is its count of the host's cores, which misses systemd's CPUQuota=: 16 threads a
# camera on a 16-core host under a 2-core quota, some 90 MB more a 1080p camera than one.
# One thread decodes 1080p H.264 at about 190 frames/s on a server core (3456x2234 at 100);
# a second keeps a slower core (an ARM board's) ahead of a 25-30 fps stream.
DECODER_THREADS = 2
# A picture that does not change for this long (BLANK_S when all black, FROZEN_S otherwise;
# BLANK_FRAMES frames at least) marks the camera down: a black frame at a cut, or a camera's
# switch to night, never lasts that long, and a real camera's noise changes some pixel
BLANK_S = 10.0
FROZEN_S = 60.0  # (a static scene of a long-GOP camera might repeat exact frames for seconds)
BLANK_FRAMES = 3
SAMPLE_STRIDE = 4  # every 4th pixel of every 4th row is compared
NO_INTERLACED = "OpenCV's FFmpeg cannot convert interlaced video"
STUCK_FILE = f"an interlaced video? {NO_INTERLACED}: re-encode it progressive"


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
    threads start: they are read from the environment). Its options (``capture_options``);
    captures opened side by side, not one at a time. OpenCV's and FFmpeg's
    own messages name no camera (and FFmpeg's go to stdout, among the JSON events): they
    are off; the reader logs each failure with its camera and reason."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    if "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:  # (asked at every open: set once)
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = capture_options()
    # without it OpenCV opens one capture at a time: a camera whose keyframe is slow to come
    # held every other camera's open for seconds (FFmpeg's opens are thread-safe since 4.0)
    os.environ.setdefault("OPENCV_FFMPEG_IS_THREAD_SAFE", "1")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def capture_options() -> str:
    """The options OpenCV gives FFmpeg for each capture: RTSP over TCP, and a TLS camera's
    (rtsps, https) certificate checked, its name and CA, against ``camera_ca_file()``.
    (OpenCV 5.1's FFmpeg checks it by default, against files on the machine that built the
    wheel, so nothing passed; 4.13's does not check it at all.)"""
    options = "rtsp_transport;tcp|tls_verify;1"
    ca_file = camera_ca_file()
    if ca_file is not None and not set(ca_file) & set(";|"):  # (the options' separators)
        options += f"|ca_file;{ca_file}"
    return options


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
    if scheme not in ("rtsp", "rtsps", "http", "https"):
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
