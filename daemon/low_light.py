"""Dark frames brightened before the detector sees them (``cameras[].brighten_dark``).

A camera at night without enough gain sends frames whose brightest parts are still dark
grey; MTCNN finds few faces in them (in the review's clips at 22 % of the light: none of a
man's 46, a third of a stage's), though the faces are there. Such a frame's levels are
lifted, by a lookup table on every channel: its darkest 1 % to black, its brightest 1 % to
grey TOP (240), and the few levels above squeezed into what is left, so nothing turns
white that was not: the faces come back, and FaceNet names them as well as in the gained-up
frame. A lit part of a dark frame (a person under a porch lamp, under 1 % of it) keeps its
contrast: where the brightest 0.1 % lies well above the brightest 1 %, the dark part is
lifted less (down to grey LIT_TOP), and the lit face is still found (stretched to white, it
was lost two times in three).

A frame whose brightest 1 % reaches DARK_P99 is left exactly as it is (every well-lit frame,
a dark stage with its lit actors too), and so is a black one (lens covered, no picture:
nothing to bring out but noise). Between, the lift grows gradually from either edge (over
FADE levels): a frame just under DARK_P99 and its neighbour a level brighter come out
nearly alike, so a still scene at dusk does not flicker between raw and 3 times brighter
(which the motion gate saw as movement on every frame); near BLACK_P99 the step is
softened, not gone (a near-black frame is lifted 20 times).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from daemon import metrics

logger = logging.getLogger(__name__)

DARK_P99 = 80  # a frame whose brightest 1 % is under this grey level (of 255) is dark
BLACK_P99 = 10  # ... and under this, black: left alone
FADE = (8, 20)  # levels above BLACK_P99 / below DARK_P99 over which the lift grows to full
TOP = 240  # a dark frame's brightest 1 % is lifted to this grey: 15 levels left above it
LIT_TOP = 144  # ... down to this where its brightest 0.1 % is LIT_SPAN levels above that
LIT_SPAN = 40  # (a lit person keeps about half their contrast, not a white patch)
STRIDE = 4  # the levels are counted on every 4th pixel of every 4th row
MIN_SPAN = 8  # the lift is at most TOP / 8: a near-flat frame's noise stays noise


def levels(image: np.ndarray, shares: tuple[float, ...] = (0.01, 0.99)) -> tuple[int, ...]:
    """The grey levels (luma, 0..255) under which ``shares`` of ``image`` lie: by default its
    darkest 1 % and brightest 1 %."""
    sample = np.ascontiguousarray(image[::STRIDE, ::STRIDE])
    grey = sample if sample.ndim == 2 else cv2.cvtColor(sample, cv2.COLOR_BGR2GRAY)
    counts = np.cumsum(np.bincount(grey.ravel(), minlength=256))
    found = np.searchsorted(counts, [share * counts[-1] for share in shares])
    return tuple(int(level) for level in found)


def strength(high: int) -> float:
    """How much of the lift a frame whose brightest 1 % is at ``high`` gets: none when it is
    lit or black, all of it when dark, and a share near either edge (no step)."""
    rise, fall = (high - BLACK_P99) / FADE[0], (DARK_P99 - high) / FADE[1]
    return float(np.clip(min(rise, fall), 0.0, 1.0))


def lift_table(low: int, high: int, brightest: int) -> np.ndarray:
    """The lookup table for a frame whose darkest 1 %, brightest 1 % and brightest 0.1 % are
    at these levels: monotonic, black stays black and 255 stays 255 (nothing is clipped
    white); see the module."""
    lit = min(1.0, max(brightest - high, 0) / LIT_SPAN)
    top = TOP - (TOP - LIT_TOP) * lit
    span = max(high - low, MIN_SPAN)
    knee = low + span
    grey = np.arange(256, dtype=np.float64)
    lifted = np.where(
        grey <= knee,
        (grey - low) * top / span,
        top + (grey - knee) * (255 - top) / (255 - knee),
    )
    lifted = np.maximum(lifted, 0.0)  # (under the darkest 1 %: black)
    return np.rint(grey + strength(high) * (lifted - grey)).astype(np.uint8)


def brightened(image: np.ndarray) -> np.ndarray:
    """``image`` with its levels lifted when it is dark (see the module), else ``image``
    itself (the same array: nothing copied)."""
    low, high, brightest = levels(image, (0.01, 0.99, 0.999))
    if strength(high) == 0.0:
        return image
    return cv2.LUT(image, lift_table(low, high, brightest))


def is_dark(image: np.ndarray) -> bool:
    """Whether ``image``'s brightest 1 % is under DARK_P99 (a black one too)."""
    return levels(image)[1] < DARK_P99


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
