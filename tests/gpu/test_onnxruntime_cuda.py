"""MTCNN on ONNX Runtime's CUDA provider gives the CPU path's detections."""

from __future__ import annotations

import numpy as np
import pytest

from engines.boxes import iou_matrix
from engines.images import read_image
from engines.mtcnn import MTCNN
from tests.conftest import MODELS
from tests.gpu import gpu_helpers as h


def test_cuda_provider_matches_cpu(shared_data):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)")
    from engines.ort import OrtEngine

    engines = {
        n: OrtEngine(MODELS / "mtcnn" / f"{n}.onnx", providers=["CUDAExecutionProvider"])
        for n in ("pnet", "rnet", "onet")
    }
    image = read_image(str(shared_data / "images" / "multiface.jpg"))
    gpu = MTCNN(**engines).detect([image])[0]
    cpu = MTCNN.load(MODELS / "mtcnn", backend=h.CPU_REFERENCE).detect([image])[0]
    assert len(gpu) == len(cpu)
    assert np.all(iou_matrix(cpu.bbox_xyxy, gpu.bbox_xyxy).max(axis=1) >= 0.9)
