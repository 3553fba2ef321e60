"""engines.torch_boxes against its host twins in engines.boxes and engines.images: the same
kept boxes in the same order, the same pyramid levels and crops, the same P-Net boxes."""

from __future__ import annotations

import numpy as np
import pytest

from engines import boxes as bx
from engines.images import AreaPyramid, area_crop_sums

torch = pytest.importorskip("torch")

from engines import torch_boxes as tb  # noqa: E402  (needs torch)


def _crowd(rng: np.random.Generator, count: int, integer: bool) -> np.ndarray:
    """Boxes in clusters, as P-Net gives them: many overlap one another a little or a lot."""
    clusters = max(1, count // 12)
    which = rng.integers(0, clusters, count)
    centres = rng.uniform(0, 400, (clusters, 2))[which]
    side = rng.uniform(12, 60, clusters)[which] * rng.uniform(0.85, 1.15, count)
    x1y1 = centres + rng.normal(0, 0.08, (count, 2)) * side[:, None] - side[:, None] / 2
    boxes = np.concatenate([x1y1, x1y1 + side[:, None] * rng.uniform(0.9, 1.1, (count, 2))], 1)
    return np.floor(boxes) if integer else boxes


@pytest.mark.parametrize(
    ("mode", "inclusive", "integer", "threshold"),
    [
        ("union", False, True, 0.5),
        ("union", False, True, 0.7),
        ("union", True, False, 0.7),
        ("min", True, False, 0.7),
    ],
)
def test_nms_keeps_the_host_nms_boxes_in_its_order(mode, inclusive, integer, threshold):
    rng = np.random.default_rng(7)
    boxes = _crowd(rng, 900, integer)
    scores = rng.uniform(0.6, 1.0, len(boxes)).astype(np.float32)
    scores[::7] = scores[0]  # ties are broken by index, as on the host
    groups = rng.integers(0, 5, len(boxes))
    groups[groups == 3] = 1  # a group left empty
    expected = bx.nms(boxes, scores, threshold, groups, mode, inclusive)
    assert 0.2 * len(boxes) < len(expected) < 0.8 * len(boxes)  # a real test of suppression
    kept = tb.nms(
        torch.from_numpy(boxes),
        torch.from_numpy(scores),
        threshold,
        torch.from_numpy(groups),
        mode,
        inclusive,
    )
    assert kept.tolist() == expected.tolist()
    single = tb.nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), threshold, None, mode, inclusive
    )
    assert single.tolist() == bx.nms(boxes, scores, threshold, None, mode, inclusive).tolist()


def test_nms_in_several_passes_and_on_nothing(monkeypatch):
    """Groups too many to compare at once are settled pass by pass, with the same result."""
    rng = np.random.default_rng(3)
    boxes = _crowd(rng, 600, True)
    scores = rng.uniform(0.6, 1.0, len(boxes)).astype(np.float32)
    groups = rng.integers(0, 40, len(boxes))
    monkeypatch.setattr(tb, "NMS_PAIRS_PER_PASS", 4000)
    assert tb._passes([30, 10, 5, 40, 1]) == [[30, 10, 5], [40, 1]]
    kept = tb.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5, torch.from_numpy(groups))
    assert kept.tolist() == bx.nms(boxes, scores, 0.5, groups).tolist()
    empty = tb.nms(torch.zeros((0, 4)), torch.zeros(0), 0.5, torch.zeros(0, dtype=torch.int64))
    assert empty.shape == (0,)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_pyramid_levels_and_crops_are_the_host_paths_to_the_bit(dtype):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 75, 131, 3), dtype=np.uint8)
    sums = torch.from_numpy(np.stack([AreaPyramid(f).sums.astype(dtype) for f in frames]))
    host = AreaPyramid(frames[1])
    for size_hw, rows in [((54, 94), None), ((38, 66), (10, 30)), ((13, 23), None)]:
        total, area = tb.level_sums(sums, size_hw, rows)
        want_total, want_area = host.level_sums(size_hw, rows)
        assert np.array_equal(total[1].numpy(), want_total.astype(np.int64))
        assert np.array_equal(area.numpy(), want_area)
        want = np.empty((1, 3, *want_area.shape), np.float32)
        _host_normalise(want_total[None], want_area, want)
        assert np.array_equal(tb.normalise(total[1:], area).numpy(), want)
    windows = np.array([[-5, -5, 20, 20], [100, 40, 140, 90], [10, 10, 11, 11]], np.int64)
    which = np.array([0, 1, 1])  # crops of both frames in one gather
    total, area = tb.area_crops(sums, torch.from_numpy(which), torch.from_numpy(windows), 24)
    for k, f in enumerate(which):
        want_total, want_area = area_crop_sums(AreaPyramid(frames[f]).sums, windows[k : k + 1], 24)
        assert np.array_equal(total[k : k + 1].numpy(), want_total.astype(np.int64))
        assert np.array_equal(area[k : k + 1].numpy(), want_area)


