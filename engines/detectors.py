"""The face detector that suits a backend.

``MTCNN.load`` runs the networks on any backend and the rest (pyramid, crops) on the host;
with the torch backend ``load_detector`` gives the pipeline that keeps frames on the
engines' device instead (``engines.torch_mtcnn``; torch is imported only then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.mtcnn import MTCNN


def load_detector(models_dir: str | Path, backend: str = "openvino", **kwargs: Any) -> MTCNN:
    """``MTCNN.load(models_dir, backend, **kwargs)``, or for ``backend="torch"`` the same
    detector with its frames kept on the device (``DeviceMTCNN``)."""
    if backend == "torch":
        from engines.torch_mtcnn import DeviceMTCNN

        return DeviceMTCNN.load(models_dir, backend=backend, **kwargs)
    return MTCNN.load(models_dir, backend=backend, **kwargs)
