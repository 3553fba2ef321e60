"""Run models: engines (ONNX Runtime, TensorRT) and the model adapters on top of them.

Imports only numpy, opencv and the optional runtime each backend wraps; never torch or daemon.
"""

from engines.base import Engine, EngineError, ModelMetadata, TensorSpec
from engines.loader import BACKENDS, load_engine

__all__ = ["BACKENDS", "Engine", "EngineError", "ModelMetadata", "TensorSpec", "load_engine"]
