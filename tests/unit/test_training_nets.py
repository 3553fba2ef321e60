"""Inception-ResNet-v1 keeps facenet-pytorch's parameter names and computes the same."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.facenet_nets import InceptionResnetV1, build_model, load_pretrained  # noqa: E402


def _facenet_pytorch_model_module():
    """facenet_pytorch.models.inception_resnet_v1 without the package __init__, which
    needs torchvision for its MTCNN (unused here)."""
    if "facenet_pytorch" in sys.modules:
        return importlib.import_module("facenet_pytorch.models.inception_resnet_v1")
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.origin is None:
        pytest.skip(
            "facenet-pytorch is not installed (pip install --no-deps facenet-pytorch==2.6.0)"
        )
    try:
        import requests  # noqa: F401
    except ImportError:
        pytest.skip("facenet-pytorch's InceptionResnetV1 module needs `requests`")
    package = types.ModuleType("facenet_pytorch")
    package.__path__ = [str(Path(spec.origin).parent)]
    sys.modules["facenet_pytorch"] = package
    try:
        return importlib.import_module("facenet_pytorch.models.inception_resnet_v1")
    finally:  # leave no stub behind for other tests
        for name in [n for n in sys.modules if n.split(".")[0] == "facenet_pytorch"]:
            del sys.modules[name]


@pytest.mark.parametrize("classify", [False, True])
def test_facenet_pytorch_state_dict_loads_strictly_and_agrees(classify: bool) -> None:
    reference_module = _facenet_pytorch_model_module()
    torch.manual_seed(0)
    reference = reference_module.InceptionResnetV1(
        pretrained=None, classify=classify, num_classes=7 if classify else None
    )
    # random batch-norm statistics, so a mix-up of buffers would show
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    ours = InceptionResnetV1(
        embedding_size=512, num_classes=7 if classify else None, classify=classify
    )
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        expected, got = reference.eval()(x), ours.eval()(x)
    assert torch.allclose(expected, got, atol=1e-5)


def test_embeddings_are_unit_length_with_the_asked_size() -> None:
    torch.manual_seed(0)
    net = build_model(embedding_size=64).eval()
    with torch.no_grad():
        emb = net(torch.randn(3, 3, 80, 80))
    assert emb.shape == (3, 64)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)


def test_pretrained_with_other_embedding_size_skips_only_the_head(tmp_path) -> None:
    torch.manual_seed(0)
    source = InceptionResnetV1(embedding_size=512)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = build_model(embedding_size=128)
    skipped = load_pretrained(target, tmp_path / "w.pt")
    resized = {
        k
        for k, v in target.state_dict().items()
        if k.startswith(("last_linear", "last_bn")) and v.dim()
    }
    assert set(skipped) == resized
    assert torch.equal(target.conv2d_1a.conv.weight, source.conv2d_1a.conv.weight)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="keep_probability"):
        InceptionResnetV1(keep_probability=0.0)
    with pytest.raises(ValueError, match="unknown model_def 'resnet'"):
        build_model("resnet")
