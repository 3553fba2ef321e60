"""Write tests/golden/mtcnn_reference.json: the reference MTCNN's detections on the shared data.

The reference is facenet-pytorch 2.6.0's ``MTCNN`` (PyTorch eager, CPU) with the parameters
facewatch uses: ``min_face_size=20, thresholds=[0.6, 0.7, 0.7], factor=0.709``. Its
``detect(img_rgb, landmarks=True)`` runs on:

* every file in ``images/``, ``detection/dlib/*.jpg`` and ``people/hamilton/*.png``, read with
  ``cv2.imread(path, cv2.IMREAD_COLOR)`` (BGR uint8, alpha dropped, grey expanded), then BGR->RGB;
* frames decoded with ``cv2.VideoCapture`` (BGR->RGB): hamilton_360p every 25th frame,
  crowd_1080p every 15th frame, the same crowd frames resized to 1280x720 with
  ``cv2.INTER_AREA``, head_turn frames 0/300/600, topdown_crowd_no_faces frames 0/60.

Faces are listed in the reference's order (largest box first). Landmarks are facenet-pytorch's
five points: left eye, right eye, nose, mouth left, mouth right, where left means the image's
left (the person's right). Boxes are as the reference returns them: not squared, not clipped
to the image. Floats are rounded to 3 decimals.

Each item also carries ``bgr_md5``, the MD5 of the BGR uint8 array that was fed (after any
resize), so a test can tell a decoder difference from a detector difference.

It also scores the reference on the dlib face boxes (``detection/dlib/{training,testing}.xml``):
a box is found when a detection overlaps it at IoU >= 0.3 (greedy, best pairs first, one
detection per box); boxes marked ignore='1' are not counted, and a detection that matches no
box and overlaps no ignored box at IoU >= 0.3 is a false positive.

Run it in the reference venv (bench/setup_reference.sh makes it); CI does not run it, the JSON
is committed and read by the tests::

    .venv-ref/bin/python tests/golden/make_mtcnn_golden.py [--data ../shared/data] [--out ...]

torchvision's compiled NMS imports fine beside torch in .venv-ref, so no NMS shim is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from facenet_pytorch import MTCNN

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from engines.boxes import greedy_match, iou_matrix  # noqa: E402  (the work tree's engines, pure numpy)

DEFAULT_DATA = HERE.parents[2] / "shared" / "data"
DEFAULT_OUT = HERE / "mtcnn_reference.json"

PARAMS = {"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7], "scale_factor": 0.709}
IMAGE_GLOBS = ["images/*", "detection/dlib/*.jpg", "people/hamilton/*.png"]
CROWD_720P_WH = (1280, 720)
DLIB_XMLS = ["detection/dlib/training.xml", "detection/dlib/testing.xml"]
MATCH_IOU = 0.3


def video_plan() -> list[tuple[str, list[int] | int, tuple[int, int] | None]]:
    """(video, frame indices or a step, resize_wh) in the order the items are written."""
    return [
        ("videos/hamilton_360p.mp4", 25, None),
        ("videos/crowd_1080p.mp4", 15, None),
        ("videos/crowd_1080p.mp4", 15, CROWD_720P_WH),
        ("videos/head_turn_3456x2234.mp4", [0, 300, 600], None),
        ("videos/topdown_crowd_no_faces.mp4", [0, 60], None),
    ]


def read_frames(path: Path, wanted: list[int] | int) -> list[tuple[int, np.ndarray]]:
    """Decode a video sequentially and keep the wanted frames (a list, or every `step`th)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open video {path}")
    frames = []
    last = max(wanted) if isinstance(wanted, list) else None
    index = 0
    while last is None or index <= last:
        keep = index in wanted if isinstance(wanted, list) else index % wanted == 0
        ok = cap.grab()
        if not ok:
            break
        if keep:
            ok, frame = cap.retrieve()
            if not ok:
                raise SystemExit(f"cannot decode frame {index} of {path}")
            frames.append((index, frame))
        index += 1
    cap.release()
    if isinstance(wanted, list) and len(frames) != len(wanted):
        raise SystemExit(f"{path}: wanted frames {wanted}, got {[i for i, _ in frames]}")
    return frames


def iter_inputs(data: Path):
    """Yield (source, frame, resize_wh, bgr) for every item, images first."""
    for pattern in IMAGE_GLOBS:
        for path in sorted(data.glob(pattern)):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"cannot read image {path}")
            yield str(path.relative_to(data)), None, None, bgr
    for source, wanted, resize_wh in video_plan():
        for index, bgr in read_frames(data / source, wanted):
            if resize_wh is not None:
                bgr = cv2.resize(bgr, resize_wh, interpolation=cv2.INTER_AREA)
            yield source, index, resize_wh, bgr


