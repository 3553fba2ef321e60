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
- black bars (a film letterboxed, a 4:3 or a phone's video pillarboxed) are cropped off
  first, from both frames and only as far as both have them (``BAR_GREY``): a bar's fixed
  edge kept the blocks along it alike whatever the picture, and a picture going black over
  half of it must not move its neighbour's picture;
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

from dataclasses import dataclass, field

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
# Black bars (a film letterboxed, 4:3 or a phone's video pillarboxed): the outer rows and
# columns whose 95th percentile is under BAR_GREY, while MIN_PICTURE of the side remains.
BAR_GREY = 20
MIN_PICTURE = 0.25  # a 9:16 video in a 16:9 frame leaves 0.32
WITHIN_S = 1.5  # frames further apart are not compared (topdown_crowd_no_faces at 0.5 fps)


@dataclass
class Thumb:
    """A frame as compared: its sampled grey picture, its black bars, and its levelled edges
    by block for each crop it was compared with (the crop both frames' bars share)."""

    grey: np.ndarray  # the frame sampled every few pixels, grey
    bars: tuple[float, float, float, float]  # black top, bottom, left, right (parts of a side)
    blank: bool  # the frame is dark or nearly one grey (BLANK_SPREAD): never compared
    # crop -> (blocks, shows)
    edges: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )

    def cropped(self, bars: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
        """The levelled edges by block, and which blocks show something, inside ``bars``."""
        height, width = self.grey.shape
        top, bottom = round(bars[0] * height), height - round(bars[1] * height)
        left, right = round(bars[2] * width), width - round(bars[3] * width)
        crop = (top, bottom, left, right)
        if crop not in self.edges:
            self.edges[crop] = _edges(_small(self.grey[top:bottom, left:right]))
        return self.edges[crop]


def _small(grey: np.ndarray) -> np.ndarray:
    return cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def _edges(small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = cv2.magnitude(cv2.Sobel(small, cv2.CV_32F, 1, 0), cv2.Sobel(small, cv2.CV_32F, 0, 1))
    edges = cv2.GaussianBlur(edges, (0, 0), EDGE_BLUR)
    height, width = edges.shape
    blocks = edges.reshape(GRID, height // GRID, GRID, width // GRID).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(GRID * GRID, -1)
    blocks = blocks - blocks.mean(axis=1, keepdims=True)
    spread = blocks.std(axis=1)
    return blocks / np.maximum(spread, 1e-6)[:, None], spread > FLAT_EDGES


def _brightest(grey: np.ndarray, axis: int) -> np.ndarray:
    """The 95th percentile of each row (``axis`` 1) or column (``axis`` 0) of ``grey``."""
    k = int(0.95 * (grey.shape[axis] - 1))
    brightest: np.ndarray = np.take(np.partition(grey, k, axis=axis), k, axis=axis)
    return brightest


def _bars(dark: np.ndarray) -> tuple[int, int]:
    """How many of the lines (rows or columns) ``dark`` at each end are bars: none when
    they would leave less than ``MIN_PICTURE`` of the side."""
    first = int(np.argmin(dark)) if not dark.all() else len(dark)
    last = int(np.argmin(dark[::-1])) if not dark.all() else len(dark)
    if len(dark) - first - last < MIN_PICTURE * len(dark):
        return 0, 0
    return first, last


def thumbnail(image: np.ndarray) -> Thumb:
    """``image`` (BGR or grey) as compared: sampled grey, its black bars, and its edges by
    block inside them (``THUMB_SIZE`` grey)."""
    step = max(1, image.shape[1] // SAMPLED_WIDTH)
    sampled = np.ascontiguousarray(image[::step, ::step])
    if sampled.ndim == 3 and sampled.shape[2] == 1:  # (a grey frame with its channel axis)
        sampled = sampled[:, :, 0]
    grey = cv2.cvtColor(sampled, cv2.COLOR_BGR2GRAY) if sampled.ndim == 3 else sampled
    height, width = grey.shape
    top, bottom = _bars(_brightest(grey, axis=1) < BAR_GREY)
    left, right = _bars(_brightest(grey, axis=0) < BAR_GREY)
    bars = (top / height, bottom / height, left / width, right / width)
    small = _small(grey[top : height - bottom, left : width - right])
    low, high = np.percentile(small, (10, 90))
    thumb = Thumb(grey, bars, bool(high - low < BLANK_SPREAD))
    thumb.edges[(top, height - bottom, left, width - right)] = _edges(small)
    return thumb


def alike_blocks(before: Thumb, after: Thumb) -> np.ndarray:
    """Each block's likeness, -1 to 1: the correlation of its edges; 1 where either frame
    shows nothing there (covered, saturated, grey: no evidence of another scene). Both
    frames are cropped alike: by the bars both have (the smaller of the two on each side),
    so the bars one frame has (or a picture going dark over part of it) do not move the
    other's picture."""
    shared = (
        min(before.bars[0], after.bars[0]),
        min(before.bars[1], after.bars[1]),
        min(before.bars[2], after.bars[2]),
        min(before.bars[3], after.bars[3]),
    )
    blocks_before, shows_before = before.cropped(shared)
    blocks_after, shows_after = after.cropped(shared)
    correlation = (blocks_before * blocks_after).mean(axis=1)
    return np.where(shows_before & shows_after, correlation, 1.0)


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
