"""Backend selection: one key per backend, each imported only when chosen."""

from __future__ import annotations

from pathlib import Path

from engines.base import Engine, EngineError

BACKENDS = ("onnxruntime", "opencv", "tensorrt")


def load_engine(model_path: str | Path, backend: str = "onnxruntime", threads: int = 0) -> Engine:
    """Open ``model_path`` on ``backend``. A missing SDK or file is one clear EngineError."""
    if backend == "onnxruntime":
        from engines.ort import OrtEngine

        return OrtEngine(model_path, threads=threads)
    if backend == "opencv":
        from engines.opencv_dnn import OpenCVEngine

        return OpenCVEngine(model_path, threads=threads)
    if backend == "tensorrt":
        raise EngineError(
            "backend 'tensorrt' is not available in this build yet; use backend: onnxruntime"
        )
    raise EngineError(f"unknown engine backend {backend!r}; expected one of {', '.join(BACKENDS)}")
