"""People x images sampling and online triplet selection (FaceNet, Schroff et al. 2015).

Selection rule, exactly (``select_triplets``), with squared Euclidean distances
``d(x, y) = ||x - y||²`` on the L2-normalised embeddings:

- every ordered pair (a, p) with a before p among one person's sampled images is an
  anchor-positive pair;
- ``rule="vggface"`` (the default, the rule the original ``train_tripletloss.py`` runs):
  the candidate negatives are all images of *other* people with
  ``d(a, n) - d(a, p) < alpha``; this includes hard negatives (d(a, n) < d(a, p));
- ``rule="semihard"`` (the FaceNet paper, eq. 4 / section 3.2): additionally
  ``d(a, p) < d(a, n)``, i.e. ``d(a, p) < d(a, n) < d(a, p) + alpha``;
- one negative is drawn uniformly at random among the candidates; a pair without
  candidates gives no triplet. The triplets are then shuffled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from training.choices import RULES
from training.data import ImageClass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeopleSample:
    """Sampled images: ``class_index[i]``, ``image_index[i]`` (within the class); the images
    of one person are consecutive and ``counts`` says how many each sampled person has."""

    class_index: np.ndarray
    image_index: np.ndarray
    counts: np.ndarray


def sample_people(
    dataset: list[ImageClass],
    people_per_batch: int,
    images_per_person: int,
    rng: np.random.Generator,
) -> PeopleSample:
    """Draw ``people_per_batch * images_per_person`` images, person by person.

    People are visited in random order; each gives min(its images, images_per_person,
    what is still needed) images chosen at random. When the dataset runs out of people
    the sample is smaller (logged), as in the original.
    """
    wanted = people_per_batch * images_per_person
    order = rng.permutation(len(dataset))
    classes, images, counts = [], [], []
    for cls in order:
        if len(images) >= wanted:
            break
        take = min(len(dataset[cls]), images_per_person, wanted - len(images))
        picked = rng.permutation(len(dataset[cls]))[:take]
        classes.extend([int(cls)] * take)
        images.extend(int(i) for i in picked)
        counts.append(take)
    if len(images) < wanted:
        logger.debug("sampled %d images, fewer than the %d asked for", len(images), wanted)
    return PeopleSample(
        np.asarray(classes, dtype=np.int64), np.asarray(images, dtype=np.int64), np.asarray(counts)
    )


def squared_distances(embeddings: np.ndarray) -> np.ndarray:
    """All pairwise squared Euclidean distances (N, N), float64."""
    emb = np.asarray(embeddings, dtype=np.float64)
    sq = (emb**2).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * emb @ emb.T, 0.0)


def negative_candidates(
    dist_sq: np.ndarray, a: int, p: int, same_person: slice, alpha: float, rule: str = "vggface"
) -> np.ndarray:
    """Indices n allowed as the negative of (a, p) under ``rule`` (see the module doc)."""
    neg = dist_sq[a].copy()
    neg[same_person] = np.nan
    pos = dist_sq[a, p]
    with np.errstate(invalid="ignore"):
        ok = neg - pos < alpha
        if rule == "semihard":
            ok &= neg > pos
        elif rule != "vggface":
            raise ValueError(f"unknown triplet rule {rule!r}; expected one of {RULES}")
    return np.flatnonzero(ok)


def select_triplets(
    embeddings: np.ndarray,
    counts: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
    rule: str = "vggface",
) -> tuple[np.ndarray, int]:
    """Triplets (T, 3) of row indices into ``embeddings`` (anchor, positive, negative).

    ``counts[k]`` is how many consecutive rows belong to the k-th person. Returns the
    shuffled triplets and the number of anchor-positive pairs considered.
    """
    if rule not in RULES:
        raise ValueError(f"unknown triplet rule {rule!r}; expected one of {RULES}")
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != len(embeddings):
        raise ValueError(f"counts sum to {counts.sum()} but there are {len(embeddings)} embeddings")
    dist_sq = squared_distances(embeddings)
    triplets: list[tuple[int, int, int]] = []
    pairs = 0
    start = 0
    for count in counts:
        same = slice(start, start + int(count))
        for a in range(start, start + int(count) - 1):
            for p in range(a + 1, start + int(count)):
                pairs += 1
                candidates = negative_candidates(dist_sq, a, p, same, alpha, rule)
                if len(candidates):
                    triplets.append((a, p, int(candidates[rng.integers(len(candidates))])))
        start += int(count)
    out = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    rng.shuffle(out)
    return out, pairs
