"""A scene cut: a camera's picture that is not the one before it at all (an edited video
jumping to another shot, a camera moved to another view, a PTZ preset; a zoom on the same
view is not caught). Its faces are not those of the frame before, wherever they stand: the
pipeline ends the camera's tracks there (``tracking.end_at_scene_cuts``), so a face where
another stood before the cut starts its own visit instead of continuing the other's, with
the other's name.

What a fixed camera sees must not read as one: someone passing close to the lens, a light
going off over part of the room, a moment of black, a flash. So:

- a frame is shrunk to a ``THUMB_SIZE`` grey thumbnail, and its edges (the blurred gradient
  magnitude) are compared block by block (``GRID`` x ``GRID``), each block levelled on its
  own: a light over part of the picture scales its edges but keeps where they are;
- a cut needs nearly every block changed: fewer than ``ALIKE_BLOCKS`` blocks correlate
  ``ALIKE`` or more (someone over half the picture leaves the other half alike);
- a block with no edges in either frame (covered, saturated by headlights, a decoder's
  grey) counts as alike: it is no evidence of another scene. What still reads as one: a
  textured object filling nearly the whole view for two frames or more;
- a blank frame (dark, or nearly one grey: ``BLANK_SPREAD``; a clock burnt in on black too)
  is neither compared nor remembered: a light out and back is no cut;
- a frame more than ``WITHIN_S`` after the frame it would be compared with is not compared
  (at under 1 fps people move too far between frames for the picture to tell);
- a candidate (a frame unlike the frame before) is a cut only when the next frame is also
  unlike the frame before it and like the candidate: an occluder, a flash or a corrupt frame
  that lasts one frame reverts.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMB_SIZE = (64, 36)  # width, height: the layout of the picture, not its details
GRID = 4  # blocks per side (16 blocks of 16x9 thumbnail cells)
SAMPLED_WIDTH = 256  # a large frame is sampled every few pixels first (under 1 ms a frame)
EDGE_BLUR = 1.0  # (thumbnail cells) the edges blurred a little: a camera's move of a cell
FLAT_EDGES = 2.0  # a block whose edges vary less than this (grey levels) shows nothing
# Measured with identify's frame choice (10, 5, 2, 1 fps), the 4th most alike block of each
# processed frame against the one before: the demo clip's cuts at frames 20 and 211 0.34-0.38
# (at 10 and 5 fps; its cut at 82 keeps a dark stage block: 0.47-0.49, and a dissolve at
# 45-48 0.5-0.9: not taken), its other frames 0.63 and more at 10 fps and 0.41 at 5 fps (a
# fast camera move); crowd_1080p, head_turn, topdown_crowd_no_faces 0.88 and more at 5 fps,
# 0.55 at 1 fps; someone over the left 60 % of head_turn 0.97 (6 blocks untouched), the top
# half of crowd_1080p darkened to 30 % 0.96, a simulated IR switch 0.88.
ALIKE = 0.4  # a block correlating this much or more is alike
ALIKE_BLOCKS = 4  # a cut: fewer than this many of the GRID*GRID blocks alike
# The 10th to 90th percentile of the grey thumbnail: real frames 28 (the demo clip's darkest)
# to 120 grey levels; black with sensor noise (sd 3) 1; an on-screen clock on black covers
# under a tenth of the picture and is left out by the percentiles.
BLANK_SPREAD = 8.0
WITHIN_S = 1.5  # frames further apart are not compared (topdown_crowd_no_faces at 0.5 fps)


@dataclass
class Thumb:
    """A frame as compared: each block's levelled edges, and which blocks show something."""

    blocks: np.ndarray  # (GRID*GRID, cells) float32, each row zero mean, unit variance
    shows: np.ndarray  # (GRID*GRID,) bool: the block's edges vary (FLAT_EDGES)
    blank: bool  # the frame is dark or nearly one grey (BLANK_SPREAD): never compared


def thumbnail(image: np.ndarray) -> Thumb:
    """``image`` (BGR or grey) as compared: ``THUMB_SIZE`` grey, its edges by block."""
    step = max(1, image.shape[1] // SAMPLED_WIDTH)
    sampled = np.ascontiguousarray(image[::step, ::step])
    small = cv2.resize(sampled, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    grey = small.astype(np.float32)
    low, high = np.percentile(grey, (10, 90))
    edges = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    edges = cv2.GaussianBlur(edges, (0, 0), EDGE_BLUR)
    height, width = edges.shape
    blocks = edges.reshape(GRID, height // GRID, GRID, width // GRID).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(GRID * GRID, -1)
    blocks = blocks - blocks.mean(axis=1, keepdims=True)
    spread = blocks.std(axis=1)
    levelled = blocks / np.maximum(spread, 1e-6)[:, None]
    return Thumb(levelled, spread > FLAT_EDGES, bool(high - low < BLANK_SPREAD))


def alike_blocks(before: Thumb, after: Thumb) -> np.ndarray:
    """Each block's likeness, -1 to 1: the correlation of its edges; 1 where either frame
    shows nothing there (covered, saturated, grey: no evidence of another scene)."""
    both = before.shows & after.shows
    correlation = (before.blocks * after.blocks).mean(axis=1)
    return np.where(both, correlation, 1.0)


def likeness(before: Thumb, after: Thumb) -> float:
    """How alike two frames are: the ``ALIKE_BLOCKS``-th most alike block's likeness (under
    ``ALIKE``: another scene)."""
    return float(np.sort(alike_blocks(before, after))[-ALIKE_BLOCKS])


@dataclass
class Look:
    """What a frame says: whether it is a ``candidate`` (unlike the frame before: a cut if
    the next frame confirms it), and the verdict on the previous frame when that one was
    (``confirms``: True a cut, False not; None: it was none)."""

    candidate: bool = False
    confirms: bool | None = None
    likeness: float = 1.0  # (of a candidate, or of the confirmed candidate, to the frame before)


class SceneCuts:
    """One camera's cut detector: ``look(image, clock)`` for each of its processed frames,
    in order."""

    def __init__(self) -> None:
        self._before: tuple[Thumb, float] | None = None  # the last frame taken as the scene
        self._candidate: tuple[Thumb, float, float] | None = None  # thumb, clock, likeness

    def look(self, image: np.ndarray, clock: float) -> Look:
        thumb = thumbnail(image)
        candidate, self._candidate = self._candidate, None
        if thumb.blank:  # (a candidate followed by black: not confirmed)
            return Look(confirms=False if candidate is not None else None)
        before, self._before = self._before, (thumb, clock)
        last = candidate[1] if candidate is not None else before[1] if before else None
        if before is None or last is None or clock - last > WITHIN_S:
            return Look(confirms=False if candidate is not None else None)
        score = likeness(before[0], thumb)
        if candidate is not None:
            if score < ALIKE and likeness(candidate[0], thumb) >= ALIKE:
                return Look(confirms=True, likeness=candidate[2])
            if score >= ALIKE:
                return Look(confirms=False)
            self._before = before  # (unlike both: a candidate of its own, against the scene)
            self._candidate = (thumb, clock, score)
            return Look(candidate=True, confirms=False, likeness=score)
        if score < ALIKE:
            self._before, self._candidate = before, (thumb, clock, score)
            return Look(candidate=True, likeness=score)
        return Look()

    def drop_candidate(self) -> None:
        """The frame after the candidate will not come in time (its camera went quiet, the
        daemon stops): it is no cut."""
        self._candidate = None
