"""The face detector and the FaceNet that suit a backend.

``MTCNN.load`` and ``FaceNet.load`` run the networks on any backend and the image side
(pyramid, crops) on the host; with the torch backend ``load_detector`` and ``load_facenet``
give the classes that keep the frames on the engines' device instead
(``engines.torch_mtcnn``, ``engines.torch_facenet``; torch is imported only then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.facenet import FaceNet
from engines.mtcnn import MTCNN


def load_detector(models_dir: str | Path, backend: str = "openvino", **kwargs: Any) -> MTCNN:
    """``MTCNN.load(models_dir, backend, **kwargs)``, or for ``backend="torch"`` the same
    detector with its frames kept on the device (``DeviceMTCNN``)."""
    if backend == "torch":
        from engines.torch_mtcnn import DeviceMTCNN

        return DeviceMTCNN.load(models_dir, backend=backend, **kwargs)
    return MTCNN.load(models_dir, backend=backend, **kwargs)


def load_facenet(model_path: str | Path, backend: str = "onnxruntime", **kwargs: Any) -> FaceNet:
    """``FaceNet.load(model_path, backend, **kwargs)``, or for ``backend="torch"`` the same
    model cutting its crops from the frames on the device (``DeviceFaceNet``)."""
    if backend == "torch":
        from engines.torch_facenet import DeviceFaceNet

        return DeviceFaceNet.load(model_path, backend=backend, **kwargs)
    return FaceNet.load(model_path, backend=backend, **kwargs)
