"""The OpenVINO backend: runs ONNX models with Intel's OpenVINO runtime on the CPU.

On x86 CPUs (AVX2 / AVX-512, Intel or AMD) OpenVINO's convolutions are about twice as fast
as OpenCV DNN's and ONNX Runtime's on MTCNN's small layers (bench/README.md). The model
keeps its dynamic dimensions: OpenVINO prepares each new input shape on its first call and
reuses that work afterwards, so a camera's fixed pyramid sizes cost a slow first frame only.

Inference is in float32 unless ``precision="bf16"`` is asked for (OpenVINO would otherwise
pick bf16 by itself on CPUs that have it, which moves MTCNN's boxes and scores). bf16 needs a
CPU with native bf16 (AVX512_BF16 or AMX): FaceNet's embeddings then run about twice as fast,
within a cosine of about 0.999 of float32 (bench/README.md). One infer request per
engine: not thread-safe, one thread per engine, which is how the detector's lanes and the
scheduler use engines.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineError, SpecsFromLoad, TensorSpec, sdk_import_error

logger = logging.getLogger(__name__)

_OV_TYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64", "u8": "uint8"}


# the lines of OpenVINO's errors that say where in its C++ sources it raised them
_SOURCE_LINE = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)$")


def _said(exc: Exception) -> str:
    """OpenVINO's error in one line, without the lines of its C++ sources it passed through
    ('Exception from src/inference/src/cpp/core.cpp:84:' ...): what is wrong, as 'Model
    can't be parsed' (its whole text when that is all it holds)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [line for line in lines if not _SOURCE_LINE.match(line)]
    return " ".join(kept or lines)


def _spec(port: Any) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    dtype = port.get_element_type().get_type_name()
    return TensorSpec(port.get_any_name(), shape, _OV_TYPES.get(dtype, dtype))


def import_openvino() -> Any:
    """The ``openvino`` module, with its usage telemetry declined for this process. Its
    import sends an event to Google Analytics and writes a client id into ``~/intel``
    unless the user ran OpenVINO's ``opt_in_out --opt_out`` (no consent file counts as
    consent): a face-recognition daemon must not tell a third party when it starts. Nothing
    is written outside the process; ImportError when openvino is not installed."""
    try:
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:  # (openvino without its telemetry package: nothing to decline)
        pass
    else:

        def declined(*args: object, **kwargs: object) -> Any:
            return opt_in_checker.ConsentCheckResult.DECLINED

        opt_in_checker.OptInChecker.check = declined
    import openvino

    return openvino


@functools.cache
def _core() -> Any:
    """One OpenVINO runtime per process, shared by every engine (each Core starts its own
    plugin and thread pools)."""
    return import_openvino().Core()


def cpu_has_bf16() -> bool:
    """Whether OpenVINO can run bf16 natively on this CPU (AVX512_BF16 or AMX)."""
    try:
        return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no openvino, or a plugin that cannot say
        return False


def _precision_hint(precision: str) -> str:
    if precision == "fp32":
        return "f32"
    if precision != "bf16":
        raise EngineError(f"the openvino backend runs fp32 or bf16, not {precision!r}")
    if not cpu_has_bf16():
        raise EngineError(
            "precision bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX), which this one "
            "lacks: use fp32"
        )
    return "bf16"


class OpenVinoEngine(SpecsFromLoad):
    """One ONNX model compiled for OpenVINO's CPU plugin.

    ``threads`` is the number of inference threads (0 lets OpenVINO choose); ``precision``
    is fp32 or bf16.
    """

    def __init__(self, model_path: str | Path, threads: int = 0, precision: str = "fp32") -> None:
        try:
            import_openvino()
        except ImportError as exc:
            raise sdk_import_error("openvino", "openvino", exc) from exc
        path = Path(model_path)
        if not path.is_file():
            raise EngineError(f"{path}: model file not found")
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _precision_hint(precision),
            "NUM_STREAMS": 1,
            # Pinned, the one-thread engines of the detector's lanes all ran on the same
            # core: two lanes were 1.4x slower than one instead of 1.25x faster.
            "ENABLE_CPU_PINNING": False,
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = _core()
            compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError and private types
            raise EngineError(f"{path}: OpenVINO cannot load the model: {_said(exc)}") from None
        self.path = path
        self._compiled: Any = compiled
        self._request: Any = compiled.create_infer_request()
        self._inputs = [_spec(port) for port in compiled.inputs]
        self._outputs = [_spec(port) for port in compiled.outputs]
        self._input_names = {spec.name for spec in self._inputs}
        self._first_call()
        logger.debug("loaded %s on OpenVINO with %d threads", path, threads)

    def _first_call(self) -> None:
        """One inference on zeros, here in the loading thread. OpenVINO's Python bindings
        initialise shared state on the first inference of the process, and two threads
        making that first call at once (the detector's lanes) can deadlock: a daemon hung
        at start-up about once in six starts on a loaded 2-core machine."""
        feeds = {
            spec.name: np.zeros(
                [
                    d if d is not None else (1 if axis == 0 else 48)
                    for axis, d in enumerate(spec.shape)
                ],
                spec.dtype,
            )
            for spec in self._inputs
        }
        self.infer(feeds)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = set(feeds) - self._input_names
        if unknown:
            raise EngineError(
                f"{self.path}: unknown inputs {sorted(unknown)}; "
                f"the model has {sorted(self._input_names)}"
            )
        if any(len(value) == 0 for value in feeds.values()):
            return {spec.name: np.zeros((0,), np.float32) for spec in self._outputs}
        try:
            self._request.infer(
                {name: np.ascontiguousarray(v) for name, v in feeds.items()}, share_inputs=True
            )
        except Exception as exc:
            raise EngineError(f"{self.path}: OpenVINO inference failed: {_said(exc)}") from None
        # Copies: the request's output buffers are reused by the next call.
        return {
            spec.name: np.array(self._request.get_tensor(spec.name).data) for spec in self._outputs
        }

    def close(self) -> None:
        self._request = None
        self._compiled = None
