"""bench_mtcnn.py's worker side: one implementation on one clip at one batch size, in a
subprocess of its own (``bench_mtcnn.py --worker ...``), so that its peak RSS is its own and
torch is never imported on facewatch's side. Writes its result JSON to ``--result``."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from measure import cpu_s, max_rss_mb
from mtcnn_clips import MIN_FACE_SIZE, SCALE_FACTOR, THRESHOLDS, decode_clip, iter_clip

REPO = Path(__file__).resolve().parents[1]

# One frame's detections: boxes (K,4) xyxy, scores (K,), landmarks (K,5,2).
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
Detector = Callable[[list[np.ndarray]], list[Detections]]
VERSIONS: dict[str, str] = {"numpy": np.__version__, "opencv": cv2.__version__}


def reference_detector(threads: int) -> Detector:
    """facenet-pytorch's MTCNN on CPU; the BGR->RGB copy is part of each timed call."""
    import torch
    import torchvision
    from facenet_pytorch import MTCNN

    VERSIONS.update(torch=torch.__version__, torchvision=torchvision.__version__)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    mtcnn = MTCNN(
        keep_all=True,
        min_face_size=MIN_FACE_SIZE,
        thresholds=list(THRESHOLDS),
        factor=SCALE_FACTOR,
        post_process=False,
        device="cpu",
    )

    def detect(frames: list[np.ndarray]) -> list[Detections]:
        rgb = [np.ascontiguousarray(bgr[:, :, ::-1]) for bgr in frames]
        if len(rgb) == 1:
            found = [mtcnn.detect(rgb[0], landmarks=True)]
        else:  # facenet-pytorch batches frames of one size through each stage
            found = list(zip(*mtcnn.detect(rgb, landmarks=True), strict=True))
        out = []
        for boxes, probs, points in found:
            if boxes is None:
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))))
            else:
                out.append((np.asarray(boxes), np.asarray(probs, dtype=float), points))
        return out

    return detect


def facewatch_detector(
    models: Path, threads: int, border: str | None, backend: str | None, lanes: int | None
) -> Detector:
    """facewatch's MTCNN (default backend and lanes unless told otherwise); takes BGR frames
    as they come from OpenCV."""
    sys.path.insert(0, str(REPO))
    from engines.detectors import load_detector
    from engines.openvino_backend import import_openvino
    from engines.ort import import_onnxruntime

    onnxruntime, openvino = import_onnxruntime(), import_openvino()

    VERSIONS.update(onnxruntime=onnxruntime.__version__, openvino=openvino.__version__)

    det = load_detector(
        str(models),
        **({"backend": backend} if backend else {}),
        threads=threads,
        lanes=lanes,
        min_face_size=MIN_FACE_SIZE,
        thresholds=THRESHOLDS,
        scale_factor=SCALE_FACTOR,
        **({"border": border} if border else {}),
    )

    def detect(frames: list[np.ndarray]) -> list[Detections]:
        return [(r.bbox_xyxy, r.score, r.landmarks) for r in det.detect(frames)]

    return detect


def time_detector(
    detect: Detector, frames: list[np.ndarray], args: argparse.Namespace
) -> tuple[float, list[float], list[Detections]]:
    """Warm up, then time frames[warmup:] in calls of `batch` frames, `repeat` times.

    Returns (best fps over the repeats, every call's ms, the first pass's detections)."""
    warmup, batch = args.warmup, args.batch
    if batch == 1:
        for frame in frames[:warmup]:
            detect([frame])
    else:  # one untimed call of the batch size that the timed calls use
        detect([frames[i % len(frames)] for i in range(batch)])
    timed = frames[warmup:]
    calls_ms, detections, best_fps = [], [], 0.0
    for rep in range(args.repeat):
        start = time.perf_counter()
        for i in range(0, len(timed), batch):
            t0 = time.perf_counter()
            out = detect(timed[i : i + batch])
            calls_ms.append((time.perf_counter() - t0) * 1000)
            if rep == 0:
                detections.extend(out)
        best_fps = max(best_fps, len(timed) / (time.perf_counter() - start))
    return best_fps, calls_ms, detections


def detector(args: argparse.Namespace) -> Detector:
    """The worker's implementation, loaded."""
    if args.worker == "reference":
        return reference_detector(args.threads)
    return facewatch_detector(args.models, args.threads, args.border, args.backend, args.lanes)


def streaming_rss_mb(detect: Detector, args: argparse.Namespace) -> float | None:
    """A one-frame-per-call worker's peak RSS after --stream-frames frames, each decoded just
    before it is detected, as a camera daemon works (None for batches, or with 0 frames)."""
    if args.batch == 1 and args.stream_frames > 0:
        for frame in iter_clip(args.data, args.clip, args.stream_frames):
            detect([frame])
        return max_rss_mb()
    return None


def run_worker(args: argparse.Namespace) -> int:
    """One implementation on one clip at one batch size; writes its result JSON to --result.

    Before the timed run, a one-frame-per-call worker also runs --stream-frames frames as a
    camera daemon would, each decoded just before it is detected, and notes its peak RSS
    then, before the frames for the timing are decoded and held."""
    detect = detector(args)
    rss = {"rss_after_load_mb": max_rss_mb(), "rss_stream_peak_mb": streaming_rss_mb(detect, args)}
    frames = decode_clip(args.data, args.clip, args.frames)
    if len(frames) <= args.warmup:
        raise SystemExit(f"{args.clip}: only {len(frames)} frames, need more than --warmup")
    rss["rss_after_decode_mb"] = max_rss_mb()
    cpu_before = cpu_s()
    fps, calls_ms, detections = time_detector(detect, frames, args)
    timed_cpu_s = cpu_s() - cpu_before
    result = worker_result(args, frames, fps, calls_ms, timed_cpu_s)
    result.update(rss, rss_peak_mb=max_rss_mb(), detections=detections_json(detections))
    Path(args.result).write_text(json.dumps(result))
    return 0


def worker_result(
    args: argparse.Namespace,
    frames: list[np.ndarray],
    fps: float,
    calls_ms: list[float],
    timed_cpu_s: float,
) -> dict[str, Any]:
    """What a worker reports about its run, but for its memory and detections."""
    return {
        "impl": args.worker,
        "clip": args.clip,
        "batch": args.batch,
        "threads": args.threads,
        "python": sys.executable,
        "versions": VERSIONS,
        "resolution_wh": [frames[0].shape[1], frames[0].shape[0]],
        "frames_timed": len(frames) - args.warmup,
        "repeat": args.repeat,
        "fps": fps,
        "call_ms_median": statistics.median(calls_ms),
        "call_ms_max": max(calls_ms),
        "cpu_ms_per_frame": timed_cpu_s * 1000 / ((len(frames) - args.warmup) * args.repeat),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def detections_json(detections: list[Detections]) -> list[dict[str, list[Any]]]:
    return [
        {
            "bbox_xyxy": np.asarray(b).tolist(),
            "score": np.asarray(s).tolist(),
            "landmarks": np.asarray(lm).tolist(),
        }
        for b, s, lm in detections
    ]
