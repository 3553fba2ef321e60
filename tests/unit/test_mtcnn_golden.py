"""Same detections as the reference MTCNN (facenet-pytorch 2.6.0, same weights).

The reference outputs were generated once by tests/golden/make_mtcnn_golden.py and are
committed as tests/golden/mtcnn_reference.json: every reference face must be matched by
one of ours at IoU >= 0.9 with every landmark within 2 px, and we must find no extra face.

The reference cuts crops at the image edge and stretches them; facewatch zero-pads them by
default (as the MTCNN paper's code does; see test_mtcnn.py for why), so the comparison runs
with ``border="clip"``, the reference's behaviour.
"""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from engines.boxes import iou_matrix
from engines.images import read_image
from engines.mtcnn import MTCNN
from tests.conftest import GOLDEN, MODELS

REFERENCE = json.loads((GOLDEN / "mtcnn_reference.json").read_text())


def _load(item, shared_data):
    path = shared_data / item["source"]
    if item["frame"] is None:
        return read_image(str(path))
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    for _ in range(item["frame"] + 1):
        ok, frame = capture.read()
        assert ok, f"{path}: cannot decode frame {item['frame']}"
    capture.release()
    if item.get("resize_wh"):
        frame = cv2.resize(frame, tuple(item["resize_wh"]), interpolation=cv2.INTER_AREA)
    return frame


@pytest.fixture(scope="module")
def reference_like():
    return MTCNN.load(MODELS / "mtcnn", threads=2, border="clip")


def _name(item):
    frame = "" if item["frame"] is None else f"@{item['frame']}"
    size = "" if not item.get("resize_wh") else f"->{item['resize_wh'][0]}x{item['resize_wh'][1]}"
    return f"{item['source']}{frame}{size}"


@pytest.mark.parametrize("item", REFERENCE["items"], ids=_name)
def test_same_faces_as_the_reference(item, reference_like, shared_data):
    image = _load(item, shared_data)
    assert list(image.shape[:2]) == item["image_hw"]
    # a failure says whether these are the very pixels the reference saw (a newer OpenCV may
    # decode a video otherwise): else a decoder's difference would read as the detector's
    fed = hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest()
    pixels = "" if fed == item["bgr_md5"] else " (NB: OpenCV here decodes other pixels)"
    found = reference_like.detect([image])[0]
    ref_boxes = np.array([f["bbox_xyxy"] for f in item["faces"]], np.float32).reshape(-1, 4)
    ref_points = np.array([f["landmarks"] for f in item["faces"]], np.float32).reshape(-1, 5, 2)
    assert len(found) == len(ref_boxes), f"{len(found)} faces, reference {len(ref_boxes)}{pixels}"
    if not len(found):
        return
    iou = iou_matrix(ref_boxes, found.bbox_xyxy)
    match = iou.argmax(axis=1)
    assert len(set(match.tolist())) == len(match), f"two faces matched one detection{pixels}"
    assert iou.max(axis=1).min() >= 0.9, f"IoU {iou.max(axis=1).min():.3f}{pixels}"
    error = np.linalg.norm(found.landmarks[match] - ref_points, axis=2)
    assert error.max() <= 2.0, f"landmark error {error.max():.2f} px{pixels}"
