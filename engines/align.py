"""Face crops for the embedding network: one implementation for training and inference.

Pure numpy + OpenCV. Two ways to cut a face out of a frame:

- ``crop_with_margin``: the FaceNet project's ``align_dataset_mtcnn`` crop — the detector box
  grown by ``margin`` pixels in total (half on each side), clipped to the image, resized
  (bilinear) to ``image_size`` square. Aspect ratio is not preserved, exactly as there.
- ``align_similarity``: a 5-point similarity transform (rotation, uniform scale,
  translation) of the MTCNN landmarks onto a fixed reference template.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from engines.base import Floats, brief

logger = logging.getLogger(__name__)

# Reference positions of (left eye, right eye, nose, left mouth, right mouth) for a
# 112x112 crop; scaled to the requested size. The widely used five-point template.
_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def margin_box(
    bbox_xyxy: np.ndarray | list[float], image_hw: tuple[int, int], margin: int = 32
) -> NDArray[np.int32]:
    """The integer crop window (x0, y0, x1, y1) of ``crop_with_margin``, clipped to the image."""
    det = np.asarray(bbox_xyxy, dtype=np.float64).reshape(4)
    height, width = image_hw
    box = np.zeros(4, dtype=np.int32)
    box[0] = np.maximum(det[0] - margin / 2, 0)
    box[1] = np.maximum(det[1] - margin / 2, 0)
    box[2] = np.minimum(det[2] + margin / 2, width)
    box[3] = np.minimum(det[3] + margin / 2, height)
    return box


def crop_with_margin(
    image: np.ndarray,
    bbox_xyxy: np.ndarray | list[float],
    margin: int = 32,
    image_size: int = 160,
) -> np.ndarray:
    """Crop ``bbox_xyxy`` grown by ``margin`` pixels and resize to ``image_size`` square
    (bilinear, as OpenCV's INTER_LINEAR: half-pixel centres, no antialiasing).

    Raises ValueError when the window is empty (a box entirely outside the image).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x0, y0, x1, y1 = margin_box(bbox_xyxy, image.shape[:2], margin)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"face box {list(bbox_xyxy)} lies outside the {image.shape[1]}x{image.shape[0]} image"
        )
    cropped = image[y0:y1, x0:x1]
    if image.dtype != np.uint8:
        return cv2.resize(cropped, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
    # Bilinear in float, then rounded: OpenCV's uint8 path rounds its weights to 1/2048 and
    # leaves about one pixel value in eight 1 off the exact result, which the crops cut on a
    # GPU (engines.torch_facenet) compute.
    resized = cv2.resize(
        cropped.astype(np.float32), (image_size, image_size), interpolation=cv2.INTER_LINEAR
    )
    return np.rint(resized).astype(np.uint8)


def template_of(extra: dict[str, Any], image_size: int) -> Floats | None:
    """A model's own 5-point template from its sidecar's ``extra["landmarks"]`` ((5, 2) in
    pixels of its input), or None for the reference one."""
    landmarks = extra.get("landmarks")
    if landmarks is None:
        return None
    try:
        with np.errstate(over="ignore"):  # a number beyond float32 becomes inf: refused below
            template = np.asarray(landmarks, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):  # not numbers, or rows of other lengths
        template = np.zeros(0, np.float32)
    if template.shape != (5, 2) or not np.all((template >= 0) & (template <= image_size)):
        raise ValueError(
            f"landmarks {brief(landmarks)}: expected 5 [x, y] points inside the "
            f"{image_size} px input"
        )
    return template


def reference_landmarks(image_size: int = 160) -> Floats:
    """The 5-point template (5, 2) for a square crop of ``image_size`` pixels."""
    return (_TEMPLATE_112 * (image_size / 112.0)).astype(np.float32)


def similarity_matrix(src_5x2: np.ndarray, dst_5x2: np.ndarray) -> NDArray[np.float64]:
    """The 2x3 least-squares similarity transform taking ``src`` points onto ``dst`` (Umeyama)."""
    src = np.asarray(src_5x2, dtype=np.float64)
    dst = np.asarray(dst_5x2, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(
            f"expected two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}"
        )
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("landmarks are all at one point; cannot align")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float64)


def align_similarity(
    image: np.ndarray,
    landmarks_5x2: np.ndarray,
    image_size: int = 160,
    template: np.ndarray | None = None,
) -> np.ndarray:
    """Warp ``image`` so the five landmarks land on the reference template (or ``template``:
    a model's own, (5, 2) in pixels of the ``image_size`` output); square output."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    target = reference_landmarks(image_size) if template is None else template
    matrix = similarity_matrix(np.asarray(landmarks_5x2).reshape(5, 2), target)
    return cv2.warpAffine(
        image,
        matrix,
        (image_size, image_size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def pick_main_face(bbox_xyxy: np.ndarray, image_hw: tuple[int, int]) -> int:
    """Index of the face ``align_dataset_mtcnn`` keeps when only one is wanted.

    Largest box area minus twice the squared distance of its centre from the image centre.
    """
    boxes = np.asarray(bbox_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("no faces to pick from")
    height, width = image_hw
    size = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centre = np.array([width / 2, height / 2])
    offsets = np.stack(
        [(boxes[:, 0] + boxes[:, 2]) / 2 - centre[0], (boxes[:, 1] + boxes[:, 3]) / 2 - centre[1]]
    )
    offset_sq = (offsets**2).sum(axis=0)
    return int(np.argmax(size - offset_sq * 2.0))
