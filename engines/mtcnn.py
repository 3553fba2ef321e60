"""MTCNN face detection (P-Net -> R-Net -> O-Net) on any engine, batched across frames.

P-Net runs once per pyramid scale on every frame of the batch that has the same size;
R-Net and O-Net each run once on the candidates of all frames together.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engines import boxes as bx
from engines.base import Engine, Floats, bounds_text, input_limits, within
from engines.images import AreaPyramid, as_bgr8
from engines.mtcnn_base import Candidates, concat_candidates, no_candidates
from engines.mtcnn_calls import default_lanes
from engines.mtcnn_pnet import PNetSearch
from engines.mtcnn_stages import STAGES, load_stage, stage_sidecar

if TYPE_CHECKING:
    from engines.build import PlanRequest

logger = logging.getLogger(__name__)

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

    bbox_xyxy: Floats = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    score: Floats = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: Floats = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))

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


class MTCNN(PNetSearch):
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
