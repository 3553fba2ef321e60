"""A FaceNet model the tests make themselves, in facenet-pytorch's format (the shipped model is
dlib's converted ResNet, another architecture).

facenet-pytorch's ``InceptionResnetV1`` with random weights (seed 0) and batch-norm
statistics measured on real faces, saved as a state dict (as facenet-pytorch publishes its
weights) and exported through ``training.export_facenet``, as a user imports those. It tells faces apart only by accident: tests on it check
mechanics; accuracy tests need the shipped model.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from engines.facenet import FacePick
    from engines.mtcnn import FrameDetections

NEEDS_SHIPPED_MODEL = "needs the shipped recognition model (models/facenet/facenet.onnx)"
MODEL_NAME = "facenet-test-random"


def facenet_pytorch_class() -> Any | None:
    """facenet_pytorch's InceptionResnetV1 class, imported without the package ``__init__``
    (which needs torchvision for its MTCNN); None when facenet-pytorch is not installed."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.origin is None:
        return None
    owned = "facenet_pytorch" not in sys.modules
    if owned:
        stub = types.ModuleType("facenet_pytorch")
        stub.__path__ = [str(Path(spec.origin).parent)]
        sys.modules["facenet_pytorch"] = stub
    try:
        return importlib.import_module(
            "facenet_pytorch.models.inception_resnet_v1"
        ).InceptionResnetV1
    except ImportError:
        return None
    finally:
        if owned:
            for name in [n for n in sys.modules if n.split(".")[0] == "facenet_pytorch"]:
                del sys.modules[name]


def _network() -> Any:
    """Inception-ResNet-v1 in eval mode: facenet-pytorch's own class when installed, else
    training.facenet_nets' copy (same parameter names)."""
    cls = facenet_pytorch_class()
    if cls is not None:
        return cls(pretrained=None).eval()
    from training.facenet_nets import InceptionResnetV1

    return InceptionResnetV1(embedding_size=512).eval()


def _settle_batch_norm(net: Any, data: Path | None) -> None:
    """Batch-norm statistics measured on real faces (centre crops of LFW photos), so the
    random network spreads faces apart instead of mapping all of them to nearly one point;
    random statistics when the photos are absent."""
    import numpy as np
    import torch

    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
    photos = sorted((data / "lfw" / "images").glob("*/*_0001.jpg"))[:48] if data else []
    if not photos:
        for module in norms:
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
        return
    import cv2

    crops = np.stack([cv2.imread(str(p))[45:205, 45:205, ::-1] for p in photos])
    x = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))).float()
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # a plain average over the batch
    net.train()
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    with torch.no_grad():
        net((x - 127.5) / 128.0)
    for module in norms:
        module.momentum = 0.1
    net.eval()


def reference_network(model: Path) -> Any:
    """The PyTorch network exported as ``model`` (by ``build_test_model``), eval mode."""
    torch = pytest.importorskip("torch")
    net = _network()
    state = torch.load(model.parent / "random.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def build_test_model(folder: Path, data: Path | None = None, torch_program: bool = False) -> Path:
    """``folder/facenet.onnx`` (+ sidecar), exported once per folder; returns its path.
    ``data``: the shared data folder, whose LFW photos settle the batch-norm statistics.
    ``torch_program``: the ``.pt2`` beside it too (the torch backend's file)."""
    out = folder / "facenet.onnx"
    if out.is_file():
        return out
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from training.export_facenet import export_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _network()
    _settle_batch_norm(net, data)
    torch.save(net.state_dict(), folder / "random.pt")  # as facenet-pytorch's weights come
    export_checkpoint(
        folder / "random.pt",
        out,
        name=MODEL_NAME,
        command="tests",
        training_data="none (random weights)",
        torch_program=torch_program,
    )
    return out


def every_face(frames: list[Any], detections: list[FrameDetections]) -> list[FacePick]:
    """Each face of each frame, frame by frame, as the daemon's scheduler hands them to
    ``FaceNet.embed_picks`` (it picks the faces its tracks want)."""
    return [(f, d, k) for f, d in zip(frames, detections, strict=True) for k in range(len(d))]
