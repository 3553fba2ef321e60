"""The camera readers (daemon.cameras, camera_open): down and up with why, reconnections
and their backoff, a turned camera, a file played again."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.camera_frames import FrameQueues
from daemon.config_file import parse_config
from tests.conftest import open_files


def test_a_cameras_outage_start_follows_the_wall_clock_set_right(monkeypatch) -> None:
    """A board boots years behind and a camera is down; NTP then sets the clock right. The
    outage's start on /metrics (Grafana's 'down since', `facewatch status`) follows at the
    next retry: it said 2024 for as long as the camera stayed down."""
    from daemon import cameras
    from daemon.cameras import CameraReader
    from daemon.config_cameras import CameraConfig

    reader = CameraReader(
        CameraConfig(name="porch", url="rtsp://10.0.0.9/live"), FrameQueues(["porch"], 2)
    )
    real = time.time()
    monkeypatch.setattr(cameras.time, "time", lambda: 1_704_067_200.0)  # before the sync
    reader._export_down("cannot open: connection refused")
    monkeypatch.setattr(cameras.time, "time", lambda: real)  # set right
    reader._export_down("cannot open: connection refused")  # the next retry
    since = REGISTRY.get_sample_value(
        "facewatch_camera_down_since_seconds",
        {"camera": "porch", "reason": "cannot open: connection refused"},
    )
    assert since is not None and real - 5 < since <= real
    reader._set_up(True)


def test_an_interlaced_camera_is_down_with_why_not_up_with_no_picture(
    monkeypatch, caplog, tmp_path
) -> None:
    """An interlaced stream: OpenCV's FFmpeg cannot convert it, yet every read succeeds,
    each frame black (or one stale picture). The camera was up, `facewatch status` said all
    is well, and no face was ever found. Now it is down with the cause (the reason on
    /metrics that `facewatch status` and FacewatchCameraDown show), warned once; the same
    frames encoded progressive keep it up."""
    from daemon import camera_open
    from daemon.cameras import CameraReader
    from daemon.config_cameras import CameraConfig
    from tests.clips import DEMO_CLIP, encoded_clip, opencv_reads_interlaced, read_frames

    monkeypatch.setattr(camera_open, "BLANK_S", 0.6)  # (10 s and 60 s: too long for a test)
    monkeypatch.setattr(camera_open, "FROZEN_S", 0.6)
    frames = read_frames(DEMO_CLIP, count=61)  # 2 s, played in a loop
    clips = {
        "attic": encoded_clip(tmp_path / "interlaced.mp4", frames, interlaced=True),
        "porch": encoded_clip(tmp_path / "progressive.mp4", frames, interlaced=False),
    }
    # (OpenCV 5.1 converts it: a camera like any, which a few of BLANK_S need not wait for)
    converts = opencv_reads_interlaced(clips["attic"])
    readers = {
        name: CameraReader(CameraConfig(name=name, url=str(clip)), FrameQueues([name], 2))
        for name, clip in clips.items()
    }
    with caplog.at_level("INFO", logger="daemon.cameras"):
        for reader in readers.values():
            reader.start()
        deadline = time.monotonic() + (1.0 if converts else 15)
        while readers["attic"].stuck is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.5)  # a replay of the file, or more
        up = {name: reader.up for name, reader in readers.items()}
        for reader in readers.values():
            reader.stop()
            reader.join(5)
    attic, porch = readers["attic"], readers["porch"]
    if converts:
        assert attic.stuck is None and up == {"attic": True, "porch": True}
        return
    assert attic.stuck is not None and "set the camera/NVR stream to progressive" in attic.stuck
    down = [
        sample
        for metric in REGISTRY.collect()
        if metric.name == "facewatch_camera_down_since_seconds"
        for sample in metric.samples
        if sample.labels["camera"] == "attic"
    ]
    assert [sample.labels["reason"] for sample in down] == [attic.stuck]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1, warned  # the progressive camera: none
    assert (
        warned[0].startswith("camera attic: its ") and "an interlaced stream? OpenCV" in warned[0]
    )
    assert up == {"attic": False, "porch": True}, "down while stuck (at the stop, both)"
    assert porch.stuck is None
    assert REGISTRY.get_sample_value("facewatch_frames_read_total", {"camera": "porch"}) >= 5
    attic._set_up(True)


def test_a_picture_that_never_changes_is_down_after_a_while_and_up_again_once_it_does(
    monkeypatch, caplog
) -> None:
    """A dark, noisy night picture never looks stuck; black for a few seconds (a cut, the
    switch to night) is no outage; black for BLANK_S is, warned once, and the first frame
    that changes brings the camera back up. A non-black picture repeated to the pixel (a
    stale frame) is down after FROZEN_S. Frames are not handed on while it is down (a
    stale picture may hold a face: a visitor who would never leave)."""
    from daemon import cameras
    from daemon.camera_open import BLANK_S, FROZEN_S
    from daemon.cameras import BLANK_DOWN, FROZEN_DOWN, CameraReader
    from daemon.config_cameras import CameraConfig
    from tests.clips import DEMO_CLIP, EMPTY_FRAME, noisy_copies, read_frames

    clock = [1000.0]
    monkeypatch.setattr(
        cameras, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    )

    class Capture:
        """A stream of these frames, 4 a second of the clock."""

        def __init__(self, frames: list) -> None:
            self.frames = iter(frames)

        def get(self, prop: int) -> float:
            return 0.0

        def grab(self) -> bool:
            clock[0] += 0.25
            self.frame = next(self.frames, None)
            return self.frame is not None

        def retrieve(self) -> tuple[bool, np.ndarray]:
            return True, self.frame

    statuses: list[bool] = []
    reader = CameraReader(
        CameraConfig(name="cellar", url="rtsp://10.0.0.9/live"),
        FrameQueues(["cellar"], 10_000),  # (never taken: none dropped)
        on_status=lambda camera, up: statuses.append(up),
    )
    small = cv2.resize(read_frames(DEMO_CLIP, EMPTY_FRAME, 1)[0], (160, 90))
    night = cv2.cvtColor(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    night = (night * 0.35 + 8).astype(np.uint8)  # grey, a third of the light, sensor noise
    black = np.zeros_like(small)

    def seconds(s: float) -> int:
        return round(s * 4)

    with caplog.at_level("INFO", logger="daemon.cameras"):
        reader._read(Capture(noisy_copies(night, seconds(FROZEN_S + 10), 6)))
        assert reader.stuck is None and statuses == [True]
        reader._read(Capture([black] * seconds(BLANK_S - 2) + noisy_copies(night, 4, 6)))
        assert reader.stuck is None and statuses == [True]
        queued = reader.queues.pending()
        reader._read(Capture([black] * seconds(BLANK_S + 1)))
        assert reader.stuck == BLANK_DOWN and statuses == [True, False]
        assert reader.queues.pending() == queued + seconds(BLANK_S), "none handed on once down"
        assert REGISTRY.get_sample_value("facewatch_camera_up", {"camera": "cellar"}) == 0
        reason = {"camera": "cellar", "reason": BLANK_DOWN}
        assert REGISTRY.get_sample_value("facewatch_camera_down_since_seconds", reason)
        reader._read(Capture(noisy_copies(night, 4, 6)))
        assert reader.stuck is None and statuses == [True, False, True]
        assert REGISTRY.get_sample_value("facewatch_camera_down_since_seconds", reason) is None
        reader._read(Capture([small] * seconds(FROZEN_S - 5)))
        assert reader.stuck is None
        reader._read(Capture([small] * seconds(FROZEN_S + 1)))
        assert reader.stuck == FROZEN_DOWN and statuses == [True, False, True, False]
        reader._read(Capture(noisy_copies(night, 4, 6)))
        # a still scene repeats a few frames, the stream drops, the camera is back after
        # two minutes: the outage is no time of a stuck picture (it was down at once)
        for picture in (small, night, black, black):
            reader._read(Capture([picture] * 3))
            clock[0] += 2 * FROZEN_S
        assert reader.stuck is None and statuses == [True, False, True, False, True]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2 and all(w.startswith("camera cellar: its ") for w in warned), warned
    said = [r.getMessage() for r in caplog.records if r.getMessage().endswith((": up", ": down"))]
    assert said == ["camera cellar: up"] + ["camera cellar: down", "camera cellar: up"] * 2, said
    assert "camera cellar: its picture changes again" in caplog.text
    reader._set_up(True)


@pytest.mark.parametrize(
    ("mounted", "rotate"),
    [(cv2.ROTATE_90_CLOCKWISE, 270), (cv2.ROTATE_180, 180), (cv2.ROTATE_90_COUNTERCLOCKWISE, 90)],
)
def test_a_camera_mounted_sideways_or_upside_down_is_turned_upright_and_its_faces_found(
    detector, tmp_path, mounted, rotate
) -> None:
    """A corridor (portrait) or ceiling mount: the faces lie on their side or stand on their
    heads, MTCNN finds fewer and FaceNet names none, and no setting turned them. With
    `rotate` (clockwise degrees) the frames leave the reader upright, and the faces of the
    upright clip are found, where they are in it."""
    from daemon.cameras import CameraReader
    from tests.clips import DEMO_CLIP, read_frames

    upright = read_frames(DEMO_CLIP, count=6)
    clip = tmp_path / "mounted.mp4"
    turned = [cv2.rotate(image, mounted) for image in upright]
    height, width = turned[0].shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    for image in turned:
        writer.write(image)
    writer.release()
    sideways = read_frames(clip)
    hall = {"name": "hall", "url": str(clip), "rotate": rotate, "fps": 30}  # (every frame)
    queues = FrameQueues(["hall"], 100)
    reader = CameraReader(parse_config({"cameras": [hall]}).cameras[0], queues)
    capture = cv2.VideoCapture(str(clip))
    assert reader._read(capture) == 6
    capture.release()
    frames = [frame.image for frame in queues.take(100, 0.0)]
    assert len(frames) >= 3
    k = {90: -1, 180: 2, 270: 1}[rotate]  # numpy's quarter turns are anticlockwise
    back = [np.rot90(image, k) for image in sideways]  # (frames may be skipped on the way)
    shown = [next((i for i, b in enumerate(back) if np.array_equal(f, b)), -1) for f in frames]
    assert -1 not in shown, "each frame the reader hands on is one of the clip's, turned"

    def boxes(images: list) -> list:
        return [found.bbox_xyxy for found in detector.detect(images)]

    expected, got = boxes([upright[i] for i in shown]), boxes(frames)
    assert sum(map(len, boxes([sideways[i] for i in shown]))) < sum(map(len, expected))

    def near(a: np.ndarray, b: np.ndarray) -> bool:  # centres within half a face width
        return bool(np.abs((a[:2] + a[2:]) - (b[:2] + b[2:])).max() / 2 < (a[2] - a[0]) / 2)

    for want, have in zip(expected, got, strict=True):
        assert len(have) == len(want) >= 1
        assert all(any(near(w, h) for h in have) for w in want), (want, have)


def test_a_camera_that_drops_each_connection_at_once_backs_off_and_is_logged_once(
    monkeypatch, caplog
) -> None:
    """A camera at its client limit (or on flaky Wi-Fi) sends a few frames, then drops the
    connection, again and again: each frame reset the backoff to 0.5 s and made a new
    outage, logged anew (29 reconnects and 89 lines a minute). A stream that ends within
    STABLE_S is the same outage: the backoff grows, and it is logged once."""
    from daemon import cameras
    from daemon.cameras import CameraReader
    from daemon.config_cameras import CameraConfig

    reader = CameraReader(
        CameraConfig(name="porch", url="rtsp://10.0.0.9/live"), FrameQueues(["porch"], 2)
    )
    monkeypatch.setattr(
        cameras, "open_capture", lambda url, stopping: SimpleNamespace(release=lambda: None)
    )
    monkeypatch.setattr(reader, "_read", lambda capture: 3)  # 3 frames, then it ends
    waits: list[float] = []

    def wait(delay: float) -> bool:
        waits.append(delay)
        if len(waits) == 8:
            reader._stop_event.set()
        return reader._stop_event.is_set()

    monkeypatch.setattr(reader._stop_event, "wait", wait)
    with caplog.at_level("WARNING", logger="daemon.cameras"):
        reader.run()
    assert all(later > earlier for earlier, later in itertools.pairwise(waits[:7])), waits
    assert waits[-1] >= 15, "backed off towards BACKOFF_MAX_S"
    lines = [r.getMessage() for r in caplog.records if "porch" in r.getMessage()]
    assert len(lines) == 1, lines

    # one that streams 25 s each time, then drops: back at once (the same outage in the log)
    clock = [0.0]
    monkeypatch.setattr(
        cameras, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    )

    def streams(capture: object) -> int:
        clock[0] += 25.0
        return 750

    monkeypatch.setattr(reader, "_read", streams)
    reader._stop_event.clear()
    waits.clear()
    reader.run()
    assert max(waits) < 1, waits


def test_a_flapping_camera_logs_up_and_down_with_its_outage_not_every_cycle(
    monkeypatch, caplog
) -> None:
    """A stream that drops every 12 s logged `camera NAME: up` and `down` at INFO on every
    reconnect (~14,000 lines a day) while its warning came once. Up and down are at INFO
    as the warning is (the first outage, then every REMIND_S), at DEBUG in between; MQTT's
    status still gets every change."""
    from daemon import cameras
    from daemon.cameras import REMIND_S, CameraReader
    from daemon.config_cameras import CameraConfig

    statuses: list[bool] = []
    reader = CameraReader(
        CameraConfig(name="porch", url="rtsp://10.0.0.9/live"),
        FrameQueues(["porch"], 2),
        on_status=lambda camera, up: statuses.append(up),
    )
    clock = [0.0]
    monkeypatch.setattr(
        cameras, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    )
    cycles = [0]

    def open_capture(url: str, stopping: object) -> SimpleNamespace:
        if cycles[0] == 40:  # 8 minutes of it, then past REMIND_S
            clock[0] += REMIND_S
        return SimpleNamespace(release=lambda: None)

    def streams_12_s(capture: object) -> int:
        reader._set_up(True)
        clock[0] += 12.0
        cycles[0] += 1
        if cycles[0] == 50:
            reader._stop_event.set()
        return 300

    monkeypatch.setattr(cameras, "open_capture", open_capture)
    monkeypatch.setattr(reader, "_read", streams_12_s)
    monkeypatch.setattr(reader._stop_event, "wait", lambda delay: reader._stop_event.is_set())
    with caplog.at_level("DEBUG", logger="daemon.cameras"):
        reader.run()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelname != "DEBUG"]
    cycle = [
        ("INFO", "camera porch: up"),
        ("INFO", "camera porch: down"),
        ("WARNING", "camera porch: stream ended or stalled"),
    ]
    assert [(level, line.split(";")[0]) for level, line in said] == [
        *cycle,
        ("INFO", "camera porch: up"),  # back from the outage said
        ("INFO", "camera porch: down"),  # the reminder, REMIND_S later
        ("WARNING", "camera porch: stream ended or stalled (still, after 1 attempts)"),
        ("INFO", "camera porch: up"),
        ("INFO", "camera porch: down"),  # the stop
    ], said
    assert statuses == [True, False] * 50
    quiet = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert quiet.count("camera porch: up") == 47 and quiet.count("camera porch: down") == 47


def test_a_stream_that_opens_but_decodes_no_frame_is_not_called_a_stall(
    monkeypatch, caplog
) -> None:
    """A camera whose keyframe never comes (a smart codec's long I-frame interval, or a
    codec FFmpeg cannot decode) opens and then decodes nothing: it was `stream ended or
    stalled`, in the log and in `facewatch status`, which sent the user to the network. It
    says what happened and what to set; a stream that delivered frames still stalls."""
    from daemon import cameras
    from daemon.cameras import NO_FRAME, CameraReader
    from daemon.config_cameras import CameraConfig

    reader = CameraReader(
        CameraConfig(name="porch", url="rtsp://10.0.0.9/live"), FrameQueues(["porch"], 2)
    )
    monkeypatch.setattr(
        cameras, "open_capture", lambda url, stopping: SimpleNamespace(release=lambda: None)
    )
    delivered = [0, 0, 25]
    reasons: list[str] = []

    def wait(delay: float) -> bool:
        reasons.append(reader._down[0] if reader._down else "")
        if not delivered:
            reader.stop()
        return reader._stop_event.is_set()

    monkeypatch.setattr(reader, "_read", lambda capture: delivered.pop(0))
    monkeypatch.setattr(reader._stop_event, "wait", wait)
    with caplog.at_level("WARNING", logger="daemon.cameras"):
        reader.run()
    assert reasons == [NO_FRAME, NO_FRAME, "stream ended or stalled"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("camera porch: its stream opened, but no frame decoded: no keyframe")
    assert "I-frame interval to 1-2 s" in lines[0]
    assert len(NO_FRAME) <= cameras.REASON_CHARS  # (the metric's label whole)


def test_a_camera_opening_at_the_stop_says_no_retrying(monkeypatch, caplog) -> None:
    """`SIGTERM: stopping`, then `camera NAME: cannot open: ...; retrying in 0.6 s`: an open
    in flight at the stop failed, and the reader announced a retry it would not make."""
    from daemon import cameras
    from daemon.cameras import CameraReader
    from daemon.config_cameras import CameraConfig

    reader = CameraReader(
        CameraConfig(name="drive", url="rtsp://10.0.0.9/live"), FrameQueues(["drive"], 2)
    )

    def open_capture(url: str, stopping: object) -> None:
        reader.stop()  # SIGTERM while the camera is asked
        raise OSError("10.0.0.9:554 does not answer within 3 s")

    monkeypatch.setattr(cameras, "open_capture", open_capture)
    with caplog.at_level("DEBUG", logger="daemon.cameras"):
        reader.run()
    assert not [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]


def test_a_camera_counts_a_disconnect_each_time_it_is_lost_not_each_retry(monkeypatch) -> None:
    """FacewatchCameraFlapping counted reconnection attempts: a camera simply down (about 2
    retries a minute) or one reboot of a minute (7) fired it. The disconnects are the times
    a camera that delivered frames was lost: a camera that streams, stays down through 12
    retries, streams again and drops has 2, and a stop is none."""
    from daemon import cameras
    from daemon.cameras import CameraReader
    from daemon.config_cameras import CameraConfig

    reader = CameraReader(
        CameraConfig(name="shed", url="rtsp://10.0.0.9/live"), FrameQueues(["shed"], 2)
    )
    script = ["stream", *["refused"] * 12, "stream", "stream until the stop"]

    def open_capture(url: str, stopping: object) -> SimpleNamespace:
        outcome = script.pop(0)
        if outcome == "refused":
            raise OSError("connection refused")
        return SimpleNamespace(release=lambda: None, stop=outcome.endswith("stop"))

    def read(capture: SimpleNamespace) -> int:
        reader._set_up(True)
        if capture.stop:
            reader._stop_event.set()
        return 10

    monkeypatch.setattr(cameras, "open_capture", open_capture)
    monkeypatch.setattr(reader, "_read", read)
    monkeypatch.setattr(reader._stop_event, "wait", lambda delay: reader._stop_event.is_set())

    def count(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"camera": "shed"}) or 0.0

    before = {
        n: count(n)
        for n in ("facewatch_camera_disconnects_total", "facewatch_camera_reconnects_total")
    }
    reader.run()
    assert not script
    after = {n: count(n) - before[n] for n in before}
    assert after == {
        "facewatch_camera_disconnects_total": 2,
        "facewatch_camera_reconnects_total": 14,
    }


def test_a_file_camera_says_once_that_it_plays_the_file_again(tmp_path, caplog) -> None:
    """A video file as a camera plays in a loop, as a live camera: its first end says so at
    INFO, with the command for a recording (identify); later ones at DEBUG only, so a short
    clip fills no log (it replayed in silence: its visits repeated with nothing saying so)."""
    from daemon.cameras import CameraReader
    from daemon.config_cameras import CameraConfig
    from tests.clips import DEMO_CLIP, read_frames

    clip = tmp_path / "door.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 25, (320, 180))
    for image in read_frames(DEMO_CLIP, count=5):  # 0.2 s: played again and again
        writer.write(cv2.resize(image, (320, 180)))
    writer.release()
    reader = CameraReader(CameraConfig(name="door", url=str(clip)), FrameQueues(["door"], 2))
    with caplog.at_level("DEBUG", logger="daemon.cameras"):
        reader.start()
        deadline = time.monotonic() + 5

        def plays() -> list:
            return [r for r in caplog.records if "played to its end" in r.getMessage()]

        while len(plays()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        reader.stop()
        reader.join(5)
    ends = plays()
    assert len(ends) >= 3
    assert [r.levelname for r in ends[:3]] == ["INFO", "DEBUG", "DEBUG"]
    said = ends[0].getMessage()
    assert said.startswith(f"camera door: {clip} played to its end (5 frames): played again")
    assert f"facewatch identify {clip}" in said and "the time of the run" in said


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts this process's files")
def test_a_cameras_reconnections_and_replays_leave_no_file_open(tmp_path, monkeypatch) -> None:
    """A daemon runs for months, its cameras reconnecting (a stream refused, again and again)
    and its video files played again: each connection's capture and socket are closed, so
    the process's open files do not grow with them."""
    from daemon import cameras
    from daemon.cameras import CameraReader
    from daemon.config_cameras import CameraConfig
    from tests.clips import DEMO_CLIP, read_frames

    monkeypatch.setattr(cameras, "BACKOFF_MIN_S", 0.04)
    monkeypatch.setattr(cameras, "BACKOFF_MAX_S", 0.05)
    clip = tmp_path / "door.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 25, (320, 180))
    for image in read_frames(DEMO_CLIP, count=3):
        writer.write(cv2.resize(image, (320, 180)))
    writer.release()
    with socket.socket() as taken:  # a port nothing listens on: each connection refused
        taken.bind(("127.0.0.1", 0))
        refused = f"rtsp://127.0.0.1:{taken.getsockname()[1]}/live"
    opened: list[str] = []
    real_open = cameras.open_capture

    def open_capture(url: str, stopping: Callable[[], bool]) -> cv2.VideoCapture:
        opened.append(url)
        return real_open(url, stopping)

    monkeypatch.setattr(cameras, "open_capture", open_capture)
    for url in (refused, str(clip)):
        opened.clear()
        name = "reconnecting"  # (its metrics' series are this test's)
        reader = CameraReader(CameraConfig(name=name, url=url), FrameQueues([name], 2))
        # (connections so far, files open): the fewest of each stretch of 5 connections
        # counts, not one caught while a connection is in flight (a file's capture is open
        # while it plays: a stretch holds some of the moments between two of them)
        samples = []
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(opened) <= 16:
                samples.append((len(opened), open_files()))
                time.sleep(0.005)
        finally:
            reader.stop()
            reader.join(10)
        assert len(opened) > 16, (url, len(opened))
        early = min(files for n, files in samples if 2 <= n <= 6)
        late = min(files for n, files in samples if 12 <= n <= 16)
        # a file kept per connection is 10 more here (16 vs 26 when captures were kept); one
        # or two opened once, late, are not a growth (15 vs 16 twice in CI's workers, never
        # when run alone)
        assert late <= early + 2, (url, early, late)


