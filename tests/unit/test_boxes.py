"""Box arithmetic: pure numpy, checked against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from engines import boxes as bx
from engines.images import area_crops, integral_image


@pytest.mark.parametrize(
    ("image_hw", "min_face", "expected_first", "expected_count"),
    [
        ((1080, 1920), 20, 0.6, 12),  # 648 px short side -> 12 levels
        ((12, 12), 12, 1.0, 1),  # exactly one level
        ((11, 500), 12, None, 0),  # too small for any level
        ((360, 640), 40, 0.3, 7),  # 108 px -> 108 * 0.709**6 = 13.5 >= 12
    ],
)
def test_pyramid_scales(image_hw, min_face, expected_first, expected_count):
    scales = bx.pyramid_scales(image_hw, min_face, 0.709)
    assert len(scales) == expected_count
    if scales:
        assert scales[0] == pytest.approx(expected_first)
        assert np.allclose(np.diff(np.log(scales)), np.log(0.709))
        assert min(image_hw) * scales[-1] >= 12


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.95, 0.5, 0.1], np.float32)
    keep = bx.nms(boxes, scores, 0.5)
    assert keep.tolist() == [1, 2]  # best first; the duplicates of box 1 are gone


def test_nms_threshold_is_strict_and_groups_are_separate():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], np.float32)
    assert bx.nms(boxes, scores, 0.5).tolist() == [0, 1]  # overlap == threshold survives
    assert bx.nms(boxes, scores, 0.49).tolist() == [0]
    # same boxes in two different frames never suppress each other
    assert sorted(bx.nms(boxes, scores, 0.1, groups=np.array([0, 1])).tolist()) == [0, 1]


def test_nms_min_mode_removes_box_inside_a_larger_one():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert bx.nms(boxes, scores, 0.7).tolist() == [0, 1]  # IoU is small
    assert bx.nms(boxes, scores, 0.7, mode="min").tolist() == [0]  # fully inside


def test_nms_keeps_a_box_whose_overlap_equals_the_threshold_in_min_mode_and_for_zero_scores():
    """O-Net's "min" pass and a box scored 0 (OpenCV skips those: the numpy pass) drop a box
    only when its overlap exceeds the threshold, as the OpenCV pass does: half of the
    smaller box covered, at 0.5, keeps both."""
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # half of either covered
    assert bx.nms(boxes, np.array([0.9, 0.8], np.float32), 0.5, mode="min").tolist() == [0, 1]
    assert bx.nms(boxes, np.array([0.9, 0.8], np.float32), 0.49, mode="min").tolist() == [0]
    touching = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    assert bx.nms(touching, np.array([0.9, 0.0], np.float32), 0.5).tolist() == [0, 1]


def greedy_nms(boxes, scores, threshold, inclusive):
    """Textbook greedy NMS, one box at a time, to check the fast paths against."""
    one = 1.0 if inclusive else 0.0
    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):  # stable: ties by index
        ok = True
        for j in kept:
            w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + one
            h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + one
            inter = max(w, 0.0) * max(h, 0.0)
            area_i = (boxes[i, 2] - boxes[i, 0] + one) * (boxes[i, 3] - boxes[i, 1] + one)
            area_j = (boxes[j, 2] - boxes[j, 0] + one) * (boxes[j, 3] - boxes[j, 1] + one)
            if inter / (area_i + area_j - inter) > threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(6))
def test_nms_fast_paths_equal_textbook_greedy(seed):
    # Crowded P-Net-like boxes (integer corners, tied scores): the OpenCV path (positive
    # scores) and the numpy path (a zero score) must both equal one-box-at-a-time NMS.
    rng = np.random.default_rng(seed)
    n = 300
    corner = np.floor(rng.uniform(0, 200, (n, 2)))
    boxes = np.concatenate([corner, corner + np.floor(rng.uniform(8, 40, (n, 1)))], axis=1)
    scores = np.round(rng.uniform(0.6, 1.0, n), 2).astype(np.float32)
    inclusive = bool(seed % 2)
    threshold = (0.5, 0.7, 0.3)[seed % 3]
    expected = greedy_nms(boxes.astype(np.float64), scores, threshold, inclusive)
    assert bx.nms(boxes, scores, threshold, inclusive=inclusive).tolist() == expected
    scores[-1] = 0.0
    expected = greedy_nms(boxes.astype(np.float64), scores, threshold, inclusive)
    assert bx.nms(boxes, scores, threshold, inclusive=inclusive).tolist() == expected


@pytest.mark.parametrize("mode", ["union", "min"])
def test_nms_with_groups_is_nms_of_each_group_alone(mode):
    # Eight frames of crowded boxes at the same places: each frame's kept boxes are what
    # NMS keeps of that frame alone, best first, frame after frame.
    rng = np.random.default_rng(7)
    corner = np.floor(rng.uniform(0, 100, (400, 2)))
    boxes = np.concatenate([corner, corner + np.floor(rng.uniform(8, 40, (400, 1)))], axis=1)
    scores = np.round(rng.uniform(0.6, 1.0, 400), 2).astype(np.float32)
    groups = rng.integers(0, 8, 400)
    keep = bx.nms(boxes, scores, 0.5, groups=groups, mode=mode)
    for g in range(8):
        alone = np.flatnonzero(groups == g)
        expected = alone[bx.nms(boxes[alone], scores[alone], 0.5, mode=mode)]
        assert keep[groups[keep] == g].tolist() == expected.tolist()
    assert groups[keep].tolist() == sorted(groups[keep].tolist())


def test_pnet_bands_cover_the_map_rows_with_the_rows_they_need():
    for level_rows in (12, 13, 100, 433, 649):
        map_rows = bx.pnet_map_rows(level_rows)
        assert map_rows == (level_rows - 2 + 1) // 2 - 4  # conv, ceil-mode pool, conv, conv
        start, stop = bx.pnet_band(level_rows, 0, map_rows)
        assert (start, stop) == (0, level_rows)  # one band: the whole level
        if map_rows > 3:
            start, stop = bx.pnet_band(level_rows, 1, 3)  # map rows 1, 2: level rows 2..17
            assert (start, stop) == (2, 2 * 3 + 10)


def test_nms_empty():
    assert bx.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).size == 0


def test_pnet_candidates_maps_cells_to_image_windows():
    prob = np.zeros((2, 3, 4), np.float32)
    prob[1, 2, 3] = 0.9
    reg = np.zeros((2, 4, 3, 4), np.float32)
    reg[1, :, 2, 3] = [0.1, 0.2, 0.3, 0.4]
    boxes, image_idx = bx.pnet_candidates(reg, prob, scale=0.5, threshold=0.6)
    assert image_idx.tolist() == [1]
    # cell (x=3, y=2) at stride 2, 12 px wide, at scale 0.5
    assert boxes[0, :4].tolist() == [
        np.floor(7 / 0.5),
        np.floor(5 / 0.5),
        np.floor(18 / 0.5),
        np.floor(16 / 0.5),
    ]
    assert boxes[0, 4] == pytest.approx(0.9)
    assert boxes[0, 5:].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_square_keeps_centre_and_takes_longer_side():
    squared = bx.square(np.array([[10, 20, 30, 60]], np.float32))
    assert squared[0].tolist() == [0, 20, 40, 60]


@pytest.mark.parametrize("inclusive", [False, True])
def test_regress_moves_edges_by_fractions_of_size(inclusive):
    box = np.array([[10, 10, 20, 30]], np.float32)
    out = bx.regress(box, np.array([[0.1, -0.1, 0.0, 0.5]], np.float32), inclusive)
    w, h = (11, 21) if inclusive else (10, 20)
    assert out[0].tolist() == pytest.approx([10 + 0.1 * w, 10 - 0.1 * h, 20, 30 + 0.5 * h])


def test_crop_windows_are_one_based_inclusive():
    windows = bx.crop_windows(
        np.array([[10.7, 20.2, 33.9, 43.5], [-5.5, -3.2, 8.0, 9.9]], np.float32)
    )
    assert windows.tolist() == [[9, 19, 33, 43], [-6, -4, 8, 9]]


def test_landmarks_from_offsets():
    boxes = np.array([[9, 19, 28, 38]], np.float32)  # 20 x 20 inclusive
    offsets = np.array([[0, 0.5, 1, 0, 0, 0, 0, 0.5, 1, 1]], np.float32)
    points = bx.landmarks_from_offsets(boxes, offsets)
    assert points[0, :, 0].tolist() == [8, 18, 28, 8, 8]
    assert points[0, :, 1].tolist() == [18, 18, 28, 38, 38]


def test_area_crops_match_naive_average_with_zero_padding():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    windows = np.array([[0, 0, 48, 48], [-4, -4, 20, 20], [30, 20, 54, 44], [5, 5, 8, 9]])
    crops = area_crops(integral_image(image), windows, 24)
    padded = np.zeros((60, 70, 3), np.float64)
    padded[10:50, 10:60] = image
    for k, (x0, y0, x1, y1) in enumerate(windows):
        region = padded[y0 + 10 : y1 + 10, x0 + 10 : x1 + 10]
        h, w = region.shape[:2]
        for i in (0, 7, 23):
            for j in (0, 11, 23):
                r0, r1 = (i * h) // 24, -(-(i + 1) * h // 24)
                c0, c1 = (j * w) // 24, -(-(j + 1) * w // 24)
                expected = region[r0:r1, c0:c1].mean(axis=(0, 1))
                assert crops[k, i, j] == pytest.approx(expected, abs=1e-3)


def test_integral_of_huge_frame_wraps_but_rectangle_sums_stay_exact():
    image = np.full((3000, 3000, 3), 255, np.uint8)  # total overflows 31 bits
    sums = integral_image(image)
    crops = area_crops(sums, np.array([[2900, 2900, 3000, 3000]]), 4)
    assert np.all(crops == 255)


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    assert bx.iou_matrix(a, b)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_greedy_match_takes_best_pairs_first_and_each_box_once():
    a = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [100, 100, 110, 110]], np.float32)
    b = np.array([[1, 0, 11, 10], [0, 0, 10, 10], [21, 0, 31, 10]], np.float32)
    assert bx.greedy_match(a, b, 0.5) == [(0, 1), (1, 2)]
    assert bx.greedy_match(a, b, 0.95) == [(0, 1)]
    assert bx.greedy_match(a[:0], b, 0.5) == []


def test_a_pair_at_exactly_the_minimum_score_is_matched() -> None:
    """ "None below min_score": a face whose box overlaps its track's by exactly the minimum
    IoU still continues it."""
    scores = np.array([[0.3, 0.1], [0.05, 0.2]])
    assert bx.greedy_pairs(scores, 0.2) == [(0, 0), (1, 1)]
    assert bx.greedy_pairs(scores, 0.21) == [(0, 0)]


def test_a_centre_shift_is_counted_in_the_geometric_mean_of_the_two_widths() -> None:
    """A face coming at the camera fast (its box 40 px wide, then 160): centres 80 px apart
    are one width apart (the geometric mean, 80 px), not 0.8 (the arithmetic mean, 100 px)
    nor 0.5 (the wider box): the tracker's limits on a jump mean the same at any pace."""
    far = np.array([[100.0, 100, 140, 150]])  # (centre 120, 125)
    near = np.array([[120.0, 45, 280, 205]])  # (centre 200, 125)
    assert bx.center_shift_matrix(far, near)[0, 0] == pytest.approx(1.0)
    assert bx.center_shift_matrix(near, far)[0, 0] == pytest.approx(1.0)


