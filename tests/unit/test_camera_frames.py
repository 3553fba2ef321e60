"""The frames' queues between the cameras and the batch scheduler (daemon.camera_frames):
the newest kept, every drop counted and said."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from daemon.camera_frames import Frame, FrameQueues
from tests.conftest import REPO


def test_a_frame_dropped_from_a_full_queue_passes_its_motion_on() -> None:
    """Someone walks in and stops while the pipeline is behind: the frames that moved are
    dropped, the still ones after them must still be searched."""
    queues = FrameQueues(["a"], per_camera=2)
    image = np.zeros((2, 2, 3), np.uint8)
    for seq, moved in enumerate([True, False, False, False], 1):
        queues.put(Frame("a", seq, float(seq), image, moved))
    assert [(f.seq, f.moved) for f in queues.take(8, 0.0)] == [(3, True), (4, False)]


def test_frame_queues_keep_the_newest_and_count_drops() -> None:
    queues = FrameQueues(["a", "b"], per_camera=2)
    image = np.zeros((2, 2, 3), np.uint8)
    for seq in range(1, 5):
        queues.put(Frame("a", seq, float(seq), image))
    queues.put(Frame("b", 1, 1.0, image))
    batch = queues.take(max_frames=8, max_wait_s=0.0)
    assert [(f.camera, f.seq) for f in batch] == [("a", 3), ("b", 1), ("a", 4)]
    assert queues.take(8, 0.0, idle_s=0.01) == []


def test_frame_queues_say_which_cameras_have_a_frame_waiting() -> None:
    """What tells the pipeline, running behind, that a camera's next frame has come (the
    one that decides a held scene cut candidate)."""
    queues = FrameQueues(["a", "b", "c"], per_camera=2)
    image = np.zeros((2, 2, 3), np.uint8)
    assert queues.cameras_waiting() == set()
    for camera, seq in (("a", 1), ("a", 2), ("c", 1)):
        queues.put(Frame(camera, seq, float(seq), image))
    assert queues.cameras_waiting() == {"a", "c"}
    queues.take(2, 0.0)
    assert queues.cameras_waiting() == {"a"}


def test_frames_dropped_in_a_run_are_said_at_its_stop(caplog) -> None:
    """A 60-s window had to pass before dropped frames were logged: `--run-for 8` with 4
    cameras on a file dropped 52 % of each one's frames and said nothing. At the stop, one
    line per camera that dropped some: how many of how many, a WARNING with the advice past
    a fifth; none for a camera that dropped none."""
    queues = FrameQueues(["cam1", "cam2", "cam3"], per_camera=2)
    image = np.zeros((2, 2, 3), np.uint8)
    for seq in range(10):  # 8 of 10 dropped
        queues.put(Frame("cam1", seq, float(seq), image))
    for seq in range(2):
        queues.put(Frame("cam2", seq, float(seq), image))
    queues.take(8, 0.0)
    for seq in range(11):  # 1 of 11: dropped while the pipeline was behind a moment
        queues.put(Frame("cam3", seq, float(seq), image))
        if seq not in (2, 3):
            queues.take(8, 0.0)
    with caplog.at_level("INFO", logger="daemon.cameras"):
        queues.say_drops()
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(said) == 2, said
    assert said[0][0] == "WARNING"
    assert said[0][1].startswith("camera cam1: 8 of 10 frames dropped in 0 s (the pipeline "), said
    assert "could not keep up: it handles " in said[0][1]
    assert (
        "set cameras[].fps to at most" in said[0][1] and "for each of the 3 cameras" in said[0][1]
    )
    assert said[1] == (
        "INFO",
        "camera cam3: 1 of 11 frames dropped (the pipeline was behind at times)",
    )


def test_a_stalled_pipelines_drops_are_said_as_a_stall_at_the_stop(caplog) -> None:
    queues = FrameQueues(["cam1"], per_camera=1)
    for seq in range(3):
        queues.put(Frame("cam1", seq, float(seq), np.zeros((2, 2, 3), np.uint8)))
    queues.say_drops()
    assert "camera cam1: 2 of 3 frames dropped in 0 s (the pipeline took no frame" in caplog.text


def test_facewatch_run_for_a_few_seconds_says_the_frames_it_dropped(tmp_path) -> None:
    """The review's reproducer, made sure: `facewatch run --run-for` on a file while the
    pipeline cannot keep up (each detector call made slow). Its stop says the drops."""
    config = tmp_path / "facewatch.yaml"
    clip = REPO / "configs" / "demo" / "hamilton_360p.mp4"
    config.write_text(
        f"cameras: [{{name: door, url: {str(clip)!r}, fps: 30}}]\n"
        "recognition: {model: null}\nbatching: {queue_frames: 1, max_batch: 1}\n"
        "mqtt: {enabled: false}\nmetrics: {enabled: false}\nevents: {stdout: false}\n"
    )
    program = (
        "import sys, time; from daemon import cli; import engines.mtcnn as m\n"
        "real = m.MTCNN.detect\n"
        "def detect(self, *a, **k):\n"
        "    time.sleep(0.2)\n"
        "    return real(self, *a, **k)\n"
        "m.MTCNN.detect = detect\n"
        f"sys.exit(cli.main(['run', '--config', {str(config)!r}, '--run-for', '3']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "NOTIFY_SOCKET")}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=REPO,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = re.search(r"camera door: (\d+) of (\d+) frames dropped in 3 s \(([^)]*)", done.stderr)
    assert said, done.stderr
    assert int(said[1]) > 0.2 * int(said[2]), said[0]
    assert said[3].startswith("the pipeline could not keep up: it handles "), said[0]
    assert done.stderr.index(said[0]) < done.stderr.index("facewatch stopped")


@pytest.mark.parametrize("max_frames", [1, 2])
def test_frame_queues_respect_max_batch(max_frames) -> None:
    queues = FrameQueues(["a"], per_camera=4)
    for seq in range(3):
        queues.put(Frame("a", seq, 0.0, np.zeros((1, 1, 3), np.uint8)))
    assert len(queues.take(max_frames, 0.0)) == max_frames


def test_frame_queues_serve_every_camera_when_batches_are_smaller() -> None:
    """Four cameras, batches of two: the oldest frames go first, so no camera starves."""
    names = ["a", "b", "c", "d"]
    queues = FrameQueues(names, per_camera=2)
    image = np.zeros((1, 1, 3), np.uint8)
    served: dict[str, int] = dict.fromkeys(names, 0)
    ts = 0.0
    for _ in range(20):
        for name in names:  # every camera delivers a frame per round
            ts += 0.01
            queues.put(Frame(name, 0, ts, image))
        for frame in queues.take(2, 0.0):  # the pipeline keeps up with half of them
            served[frame.camera] += 1
    assert min(served.values()) >= 8, served


def test_a_camera_whose_frames_are_mostly_dropped_is_logged_now_and_then(
    monkeypatch, caplog
) -> None:
    """More camera than the CPU can take: the newest frames are kept and the rest dropped,
    as designed, but only Prometheus's alert said so (after 10 minutes). The log says it,
    at most every REMIND_S, for that camera alone."""
    from daemon import camera_frames

    monkeypatch.setattr(camera_frames, "DROPS_WINDOW_S", 0.0)  # every frame closes a window
    queues = FrameQueues(["gate", "door"], per_camera=1)
    image = np.zeros((1, 1, 3), np.uint8)
    with caplog.at_level("WARNING", logger="daemon.cameras"):
        for seq in range(50):
            queues.put(Frame("gate", seq, float(seq), image))  # never taken: dropped
            queues.put(Frame("door", seq, float(seq), image))
            queues._queues["door"].clear()  # taken by the pipeline in time
            queues._taken += 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("camera gate: 100 % of its frames dropped in the last")
    assert "cannot keep up" in lines[0]


def test_a_pipeline_that_takes_no_frame_is_logged_as_stalled_not_slow(monkeypatch, caplog) -> None:
    """A hung engine call: every frame of every camera dropped, and the log said the
    pipeline cannot keep up, set cameras[].fps lower. No frame taken at all is a stall."""
    from daemon import camera_frames

    monkeypatch.setattr(camera_frames, "DROPS_WINDOW_S", 0.0)
    queues = FrameQueues(["gate"], per_camera=1)
    with caplog.at_level("WARNING", logger="daemon.cameras"):
        for seq in range(5):
            queues.put(Frame("gate", seq, float(seq), np.zeros((1, 1, 3), np.uint8)))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("camera gate: 100 % of its frames dropped in the last"), lines
    assert "the pipeline took no frame of any camera in that time: it is stalled" in lines[0]
    assert "cameras[].fps" not in lines[0]


def test_the_log_of_a_pipeline_behind_says_which_fps_would_do(monkeypatch, caplog) -> None:
    """Its advice was `lower the cameras' fps, use sub-streams, set
    detection.full_scan_every, or move to a GPU`, with full_scan_every already 5 and no
    word of which fps. It says what the pipeline handled in the minute, of all cameras, and
    each camera's share of it, under the key's name."""
    from daemon import camera_frames

    clock = [0.0]
    monkeypatch.setattr(
        camera_frames, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    )
    queues = FrameQueues(["gate", "door"], per_camera=2, full_scan_every=5)
    image = np.zeros((1, 1, 3), np.uint8)
    with caplog.at_level("WARNING", logger="daemon.cameras"):
        for step in range(305):  # both at 5 fps; the pipeline takes 3 frames a second
            clock[0] = step / 5
            queues.put(Frame("gate", step, clock[0], image))
            queues.put(Frame("door", step, clock[0], image))
            if step % 5 in (0, 2, 4):
                queues.take(1, 0.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "it handles 3.0 frames/s in all: set cameras[].fps to at most 1.5 for each of " \
        "the 2 cameras (and the camera's own stream to that frame rate" in lines[0]  # fmt: skip
    assert "full_scan_every" not in lines[0]
