"""What the enrolled faces say of themselves, from the distances between them: the threshold
calibrated from them (leave-one-out: ``calibrate``), how often the gallery would name a
stranger, the new faces unlike their person's others, a face archive visit that shows two
people, and the people whose faces lie close (look-alikes, or one person under two names).

Pure numpy on embeddings (unit vectors, squared L2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TARGET_FAR = 0.01
MAX_STORED_FRR = 0.3  # calibrate stores no threshold that turns away more enrolled faces
MAX_DISTANCE = 4.0  # squared L2 between unit vectors


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
    clipped: np.ndarray = np.maximum(dist, 0.0, out=dist)  # ``dist`` itself
    return clipped


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
