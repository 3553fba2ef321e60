"""Box arithmetic for MTCNN in numpy (NMS by OpenCV): pyramid, candidates, NMS, regression, squaring, crops.

Boxes are float arrays in ``xyxy`` pixel coordinates. MTCNN's conventions are kept where
they matter for matching the published detector: P-Net windows are 12 px cells at stride 2,
R-Net / O-Net regressions use inclusive widths (``x2 - x1 + 1``), and crops take integer
windows in 1-based inclusive coordinates, zero-padded where they leave the image.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from engines.base import AnyFloats, Floats, Indices

PNET_STRIDE = 2
PNET_CELL = 12
# Search around a known face (MTCNN.detect(..., priors=)): a square region ROI_SIDE face
# sizes wide, given to P-Net at three canvas sizes, so that P-Net's 12-pixel window sees
# faces of 1.41, 1 and 0.71 times the prior's size (ROI_SIDE * 12 / canvas).
ROI_SIDE = 3.0
ROI_CANVAS = (26, 36, 51)


def pyramid_scales(
    image_hw: tuple[int, int], min_face_size: float, scale_factor: float
) -> list[float]:
    """Scales at which P-Net (a 12 px detector) sees faces from ``min_face_size`` upwards."""
    scale = 12.0 / min_face_size
    side = min(image_hw) * scale
    scales = []
    while side >= 12:
        scales.append(scale)
        scale *= scale_factor
        side *= scale_factor
    return scales


def scaled_size_hw(image_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """Size of the pyramid level for ``scale`` (MTCNN rounds up by one pixel)."""
    return int(image_hw[0] * scale + 1), int(image_hw[1] * scale + 1)


def pnet_map_rows(level_rows: int) -> int:
    """Rows of P-Net's output map for a level of that height (conv 3x3, max-pool 2x2 rounding
    up, conv 3x3, conv 3x3): one per 12-pixel window at stride 2."""
    return (level_rows - 1) // 2 - 4


def pnet_band(level_rows: int, first: int, end: int) -> tuple[int, int]:
    """The level rows (start, end) from which P-Net gives exactly the map rows
    ``[first, end)``: each map row sees 12 level rows from twice its index. The last band
    runs to the level's edge, where the max-pool may see one row instead of two."""
    last = end >= pnet_map_rows(level_rows)
    return PNET_STRIDE * first, level_rows if last else PNET_STRIDE * end + PNET_CELL - 2


def pnet_candidates(
    reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float, first_row: int = 0
) -> tuple[Floats, Indices]:
    """Turn P-Net maps into candidate windows in image coordinates.

    ``reg`` is (N, 4, H, W), ``prob`` the face probability (N, H, W); ``first_row`` is the
    map row where they start (P-Net run on a band of the level, ``pnet_band``). Returns
    ``(boxes, image_idx)``: boxes (K, 9) = x1, y1, x2, y2, score, then the 4 regressions.
    """
    image_idx, ys, xs = np.nonzero(prob >= threshold)
    score = prob[image_idx, ys, xs]
    offsets = reg[image_idx, :, ys, xs]
    return pnet_boxes(xs, ys + first_row, score, offsets, scale), image_idx.astype(np.int64)


def pnet_boxes(
    xs: np.ndarray, ys: np.ndarray, score: np.ndarray, offsets: np.ndarray, scale: float
) -> Floats:
    """P-Net map cells (column ``xs``, row ``ys``) with their score and regression (K, 4)
    -> boxes (K, 9) as ``pnet_candidates`` gives them."""
    cells = np.stack([xs, ys], axis=1).astype(np.float32)
    s = np.float32(scale)
    top_left = np.floor((PNET_STRIDE * cells + 1) / s)
    bottom_right = np.floor((PNET_STRIDE * cells + PNET_CELL) / s)
    boxes = np.concatenate([top_left, bottom_right, score[:, None], offsets], axis=1)
    return boxes.astype(np.float32)


def nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    mode: str = "union",
    inclusive: bool = False,
) -> Indices:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    ``groups`` (e.g. the image index) keeps boxes of different groups apart: the kept
    indices come group by group, best score first within each. ``mode`` is
    "union" (IoU) or "min" (intersection over the smaller box). ``inclusive`` adds one pixel
    to widths and heights, as MTCNN's final stage does. A box is dropped when its overlap
    with a kept box exceeds ``threshold``.
    """
    if len(boxes_xyxy) == 0:
        return np.zeros(0, dtype=np.int64)
    if groups is not None and groups.min() != groups.max():
        # One group at a time: greedy NMS compares each box with every box kept before it,
        # so the ~800 boxes of each of 8 frames cost 8 times less apart than together.
        order = np.argsort(groups, kind="stable")
        starts = np.flatnonzero(np.diff(groups[order])) + 1
        per_group = [
            members[nms(boxes_xyxy[members], scores[members], threshold, None, mode, inclusive)]
            for members in np.split(order, starts)
        ]
        return np.concatenate(per_group)
    boxes = boxes_xyxy.astype(np.float64)
    one = 1.0 if inclusive else 0.0
    if mode == "union" and scores.min() > 0:
        return _nms_opencv(boxes, scores, threshold, one)
    return _nms_greedy(boxes, scores, threshold, mode, one)


def _nms_opencv(boxes: np.ndarray, scores: np.ndarray, threshold: float, one: float) -> Indices:
    """IoU NMS by OpenCV: the same greedy algorithm (best score first, ties in index order,
    dropped when IoU > threshold) in C++. P-Net's cross-scale pass keeps most of its ~800
    boxes per 1080p frame, where a Python loop per kept box costs 14 ms. (OpenCV skips
    scores <= 0: ``nms`` sends it none.)"""
    rects = np.stack(
        [
            boxes[:, 0],
            boxes[:, 1],
            boxes[:, 2] - boxes[:, 0] + one,
            boxes[:, 3] - boxes[:, 1] + one,
        ],
        axis=1,
    )
    # (the stubs say sequences; the binding takes (N, 4) float64 and (N,) float32 arrays)
    kept = cv2.dnn.NMSBoxes(rects, scores.astype(np.float32), 0.0, float(threshold))  # type: ignore[arg-type]
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def _nms_greedy(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str, one: float
) -> Indices:
    """Greedy NMS in numpy, one kept box at a time; ``mode`` "union" or "min"."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 (no area): dropped
            if mode == "min":
                overlap = inter / np.minimum(area[i], area[rest])
            else:
                overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def regress(boxes_xyxy: AnyFloats, reg: AnyFloats, inclusive: bool) -> Floats:
    """Apply MTCNN's box regression (offsets relative to the box size)."""
    one = 1.0 if inclusive else 0.0
    w = boxes_xyxy[:, 2] - boxes_xyxy[:, 0] + one
    h = boxes_xyxy[:, 3] - boxes_xyxy[:, 1] + one
    size = np.stack([w, h, w, h], axis=1)
    return (boxes_xyxy + reg * size).astype(np.float32)


def square(boxes_xyxy: AnyFloats) -> Floats:
    """Grow each box to a square around its centre (side = the longer side)."""
    w = boxes_xyxy[:, 2] - boxes_xyxy[:, 0]
    h = boxes_xyxy[:, 3] - boxes_xyxy[:, 1]
    side = np.maximum(w, h)
    x1 = boxes_xyxy[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes_xyxy[:, 1] + h * 0.5 - side * 0.5
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.float32)


def crop_windows(boxes_xyxy: AnyFloats) -> Indices:
    """Integer crop windows (K, 4) = x0, y0, x1, y1 (0-based, end exclusive) of each box.

    MTCNN truncates box corners to integers and reads them as 1-based inclusive pixel
    coordinates, so the window is ``[x1 - 1, x2)`` by ``[y1 - 1, y2)``.
    """
    corners = np.trunc(boxes_xyxy).astype(np.int64)
    return np.stack([corners[:, 0] - 1, corners[:, 1] - 1, corners[:, 2], corners[:, 3]], axis=1)