def test_an_https_camera_opens_when_this_host_trusts_its_certificate_and_else_says_so(
    tmp_path, monkeypatch
) -> None:
    """An https (or rtsps) camera's certificate is checked, its name and its CA, against this
    host's CA certificates (update-ca-certificates adds a local CA to them). OpenCV 5.1's
    FFmpeg checked it against files on the machine that built its wheel, so that no TLS
    camera opened, said as 'its codec, or its limit of clients?'; OpenCV 4.13's did not
    check it at all."""
    from tests.integration.services import HttpMjpegCamera, open_trusting, tls_generation

    tls = tls_generation(tmp_path / "tls")
    picture = np.full((240, 320, 3), 90, np.uint8)
    camera = HttpMjpegCamera([picture], fps=10, tls=tls)
    try:
        image, why = open_trusting(camera.url, None, monkeypatch)
        assert image is None, "opened, though this host does not trust its certificate"
        assert "its TLS certificate is not trusted here" in why, why
        assert why.startswith(camera.url) and "update-ca-certificates" in why
        image, why = open_trusting(camera.url, tls / "ca.crt", monkeypatch)
        assert image is not None and image.shape == picture.shape, why
        assert abs(float(image.mean()) - 90) < 3
        # its CA trusted, but the certificate names another host (127.0.0.1, not localhost)
        elsewhere = camera.url.replace("127.0.0.1", "localhost")
        image, why = open_trusting(elsewhere, tls / "ca.crt", monkeypatch)
        assert image is None, "opened, though its certificate names another host"
        assert "not trusted here" in why and "localhost" in why, why
    finally:
        camera.close()
