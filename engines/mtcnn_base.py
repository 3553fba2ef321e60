"""What MTCNN's three stages share (``engines.mtcnn.MTCNN`` is built on it): the candidates in
flight between the stages, their NMS, the lanes that split a batch's work, and the engine calls
on windows of the frames (cut, area-resized and normalised into the networks' input).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from engines import boxes as bx
from engines.base import Engine, Indices, padded_batch
from engines.images import AreaPyramid, area_crop_sums
from engines.mtcnn_calls import crop_chunks, spread

if TYPE_CHECKING:
    from typing_extensions import Self

    from engines.mtcnn import MTCNNConfig

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Candidates:
    """Boxes of all frames in flight between stages; ``frame`` says whose each box is."""

    boxes: np.ndarray  # (K, 4) xyxy
    score: np.ndarray  # (K,)
    frame: np.ndarray  # (K,) index into the batch

    def take(self, keep: np.ndarray) -> Candidates:
        return Candidates(self.boxes[keep], self.score[keep], self.frame[keep])


class MTCNNBase:
    """The detector's shared machinery; ``engines.mtcnn.MTCNN`` sets these attributes."""

    pnet: Engine
    rnet: Engine
    onet: Engine
    config: MTCNNConfig
    _swap_rb: bool
    _lanes: list[Self]
    _pool: ThreadPoolExecutor | None

    # -- NMS ----------------------------------------------------------------------------

    def _nms(
        self,
        boxes_xyxy: np.ndarray,
        scores: np.ndarray,
        threshold: float,
        groups: np.ndarray | None = None,
        mode: str = "union",
        inclusive: bool = False,
    ) -> Indices:
        """``engines.boxes.nms``: where every suppression of the detector runs (the device
        pipeline runs them on its device)."""
        return bx.nms(boxes_xyxy, scores, threshold, groups, mode, inclusive)

    # -- parallel lanes ------------------------------------------------------------------

    def _spread(
        self, items: list[T], cost: Callable[[T], float], work: Callable[[Self, list[T]], list[R]]
    ) -> list[R]:
        """``work(lane, [item])`` for every item, this detector and its lanes in parallel
        (``mtcnn_calls.spread``); the results in the order of ``items``."""
        return spread(self._pool, [self, *self._lanes], items, cost, work)

    def _infer_spread(
        self, net: str, pyramids: list[AreaPyramid], cand: Candidates, size: int
    ) -> dict[str, np.ndarray]:
        """R-Net or O-Net on the crops of all candidates, split between the lanes."""
        engine = self.rnet if net == "rnet" else self.onet
        chunks = crop_chunks(engine, net, len(cand.score), len(self._lanes) + 1)
        pad = not self._lanes  # lanes' calls are of a few sizes already (``crop_chunks``)

        def run(lane: Self, part: list[np.ndarray]) -> list[dict[str, Any]]:
            engine = lane.rnet if net == "rnet" else lane.onet
            return [lane._infer_crops(engine, pyramids, cand.take(c), size, pad) for c in part]

        return self._joined(self._spread(chunks, len, run))

    def _joined(self, outputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """The outputs of the calls of ``_infer_spread``, in order, as one set of arrays."""
        return {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}

    # -- tensors -------------------------------------------------------------------------

    def _normalise(self, sums: np.ndarray, area: np.ndarray, out: np.ndarray) -> None:
        """Bin sums (..., H, W, 3) int32 and bin areas (..., H, W) -> the networks' input
        (mean / area - 127.5) / 128 in channels-first order, written into ``out``."""
        channels_first = np.moveaxis(sums, -1, -3)
        if self._swap_rb:
            channels_first = channels_first[..., ::-1, :, :]
        scale = np.float32(1 / 128.0) / area[..., None, :, :]
        np.multiply(channels_first, scale, out=out, dtype=np.float32, casting="unsafe")
        out -= np.float32(127.5 / 128.0)

    def _infer_crops(
        self,
        engine: Engine,
        pyramids: list[AreaPyramid],
        cand: Candidates,
        size: int,
        pad: bool = True,
    ) -> dict[str, Any]:
        """R-Net or O-Net on square crops of every candidate, zero-padded at image borders
        (or cut there, ``border="clip"``), area-resized to size x size; ``_joined`` puts
        the outputs of several calls together. ``pad``: as ``_infer_windows``."""
        return self._infer_windows(
            engine, pyramids, self._crop_windows(pyramids, cand), cand.frame, size, pad
        )

    def _crop_windows(self, pyramids: list[AreaPyramid], cand: Candidates) -> np.ndarray:
        """The square crop window of each candidate (``bx.crop_windows``), cut at its
        frame's edges when ``border="clip"``."""
        windows = bx.crop_windows(cand.boxes)
        if self.config.border == "clip":
            windows = _clip_windows(windows, pyramids, cand.frame)
        return windows

    def _infer_windows(
        self,
        engine: Engine,
        pyramids: list[AreaPyramid],
        windows: np.ndarray,
        frame: np.ndarray,
        size: int,
        pad: bool = True,
    ) -> dict[str, np.ndarray]:
        """``engine`` on the windows of the frames, as ``_window_blob`` cuts them; with
        ``pad``, the call zero-padded to one of a few batch sizes (``padded_batch``: where
        the callers' sizes are not few already)."""
        rows = len(windows)
        blob = self._window_blob(
            pyramids, windows, frame, size, padded_batch(engine, rows) if pad else rows
        )
        return {name: value[:rows] for name, value in engine.infer({"image": blob}).items()}

    def _window_blob(
        self,
        pyramids: list[AreaPyramid],
        windows: np.ndarray,
        frame: np.ndarray,
        size: int,
        rows: int,
    ) -> np.ndarray:
        """Integer windows (K, 4: x0, y0, x1, y1, end exclusive) of the frames ``frame``,
        zero outside the image, area-resized to size x size: a normalised NCHW blob of
        ``rows`` rows (K or more: those past K are zeros)."""
        count = len(windows)
        blob = np.empty((rows, 3, size, size), np.float32)
        blob[count:] = 0.0
        head = blob[:count]
        frames = np.unique(frame)
        for f in frames:
            mine = frame == f
            part = head if len(frames) == 1 else np.empty((mine.sum(), 3, size, size), np.float32)
            pyramid = pyramids[f]
            sums, area = area_crop_sums(pyramid.sums, windows[mine], size, pyramid.sums16)
            self._normalise(sums, area, out=part)
            if part is not head:
                head[mine] = part
        return blob


def _clip_windows(
    windows: np.ndarray, pyramids: list[AreaPyramid], frame: np.ndarray
) -> np.ndarray:
    """Cut each crop window at its frame's edges (keeping at least one pixel)."""
    hw = np.array([p.image_hw for p in pyramids], np.int64)[frame]
    x0 = np.clip(windows[:, 0], 0, hw[:, 1] - 1)
    y0 = np.clip(windows[:, 1], 0, hw[:, 0] - 1)
    x1 = np.clip(windows[:, 2], x0 + 1, hw[:, 1])
    y1 = np.clip(windows[:, 3], y0 + 1, hw[:, 0])
    return np.stack([x0, y0, x1, y1], axis=1)


def no_candidates() -> Candidates:
    return Candidates(np.zeros((0, 9), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def concat_candidates(parts: list[Candidates]) -> Candidates:
    return Candidates(
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.frame for p in parts]),
    )