def landmarks_from_offsets(boxes_xyxy: AnyFloats, offsets: AnyFloats) -> Floats:
    """O-Net landmark outputs (K, 10: 5 x then 5 y, relative) -> (K, 5, 2) pixels."""
    w = boxes_xyxy[:, 2] - boxes_xyxy[:, 0] + 1
    h = boxes_xyxy[:, 3] - boxes_xyxy[:, 1] + 1
    xs = offsets[:, :5] * w[:, None] + boxes_xyxy[:, 0:1] - 1
    ys = offsets[:, 5:] * h[:, None] + boxes_xyxy[:, 1:2] - 1
    return np.stack([xs, ys], axis=2).astype(np.float32)


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> NDArray[np.float64]:
    """Pairwise IoU (len(a), len(b))."""
    a = a_xyxy[:, None, :].astype(np.float64)
    b = b_xyxy[None, :, :].astype(np.float64)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def greedy_match(a_xyxy: np.ndarray, b_xyxy: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """(index in a, index in b) pairs, highest IoU first, each box used at most once, none
    below ``min_iou``."""
    if len(a_xyxy) == 0 or len(b_xyxy) == 0:
        return []
    return greedy_pairs(iou_matrix(a_xyxy, b_xyxy), min_iou)


def greedy_pairs(scores: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """(row, column) pairs of a score matrix, highest score first, each row and column used
    at most once, none below ``min_score``."""
    pairs: list[tuple[int, int]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    for flat in np.argsort(-scores, axis=None, kind="stable"):
        i, j = (int(k) for k in np.unravel_index(flat, scores.shape))
        if not scores[i, j] >= min_score:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return pairs


def center_shift_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> NDArray[np.float64]:
    """Pairwise distance between box centres (len(a), len(b)), in box widths (the geometric
    mean of the two widths)."""
    a, b = a_xyxy.astype(np.float64), b_xyxy.astype(np.float64)
    ca = (a[:, None, :2] + a[:, None, 2:4]) / 2
    cb = (b[None, :, :2] + b[None, :, 2:4]) / 2
    wa, wb = a[:, None, 2] - a[:, None, 0], b[None, :, 2] - b[None, :, 0]
    shift: NDArray[np.float64] = np.linalg.norm(ca - cb, axis=2) / np.sqrt(
        np.maximum(wa * wb, 1e-9)
    )
    return shift


def points_in_polygon(points_xy: np.ndarray, polygon_xy: np.ndarray) -> NDArray[np.bool_]:
    """Whether each of ``points_xy`` (N, 2) lies inside ``polygon_xy`` (M >= 3, 2), a closed
    polygon (any winding, concave allowed): even-odd ray casting towards +x."""
    points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    start = np.asarray(polygon_xy, dtype=np.float64)
    end = np.roll(start, -1, axis=0)
    x, y = points[:, :1], points[:, 1:]  # (N, 1) against the (M,) edges
    straddles = (start[:, 1] > y) != (end[:, 1] > y)
    dy = np.where(end[:, 1] == start[:, 1], 1.0, end[:, 1] - start[:, 1])
    crossing_x = start[:, 0] + (y - start[:, 1]) * (end[:, 0] - start[:, 0]) / dy
    inside: NDArray[np.bool_] = np.count_nonzero(straddles & (x < crossing_x), axis=1) % 2 == 1
    return inside


def polygon_area(polygon_xy: np.ndarray) -> float:
    """The area a simple polygon encloses (shoelace formula; any winding)."""
    x, y = np.asarray(polygon_xy, dtype=np.float64).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def polygon_crosses_itself(polygon_xy: np.ndarray) -> bool:
    """Whether two edges that do not share a corner cross (a bow tie: corners out of order)."""
    points = np.asarray(polygon_xy, dtype=np.float64)
    edges = [(points[k], points[(k + 1) % len(points)]) for k in range(len(points))]

    def turn(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    for i, (a, b) in enumerate(edges):
        for j in range(i + 2, len(edges)):
            if i == 0 and j == len(edges) - 1:
                continue  # the first and the last edge share a corner
            c, d = edges[j]
            if turn(a, b, c) * turn(a, b, d) < 0 and turn(c, d, a) * turn(c, d, b) < 0:
                return True
    return False
