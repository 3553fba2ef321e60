"""Dark frames brightened before the detector sees them (``cameras[].brighten_dark``).

A camera at night without enough gain sends frames whose brightest parts are still dark
grey; MTCNN finds few faces in them (in the review's clips at 22 % of the light: none of a
man's 46, a third of a stage's), though the faces are there. Such a frame's levels are
stretched, by a lookup table on every channel, so its darkest 1 % is black and its
brightest 1 % white: the faces come back, and FaceNet names them as well as in the gained-up
frame. A frame whose brightest 1 % reaches DARK_P99 is left exactly as it is (every
well-lit frame, a dark stage with its lit actors too), and so is a black one (lens covered,
no picture: nothing to bring out but noise).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from daemon import metrics

logger = logging.getLogger(__name__)

DARK_P99 = 80  # a frame whose brightest 1 % is under this grey level (of 255) is dark
BLACK_P99 = 10  # ... and under this, black: left alone
STRIDE = 4  # the levels are counted on every 4th pixel of every 4th row
MIN_SPAN = 8  # the stretch is at most 255 / 8: a near-flat frame's noise stays noise


def levels(image: np.ndarray) -> tuple[int, int]:
    """The grey levels (luma, 0..255) of ``image``'s darkest 1 % and brightest 1 %."""
    sample = np.ascontiguousarray(image[::STRIDE, ::STRIDE])
    grey = sample if sample.ndim == 2 else cv2.cvtColor(sample, cv2.COLOR_BGR2GRAY)
    counts = np.cumsum(np.bincount(grey.ravel(), minlength=256))
    low, high = np.searchsorted(counts, [0.01 * counts[-1], 0.99 * counts[-1]])
    return int(low), int(high)


def brightened(image: np.ndarray) -> np.ndarray:
    """``image`` with its levels stretched when it is dark (see the module), else ``image``
    itself (the same array: nothing copied)."""
    low, high = levels(image)
    if not BLACK_P99 <= high < DARK_P99:
        return image
    scale = 255.0 / max(high - low, MIN_SPAN)
    table = np.clip((np.arange(256) - low) * scale, 0, 255).astype(np.uint8)
    return cv2.LUT(image, table)


class Brightener:
    """A camera's ``brightened``, counted (``facewatch_frames_brightened_total``) and said
    once at INFO, with what to set on the camera, when its first dark frame comes."""

    def __init__(self, camera: str, enabled: bool = True) -> None:
        self.camera, self.enabled = camera, enabled
        self._said = False

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return image
        out = brightened(image)
        if out is not image:
            metrics.FRAMES_BRIGHTENED.labels(self.camera).inc()
            if not self._said:
                self._said = True
                logger.info(
                    "camera %s: its frames are dark (their brightest part under grey %d of "
                    "255): brightened before detection, which finds most faces again; more "
                    "light, or the camera's gain / exposure / IR, does better "
                    "(cameras[].brighten_dark: false turns this off)",
                    self.camera, DARK_P99,
                )  # fmt: skip
        return out
