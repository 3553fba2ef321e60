"""Recognition pieces shared by the commands and the daemon: enrollment quality gates,
threshold calibration from the enrolled people themselves, and how good a face image is
(``rate_face``: the face archive keeps the best, and marks those enroll would take).

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
DEFAULT_TARGET_FAR = 0.01
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
MAX_STORED_FRR = 0.3  # calibrate stores no threshold that turns away more enrolled faces
MAX_FACE_OUTSIDE = 0.1  # of the face box's area beyond the photo's edges
MAX_DISTANCE = 4.0  # squared L2 between unit vectors
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
        if expected_xyxy is not None:
            placed = face_at(found, expected_xyxy)
            if placed is None:
                raise Rejected("the face its visit.json places was not found again")
            k = placed
        elif len(found) > 1 and not self.largest:
            raise Rejected(
                f"{len(found)} faces found, expected exactly one "
                "(pass --largest to enroll the largest face)"
            )
        else:
            k = int(np.argmax(sides))
        if found.score[k] < self.min_score:
            raise Rejected(
                f"the detector scores this face {found.score[k]:.2f}, under the "
                f"{self.min_score:g} the daemon needs to see a face at all (detection."
                "thresholds): the back or top of a head, or no face"
            )
        if sides[k] < self.min_face_px:
            raise Rejected(
                f"face too small: {sides[k]:.0f} px, the minimum is {self.min_face_px:.0f} px "
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
        return k

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


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen from enrolled embeddings, and its expected error rates.

    Leave-one-out over the enrolled faces: each one in turn is a probe against all the
    others. Its *genuine* distance is to the nearest other face of the same person (a false
    reject when not below the threshold); its *impostor* trial is the pair it makes with the
    nearest face of anyone else, as if its person were not enrolled (a false accept when
    below). Two faces that are each other's nearest impostor make one trial, not two: the
    closest two people would otherwise count twice, and a target that allows one false
    accept would land on the second copy, the closest two people's distance.
    """

    threshold: float
    far: float  # expected false-accept rate at the threshold: false_accepts / impostor
    frr: float  # expected false-reject rate at the threshold
    target_far: float
    genuine: int  # probes with another face of their own person
    impostor: int  # impostor trials (distinct pairs of faces)
    people: int
    faces: int  # enrolled faces (every one is a probe)
    false_accepts: int  # impostor trials below the threshold

    @property
    def far_resolution(self) -> float:
        """The smallest non-zero FAR these many impostor trials can measure."""
        return 1.0 / self.impostor if self.impostor else 1.0


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared L2 between unit vectors, every row of ``a`` against every row of ``b``."""
    dist = np.asarray(a, np.float32) @ np.asarray(b, np.float32).T
    dist *= -2.0  # in place: no second and third (rows, M) array
    dist += 2.0
    return np.maximum(dist, 0.0, out=dist)


def _nearest_distances(
    vectors: np.ndarray, owners: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per face: squared L2 to the nearest other face of the same owner (inf if none), to
    the nearest face of another owner, and that face's index. Rows in chunks, so memory
    stays O(chunk x M)."""
    genuine = np.full(len(vectors), np.inf, np.float32)
    impostor = np.full(len(vectors), np.inf, np.float32)
    nearest = np.zeros(len(vectors), np.int64)
    for start in range(0, len(vectors), 1024):
        rows = slice(start, start + 1024)
        dist = _distances(vectors[rows], vectors)
        same = owners[rows, None] == owners[None, :]
        dist[np.arange(dist.shape[0]), np.arange(start, start + dist.shape[0])] = np.inf
        genuine[rows] = np.where(same, dist, np.inf).min(axis=1)
        dist[same] = np.inf  # now to others only
        nearest[rows] = dist.argmin(axis=1)
        impostor[rows] = dist[np.arange(dist.shape[0]), nearest[rows]]
    return genuine, impostor, nearest


