"""The pipeline's per-camera frame admission (``daemon.scheduler.Pipeline``): when each
camera's latest frame came (a stall, time its tracks could not be seen in), whether the
detector can take its frames' size, and its tracks kept across a change of that size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from daemon import metrics
from daemon.camera_frames import Frame
from daemon.config import Config
from daemon.tracking import Tracker
from engines.mtcnn import MTCNN

# the pipeline's log lines, as they were before it was split (the log shows the name)
logger = logging.getLogger("daemon.scheduler")

STALL_GRACE_S = 10.0  # a camera silent this long is down (camera_open.READ_TIMEOUT_MS, 3 tries)


class FrameAdmission:
    """Each camera's frames as they come: their pace and size, and the sizes the detector
    refuses. Owned by the scheduler thread."""

    def __init__(
        self, config: Config, detectors: Mapping[str, MTCNN], trackers: Mapping[str, Tracker]
    ) -> None:
        """``detectors``: each camera's detector; ``trackers``: each camera's tracks (their
        boxes follow a change of its frames' size)."""
        self._detectors, self._trackers = detectors, trackers
        self._interval_s = {c.name: 1.0 / c.fps for c in config.cameras}
        self._last_frame: dict[str, float] = {}  # camera -> ts of its latest frame
        self._frame_hw: dict[str, tuple[int, ...]] = {}  # camera -> its tracks' frames' size
        self._refusals: dict[tuple[str, tuple[int, ...]], str | None] = {}

    def arrived(self, frame: Frame) -> float:
        """Notes ``frame`` as its camera's latest; returns how long the camera sent nothing
        before it beyond its frame interval (``fps``), up to STALL_GRACE_S: a stall, time its
        tracks could not be seen in, which does not count toward their ``lost_after_s`` (as
        ``Pipeline.expire`` holds them while it lasts)."""
        last = self._last_frame.get(frame.camera)
        self._last_frame[frame.camera] = max(frame.clock, last or 0)
        if last is None:
            return 0.0
        silent = frame.clock - last - self._interval_s[frame.camera]
        return min(max(silent, 0.0), STALL_GRACE_S)

    def seen_until(self, camera: str, now: float) -> float:
        """Until when ``camera``'s tracks count as looked at, at ``now``: a camera that sent no
        frame for a while (a stall) holds its tracks up to STALL_GRACE_S."""
        last = self._last_frame.get(camera)
        return now if last is None else min(now, max(last, now - STALL_GRACE_S))

    def takes(self, frame: Frame) -> bool:
        """Whether the detector can take this camera's frames: not those larger than its
        TensorRT plan was built for (``engines.tensorrt.camera_sizes``), which would stop
        every camera. They are skipped and counted, with an error once per camera and size."""
        hw = frame.image.shape[:2]
        key = (frame.camera, hw)
        if key not in self._refusals:
            reason = self._detectors[frame.camera].refuses((hw[0], hw[1]))
            self._refusals[key] = reason
            if reason is not None:
                logger.error(
                    "camera %s: its %dx%d frames are skipped: %s; add %dx%d to "
                    "engines.tensorrt.camera_sizes and restart (the plan is rebuilt)",
                    frame.camera,
                    hw[1],
                    hw[0],
                    reason,
                    hw[1],
                    hw[0],
                )
        if self._refusals[key] is None:
            return True
        metrics.FRAMES_REFUSED.labels(frame.camera).inc()
        return False

    def resized(self, frame: Frame) -> bool:
        """Whether ``frame`` is of another size than its camera's tracks' frames (then it is
        searched whole: ``FaceSearch.prior``)."""
        frame_hw = frame.image.shape[:2]
        return self._frame_hw.get(frame.camera, frame_hw) != frame_hw

    def follow_size(self, frame: Frame) -> None:
        """A camera whose frames change size (back at another resolution) keeps its tracks,
        in the new frames' pixels (else everyone in view left, and came again)."""
        height, width = frame.image.shape[:2]
        before = self._frame_hw.get(frame.camera)
        self._frame_hw[frame.camera] = (height, width)
        if before is not None and before != (height, width):  # (then searched whole: resized)
            self._trackers[frame.camera].rescale((width / before[1], height / before[0]))
