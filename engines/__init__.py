"""Run models: the engines and the MTCNN and FaceNet adapters on top of them.

Backends (``BACKENDS``): ``openvino`` (the config's default), ``opencv`` and ``onnxruntime``
on the CPU; ``tensorrt`` and ``torch`` for an NVIDIA GPU. Imports only numpy and opencv; each
backend's runtime (OpenVINO, ONNX Runtime, TensorRT, PyTorch) is imported inside its own
modules when that backend is chosen, so the daemon installs and runs without torch.
Never imports daemon or training.
"""

from engines.base import Engine, EngineError, ModelMetadata, TensorSpec
from engines.loader import BACKENDS, load_engine

__all__ = ["BACKENDS", "Engine", "EngineError", "ModelMetadata", "TensorSpec", "load_engine"]
