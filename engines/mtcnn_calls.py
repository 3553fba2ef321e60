"""How MTCNN's work is cut into engine calls, and spread over parallel lanes.

A lane is a copy of a detector's engines with a thread of its own (engines release the GIL):
on the CPU, small single-threaded calls in parallel beat one call over several threads.
Pure scheduling: which frames and map rows each P-Net call takes, how many crops each
R-Net / O-Net call takes, and who runs which call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from engines import boxes as bx
from engines.base import CROPS_PER_CALL, Engine, batch_limit
from engines.loader import CPU_BACKENDS

W = TypeVar("W")
T = TypeVar("T")
R = TypeVar("R")

PNET_MAX_PIXELS = 350_000  # pyramid-level pixels per P-Net call (one 720p level at scale 0.6)
PNET_MIN_TILE_PIXELS = 50_000  # with lanes, P-Net calls may be smaller (pnet_tiles)
PNET_CALL_PIXELS = 2_000  # what one P-Net call costs besides its pixels, in pixels' time
# ... with lanes (the CPU), one of these sizes, each as fast per crop as any larger one
LANE_CROPS_PER_CALL = {"rnet": (16, 32, 64), "onet": (4, 8)}


def default_lanes(backend: str, threads: int) -> int:
    """Parallel lanes that suit a backend: on the CPU one lane per thread, each running its
    share of the pyramid levels and candidates single-threaded (MTCNN's small convolutions
    scale poorly over threads: a 1080p frame on OpenVINO takes 150 ms with one lane of two
    threads, 120 ms with two lanes of one); GPU backends need one."""
    if backend in CPU_BACKENDS:
        return max(1, threads)
    return 1


@dataclass(frozen=True)
class PNetTile:
    """One P-Net call: pyramid level ``scale`` (an index) of ``frames``, all its rows or the
    map rows ``map_rows`` = (first, end) only; ``pixels`` is the level pixels it reads."""

    scale: int
    frames: np.ndarray
    map_rows: tuple[int, int] | None
    pixels: int

    def cost(self) -> float:
        return self.pixels + PNET_CALL_PIXELS


def pnet_tiles(
    pnet: Engine, image_hw: tuple[int, int], scales: list[float], indices: list[int], lanes: int
) -> list[PNetTile]:
    """P-Net calls for the pyramid of frames of one size: small levels go several frames
    per call (up to ``PNET_MAX_PIXELS``; more only thrashes the cache). With lanes (> 1), no
    call holds more than half a lane's share of all the pixels: larger levels are cut into
    bands of rows, which give the same map rows as the whole level, so that the lanes can
    share the work evenly (a band repeats 10 rows of the one above it, so there are no more
    bands than that needs)."""
    frames = np.asarray(indices, dtype=np.int64)
    limit = PNET_MAX_PIXELS
    if lanes > 1:
        sizes = [bx.scaled_size_hw(image_hw, scale) for scale in scales]
        total = len(frames) * sum(h * w for h, w in sizes)
        limit = min(limit, max(PNET_MIN_TILE_PIXELS, total // (2 * lanes)))
    tiles = []
    for k, scale in enumerate(scales):
        h, w = bx.scaled_size_hw(image_hw, scale)
        if h * w <= limit or lanes == 1:
            step = batch_limit(pnet, max(1, limit // (h * w)))
            for start in range(0, len(frames), step):
                chunk = frames[start : start + step]
                tiles.append(PNetTile(k, chunk, None, len(chunk) * h * w))
            continue
        map_rows = bx.pnet_map_rows(h)
        bands = -(-h * w // limit)
        per_band = -(-map_rows // bands)
        for first in range(0, map_rows, per_band):
            end = min(first + per_band, map_rows)
            start, stop = bx.pnet_band(h, first, end)
            tiles += [
                PNetTile(k, frames[j : j + 1], (first, end), (stop - start) * w)
                for j in range(len(frames))
            ]
    return tiles


def crop_chunks(engine: Engine, net: str, total: int, lanes: int) -> list[np.ndarray]:
    """The candidates (0 .. total-1) of each R-Net (``net`` "rnet") or O-Net ("onet") call.

    With lanes: calls of one size (but the last) that the lanes take as each is free: CPU
    runtimes prepare each new input shape (OpenVINO: R-Net +40%, O-Net +50% when the size
    changes every call). The size: the largest of a few, each as fast per crop as any
    larger one, that still gives each lane two calls. Without: at most ``CROPS_PER_CALL``
    crops per call, in even parts (bounded memory for big batches)."""
    if lanes > 1:
        sizes = LANE_CROPS_PER_CALL[net]
        enough = [n for n in sizes if -(-total // n) >= 2 * lanes]
        step = batch_limit(engine, max(enough, default=min(sizes)))
        return [np.arange(i, min(i + step, total)) for i in range(0, total, step)]
    per_call = batch_limit(engine, CROPS_PER_CALL)
    return list(np.array_split(np.arange(total), -(-total // per_call)))


def spread(
    pool: ThreadPoolExecutor | None,
    workers: Sequence[W],
    items: list[T],
    cost: Callable[[T], float],
    work: Callable[[W, list[T]], list[R]],
) -> list[R]:
    """``work(worker, [item])`` for every item: ``workers[0]`` on this thread, the others in
    ``pool``, in parallel, each taking the next item, costliest first, as soon as it is free
    (so that a worker slowed by anything ends no later than one small item after the
    others); the results come back in the order of ``items``. Without a pool, or for fewer
    than two items: ``work(workers[0], items)``."""
    if pool is None or len(workers) < 2 or len(items) < 2:
        return work(workers[0], items)
    pending = iter(sorted(range(len(items)), key=lambda i: -cost(items[i])))
    lock = threading.Lock()
    done: dict[int, R] = {}

    def drain(worker: W) -> None:
        while True:
            with lock:
                i = next(pending, None)
            if i is None:
                return
            done[i] = work(worker, [items[i]])[0]

    futures = [pool.submit(drain, worker) for worker in workers[1:]]
    try:
        drain(workers[0])
    finally:  # never leave a lane running into the next call, even after an error
        wait(futures)
    for future in futures:
        future.result()
    return [done[i] for i in range(len(items))]
