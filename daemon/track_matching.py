"""A frame's faces matched to a camera's tracks (``daemon.tracking``'s association).

Each track keeps the velocity of its face (smoothed, capped, not learnt from a box that
changed size, zero as soon as the face turns back) and, once it moved steadily
``tracks.STEADY_MOVES`` times, a frame's faces are matched to the tracks' boxes predicted at
its time (at most one face width along) or their last boxes, whichever fits better, by IoU,
then by the nearest centre. A face that passes in front of another keeps its own track, and
the hidden one is found again when it shows, where it stood or a little along its path.
"""

from __future__ import annotations

import numpy as np

from daemon.config_pipeline import TrackingConfig
from daemon.tracks import Track
from engines.boxes import center_shift_matrix, greedy_pairs, iou_matrix

MAX_SIZE_CHANGE = 1.5  # a face matched by its centre alone keeps its size within this factor


def match_faces(
    boxes: np.ndarray, live: list[Track], ts: float, config: TrackingConfig
) -> list[Track | None]:
    """The track of each of ``boxes`` (N, 4) of a frame taken at ``ts``, among ``live``
    (None: a face of no track): greedy by IoU with each track's predicted box or its last
    one, whichever overlaps more, then by the nearest centre of either."""
    assigned: list[Track | None] = [None] * len(boxes)
    where = (
        np.stack([t.predicted(ts) for t in live]),
        np.stack([t.bbox_xyxy for t in live]),
    )
    overlap = np.maximum(iou_matrix(boxes, where[0]), iou_matrix(boxes, where[1]))
    for i, j in greedy_pairs(overlap, config.iou_threshold):
        assigned[i] = live[j]
    _match_moved(boxes, live, where, assigned, config.max_shift)
    return assigned


def _match_moved(
    boxes: np.ndarray,
    live: list[Track],
    where: tuple[np.ndarray, np.ndarray],
    assigned: list[Track | None],
    max_shift: float,
) -> None:
    """Second pass for faces whose box does not overlap their track's predicted or last
    one (low fps, a turn, a stop): the nearest centre of either within ``max_shift`` face
    widths, size within 1.5x."""
    faces = [i for i, t in enumerate(assigned) if t is None]
    taken = {id(t) for t in assigned if t is not None}
    free = [j for j, t in enumerate(live) if id(t) not in taken]
    if not faces or not free or max_shift <= 0:
        return
    predicted, last = where[0][free], where[1][free]
    shift = np.minimum(
        center_shift_matrix(boxes[faces], predicted), center_shift_matrix(boxes[faces], last)
    )
    width_new = boxes[faces, 2] - boxes[faces, 0]
    ratio = width_new[:, None] / np.maximum(last[None, :, 2] - last[None, :, 0], 1e-9)
    scores = np.where((ratio > 1 / MAX_SIZE_CHANGE) & (ratio < MAX_SIZE_CHANGE), -shift, -np.inf)
    for i, j in greedy_pairs(scores, -max_shift):
        assigned[faces[i]] = live[free[j]]
