"""The ONNX Runtime backend (CPU by default)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineError, SpecsFromLoad, TensorSpec, sdk_import_error

logger = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
}


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, with its telemetry off for this process. From 1.29 its
    Linux builds send Microsoft a usage event as a process starts it, then events of its
    sessions, models and errors, keyed by a device id they keep in
    ``~/.cache/Microsoft/DeveloperTools`` (with a queue of the events not sent yet): a
    face-recognition daemon must not tell a third party when and how it runs.
    ``ORT_DISABLE_TELEMETRY=1``, read once, as the process first starts ONNX Runtime, turns
    all of it off, so every import of it in facewatch goes through here (a value set in the
    environment is kept: a user may opt in). ImportError when it is not installed."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(str(arg.name), shape, _ORT_TYPES.get(arg.type, str(arg.type)))


class OrtEngine(SpecsFromLoad):
    """Runs one ONNX model with ONNX Runtime.

    ``threads`` is the intra-op thread count (0 lets ONNX Runtime choose); inter-op
    parallelism stays at 1 because the scheduler already runs one model at a time.
    """

    def __init__(
        self, model_path: str | Path, threads: int = 0, providers: list[str] | None = None
    ) -> None:
        try:
            ort = import_onnxruntime()
        except ImportError as exc:  # installed but broken, most often (a core dependency)
            raise sdk_import_error("onnxruntime", "onnxruntime", exc) from exc
        path = Path(model_path)
        if not path.is_file():
            raise EngineError(f"{path}: model file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # its threads do not busy-wait after a run: the scheduler runs one model at a time
        # with Python between, so spinning bought nothing and took a core from the detector
        # (FaceNet fp32 in the daemon: 49 ms of CPU a frame instead of 34, bench/README.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No memory arena: it keeps the peak of every batch size seen (FaceNet after a batch
        # of 64: +630 MB resident with it, +270 MB without; bench/README.md, "memory").
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        try:
            self._session: Any = ort.InferenceSession(
                str(path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several private exception types
            raise EngineError(f"{path}: ONNX Runtime cannot load the model: {exc}") from None
        self.path = path
        self._inputs = [_spec(a) for a in self._session.get_inputs()]
        self._outputs = [_spec(a) for a in self._session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]
        logger.debug("loaded %s with %d threads", path, threads)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._session = None
