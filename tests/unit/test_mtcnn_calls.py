"""How MTCNN cuts its work into engine calls and spreads them over lanes (pure scheduling)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from engines import boxes as bx
from engines.base import CROPS_PER_CALL
from engines.mtcnn_calls import (
    LANE_CROPS_PER_CALL,
    PNET_MAX_PIXELS,
    crop_chunks,
    pnet_tiles,
    spread,
)

ANY_BATCH = SimpleNamespace()  # an engine without a batch limit
SCALES_1080P = bx.pyramid_scales((1080, 1920), 20.0, 0.709)


def _map_rows_covered(tiles, scale, frame, level_rows):
    rows: list[int] = []
    for tile in tiles:
        if tile.scale == scale and frame in tile.frames:
            first, end = tile.map_rows or (0, bx.pnet_map_rows(level_rows))
            rows += range(first, end)
    return rows


@pytest.mark.parametrize("lanes", [1, 2, 4])
@pytest.mark.parametrize("frames", [1, 3])
def test_p_net_tiles_cover_every_map_row_of_every_level_once(lanes, frames):
    tiles = pnet_tiles(ANY_BATCH, (1080, 1920), SCALES_1080P, list(range(frames)), lanes)
    for k, scale in enumerate(SCALES_1080P):
        h, _ = bx.scaled_size_hw((1080, 1920), scale)
        for frame in range(frames):
            assert _map_rows_covered(tiles, k, frame, h) == list(range(bx.pnet_map_rows(h)))
    # several frames share a call only up to PNET_MAX_PIXELS (a larger level goes alone)
    assert all(t.pixels <= PNET_MAX_PIXELS for t in tiles if len(t.frames) > 1)
    if lanes == 1:  # bands only help lanes share the work
        assert all(tile.map_rows is None for tile in tiles)
    else:  # no call larger than half a lane's share, beyond the bands' overlap
        total = frames * sum(np.prod(bx.scaled_size_hw((1080, 1920), s)) for s in SCALES_1080P)
        assert any(tile.map_rows for tile in tiles)
        assert max(tile.pixels for tile in tiles) <= max(total / (2 * lanes), 50_000) * 1.2


def test_p_net_tiles_respect_the_engines_batch_limit():
    plan = SimpleNamespace(max_batch=2)
    tiles = pnet_tiles(plan, (360, 640), SCALES_1080P[-3:], list(range(5)), 1)
    assert max(len(tile.frames) for tile in tiles) == 2
    assert sorted(np.concatenate([t.frames for t in tiles if t.scale == 0])) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("total", [1, 7, 64, 1500, 5000])
def test_crop_chunks_take_every_candidate_once_in_order(total):
    for lanes in (1, 2):
        chunks = crop_chunks(ANY_BATCH, "rnet", total, lanes)
        assert np.array_equal(np.concatenate(chunks), np.arange(total))
        if lanes == 1:
            assert max(len(c) for c in chunks) <= CROPS_PER_CALL
        else:  # one of the fixed sizes, so that the runtime need not prepare new shapes
            assert len(chunks) == 1 or len(chunks[0]) in LANE_CROPS_PER_CALL["rnet"]
            assert {len(c) for c in chunks[:-1]} <= {len(chunks[0])}


def test_spread_returns_results_in_order_and_uses_every_lane():
    seen: dict[str, set[int]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(3, timeout=5)  # every worker must take an item before any ends

    def work(worker: str, part: list[int]) -> list[int]:
        with lock:
            first = worker not in seen
            seen.setdefault(worker, set()).update(part)
        if first:
            barrier.wait()
        return [item * 10 for item in part]

    with ThreadPoolExecutor(2) as pool:
        out = spread(pool, ["a", "b", "c"], list(range(12)), float, work)
    assert out == [item * 10 for item in range(12)]
    assert set(seen) == {"a", "b", "c"}
    assert set().union(*seen.values()) == set(range(12))


def test_spread_without_a_pool_is_one_call_and_errors_reach_the_caller():
    calls = []
    assert spread(None, ["a"], [1, 2, 3], float, lambda w, p: calls.append(p) or p) == [1, 2, 3]
    assert calls == [[1, 2, 3]]

    def failing(worker: str, part: list[int]) -> list[int]:
        if part == [3]:
            raise RuntimeError("engine failed on item 3")
        return part

    with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="item 3"):
        spread(pool, ["a", "b"], [1, 2, 3, 4], float, failing)
