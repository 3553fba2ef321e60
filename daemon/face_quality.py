"""How good a face is, for the commands and the daemon alike: enrollment's quality gates, how
turned a face is (``frontal_offset``: the pipeline recognises only faces frontal enough), and
how good a face image is (``rate_face``: the face archive keeps the best, and marks those
enroll would take). Recognition itself is ``daemon.recogniser``'s, matching
``daemon.gallery_match``'s. Threshold calibration from the enrolled people themselves is
``daemon.calibration``'s.

Pure numpy + OpenCV on detections (``engines.mtcnn.FrameDetections``) and embeddings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from engines.align import align_similarity
from engines.boxes import iou_matrix
from engines.mtcnn import FrameDetections, MTCNNConfig

logger = logging.getLogger(__name__)

DEFAULT_MIN_FACE_PX = 40.0  # shorter side of the detector box
DEFAULT_MIN_SHARPNESS = 25.0  # variance of the Laplacian of the aligned grey crop
# how far the nose lies off the middle of the eyes, in half eye distances (``frontal_offset``):
# a full profile measures 1.9; of 428 frontal and three-quarter CelebA photos 99 % lie within
# 1.0 and 2 beyond 1.5 (both turned almost to profile)
MAX_PROFILE_OFFSET = 1.5
# the detector's score of a face the camera saw, below which it is not one to enroll: the
# back or top of a head, a face looking down or covered. In two archives of the demo and a
# crowd clip (445 images), every image scored under 0.95 was such (0.70 the back of a head,
# 0.73-0.90 heads looking down, 0.85 a jacket, 0.93 hair), faces at 0.95-0.99 were blurred
# or dark but faces, and sharp frontal faces scored 0.99 and more
MIN_FACE_SCORE = 0.95
MAX_FACE_OUTSIDE = 0.1  # of the face box's area beyond the photo's edges
MIN_EXPECTED_IOU = 0.5  # a face found again where a face archive image says it is
# --largest: a runner-up face within this share of the largest's size may be the one meant
NEAR_TIE = 0.15


class Rejected(ValueError):
    """An image that must not be enrolled; the message is the reason, for people."""


@dataclass(frozen=True)
class QualityGates:
    """What a photo must pass to be enrolled. ``largest``: several faces are allowed and the
    largest is taken (else exactly one face). 0 disables a numeric gate."""

    min_face_px: float = DEFAULT_MIN_FACE_PX
    min_sharpness: float = DEFAULT_MIN_SHARPNESS
    largest: bool = False
    max_profile_offset: float = MAX_PROFILE_OFFSET  # inf allows a profile
    # the detector's score the face must have in the photo: what the daemon needs to see a
    # face at all (a face archive image is searched again below it: ARCHIVE_THRESHOLDS)
    min_score: float = MTCNNConfig.thresholds[2]
    # the score a face archive image had when the camera saw it (visit.json's)
    min_seen_score: float = MIN_FACE_SCORE

    def choose_face(
        self,
        found: FrameDetections,
        image_hw: tuple[int, int],
        expected_xyxy: np.ndarray | None = None,
    ) -> int:
        """Index of the face to enroll, or Rejected with the reason. ``expected_xyxy``: where
        the face is known to be (a face archive image): the face found there is taken,
        whatever else the photo shows."""
        if len(found) == 0:
            raise Rejected("no face found")
        sides = np.minimum(
            found.bbox_xyxy[:, 2] - found.bbox_xyxy[:, 0],
            found.bbox_xyxy[:, 3] - found.bbox_xyxy[:, 1],
        )
        k = self._pick(found, sides, expected_xyxy)
        self._check_face(found, k, sides[k], image_hw)
        return k

    def _pick(
        self, found: FrameDetections, sides: np.ndarray, expected_xyxy: np.ndarray | None
    ) -> int:
        """Which of the faces ``found`` (``sides``: each one's shorter side) to enroll: the
        one at ``expected_xyxy``, the only one, or with ``largest`` the largest."""
        if expected_xyxy is not None:
            placed = face_at(found, expected_xyxy)
            if placed is None:
                raise Rejected("the face its visit.json places was not found again")
            return placed
        if len(found) > 1 and not self.largest:
            raise Rejected(
                f"{len(found)} faces found, expected exactly one "
                "(pass --largest to enroll the largest face)"
            )
        return int(np.argmax(sides))

    def _check_face(
        self, found: FrameDetections, k: int, side_px: float, image_hw: tuple[int, int]
    ) -> None:
        """Rejected, with the reason, unless face ``k`` (``side_px``: its shorter side) is
        clear enough to enroll: scored as a face, large, whole and frontal enough."""
        if found.score[k] < self.min_score:
            raise Rejected(
                f"the detector scores this face {found.score[k]:.2f}, under the "
                f"{self.min_score:g} the daemon needs to see a face at all (detection."
                "thresholds): the back or top of a head, or no face"
            )
        if side_px < self.min_face_px:
            raise Rejected(
                f"face too small: {side_px:.0f} px, the minimum is {self.min_face_px:.0f} px "
                "(--min-face-px)"
            )
        outside = outside_fraction(found.bbox_xyxy[k], image_hw)
        if outside > MAX_FACE_OUTSIDE:
            raise Rejected(
                f"face cut off by the photo's edge ({outside:.0%} of it outside); "
                "use a photo that shows the whole face"
            )
        offset = abs(frontal_offset(found.landmarks[k]))
        if offset > self.max_profile_offset:
            raise Rejected(
                f"face turned to the side (a profile: its nose lies {offset:.1f} half eye "
                f"distances off the middle, the most is {self.max_profile_offset:g}); a "
                "frontal photo matches better (--allow-profile takes it)"
            )

    def check_seen_score(self, score: float | None) -> None:
        """Rejected when a face archive image's face scored low as the camera saw it (None:
        a photo from elsewhere)."""
        if score is not None and score < self.min_seen_score:
            raise Rejected(
                f"the camera's detector scored this face {math.floor(score * 1000) / 1000:g} "
                "when it was seen (faces "
                f"that look at the camera score {self.min_seen_score:g} or more): the top or "
                "back of a head, or a face turned away or covered; take another image of the "
                "visit (--allow-profile takes it)"
            )

    def check_sharpness(self, crop: np.ndarray) -> float:
        """The crop's blur score; Rejected when below the minimum."""
        score = sharpness(crop)
        if score < self.min_sharpness:
            raise Rejected(
                f"too blurry: sharpness {score:.1f}, the minimum is {self.min_sharpness:.1f} "
                "(--min-sharpness)"
            )
        return score


