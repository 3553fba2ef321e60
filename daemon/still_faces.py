"""Faces that never leave: a photo on the wall, a poster, a screen, found at one place in a
camera's frames for half an hour (the daemon says so once, with the region to ignore)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.boxes import iou_matrix

STILL_FACE_S = 1800.0  # a face found this long at one place, to a few pixels, is said
STILL_IOU = 0.9  # "the same place": this overlap with where it was first found
STILL_SHARE = 0.4  # ... in at least this share of the camera's frames searched since
STILL_GAP_S = 30.0  # a place without a face this long is forgotten (a detection that flickers)
# a place seen fewer than PASSING_HITS times is forgotten when it was not in the latest
# PASSING_FRAMES frames searched (a face passing by: a new place each frame)
PASSING_HITS, PASSING_FRAMES = 10, 3


@dataclass
class _Place:
    box: np.ndarray  # where the face was first found
    first: float
    last: float
    searched: int  # the camera's frames searched before it was found
    seen: int  # ... before it was last found
    hits: int = 1


class StillFaces:
    """The places of one camera where a face stays put for half an hour: a photo on the
    wall, a poster, a screen. MTCNN finds it in every frame, so the camera keeps someone in
    view for good (or starts a visit each time the detection flickers); nothing a user sees
    says why. A place counts when a face was found there, to a few pixels, in STILL_SHARE of
    the frames searched since or more (someone seated moves more than that: their head is
    back at its first place now and then), with no gap of STILL_GAP_S. Each place
    is said once (``see`` returns its box), for the scheduler to log with the
    ``detection.ignore`` region that drops it. Owned by the scheduler thread."""

    def __init__(self) -> None:
        self._places: list[_Place] = []
        self._said: list[np.ndarray] = []
        self._searched = 0  # frames searched

    def see(self, ts: float, boxes: np.ndarray) -> list[np.ndarray]:
        """The faces' boxes of a frame taken at ``ts`` and searched (none: an empty one);
        the boxes of places whose face has now stayed ``STILL_FACE_S`` (each place once)."""
        self._searched += 1
        self._places = [p for p in self._places if not self._forgotten(p, ts)]
        if len(boxes) and self._places:
            overlap = iou_matrix(boxes, np.stack([p.box for p in self._places]))
            best = overlap.argmax(axis=1)
            same = overlap[np.arange(len(boxes)), best] >= STILL_IOU
        else:
            best, same = np.zeros(len(boxes), int), np.zeros(len(boxes), bool)
        still = []
        for box, k, known in zip(boxes, best, same, strict=True):
            if not known:
                before = self._searched - 1  # (frames searched before this one)
                self._places.append(_Place(box.copy(), ts, ts, searched=before, seen=before))
                continue
            place = self._places[k]
            place.last, place.seen, place.hits = ts, self._searched - 1, place.hits + 1
            if self._stayed(place) and not self._was_said(place.box):
                self._said.append(place.box)
                still.append(place.box)
        return still

    def _stayed(self, place: _Place) -> bool:
        frames = self._searched - place.searched
        return place.last - place.first >= STILL_FACE_S and place.hits >= STILL_SHARE * frames

    def _was_said(self, box: np.ndarray) -> bool:
        return bool(self._said) and bool(
            iou_matrix(box[None], np.stack(self._said)).max() >= STILL_IOU
        )

    def _forgotten(self, place: _Place, ts: float) -> bool:
        """A place without a face for STILL_GAP_S, or one a face only passed through."""
        missed = self._searched - 1 - place.seen
        return ts - place.last > STILL_GAP_S or (
            place.hits < PASSING_HITS and missed > PASSING_FRAMES
        )