def _impostor_trials(impostor: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """One distance per distinct pair of faces among each face's nearest impostor: a pair
    that are each other's nearest is one comparison, not two."""
    pairs = np.sort(np.stack([np.arange(len(nearest)), nearest], axis=1), axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    return impostor[np.sort(first)]


def calibrate(
    vectors: np.ndarray, owners: list[str], target_far: float = DEFAULT_TARGET_FAR
) -> Calibration:
    """The largest threshold whose leave-one-out false-accept rate is at most ``target_far``."""
    if not 0.0 <= target_far < 1.0:
        raise ValueError(f"target FAR must be in [0, 1), got {target_far}")
    index: dict[str, int] = {}
    names = np.array([index.setdefault(o, len(index)) for o in owners], np.int64)
    people = len(index)
    if people < 2:
        raise ValueError(f"calibration needs at least 2 enrolled people, the gallery has {people}")
    unit = np.asarray(vectors, np.float32)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    genuine, impostor, nearest = _nearest_distances(unit, names)
    genuine = genuine[np.isfinite(genuine)]
    if len(genuine) == 0:
        raise ValueError("calibration needs at least one person enrolled with 2 or more images")
    ordered = np.sort(_impostor_trials(impostor, nearest))
    allowed = int(np.floor(target_far * len(ordered) + 1e-9))  # false accepts we may have
    threshold = float(ordered[allowed]) if allowed < len(ordered) else MAX_DISTANCE
    threshold = min(max(threshold, 1e-6), MAX_DISTANCE)
    false_accepts = int(np.sum(ordered < threshold))
    return Calibration(
        threshold=threshold,
        far=false_accepts / len(ordered),
        frr=float(np.mean(genuine >= threshold)),
        target_far=target_far,
        genuine=len(genuine),
        impostor=len(ordered),
        people=people,
        faces=len(unit),
        false_accepts=false_accepts,
    )


# faces ``strangers_named`` takes as strangers': beyond, a fixed random sample (its share
# then lies within 1-2 % of all faces', and a gallery of 25,000 faces takes a second)
STRANGER_PROBES = 5000


def strangers_named(
    vectors: np.ndarray, owners: list[str], limits: np.ndarray, probes: int = STRANGER_PROBES
) -> tuple[float, int]:
    """How often the gallery would name a stranger, from its own faces: each face taken as
    a stranger's photo, its person left out, is named when its nearest face of anyone else
    lies under that face's person's threshold (``limits``, per face), as ``Gallery.match``
    names a face. The share named, and how many faces were tried (at most ``probes``); (0,
    0) with fewer than 2 people. Against 2,716 never-enrolled LFW people: 1,565 enrolled,
    84 % said, 82.8 % named; 1,000, 74-76 % against 74-75 %; 100 (some 300 faces: a rough
    guess), 11-28 % against 19-22 %."""
    index: dict[str, int] = {}
    who = np.array([index.setdefault(o, len(index)) for o in owners], np.int64)
    if len(index) < 2:
        return 0.0, 0
    unit = np.asarray(vectors, np.float32)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    limits = np.asarray(limits, np.float64)
    tried = np.arange(len(unit))
    if len(tried) > probes:
        tried = np.sort(np.random.default_rng(0).choice(len(unit), probes, replace=False))
    named = 0
    for start in range(0, len(tried), 512):
        rows = tried[start : start + 512]
        dist = _distances(unit[rows], unit)
        dist[who[rows, None] == who[None, :]] = np.inf  # the stranger's own person: not enrolled
        nearest = dist.argmin(axis=1)
        named += int(np.sum(dist[np.arange(len(rows)), nearest] < limits[nearest]))
    return named / len(tried), len(tried)


MIN_OTHERS = 2  # a photo is judged against its person's other faces only when they are 2+
# a photo is refused as unlike its person beyond this many times the threshold: at the
# threshold itself 11 % of CelebA same-person pairs lie farther (sunglasses, a hat, years
# apart), and 30 of 1,930 good photos were refused; at 1.3x (0.2 for the shipped model) 8,
# most of them CelebA's own mislabelled photos
UNLIKE_FACTOR = 1.3


@dataclass(frozen=True)
class Unlike:
    """A new face farther than UNLIKE_FACTOR times its person's threshold from every other
    face of that person (enrolled, or in the same enroll but not from the same visit):
    someone else, or a photo very unlike the others."""

    index: int  # of the new face
    name: str
    nearest: float  # squared L2 to the person's nearest other face
    threshold: float


def unlike_faces(
    new: np.ndarray,
    new_names: list[str],
    old: np.ndarray,
    old_names: list[str],
    threshold_of: dict[str, float],
    sources: list[object] | None = None,
) -> list[Unlike]:
    """The new faces none of whose person's other faces (at least MIN_OTHERS of them, old or
    new) is nearer than UNLIKE_FACTOR times that person's threshold: with fewer there is no
    telling which of two faces is the odd one. ``sources``: where each new face comes from
    (a face archive visit, else the photo itself); the faces of one visit are one track,
    always near each other, so they neither vouch for each other nor count as others: a
    wrong visit is judged by the person's enrolled faces and their other visits and photos."""
    if len(new) == 0:
        return []
    sources = list(range(len(new))) if sources is None else sources
    vectors = np.concatenate([np.asarray(new, np.float32), np.asarray(old, np.float32)])
    owners = np.array([*new_names, *old_names], dtype=object)
    dist = _distances(new, vectors)
    found = []
    for k, name in enumerate(new_names):
        own = np.array([sources[i] == sources[k] for i in range(len(new))] + [False] * len(old))
        others = (owners == name) & ~own
        witnesses = len({sources[i] for i in np.flatnonzero(others[: len(new)])})
        if witnesses + int(others[len(new) :].sum()) < MIN_OTHERS:
            continue
        nearest = float(dist[k][others].min())
        if nearest >= UNLIKE_FACTOR * threshold_of[name]:
            found.append(Unlike(k, name, nearest, threshold_of[name]))
    return found


def split_visit(vectors: np.ndarray, limit: float) -> list[list[int]]:
    """The faces of one visit in groups that lie ``limit`` or more apart (single linkage:
    a face joins a group when it is nearer than ``limit`` to any face of it), each group in
    order. One group: the visit shows one person; two or more: the track passed from one
    person to another (a neighbour who leaned in, a stranger who took someone's place)."""
    near = _distances(vectors, vectors) < limit
    group = list(range(len(vectors)))
    for a, b in zip(*np.nonzero(np.triu(near, 1)), strict=True):
        old, joined = group[b], group[a]
        group = [joined if g == old else g for g in group]
    groups: dict[int, list[int]] = {}
    for k, g in enumerate(group):
        groups.setdefault(g, []).append(k)
    return sorted(groups.values())


@dataclass(frozen=True)
class ClosePeople:
    """Two enrolled people and the distance between their nearest two faces; ``own``: each
    one's median distance between their own faces (each face to its nearest; inf with one)."""

    first: str
    second: str
    distance: float
    own: tuple[float, float]

    @property
    def same_person(self) -> bool:
        """Their faces are nearer each other than each one's own faces are: one person
        enrolled under two names, or two people this model cannot tell apart."""
        return all(self.distance < own for own in self.own if np.isfinite(own)) and any(
            np.isfinite(own) for own in self.own
        )


def closest_people(
    vectors: np.ndarray, owners: list[str], below: float, limit: int = 5
) -> tuple[list[ClosePeople], int]:
    """The pairs of people whose nearest faces are under ``below`` apart (a face of one is
    named as the other at that threshold), or nearer than their own faces: those first,
    then closest first, at most ``limit``; and how many pairs there are in all. Only those
    pairs are gathered (5,000 people make 12.5 million pairs, a few thousand of them close):
    calibrate at that size takes seconds, not a minute and 3 GB."""
    names = sorted(set(owners))
    index = {name: k for k, name in enumerate(names)}
    who = np.array([index[o] for o in owners], np.int64)
    unit = np.asarray(vectors, np.float32)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    genuine, _, _ = _nearest_distances(unit, who)
    own = _medians_by_person(genuine, who, len(names))
    apart = _people_distances(unit, who, len(names))
    first, second, same = _close_pairs(apart, own, below)
    top = np.lexsort((apart[first, second], ~same))[:limit]  # stable: ties in names' order
    close = [
        ClosePeople(names[a], names[b], float(apart[a, b]), (float(own[a]), float(own[b])))
        for a, b in zip(first[top], second[top], strict=True)
    ]
    return close, len(first)


def _medians_by_person(genuine: np.ndarray, who: np.ndarray, people: int) -> np.ndarray:
    """(people,): the median of each person's finite ``genuine`` distances (inf with none)."""
    medians = np.full(people, np.inf)
    known = np.isfinite(genuine)
    if not known.any():
        return medians
    order = np.argsort(who[known], kind="stable")
    owner, values = who[known][order], genuine[known][order]
    found, starts = np.unique(owner, return_index=True)
    for person, group in zip(found, np.split(values, starts[1:]), strict=True):
        medians[person] = np.median(group)
    return medians


def _close_pairs(
    apart: np.ndarray, own: np.ndarray, below: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (first < second, as rows of ``apart``) whose nearest faces are under
    ``below`` apart or nearer than their own faces (``ClosePeople.same_person``), and which
    are the latter. Rows in chunks: no (people, people) mask is made."""
    finite = np.isfinite(own)
    columns = np.arange(len(own))
    firsts, seconds, sames = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, bool)]
    for start in range(0, len(own), 1024):
        rows = np.arange(start, min(start + 1024, len(own)))
        block = apart[rows]
        same = (
            (finite[rows, None] | finite[None, :])
            & (block < own[rows, None])
            & (block < own[None, :])
        )
        a, b = np.nonzero(((block < below) | same) & (columns[None, :] > rows[:, None]))
        firsts.append(rows[a])
        seconds.append(b)
        sames.append(same[a, b])
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(sames)


def look_alikes(
    vectors: np.ndarray, owners: list[str], people: set[str], threshold_of: dict[str, float]
) -> list[ClosePeople]:
    """Each of ``people`` (new to the gallery) with the others it may be one person with:
    their nearest faces lie under the other's threshold and nearer than each one's own faces
    lie to each other (calibrate's "the same person?"), or, with no second face on either
    side, under half the threshold. Only the faces of ``people`` are compared with all: an
    enroll into a gallery of 20,000 faces stays quick."""
    unit = np.asarray(vectors, np.float32)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    who = np.array(owners, dtype=object)
    limits = np.array([threshold_of[name] for name in owners], np.float32)
    found, said = [], set()
    for name in sorted(people):
        mine = who == name
        nearest = _distances(unit[mine], unit).min(axis=0)  # each face to this person's
        nearest[mine] = np.inf
        own = _own_distance(unit[mine])
        for other in sorted(set(who[nearest < limits]) - {name}):
            if frozenset((name, other)) in said:
                continue
            said.add(frozenset((name, other)))
            distance = float(nearest[who == other].min())
            theirs = (own, _own_distance(unit[who == other]))
            known = [d for d in theirs if np.isfinite(d)]
            if all(distance < d for d in known) if known else distance < threshold_of[other] / 2:
                found.append(ClosePeople(name, other, distance, theirs))
    return found


def _own_distance(faces: np.ndarray) -> float:
    """The median distance from each of one person's faces to their nearest other one (inf
    with one face)."""
    if len(faces) < 2:
        return float("inf")
    dist = _distances(faces, faces)
    np.fill_diagonal(dist, np.inf)
    return _median(dist.min(axis=1))


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else float("inf")


def _people_distances(unit: np.ndarray, who: np.ndarray, people: int) -> np.ndarray:
    """(people, people): the squared L2 between each two people's nearest faces. Rows in
    chunks, so memory stays O(chunk x M)."""
    order = np.argsort(who, kind="stable")
    unit, who = unit[order], who[order]
    starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
    apart = np.full((people, people), np.inf, np.float32)
    for start in range(0, len(unit), 1024):
        rows = slice(start, start + 1024)
        nearest = np.minimum.reduceat(_distances(unit[rows], unit), starts, axis=1)
        mine = who[rows]  # sorted: each person's rows lie together
        firsts = np.flatnonzero(np.r_[True, mine[1:] != mine[:-1]])
        them = mine[firsts]  # (a person split across two chunks takes the nearer of both)
        apart[them] = np.minimum(apart[them], np.minimum.reduceat(nearest, firsts, axis=0))
    return apart


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
