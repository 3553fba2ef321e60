"""MTCNN face detection (P-Net -> R-Net -> O-Net) on any engine, batched across frames.

P-Net runs once per pyramid scale on every frame of the batch that has the same size;
R-Net and O-Net each run once on the candidates of all frames together.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from engines import boxes as bx
from engines.base import (
    CROPS_PER_CALL,
    Engine,
    batch_limit,
    bounds_text,
    input_limits,
    padded_batch,
    within,
)
from engines.images import AreaPyramid, area_crop_sums, as_bgr8
from engines.mtcnn_calls import PNetTile, crop_chunks, default_lanes, pnet_tiles, spread
from engines.mtcnn_stages import STAGES, load_stage, stage_sidecar

if TYPE_CHECKING:
    from engines.build import PlanRequest

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

PNET_SCALE_NMS = 0.5  # within one scale of one frame (IoU)
PNET_FRAME_NMS = 0.7  # across the scales of one frame (IoU)
RNET_NMS = 0.7
ONET_NMS = 0.7  # intersection over the smaller box


# The detection settings' bounds, the daemon config's and the command lines' too (P-Net's
# 12-pixel window is the smallest face it finds).
MIN_FACE_SIZE_BOUNDS = {"ge": bx.PNET_CELL, "le": 1000}
SCALE_FACTOR_BOUNDS = {"gt": 0.1, "lt": 1.0}
THRESHOLD_BOUNDS = {"gt": 0.0, "lt": 1.0}  # each of the three


@dataclass(frozen=True)
class MTCNNConfig:
    """Detection settings; the defaults are the published MTCNN's. A setting out of its
    bounds is a ValueError that names it."""

    min_face_size: float = 20.0
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    scale_factor: float = 0.709
    # "pad": R-Net / O-Net see a border face zero-padded, as the MTCNN paper's code does;
    # "clip": the crop is cut at the image edge and stretched, as facenet-pytorch does.
    border: str = "pad"

    def __post_init__(self) -> None:
        if not within(self.min_face_size, MIN_FACE_SIZE_BOUNDS):
            raise ValueError(
                f"min_face_size must be {bounds_text(MIN_FACE_SIZE_BOUNDS)} pixels, "
                f"got {self.min_face_size}"
            )
        if not within(self.scale_factor, SCALE_FACTOR_BOUNDS):
            raise ValueError(
                f"scale_factor must be {bounds_text(SCALE_FACTOR_BOUNDS)}, got {self.scale_factor}"
            )
        if self.border not in ("pad", "clip"):
            raise ValueError(f"border must be 'pad' or 'clip', got {self.border!r}")
        if len(self.thresholds) != 3 or not all(
            within(t, THRESHOLD_BOUNDS) for t in self.thresholds
        ):
            raise ValueError(
                f"thresholds must be three numbers, each {bounds_text(THRESHOLD_BOUNDS)}, "
                f"got {self.thresholds}"
            )


@dataclass
class FrameDetections:
    """Faces found in one frame: ``bbox_xyxy`` (K, 4), ``score`` (K,), ``landmarks`` (K, 5, 2).

    Landmarks: left eye, right eye, nose, left mouth corner, right mouth corner (as seen in
    the image), in pixels.
    """

    bbox_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.score)

    def to_json(self) -> list[dict[str, Any]]:
        """One dict per face, floats rounded to 0.01 px / 1e-4."""
        return [
            {
                "bbox_xyxy": [round(float(v), 2) for v in self.bbox_xyxy[k]],
                "score": round(float(self.score[k]), 4),
                "landmarks": [
                    [round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks[k]
                ],
            }
            for k in range(len(self))
        ]


@dataclass
class Candidates:
    """Boxes of all frames in flight between stages; ``frame`` says whose each box is."""

    boxes: np.ndarray  # (K, 4) xyxy
    score: np.ndarray  # (K,)
    frame: np.ndarray  # (K,) index into the batch

    def take(self, keep: np.ndarray) -> Candidates:
        return Candidates(self.boxes[keep], self.score[keep], self.frame[keep])


class MTCNN:
    """Face detector. ``detect(frames)`` takes a list of HxWx3 uint8 BGR frames."""

    def __init__(
        self,
        pnet: Engine,
        rnet: Engine,
        onet: Engine,
        config: MTCNNConfig | None = None,
        channel_order: str = "RGB",
    ) -> None:
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.config = config or MTCNNConfig()
        self._swap_rb = channel_order.upper() == "RGB"
        self._lanes: list[MTCNN] = []
        self._pool: ThreadPoolExecutor | None = None
        self._spare: list[AreaPyramid] = []  # the last call's pyramids, whose memory is reused

    def _set_lanes(self, lanes: list[MTCNN]) -> None:
        """Extra detectors with engines of their own: a batch of frames is split between
        this one and its lanes, which run in parallel threads (engines release the GIL)."""
        self._lanes = lanes
        self._pool = ThreadPoolExecutor(len(lanes)) if lanes else None

    def with_config(self, **changes: Any) -> MTCNN:
        """This detector with other settings (MTCNNConfig fields), sharing its engines and
        lanes: for cameras that override the defaults."""
        variant = copy.copy(self)
        variant.config = dataclasses.replace(self.config, **changes)
        variant._lanes = [lane.with_config(**changes) for lane in self._lanes]
        variant._spare = []
        return variant

    @classmethod
    def load(
        cls,
        models_dir: str | Path,
        backend: str = "openvino",
        threads: int = 0,
        lanes: int | None = None,
        trt_plans: PlanRequest | None = None,
        **config: Any,
    ) -> MTCNN:
        """Open ``pnet``, ``rnet`` and ``onet`` (.onnx + .json sidecar) from ``models_dir``.

        ``config`` holds MTCNNConfig fields (min_face_size, thresholds, scale_factor, border).
        ``trt_plans``: which TensorRT plans the tensorrt backend opens (``load_engine``).
        ``lanes`` > 1 processes the frames of a batch in that many parallel lanes, each with
        its own engines and ``threads // lanes`` threads; None: what suits ``backend``
        (``default_lanes``).
        """
        if lanes is None:
            lanes = default_lanes(backend, threads)
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        if "thresholds" in config:
            config["thresholds"] = tuple(config["thresholds"])
        settings = MTCNNConfig(**config)
        models_dir = Path(models_dir)
        lane_threads = max(1, threads // lanes) if threads > 0 else 0
        order = ""
        replicas: list[dict[str, Engine]] = [{} for _ in range(lanes)]
        for name in STAGES:
            path = models_dir / f"{name}.onnx"
            order = stage_sidecar(path, name).channel_order
            for engines in replicas:
                engines[name] = load_stage(
                    path, name, backend, threads=lane_threads, trt_plans=trt_plans
                )
        detectors = [
            cls(e["pnet"], e["rnet"], e["onet"], config=settings, channel_order=order)
            for e in replicas
        ]
        detectors[0]._set_lanes(detectors[1:])
        return detectors[0]

    def refuses(self, frame_hw: tuple[int, int]) -> str | None:
        """Why P-Net's engine cannot take frames of this size, or None. Only a TensorRT plan
        has a limit: the pyramid levels of the camera sizes it was built for
        (``base.input_limits``); a frame whose levels are larger would stop ``detect``."""
        limits = input_limits(self.pnet)
        if limits is None:
            return None
        settings = self.config
        for scale in bx.pyramid_scales(frame_hw, settings.min_face_size, settings.scale_factor):
            h, w = bx.scaled_size_hw(frame_hw, scale)
            if not any(h <= limit[2] and w <= limit[3] for limit in limits):
                most = max(limits, key=lambda limit: limit[2] * limit[3])
                return (
                    f"at min_face_size {settings.min_face_size:g} its pyramid level {w}x{h} "
                    f"is larger than P-Net's TensorRT plan takes ({most[3]}x{most[2]} at most)"
                )
        return None

    def detect(
        self, frames: Sequence[np.ndarray], priors: Sequence[np.ndarray | None] | None = None
    ) -> list[FrameDetections]:
        """Detect faces in every frame; returns one FrameDetections per frame, in order.

        With lanes, the pyramid levels and the R-Net / O-Net candidates are split between
        this detector's engines and its lanes' engines, which run in parallel threads.

        ``priors``, one per frame, are boxes (K, 4) where faces were just seen in that
        frame's camera: such a frame skips the pyramid and P-Net searches only a region
        around each of them (faces that moved up to a face width, or grew or shrank by up to
        1.4x, are found; new faces elsewhere are not). None for a frame: the whole pyramid.
        """
        if isinstance(frames, np.ndarray) and frames.ndim < 4:  # its rows would be "frames"
            raise TypeError(
                f"detect takes a sequence of frames, not one array of shape {frames.shape}: "
                "for one frame, detect([frame])"
            )
        pyramids = self._pyramids(frames)
        if not pyramids:
            return []
        if priors is not None and len(priors) != len(pyramids):
            raise ValueError(f"{len(priors)} priors for {len(pyramids)} frames")
        full = [i for i in range(len(pyramids)) if priors is None or priors[i] is None]
        around = {i: p for i, p in enumerate(priors or []) if p is not None and len(p)}
        parts = [self._propose(pyramids, full)] if full else []
        if around:
            parts.append(self._propose_around(pyramids, around))
        cand = concat_candidates(parts) if parts else no_candidates()
        if len(cand.score):
            cand = self._refine(pyramids, cand)
        results: list[FrameDetections] = [FrameDetections() for _ in pyramids]
        if len(cand.score):
            self._output(pyramids, cand, results)
        return results

    def _pyramids(self, frames: Sequence[np.ndarray]) -> list[AreaPyramid]:
        """The frames' integral images, made by the lanes in parallel in the memory of the
        previous call's (fresh pages for a batch of eight 1080p frames cost 60 ms)."""
        images = [as_bgr8(frame) for frame in frames]
        spare = self._spare

        def build(lane: MTCNN, part: list[int]) -> list[AreaPyramid]:
            return [AreaPyramid(images[k], spare[k] if k < len(spare) else None) for k in part]

        self._spare = []  # (a failed call leaves nothing half-overwritten behind)
        pyramids = self._spread(list(range(len(images))), lambda k: 1.0, build)
        self._spare = pyramids
        return pyramids

    # -- stage 1: P-Net over the pyramid -----------------------------------------------

    def _propose(self, pyramids: list[AreaPyramid], indices: list[int]) -> Candidates:
        """P-Net over the whole pyramid of the frames ``indices``."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i in indices:
            by_size.setdefault(pyramids[i].image_hw, []).append(i)
        parts = [self._propose_same_size(pyramids, idx) for idx in by_size.values()]
        cand = concat_candidates(parts)
        keep = self._nms(cand.boxes[:, :4], cand.score, PNET_FRAME_NMS, groups=cand.frame)
        return cand.take(keep)

    def _propose_same_size(self, pyramids: list[AreaPyramid], indices: list[int]) -> Candidates:
        """P-Net on frames of one size, in tiles (``mtcnn_calls.pnet_tiles``) spread over
        the lanes.

        Returns boxes (K, 9) in frame pixels with their score and P-Net's regression.
        """
        image_hw = pyramids[indices[0]].image_hw
        cfg = self.config
        scales = bx.pyramid_scales(image_hw, cfg.min_face_size, cfg.scale_factor)
        tiles = pnet_tiles(self.pnet, image_hw, scales, indices, len(self._lanes) + 1)

        def run(lane: MTCNN, part: list[PNetTile]) -> list[Candidates]:
            found = []
            for tile in part:
                size_hw = bx.scaled_size_hw(image_hw, scales[tile.scale])
                rows = None
                if tile.map_rows is not None:
                    rows = bx.pnet_band(size_hw[0], *tile.map_rows)
                boxes, local = lane._pnet_candidates(
                    pyramids, tile.frames, size_hw, rows, scales[tile.scale]
                )
                cand = Candidates(boxes, boxes[:, 4].copy(), tile.frames[local])
                found.append(cand if rows else self._level_nms(cand))
            return found

        per_tile = self._spread(tiles, PNetTile.cost, run)
        # The bands of a level are put together before their NMS (whole levels had theirs).
        banded = {tile.scale for tile in tiles if tile.map_rows}
        parts = [cand for tile, cand in zip(tiles, per_tile, strict=True) if not tile.map_rows]
        for k in sorted(banded):
            mine = [cand for tile, cand in zip(tiles, per_tile, strict=True) if tile.scale == k]
            parts.append(self._level_nms(concat_candidates(mine)))
        return concat_candidates(parts) if parts else no_candidates()

    def _pnet_candidates(
        self,
        pyramids: list[AreaPyramid],
        frames: np.ndarray,
        size_hw: tuple[int, int],
        rows: tuple[int, int] | None,
        scale: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """P-Net on the pyramid level ``size_hw`` of ``frames`` (its level rows ``rows``
        only, when given): ``bx.pnet_candidates``' boxes and their index into ``frames``."""
        levels = [pyramids[i].level_sums(size_hw, rows) for i in frames]
        blob = np.empty((len(levels), 3, *levels[0][1].shape), np.float32)
        for image, (sums, area) in zip(blob, levels, strict=True):
            self._normalise(sums, area, out=image)
        out = self.pnet.infer({"image": blob})
        first_row = rows[0] // bx.PNET_STRIDE if rows else 0
        return bx.pnet_candidates(
            out["reg"], out["prob"][:, 1], scale, self.config.thresholds[0], first_row
        )

    def _propose_around(
        self, pyramids: list[AreaPyramid], priors: dict[int, np.ndarray]
    ) -> Candidates:
        """P-Net on a square region ``bx.ROI_SIDE`` face sizes wide around each prior face,
        at each ``bx.ROI_CANVAS`` size: the regions of all frames in as few calls as the
        engine takes."""
        frame = np.concatenate([np.full(len(b), i, np.int64) for i, b in priors.items()])
        square = bx.square(np.concatenate([b[:, :4] for b in priors.values()]).astype(np.float32))
        half = (square[:, 2] - square[:, 0]) * bx.ROI_SIDE / 2
        cx, cy = (square[:, 0] + square[:, 2]) / 2, (square[:, 1] + square[:, 3]) / 2
        windows = np.round(np.stack([cx - half, cy - half, cx + half, cy + half], 1))
        windows = windows.astype(np.int64)
        side = np.maximum(windows[:, 2] - windows[:, 0], 1).astype(np.float32)
        found: list[np.ndarray] = []
        whose: list[np.ndarray] = []
        step = batch_limit(self.pnet, CROPS_PER_CALL)  # regions per P-Net call
        for canvas in bx.ROI_CANVAS:
            parts = []
            for start in range(0, len(windows), step):
                part = slice(start, start + step)
                parts.append(
                    self._infer_windows(self.pnet, pyramids, windows[part], frame[part], canvas)
                )
            out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
            boxes, region = bx.pnet_candidates(
                out["reg"], out["prob"][:, 1], 1.0, self.config.thresholds[0]
            )
            keep = self._nms(boxes[:, :4], boxes[:, 4], PNET_SCALE_NMS, groups=region)
            boxes, region = boxes[keep], region[keep]
            # canvas pixels -> frame pixels
            boxes[:, :4] = boxes[:, :4] * (side[region] / canvas)[:, None]
            boxes[:, :4] += windows[region][:, [0, 1, 0, 1]]
            found.append(boxes)
            whose.append(frame[region])
        boxes = np.concatenate(found)
        cand = Candidates(boxes, boxes[:, 4].copy(), np.concatenate(whose))
        keep = self._nms(cand.boxes[:, :4], cand.score, PNET_FRAME_NMS, groups=cand.frame)
        return cand.take(keep)

    # -- stages 2 and 3 ------------------------------------------------------------------

    def _refine(self, pyramids: list[AreaPyramid], cand: Candidates) -> Candidates:
        """P-Net regression, then R-Net on all candidates of all frames in one call."""
        regressed = bx.regress(cand.boxes[:, :4], cand.boxes[:, 5:9], inclusive=False)
        cand = Candidates(bx.square(regressed), cand.score, cand.frame)
        out = self._infer_spread("rnet", pyramids, cand, 24)
        score = out["prob"][:, 1]
        passed = score > self.config.thresholds[1]
        cand = Candidates(cand.boxes[passed], score[passed], cand.frame[passed])
        reg = out["reg"][passed]
        keep = self._nms(cand.boxes, cand.score, RNET_NMS, groups=cand.frame)
        cand, reg = cand.take(keep), reg[keep]
        cand.boxes = bx.square(bx.regress(cand.boxes, reg, inclusive=True))
        return cand

    def _output(
        self, pyramids: list[AreaPyramid], cand: Candidates, results: list[FrameDetections]
    ) -> None:
        """O-Net on all remaining candidates; fills ``results`` per frame."""
        out = self._infer_spread("onet", pyramids, cand, 48)
        score = out["prob"][:, 1]
        passed = score > self.config.thresholds[2]
        cand = Candidates(cand.boxes[passed], score[passed], cand.frame[passed])
        landmarks = bx.landmarks_from_offsets(cand.boxes, out["landmarks"][passed])
        cand.boxes = bx.regress(cand.boxes, out["reg"][passed], inclusive=True)
        keep = self._nms(
            cand.boxes, cand.score, ONET_NMS, groups=cand.frame, mode="min", inclusive=True
        )
        cand, landmarks = cand.take(keep), landmarks[keep]
        for i in range(len(results)):
            mine = np.flatnonzero(cand.frame == i)
            results[i] = FrameDetections(
                cand.boxes[mine].astype(np.float32),
                cand.score[mine].astype(np.float32),
                landmarks[mine],
            )

    # -- NMS ----------------------------------------------------------------------------

    def _nms(
        self,
        boxes_xyxy: np.ndarray,
        scores: np.ndarray,
        threshold: float,
        groups: np.ndarray | None = None,
        mode: str = "union",
        inclusive: bool = False,
    ) -> np.ndarray:
        """``engines.boxes.nms``: where every suppression of the detector runs (the device
        pipeline runs them on its device)."""
        return bx.nms(boxes_xyxy, scores, threshold, groups, mode, inclusive)

    def _level_nms(self, cand: Candidates) -> Candidates:
        """P-Net's NMS within one pyramid level of each frame."""
        return cand.take(self._nms(cand.boxes[:, :4], cand.score, PNET_SCALE_NMS, cand.frame))

    # -- parallel lanes ------------------------------------------------------------------

    def _spread(
        self, items: list[T], cost: Callable[[T], float], work: Callable[[MTCNN, list[T]], list[R]]
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

        def run(lane: MTCNN, part: list[np.ndarray]) -> list[dict[str, Any]]:
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