def _host_normalise(sums: np.ndarray, area: np.ndarray, out: np.ndarray) -> None:
    from engines.mtcnn import MTCNN

    detector = MTCNN.__new__(MTCNN)
    detector._swap_rb = False
    detector._normalise(sums, area, out)


def test_pnet_boxes_are_the_host_paths_to_the_bit():
    rng = np.random.default_rng(2)
    xs, ys = rng.integers(0, 500, 300), rng.integers(0, 300, 300)
    score = rng.uniform(0.6, 1, 300).astype(np.float32)
    offsets = rng.normal(0, 0.1, (300, 4)).astype(np.float32)
    for scale in (0.6, 0.30218, 0.0137):
        want = bx.pnet_boxes(xs, ys, score, offsets, scale)
        got = tb.pnet_boxes(
            torch.from_numpy(xs),
            torch.from_numpy(ys),
            torch.from_numpy(score),
            torch.from_numpy(offsets),
            torch.full((300,), scale, dtype=torch.float32),
        )
        assert np.array_equal(got.numpy(), want)


def _row(count: int) -> tuple[np.ndarray, np.ndarray]:
    """12 px boxes in a row at stride 2, each overlapping the next by IoU 0.71, scores
    falling: a chain of suppressions as long as the row."""
    x = 2.0 * np.arange(count)
    boxes = np.stack([x, np.zeros(count), x + 12, np.full(count, 12.0)], 1)
    return boxes, np.linspace(0.99, 0.6, count).astype(np.float32)


def test_a_long_chain_of_suppressions_is_settled_on_the_host(monkeypatch):
    """One round per box of the chain would be 600 waits for the device: past NMS_ROUNDS the
    pass goes to the host's NMS, with the same answer; with rounds enough, the device's."""
    boxes, scores = _row(600)
    expected = bx.nms(boxes, scores, 0.5)
    assert len(expected) == 300  # every other box
    calls = []
    real = tb._settle_on_host
    monkeypatch.setattr(tb, "_settle_on_host", lambda *a: calls.append(a) or real(*a))
    kept = tb.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5)
    assert kept.tolist() == expected.tolist() and len(calls) == 1
    monkeypatch.setattr(tb, "NMS_ROUNDS", 1000)
    kept = tb.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5)
    assert kept.tolist() == expected.tolist() and len(calls) == 1


def test_a_group_too_large_for_the_device_and_boxes_without_area(monkeypatch):
    rng = np.random.default_rng(5)
    boxes = _crowd(rng, 300, True)
    scores = rng.uniform(0.6, 1.0, len(boxes)).astype(np.float32)
    groups = np.repeat([0, 1], [250, 50])
    monkeypatch.setattr(tb, "NMS_PAIRS_PER_PASS", 10_000)  # the group of 250 is too large
    kept = tb.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5, torch.from_numpy(groups))
    assert kept.tolist() == bx.nms(boxes, scores, 0.5, groups).tolist()
    # boxes without area overlap 0 / 0: the host drops them, and so does the device
    flat = np.array([[5, 5, 20, 20], [8, 8, 8, 8], [8, 8, 8, 8], [30, 30, 30, 40]], np.float64)
    points = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    for mode, inclusive in (("union", False), ("min", False)):
        want = bx.nms(flat, points, 0.7, None, mode, inclusive)
        got = tb.nms(torch.from_numpy(flat), torch.from_numpy(points), 0.7, None, mode, inclusive)
        assert got.tolist() == want.tolist(), mode


@pytest.mark.parametrize("rows", [0, 1, 37])
def test_network_outputs_come_back_whole_in_one_copy(rows):
    """R-Net / O-Net / P-Net outputs of any shapes, one batch, back as the same arrays."""
    from engines.torch_mtcnn import _to_host

    rng = np.random.default_rng(rows)
    outputs = {
        "prob": rng.random((rows, 2), dtype=np.float32),
        "reg": rng.random((rows, 4, 3, 5), dtype=np.float32),
        "landmarks": rng.random((rows, 10), dtype=np.float32),
    }
    back = _to_host({name: torch.from_numpy(a.copy()) for name, a in outputs.items()})
    assert list(back) == list(outputs)
    for name, array in outputs.items():
        assert back[name].shape == array.shape and back[name].dtype == np.float32
        assert np.array_equal(back[name], array)