def largest_note(found: FrameDetections, k: int) -> str:
    """What ``--largest`` took from a photo of several faces, for the user to check: the box,
    how many faces it left, and whether the next was nearly as large (then the face meant
    may be the other)."""
    sides = np.minimum(
        found.bbox_xyxy[:, 2] - found.bbox_xyxy[:, 0],
        found.bbox_xyxy[:, 3] - found.bbox_xyxy[:, 1],
    )
    box = " ".join(f"{v:.0f}" for v in found.bbox_xyxy[k])
    others = len(found) - 1
    note = f"{len(found)} faces, took the largest [{box}], {others} other(s) left out"
    runner_up = float(np.delete(sides, k).max())
    if runner_up >= (1 - NEAR_TIE) * sides[k]:
        note += (
            f"; the next is nearly as large ({runner_up:.0f} px against {sides[k]:.0f}): "
            "check that the box shows the person meant (else crop the photo)"
        )
    return note


def face_at(found: FrameDetections, expected_xyxy: np.ndarray) -> int | None:
    """The face found where a box says one is (IoU at least MIN_EXPECTED_IOU), or None."""
    if not len(found):
        return None
    overlap = iou_matrix(np.asarray(expected_xyxy, np.float64)[None], found.bbox_xyxy)[0]
    return int(np.argmax(overlap)) if overlap.max() >= MIN_EXPECTED_IOU else None


