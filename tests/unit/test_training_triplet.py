"""Online triplet selection picks exactly the negatives its rule allows."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from training.data import ImageClass
from training.triplet import negative_candidates, sample_people, select_triplets

# One-dimensional embeddings: person A = rows 0, 1; B = rows 2, 3; C = row 4.
#   A0 = 0.0, A1 = 0.3, B2 = 0.5, B3 = 0.2, C4 = 1.0   (squared distances below)
EMB = np.array([[0.0], [0.3], [0.5], [0.2], [1.0]])
COUNTS = np.array([2, 2, 1])
ALPHA = 0.2
# pair (0, 1): d(a,p) = 0.09; d(a,B2) = 0.25, d(a,B3) = 0.04, d(a,C4) = 1.0
#   vggface: d(a,n) - 0.09 < 0.2 -> B2, B3;  semihard: also d(a,n) > 0.09 -> B2
# pair (2, 3): d(a,p) = 0.09; d(a,A0) = 0.25, d(a,A1) = 0.04, d(a,C4) = 0.25
#   vggface: A0, A1, C4;  semihard: A0, C4
EXPECTED = {
    "vggface": {(0, 1): {2, 3}, (2, 3): {0, 1, 4}},
    "semihard": {(0, 1): {2}, (2, 3): {0, 4}},
}


def _chosen(rule: str, seeds: range) -> dict[tuple[int, int], set[int]]:
    seen: dict[tuple[int, int], set[int]] = {}
    for seed in seeds:
        triplets, pairs = select_triplets(EMB, COUNTS, ALPHA, np.random.default_rng(seed), rule)
        assert pairs == 2  # C has one image: no anchor-positive pair
        assert len(triplets) == 2  # each pair has candidates, so each gives one triplet
        for a, p, n in triplets:
            seen.setdefault((int(a), int(p)), set()).add(int(n))
    return seen


@pytest.mark.parametrize("rule", ["vggface", "semihard"])
def test_candidates_are_exactly_the_rule(rule: str) -> None:
    from training.triplet import squared_distances

    dist = squared_distances(EMB)
    for (a, p), expected in EXPECTED[rule].items():
        same = slice(0, 2) if a == 0 else slice(2, 4)
        got = set(negative_candidates(dist, a, p, same, ALPHA, rule).tolist())
        assert got == expected


@pytest.mark.parametrize("rule", ["vggface", "semihard"])
def test_random_choice_covers_all_candidates_and_nothing_else(rule: str) -> None:
    assert _chosen(rule, range(40)) == EXPECTED[rule]


def test_pairs_without_candidates_give_no_triplet() -> None:
    # With a tiny margin no semi-hard negative exists (all are 0.04, 0.25 or 1.0 away).
    triplets, pairs = select_triplets(EMB, COUNTS, 0.01, np.random.default_rng(0), "semihard")
    assert pairs == 2 and len(triplets) == 0


def test_counts_must_match_embeddings() -> None:
    with pytest.raises(ValueError, match="counts sum to 4 but there are 5"):
        select_triplets(EMB, np.array([2, 2]), ALPHA, np.random.default_rng(0))


def test_sample_people_groups_images_by_person(tmp_path) -> None:
    dataset = [
        ImageClass(f"p{k}", tuple(tmp_path / f"p{k}_{i}.png" for i in range(n)))
        for k, n in enumerate([5, 1, 3, 8])
    ]
    sample = sample_people(
        dataset, people_per_batch=3, images_per_person=4, rng=np.random.default_rng(1)
    )
    assert sample.counts.sum() == 12 == len(sample.class_index)
    start = 0
    for count in sample.counts:
        block = sample.class_index[start : start + count]
        assert len(set(block.tolist())) == 1  # one person per block
        person = int(block[0])
        assert count <= min(4, len(dataset[person]))
        images = sample.image_index[start : start + count]
        assert len(set(images.tolist())) == count  # no image twice
        start += count
