"""A scene cut: a camera's picture that is not the one before it at all (an edited video
jumping to another shot, a camera moved to another view). Its faces are not those of the
frame before, wherever they stand: the pipeline ends the camera's tracks there
(``tracking.end_at_scene_cuts``), so a face where another stood before the cut starts its own
visit instead of continuing the other's, with the other's name.

A frame is shrunk to a ``THUMB_SIZE`` grey thumbnail, levelled (zero mean, unit variance: a
change of brightness or contrast alone is no cut) and correlated with the camera's
previous frame's; below ``CUT_BELOW`` it is a cut.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB_SIZE = (32, 18)  # width, height: the layout of the picture, not its details
# Measured, each frame taken against the one taken before (identify at 10 and 5 fps): the
# demo clip's cuts (frames 20, 82 and 211, and a fast dissolve at 45-48) 0.01-0.29, its
# other frames 0.51 and above at 10 fps, 0.36 at 5 fps (a fast camera move); people walking
# at a fixed camera (crowd_1080p.mp4), a head turning (head_turn) and a crowd at night
# (topdown_crowd_no_faces.mp4) 0.89 and above at 10 fps, 0.79 at 5 fps, 0.52 at 2 fps.
# Under 5 fps an edited video's fast camera moves fall below it (the demo clip at 3 fps:
# 0.13), and end its tracks there.
CUT_BELOW = 0.32  # (between the two: 0.29 and 0.36)
SAMPLED_WIDTH = 256  # a large frame is sampled every few pixels first (a 4K frame: 0.3 ms)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """``image`` (BGR or grey) as a levelled grey thumbnail, float32, ``THUMB_SIZE``."""
    step = max(1, image.shape[1] // SAMPLED_WIDTH)
    sampled = np.ascontiguousarray(image[::step, ::step])
    small = cv2.resize(sampled, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    grey = small.astype(np.float32).ravel()
    grey -= grey.mean()
    spread = float(grey.std())
    return grey / spread if spread > 1e-3 else grey  # (a flat frame: all zeros)


def likeness(before: np.ndarray, after: np.ndarray) -> float:
    """The correlation of two thumbnails, -1 to 1 (0 when either frame is flat)."""
    return float(before @ after) / before.size


class SceneCuts:
    """One camera's cut detector: ``cut(image)`` for each of its processed frames."""

    def __init__(self) -> None:
        self._before: np.ndarray | None = None

    def cut(self, image: np.ndarray) -> float | None:
        """The likeness of ``image`` to the frame before when it is a cut, else None (the
        first frame is no cut). A flat frame (black, one colour) is none either, and the
        next is compared with the frame before it (a fade through black is a cut; a room
        whose light went out and came back is not)."""
        thumb = thumbnail(image)
        if not thumb.any():
            return None
        before, self._before = self._before, thumb
        if before is None:
            return None
        score = likeness(before, thumb)
        return score if score < CUT_BELOW else None