def outside_fraction(box_xyxy: np.ndarray, image_hw: tuple[int, int]) -> float:
    """How much of a box's area lies beyond the image's edges (0 .. 1)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    h, w = image_hw
    area = max((x2 - x1) * (y2 - y1), 1e-9)
    inside = max(0.0, min(x2, w) - max(x1, 0.0)) * max(0.0, min(y2, h) - max(y1, 0.0))
    return 1.0 - inside / area


def frontal_offset(landmarks: np.ndarray) -> float:
    """How far the nose lies off the middle of the eyes, along the line through them, in half
    eye distances: 0 for a face looking straight on, about 2 for a full profile (the eyes'
    landmarks then sit close together on one side)."""
    left_eye, right_eye, nose = np.asarray(landmarks[:3], dtype=np.float64)
    axis = right_eye - left_eye
    half = max(float(np.linalg.norm(axis)) / 2, 1e-6)
    return float(np.dot(nose - (left_eye + right_eye) / 2, axis / (2 * half))) / half


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: low for blurred faces."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


FULL_SIZE_PX = 112  # a face this wide or wider scores full marks for size
REFUSED_FACTOR = 0.1  # the quality of a face enroll would likely refuse
# (image, bbox_xyxy, landmarks) -> the crop the embedding model sees, which enroll checks
# for blur (FaceNet.align_face); ValueError for a face it cannot cut out
Aligner = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def reference_crop(image: np.ndarray, bbox_xyxy: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The shipped model's crop: the landmarks onto the reference template, 160 px."""
    return align_similarity(image, landmarks, 160)


@dataclass(frozen=True)
class FaceRating:
    quality: float  # (0, 1]: higher is better to look at and to enroll from
    enrollable: bool  # likely passes enroll's default gates: size, sharpness, whole, score


def rate_face(
    image: np.ndarray,
    bbox_xyxy: np.ndarray,
    landmarks: np.ndarray,
    score: float,
    align: Aligner = reference_crop,
) -> FaceRating:
    """How good an image of a face is. Larger (up to FULL_SIZE_PX wide), more frontal (the
    nose halfway between the eyes, along the line through them) and sharper (enroll's blur
    score, on the crop ``align`` cuts, as enroll does) score higher; a face that enroll
    would likely refuse (smaller than its minimum, blurrier, cut off by the frame's edge, a
    profile, or a detector ``score`` under MIN_FACE_SCORE: turned away) scores a tenth.
    Rated on the image enroll reads (the archive's JPEG), it decides as enroll does."""
    width = float(bbox_xyxy[2] - bbox_xyxy[0])
    side = min(width, float(bbox_xyxy[3] - bbox_xyxy[1]))
    size = min(1.0, max(width, 1.0) / FULL_SIZE_PX)
    offset = frontal_offset(landmarks)
    frontal = 1.0 - min(1.0, abs(offset))
    try:
        blur_score = sharpness(align(image, bbox_xyxy, landmarks))
    except ValueError:  # a box wholly outside the frame, landmarks all at one point
        blur_score = 0.0
    sharp = min(1.0, blur_score / (2 * DEFAULT_MIN_SHARPNESS))
    enrollable = (
        side >= DEFAULT_MIN_FACE_PX
        and abs(offset) <= MAX_PROFILE_OFFSET
        and blur_score >= DEFAULT_MIN_SHARPNESS
        and outside_fraction(bbox_xyxy, image.shape[:2]) <= MAX_FACE_OUTSIDE
        and score >= MIN_FACE_SCORE
    )
    quality = size * (0.2 + 0.8 * frontal) * (0.2 + 0.8 * sharp)
    return FaceRating(quality * (1.0 if enrollable else REFUSED_FACTOR), enrollable)