def detect(mtcnn: MTCNN, bgr: np.ndarray) -> list[dict]:
    """The reference's faces on one BGR frame, in its own order (largest box first)."""
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    boxes, probs, points = mtcnn.detect(rgb, landmarks=True)
    if boxes is None:
        return []
    faces = []
    for box, prob, pts in zip(boxes, probs, points, strict=True):
        faces.append(
            {
                "bbox_xyxy": [round(float(v), 3) for v in box],
                "score": round(float(prob), 3),
                "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in pts],
            }
        )
    return faces


def read_dlib_boxes(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """source -> (boxes xyxy, ignore flags) from dlib imglab XML files."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for xml in DLIB_XMLS:
        folder = Path(xml).parent
        for image in ET.parse(data / xml).getroot().iter("image"):
            boxes, ignore = [], []
            for box in image.iter("box"):
                left, top = float(box.get("left")), float(box.get("top"))
                width, height = float(box.get("width")), float(box.get("height"))
                boxes.append([left, top, left + width, top + height])
                ignore.append(box.get("ignore", "0") == "1")
            source = str(folder / image.get("file"))
            out[source] = (np.array(boxes).reshape(-1, 4), np.array(ignore, dtype=bool))
    return out


def dlib_recall(data: Path, items: list[dict]) -> dict[str, int]:
    """Matched boxes, countable boxes and false positives of the reference on the dlib XMLs."""
    by_source = {item["source"]: item for item in items if item["frame"] is None}
    matched = total = false_pos = 0
    for source, (boxes, ignore) in read_dlib_boxes(data).items():
        dets = np.array([f["bbox_xyxy"] for f in by_source[source]["faces"]]).reshape(-1, 4)
        pairs = greedy_match(boxes[~ignore], dets, MATCH_IOU)
        used = {d for _, d in pairs}
        near_ignored = (iou_matrix(dets, boxes[ignore]) >= MATCH_IOU).any(axis=1)
        unmatched = [d for d in range(len(dets)) if d not in used and not near_ignored[d]]
        matched += len(pairs)
        total += int((~ignore).sum())
        false_pos += len(unmatched)
        print(f"  dlib {source}: {len(pairs)}/{int((~ignore).sum())} found, {len(unmatched)} FP")
    return {"matched": matched, "boxes": total, "false_positives": false_pos}


def dump_one_item_per_line(golden: dict) -> str:
    """Compact JSON with one line per item, so a regenerated file diffs item by item."""
    head = {k: v for k, v in golden.items() if k != "items"}
    lines = [json.dumps(head, separators=(",", ":"))[:-1] + ',"items":[']
    items = [json.dumps(item, separators=(",", ":")) for item in golden["items"]]
    lines.append(",\n".join(items))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON to write")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    mtcnn = MTCNN(
        keep_all=True,
        min_face_size=PARAMS["min_face_size"],
        thresholds=PARAMS["thresholds"],
        factor=PARAMS["scale_factor"],
        post_process=False,
        device="cpu",
    )
    items = []
    start = time.perf_counter()
    for source, frame, resize_wh, bgr in iter_inputs(args.data):
        faces = detect(mtcnn, bgr)
        items.append(
            {
                "source": source,
                "frame": frame,
                "resize_wh": list(resize_wh) if resize_wh else None,
                "image_hw": list(bgr.shape[:2]),
                "bgr_md5": hashlib.md5(np.ascontiguousarray(bgr).tobytes()).hexdigest(),
                "faces": faces,
            }
        )
        where = source if frame is None else f"{source}#{frame}"
        print(f"{where}: {bgr.shape[1]}x{bgr.shape[0]}, {len(faces)} faces")

    recall = dlib_recall(args.data, items)
    golden = {
        "generator": (
            f"facenet-pytorch {version('facenet-pytorch')} MTCNN, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__} (compiled NMS), opencv {cv2.__version__}"
        ),
        "params": PARAMS,
        "inputs": (
            "cv2.imread(IMREAD_COLOR) or cv2.VideoCapture frames, BGR uint8; resize_wh frames "
            "resized with cv2.resize(INTER_AREA); the reference gets them as RGB"
        ),
        "landmark_order": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
        "dlib_recall": recall,
        "items": items,
    }
    args.out.write_text(dump_one_item_per_line(golden))
    n_faces = sum(len(item["faces"]) for item in items)
    print(
        f"{len(items)} items, {n_faces} faces "
        f"in {time.perf_counter() - start:.1f} s -> {args.out}\n"
        f"dlib recall: {recall['matched']}/{recall['boxes']} at IoU >= {MATCH_IOU}, "
        f"{recall['false_positives']} false positives"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
