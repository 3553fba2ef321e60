"""A camera reader on a real RTSP stream: the frames it keeps, and when."""

from __future__ import annotations

import http.server
import itertools
import logging
import signal
import socket
import threading
import time
from functools import partial

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.camera_frames import FrameQueues
from daemon.camera_open import READ_TIMEOUT_MS, open_capture, source_kind
from daemon.cameras import CameraReader
from daemon.config_cameras import CameraConfig
from engines.boxes import iou_matrix
from tests.clips import DEMO_CLIP, encoded_clip, noisy_copies, read_frames
from tests.integration.services import (
    HttpMjpegCamera,
    HungCamera,
    RtspServer,
    open_trusting,
    tls_generation,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_the_frames_buffered_at_connect_do_not_pass_as_a_burst(tmp_path) -> None:
    """At connect a stream hands over its buffered frames within milliseconds. Kept all,
    they made tracks `confirmed` within 2 ms of their first sighting (and `lost` soon
    after) at every start and reconnection: the reader keeps frames a period apart."""
    server = RtspServer(tmp_path, {"cam": DEMO_CLIP})
    server.start()
    try:
        for _ in range(2):  # the first connection, and a reconnection
            queues = FrameQueues(["cam"], 100)
            reader = CameraReader(CameraConfig(name="cam", url=server.url("cam"), fps=5), queues)
            reader.start()
            wait_for(lambda q=queues: q.pending() >= 8, 30, "8 frames")  # however slow the open
            reader.stop()
            reader.join(15)
            stamps = [frame.ts for frame in queues.take(100, 0, 0.1)]
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            assert min(gaps) >= 0.1, gaps  # at 5 fps: frames 0.2 s apart, never 2 ms
    finally:
        server.stop()


def test_a_stalled_stream_is_noticed_within_about_10_seconds(tmp_path) -> None:
    """A camera that hangs with its connection open (the server stopped, not gone): the
    reader calls it down within about 10 s (the documented read timeout), not 30, and not
    before one of FFmpeg's read tries has timed out. (It retries a read up to 3 times; once,
    under load, a stall took 2 tries, 6.9 s, to show.)"""
    server = RtspServer(tmp_path, {"cam": DEMO_CLIP})
    server.start()
    queues = FrameQueues(["stall"], 100)
    reader = CameraReader(CameraConfig(name="stall", url=server.url("cam"), fps=5), queues)
    reader.start()
    try:
        wait_for(lambda: reader.up, 30, "the camera up")
        assert _down_series("stall") == {}
        server.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        stalled, stalled_wall = time.monotonic(), time.time()
        wait_for(lambda: not reader.up, 22, "the stall noticed")
        # 3 tries and a busy machine's delays stay under 20 s; a reader that waited out 30 s
        # (a stall seen only by the connection's own timeout) does not
        assert READ_TIMEOUT_MS / 1000 <= time.monotonic() - stalled <= 20
        # why, and since when, on /metrics (what `facewatch status` shows) while it is down
        down = wait_for(lambda: _down_series("stall"), 5, "the reason exported")
        assert list(down) == ["stream ended or stalled"]
        assert stalled_wall < down["stream ended or stalled"] < time.time()
        server.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        wait_for(lambda: reader.up, 30, "the camera up again")
        assert _down_series("stall") == {}
    finally:
        server.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        reader.stop()
        server.stop()
        reader.join(15)


def _down_series(camera: str) -> dict[str, float]:
    """The camera's ``facewatch_camera_down_since_seconds`` samples, by reason."""
    return {
        sample.labels["reason"]: sample.value
        for family in REGISTRY.collect()
        if family.name == "facewatch_camera_down_since_seconds"
        for sample in family.samples
        if sample.labels["camera"] == camera
    }


def test_a_hung_camera_does_not_hold_up_another_cameras_connection(tmp_path, caplog) -> None:
    """OpenCV opens every stream under one process-wide lock: a camera that accepts the
    connection and never answers held every other camera's open (a healthy camera at the
    start or back from an outage, a video file's replay) for its 10 s open timeout, each
    try. It is asked first, without the lock: the healthy camera is up at once, and the
    hung one is said within the probe's 3 s."""
    caplog.set_level(logging.WARNING, logger="daemon.cameras")
    server = RtspServer(tmp_path, {"cam": DEMO_CLIP})
    server.start()
    hung = HungCamera()
    queues = FrameQueues(["hung", "good"], 10)
    stuck = CameraReader(CameraConfig(name="hung", url=hung.url), queues)
    good = CameraReader(CameraConfig(name="good", url=server.url("cam"), fps=5), queues)
    try:
        stuck.start()
        wait_for(lambda: hung.requests, 5, "the hung camera asked")
        started = time.monotonic()
        good.start()
        wait_for(lambda: good.up, 30, "the healthy camera up")
        # alone about 1 s, several on a busy machine; 10 s behind the hung one
        assert time.monotonic() - started < 8
        wait_for(lambda: "camera hung: cannot open" in caplog.text, 5, "the hung camera said")
        assert "accepts the connection but its RTSP service does not answer" in caplog.text
    finally:
        for reader in (stuck, good):
            reader.stop()
        hung.close()
        server.stop()
        for reader in (stuck, good):
            reader.join(15)


def test_a_stream_that_never_decodes_is_said_so_and_holds_up_no_other_camera(
    tmp_path, caplog
) -> None:
    """A camera that answers and streams, but whose keyframe never comes (a smart codec's
    long I-frame interval): its open waits about 5 s for a frame to decode, and under
    OpenCV's open lock a healthy camera's open waited with it (6 s against 1 s alone) at
    each of its retries; and it was said as `stream ended or stalled`, which points at the
    network. The healthy camera is up at its own pace, and this one says what it is."""
    caplog.set_level(logging.WARNING, logger="daemon.cameras")
    broken = RtspServer(tmp_path, {"cam": DEMO_CLIP}, no_keyframes=True)
    server = RtspServer(tmp_path, {"cam": DEMO_CLIP})
    broken.start()
    server.start()
    queues = FrameQueues(["nokey", "good"], 10)
    nokey = CameraReader(CameraConfig(name="nokey", url=broken.url("cam")), queues)
    healthy = CameraConfig(name="good", url=server.url("cam"), fps=5)

    def time_to_up() -> float:
        reader = CameraReader(healthy, queues)
        started = time.monotonic()
        reader.start()
        try:
            wait_for(lambda: reader.up, 30, "the healthy camera up")
            return time.monotonic() - started
        finally:
            reader.stop()
            reader.join(15)

    try:
        alone = time_to_up()  # (about 1 s; more on a busy machine)
        nokey.start()
        time.sleep(1.0)  # its open under way (about 5 s)
        beside = time_to_up()
        assert beside < alone + 2.0, (alone, beside)  # (behind the other's open: alone + 4)
        wait_for(lambda: "camera nokey: its stream" in caplog.text, 20, "the camera said")
        assert "no frame decoded: no keyframe came" in caplog.text
        assert "stream ended or stalled" not in caplog.text
        assert not nokey.up
    finally:
        nokey.stop()
        broken.stop()
        server.stop()
        nokey.join(15)


def test_a_stop_during_an_open_that_hangs_does_not_ask_the_camera_why(caplog) -> None:
    """A camera that answers whether it is there, then hangs at the stream's start: the
    stop waited out the 10 s open, then 3 s more asking the camera why it failed (with more
    cameras the stop overran its 15 s for the cameras). Once a stop is asked, it is not."""
    hung = HungCamera(answers_options=True)
    reader = CameraReader(CameraConfig(name="nvr", url=hung.url), FrameQueues(["nvr"], 2))
    reader.start()
    try:
        wait_for(lambda: hung.asked("DESCRIBE"), 10, "the stream's open under way")
        reader.stop()
        stopped = time.monotonic()
        reader.join(15)
        assert not reader.is_alive()
        assert not [when for when, _ in hung.requests if when > stopped], hung.requests
    finally:
        reader.stop()
        hung.close()


def test_h265_and_mjpeg_cameras_give_the_faces_of_their_pictures(tmp_path, detector) -> None:
    """Many cameras stream H.265 (4K ones by default) or MJPEG (older and cheaper ones, over
    RTSP or HTTP), not H.264: a camera of each is read as one of H.264 is, and its frames
    show the faces of the picture it sent (held still, with sensor noise): the 4 clear ones
    (58 to 73 px) in every frame, and none that is not there. (Its 2 faint faces, MTCNN
    scores 0.74 and 0.80, come and go with each encoding's losses, H.264's too.)"""
    picture = read_frames(DEMO_CLIP, first=240, count=1)[0]
    sent = noisy_copies(picture, 30, sigma=2.0)
    faces = detector.detect([picture])[0]
    clear = faces.bbox_xyxy[faces.score >= 0.95]
    assert len(faces) == 6 and len(clear) == 4
    suffix = {"h264": "mp4", "h265": "mp4", "mjpeg": "mov"}
    clips = {
        c: encoded_clip(tmp_path / f"{c}.{ext}", sent, c, fps="15/1") for c, ext in suffix.items()
    }
    server = RtspServer(tmp_path, clips)
    server.start()
    http_camera = HttpMjpegCamera(sent, fps=15)
    urls = {codec: server.url(codec) for codec in clips} | {"http-mjpeg": http_camera.url}
    queues = FrameQueues(list(urls), 100)
    readers = [CameraReader(CameraConfig(name=n, url=u, fps=5), queues) for n, u in urls.items()]
    got: dict[str, list] = {name: [] for name in urls}

    def three_of_each() -> bool:
        for frame in queues.take(100, 0, 0.1):
            got[frame.camera].append(frame.image)
        return all(len(images) >= 3 for images in got.values())

    try:
        for reader in readers:
            reader.start()
        wait_for(three_of_each, 60, "3 frames from each camera")
    finally:
        for reader in readers:
            reader.stop()
        server.stop()
        http_camera.close()
        for reader in readers:
            reader.join(15)
    for name, images in got.items():
        assert [image.shape for image in images[:3]] == [picture.shape] * 3, name
        for found in detector.detect(images[:3]):
            assert len(found) >= 4, name
            assert iou_matrix(clear, found.bbox_xyxy).max(axis=1).min() >= 0.8, name
            assert iou_matrix(found.bbox_xyxy, faces.bbox_xyxy).max(axis=1).min() >= 0.5, name


def test_a_camera_that_sends_its_microphones_sound_too_gives_its_video(tmp_path) -> None:
    """Cameras with their microphone on (the default on many) send an audio track beside the
    video: its frames are read as a silent camera's are, each one of the clip's."""
    clip = [
        cv2.resize(image, (64, 36), interpolation=cv2.INTER_AREA)
        for image in read_frames(DEMO_CLIP)
    ]
    server = RtspServer(tmp_path, {"cam": DEMO_CLIP}, audio=True)
    server.start()
    try:
        capture = open_capture(server.url("cam"))
        frames = [capture.read() for _ in range(10)]
        # what the camera describes (asked while the capture plays: a DESCRIBE of its own
        # sets the stream up, and one torn down as the capture came could refuse it)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(f"DESCRIBE {server.url('cam')} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
            time.sleep(1)
            description = connection.recv(65536).decode()
        capture.release()
    finally:
        server.stop()
    assert "m=video" in description and "m=audio" in description, description  # as sent
    for ok, image in frames:
        assert ok and image.shape == (360, 640, 3)
        small = cv2.resize(image, (64, 36), interpolation=cv2.INTER_AREA).astype(np.int16)
        assert min(np.abs(small - frame).mean() for frame in clip) < 2


def test_an_rtsps_camera_opens_when_this_host_trusts_its_certificate_and_else_says_so(
    tmp_path, monkeypatch
) -> None:
    """RTSP over TLS (UniFi Protect's streams, some cameras'): as an https camera
    (tests/unit/test_cameras.py), its certificate is checked against this host's CA
    certificates, and one that is not trusted is said so (it was 'rtsps:// cameras are not
    asked why'); trusted, it is asked why as an rtsp:// camera is (here: a user name and
    password, Digest over TLS), and with them streams the clip."""
    tls = tls_generation(tmp_path / "tls")
    server = RtspServer(tmp_path, {"cam": DEMO_CLIP}, user="viewer:s3cret", tls=tls)
    server.start()
    try:
        url = server.url("cam")
        with_user = url.replace("rtsps://", "rtsps://viewer:s3cret@")
        assert url.startswith("rtsps://")
        image, why = open_trusting(with_user, None, monkeypatch)
        assert image is None, "opened, though this host does not trust its certificate"
        assert "its TLS certificate is not trusted here" in why, why
        image, why = open_trusting(url, tls / "ca.crt", monkeypatch)
        assert image is None and "wants a user name and password (RTSP 401" in why, why
        assert "rtsps://USER:" in why, why
        image, why = open_trusting(with_user, tls / "ca.crt", monkeypatch)
        assert image is not None and image.shape == (360, 640, 3), why
    finally:
        server.stop()


def test_a_camera_that_cannot_be_opened_is_named_with_the_reason(tmp_path, refused_url) -> None:
    """What OpenCV does not say: no stream at that path, or nothing listening."""
    server = RtspServer(tmp_path, {"cam": DEMO_CLIP})
    server.start()
    try:
        wrong_path = server.url("cam").rsplit("/", 1)[0] + "/stream9"
        with pytest.raises(
            OSError, match=r"/stream9: the camera has no stream at /stream9 \(RTSP 404"
        ):
            open_capture(wrong_path)
    finally:
        server.stop()
    secured = RtspServer(tmp_path, {"cam": DEMO_CLIP}, user="admin:Right-1")
    secured.start()
    try:
        plain = secured.url("cam")
        with_user = plain.replace("rtsp://", "rtsp://admin:Right-1@")
        open_capture(with_user).release()  # FFmpeg answers the Digest challenge: it opens
        with pytest.raises(OSError, match=r"the camera wants a user name and password \(RTSP 401"):
            open_capture(plain)
        wrong = plain.replace("rtsp://", "rtsp://admin:wrong@")
        with pytest.raises(OSError, match=r"admin:\*\*\*@.* refused the user name or password"):
            open_capture(wrong)
        with pytest.raises(OSError, match=r"the camera has no stream at /cam2 \(RTSP 404"):
            open_capture(with_user + "2")  # the right user, a wrong path
    finally:
        secured.stop()
    host_port = refused_url.split("/")[2]
    with pytest.raises(OSError, match=rf"nothing listens on {host_port} \(connection refused"):
        open_capture(refused_url)


def test_an_http_camera_that_cannot_be_opened_is_named_with_the_reason(tmp_path) -> None:
    """A web server (Python's) as an HTTP camera: a path it does not have is a 404, a web
    page (the camera's own, where its stream's URL should be) is named as one, and bytes that
    are no video are said to be served but not decodable."""
    (tmp_path / "index.html").write_text("<html>not a video</html>")
    (tmp_path / "stream.bin").write_bytes(bytes(range(256)) * 64)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(OSError, match=r"no stream at /video.mjpg \(HTTP 404"):
            open_capture(f"{base}/video.mjpg")
        with pytest.raises(OSError, match=r"answers /index.html with a web page \(text/html\)"):
            open_capture(f"{base}/index.html")
        with pytest.raises(OSError, match="cannot open as video, though the camera answers"):
            open_capture(f"{base}/stream.bin")
    finally:
        server.shutdown()
        server.server_close()  # (its listening socket)


def test_a_camera_that_stays_down_is_logged_once_not_at_every_retry(refused_url, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="daemon.cameras")
    reader = CameraReader(CameraConfig(name="gone", url=refused_url), FrameQueues(["gone"], 2))
    reader.start()
    try:
        wait_for(lambda: "cannot open" in caplog.text and caplog.text.count("retrying") >= 3, 20,
                 "three attempts")  # fmt: skip
    finally:
        reader.stop()
        reader.join(15)
    said = [r for r in caplog.records if "cannot open" in r.getMessage()]
    assert [r.levelno for r in said][:3] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "camera gone: cannot open: " in said[0].getMessage()


def test_a_v4l2_device_by_its_stable_name_is_a_device_and_a_missing_one_says_so() -> None:
    """/dev/v4l/by-id/... names a USB camera across reboots: a device (retried while it is
    unplugged), not a missing video file; one that is not there says so."""
    assert source_kind("/dev/v4l/by-id/usb-Logitech_C920-video-index0") == "device"
    assert source_kind("/dev/video0") == "device" and source_kind("clip.mp4") == "file"
    with pytest.raises(OSError, match=r"/dev/video99: no such device \(unplugged"):
        open_capture("/dev/video99")
