"""Shared by the GPU tests: real face crops, exported models, and the comparisons the issue sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from engines.boxes import iou_matrix
from engines.images import read_image
from engines.mtcnn import MTCNN, FrameDetections
from tests.conftest import MODELS

IMAGES = ("multiface.jpg", "two_people.jpg", "obama.jpg", "biden.jpg", "obama2.jpg", "obama3.jpg")
FACE_SIZE = 160
# The CPU path the GPU is compared with: ONNX Runtime, which the GPU machine has (OpenVINO,
# the daemon's CPU default, is not installed there: the first GPU run's references all failed)
CPU_REFERENCE = "onnxruntime"


def sample_images(shared_data: Path) -> list[np.ndarray]:
    return [read_image(str(shared_data / "images" / name)) for name in IMAGES]


def face_crops_rgb(shared_data: Path, count: int = 64) -> np.ndarray:
    """(count, 160, 160, 3) uint8 RGB crops of the faces the CPU detector finds (repeated)."""
    detector = MTCNN.load(MODELS / "mtcnn", backend=CPU_REFERENCE, threads=4)
    crops = []
    for image, found in zip(
        sample_images(shared_data), detector.detect(sample_images(shared_data)), strict=True
    ):
        h, w = image.shape[:2]
        for x1, y1, x2, y2 in found.bbox_xyxy.astype(int):
            crop = image[max(0, y1) : min(h, y2), max(0, x1) : min(w, x2)]
            if crop.size:
                crop = cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
                crops.append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
    reps = -(-count // len(crops))
    return np.stack((crops * reps)[:count])


def to_input(crops_rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB crops -> the FaceNet input (x - 127.5) / 128, NCHW float32."""
    x = (crops_rgb.astype(np.float32) - 127.5) / 128.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def mtcnn_with_programs(folder: Path, shared_data: Path) -> Path:
    """models/mtcnn's ONNX + sidecars copied to ``folder`` with the .pt2 programs beside them."""
    from training.export_torch import export_mtcnn

    for name in ("pnet", "rnet", "onet"):
        for suffix in (".onnx", ".json"):
            shutil.copy(MODELS / "mtcnn" / f"{name}{suffix}", folder)
    export_mtcnn(shared_data / "weights" / "mtcnn", folder)
    return folder


def standin_facenet_files(folder: Path, crops_rgb: np.ndarray) -> Path:
    """A stand-in Inception-ResNet-v1 (BatchNorm fitted to the crops) as ONNX + .pt2."""
    import torch

    from training.export_facenet import export_network
    from training.export_torch import standin_facenet

    net = standin_facenet(torch.from_numpy(to_input(crops_rgb[:32])))
    onnx_path = folder / "facenet.onnx"
    export_network(net, onnx_path)
    return onnx_path


def cpu_embeddings(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    from engines.ort import OrtEngine

    return OrtEngine(onnx_path, threads=8).infer({"image": x})["embedding"]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def same_detections(ref: list[FrameDetections], got: list[FrameDetections]) -> list[str]:
    """Problems, if any: a different face count, or a reference face without a match at IoU >= 0.9."""
    problems = []
    for i, (r, g) in enumerate(zip(ref, got, strict=True)):
        if len(r) != len(g):
            problems.append(f"image {i}: {len(g)} faces, CPU found {len(r)}")
        elif len(r) and iou_matrix(r.bbox_xyxy, g.bbox_xyxy).max(axis=1).min() < 0.9:
            problems.append(f"image {i}: a face moved (IoU < 0.9)")
    return problems