SQUARE = [(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)]
L_SHAPE = [(0, 0), (4, 0), (4, 1), (1, 1), (1, 4), (0, 4)]  # concave: the corner (2, 2) is out


@pytest.mark.parametrize(
    ("polygon", "point", "inside"),
    [
        (SQUARE, (0.4, 0.4), True),
        (SQUARE[::-1], (0.4, 0.4), True),  # the other winding
        (SQUARE, (0.7, 0.4), False),
        (SQUARE, (0.4, 0.1), False),
        (SQUARE, (0.1, 0.4), False),
        (L_SHAPE, (0.5, 3.0), True),
        (L_SHAPE, (3.0, 0.5), True),
        (L_SHAPE, (2.0, 2.0), False),
        ([(0, 0), (1, 0), (0.5, 1)], (0.5, 0.5), True),  # a triangle
        ([(0, 0), (1, 0), (0.5, 1)], (0.9, 0.9), False),
    ],
)
def test_points_in_polygon(polygon, point, inside) -> None:
    assert bx.points_in_polygon(np.array([point]), np.array(polygon)).tolist() == [inside]


def test_points_in_polygon_takes_many_points_and_none() -> None:
    points = np.array([(0.4, 0.4), (0.9, 0.9), (0.3, 0.5)])
    assert bx.points_in_polygon(points, np.array(SQUARE)).tolist() == [True, False, True]
    assert bx.points_in_polygon(np.zeros((0, 2)), np.array(SQUARE)).shape == (0,)


@pytest.mark.parametrize(
    ("polygon", "area", "crosses"),
    [
        (SQUARE, 0.16, False),
        (SQUARE[::-1], 0.16, False),
        (L_SHAPE, 7.0, False),
        ([(0, 0), (1, 1), (1, 0), (0, 1)], 0.0, True),  # a bow tie: its halves cancel
        ([(0, 0), (2, 0), (0, 2), (2, 2)], 0.0, True),
        ([(0.5, 0.5)] * 3, 0.0, False),
        ([(0, 0), (1, 0), (0.5, 1)], 0.5, False),
    ],
)
def test_polygon_area_and_crossing(polygon, area, crosses) -> None:
    assert bx.polygon_area(np.array(polygon, float)) == pytest.approx(area)
    assert bx.polygon_crosses_itself(np.array(polygon, float)) is crosses
