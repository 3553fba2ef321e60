"""Video clips the tests and benchmarks build from the bundled and shared ones."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tests.conftest import REPO

DEMO_CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"
EMPTY_FRAME = 48  # a frame of the demo clip in which MTCNN finds no face


def read_frames(path: Path, first: int = 0, count: int | None = None, every: int = 1) -> list:
    """Frames ``first``, ``first + every``, ... of a video (``count`` of them, or to the end)."""
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    try:
        while count is None or len(frames) < count:
            ok, image = capture.read()
            if not ok:
                break
            if index >= first and (index - first) % every == 0:
                frames.append(image)
            index += 1
    finally:
        capture.release()
    return frames


def noisy_copies(image: np.ndarray, count: int, sigma: float, seed: int = 0) -> list:
    """``count`` copies of ``image`` with Gaussian noise of ``sigma`` grey levels each, as a
    still camera's sensor gives."""
    rng = np.random.default_rng(seed)
    return [
        np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)
        for _ in range(count)
    ]


def doorway_clip(out: Path, still_s: float, scale: float = 1.0, sigma: float = 3.0) -> Path:
    """A quiet camera: the demo clip's empty frame held ``still_s`` seconds (with sensor
    noise), then the whole demo clip (people come in: faces, cuts). MPEG-4 Part 2 in MP4, at
    the demo clip's frame rate, ``scale`` times its size."""
    capture = cv2.VideoCapture(str(DEMO_CLIP))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    frames = read_frames(DEMO_CLIP)
    if scale != 1.0:
        frames = [
            cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) for f in frames
        ]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for image in noisy_copies(frames[EMPTY_FRAME], round(still_s * fps), sigma):
            writer.write(image)
        for image in frames:
            writer.write(image)
    finally:
        writer.release()
    return out
