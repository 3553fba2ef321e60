"""Whether a camera's picture changed: the motion gate that spares the detector still frames.

Each frame is shrunk to a small blurred grey copy (the averaging removes sensor and
compression noise), compared with a running average of the camera's last second or so of
frames, and called *moved* when enough of its pixels differ from that average by more than a
threshold.
A camera reader owns one ``MotionDetector``; the scheduler skips the detector on a frame that
did not move while its camera has no faces in view (``daemon.face_search``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from daemon.config_cameras import MotionConfig

WIDTH = 320  # pixels across the grey copy (1080p: each of them averages a 6x6 block)
BLUR = (5, 5)
MEMORY_S = 1.0  # the running average forgets a frame with this time constant


class MotionDetector:
    """``moved(image)``: whether more than ``min_area_fraction`` of the frame changed by more
    than ``min_change_levels`` grey levels (0-255) against the recent frames. The first frame,
    and the first of a new size, count as moved."""

    def __init__(
        self, min_change_levels: float, min_area_fraction: float, fps: float = 5.0
    ) -> None:
        self.min_change_levels, self.min_area_fraction = min_change_levels, min_area_fraction
        self._adapt = 1.0 - math.exp(-1.0 / (fps * MEMORY_S))  # a frame's weight in it
        self._average: np.ndarray | None = None

    @classmethod
    def gate(cls, settings: MotionConfig | None, fps: float) -> MotionDetector | None:
        """A camera's motion gate at ``fps`` frames a second, as ``settings`` (its
        ``Config.motion``) say; None where it is off."""
        if settings is None or not settings.enabled:
            return None
        return cls(settings.min_change_levels, settings.min_area_fraction, fps)

    def reset(self) -> None:
        """Forget the recent frames (a new connection: the picture may have changed)."""
        self._average = None

    def changed(self, image: np.ndarray) -> float:
        """The fraction of the frame that changed, from 0 to 1 (1 for a first frame)."""
        grey = small_grey(image)
        average = self._average
        if average is None or average.shape != grey.shape:
            self._average = grey
            return 1.0
        changed = float(np.count_nonzero(cv2.absdiff(grey, average) > self.min_change_levels))
        cv2.accumulateWeighted(grey, average, self._adapt)
        return changed / grey.size

    def moved(self, image: np.ndarray) -> bool:
        return self.changed(image) > self.min_area_fraction


def small_grey(image: np.ndarray) -> np.ndarray:
    """``image`` (BGR or grey) shrunk to ``WIDTH`` pixels across, grey and blurred, float32."""
    height, width = image.shape[:2]
    size = (min(WIDTH, width), max(1, round(height * min(WIDTH, width) / width)))
    shrunk = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if shrunk.ndim == 3:
        shrunk = cv2.cvtColor(shrunk, cv2.COLOR_BGR2GRAY)
    return cv2.GaussianBlur(shrunk, BLUR, 0).astype(np.float32)
