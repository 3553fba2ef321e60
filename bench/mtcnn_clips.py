"""The clips the MTCNN benchmarks decode (bench_mtcnn, bench_gpu, bench_streams, device_ops)
and the detector settings they all run with, the same on both sides of a comparison."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_MODELS = REPO / "models" / "mtcnn"

# name -> (video relative to the data folder, resize_wh or None)
CLIPS: dict[str, tuple[str, tuple[int, int] | None]] = {
    "crowd_1080p": ("videos/crowd_1080p.mp4", None),
    "crowd_720p": ("videos/crowd_1080p.mp4", (1280, 720)),
    "hamilton_360p": ("videos/hamilton_360p.mp4", None),
}
MIN_FACE_SIZE = 20
THRESHOLDS = (0.6, 0.7, 0.7)
SCALE_FACTOR = 0.709


def decode_clip(data: Path, clip: str, n_frames: int) -> list[np.ndarray]:
    """The first n_frames BGR frames of a clip, resized with INTER_AREA where the clip says so."""
    return list(iter_clip(data, clip, n_frames))


def iter_clip(data: Path, clip: str, n_frames: int) -> Iterator[np.ndarray]:
    """decode_clip one frame at a time."""
    video, resize_wh = CLIPS[clip]
    cap = cv2.VideoCapture(str(data / video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {data / video}")
    for _ in range(n_frames):
        ok, frame = cap.read()
        if not ok:
            break
        if resize_wh is not None:
            frame = cv2.resize(frame, resize_wh, interpolation=cv2.INTER_AREA)
        yield frame
    cap.release()
