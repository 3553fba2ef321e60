"""The OpenCV DNN backend: runs ONNX models with cv2.dnn on the CPU.

OpenCV's convolutions are much faster than ONNX Runtime's on MTCNN's narrow layers
(3 -> 10 -> 16 -> 32 channels over a whole frame): P-Net on a 1153x649 pyramid level
takes about a quarter of the time (bench/bench_mtcnn.py). Not thread-safe: one thread
per engine, which is how the scheduler uses engines anyway.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines.base import EngineError, ModelMetadata, SpecsFromLoad, TensorSpec

logger = logging.getLogger(__name__)


class OpenCVEngine(SpecsFromLoad):
    """One ONNX model on cv2.dnn. Input and output names come from the model's sidecar."""

    def __init__(self, model_path: str | Path, threads: int = 0) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise EngineError(f"{path}: model file not found")
        if int(cv2.__version__.split(".")[0]) < 5:  # 4.x reads R-Net's Gemm wrongly
            raise EngineError(
                f"the opencv backend needs OpenCV 5 (this is {cv2.__version__}, whose DNN "
                "misreads MTCNN's ONNX): pip install 'opencv-python-headless>=5', or use "
                "the openvino or onnxruntime backend"
            )
        meta = ModelMetadata.load(path)
        if not meta.outputs:
            raise EngineError(
                f"{path}: the sidecar lists no outputs; the opencv backend needs them"
            )
        try:
            self._net: Any = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise EngineError(f"{path}: OpenCV DNN cannot load the model: {exc}") from None
        if threads > 0:
            cv2.setNumThreads(threads)
        self.path = path
        hw = meta.input_size_hw
        self._inputs = [TensorSpec("image", (None, 3, *(hw or (None, None))), "float32")]
        self._outputs = [TensorSpec(name, (None,), "float32") for name in meta.outputs]
        self._output_names = list(meta.outputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (name, value), *rest = feeds.items()
        if rest or name != "image":
            raise EngineError(f"{self.path}: expected one input named 'image', got {list(feeds)}")
        if len(value) == 0:
            return {out: np.zeros((0,), np.float32) for out in self._output_names}
        self._net.setInput(np.ascontiguousarray(value, dtype=np.float32))
        results = self._net.forward(self._output_names)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._net = None
