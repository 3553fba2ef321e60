"""The frames a camera reader hands the pipeline: each ``Frame``, the ``FrameQueues`` that keep
only the newest frames of every camera (the oldest dropped and counted when the pipeline is
behind, and the log told so), and the ``FrameSchedule`` that keeps a camera's frames at its
target fps."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from daemon import metrics
from daemon.journal import REMIND_S

logger = logging.getLogger("daemon.cameras")

# a camera whose frames are dropped (the pipeline behind) past metrics.DROPS_HIGH of a minute
# is logged, at most every REMIND_S: otherwise only Prometheus's alert would say it
DROPS_WINDOW_S = 60.0


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
