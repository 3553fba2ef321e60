"""Inception-ResNet-v1 keeps facenet-pytorch's parameter names and computes the same."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
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


def test_a_state_dict_of_another_network_is_refused(shared_data, tmp_path) -> None:
    net = build_model("inception_resnet_v1", 128, 0.8)
    with pytest.raises(ValueError, match=r"only 0 of this network's \d+ tensors"):
        load_pretrained(net, shared_data / "weights" / "mtcnn" / "pnet.pt")
    (tmp_path / "x.pt").write_bytes(b"\x08\x07not a pickle")
    with pytest.raises(ValueError, match=r"x\.pt: not a PyTorch checkpoint or state dict$"):
        load_pretrained(net, tmp_path / "x.pt")


def test_an_onnx_model_to_start_from_must_be_an_inception_resnet_facewatch_exported(
    tmp_path,
) -> None:
    from training.facenet_nets import ModelFileError
    from training.run_setup import start_from

    net = build_model("inception_resnet_v1", 128, 0.8)
    (tmp_path / "x.onnx").write_bytes(b"\x08\x07not a model")
    with pytest.raises(ModelFileError, match=r"x\.json: model sidecar missing"):
        start_from(net, tmp_path / "x.onnx")
    shipped = Path(__file__).resolve().parents[2] / "models" / "facenet" / "facenet.onnx"
    with pytest.raises(ModelFileError, match=r"facenet\.onnx: dlib's ResNet, not Inception-Res"):
        start_from(net, shipped)
    pnet = shipped.parents[1] / "mtcnn" / "pnet.onnx"
    with pytest.raises(ModelFileError, match=r"pnet\.onnx: not a FaceNet model"):
        start_from(net, pnet)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="keep_probability"):
        InceptionResnetV1(keep_probability=0.0)
    with pytest.raises(ValueError, match="unknown model_def 'resnet'"):
        build_model("resnet")


def test_weight_average_follows_tensorflows_formula() -> None:
    """After each step the averaged weights are TensorFlow's ExponentialMovingAverage with
    num_updates, decay_t = min(decay, (1 + t) / (10 + t)) (both sides of the min within
    three steps at decay 0.2), and the batch-norm statistics are copied, not averaged."""
    from training.checkpoint import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    average = WeightAverage(net, 0.2)
    expected = {k: v.detach().clone() for k, v in net.named_parameters()}
    for step in range(1, 4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net.train()(torch.randn(2, 3, 8, 8))  # moves the running statistics
        decay = min(0.2, (1 + step) / (10 + step))
        for k, p in net.named_parameters():
            expected[k] = decay * expected[k] + (1 - decay) * p.detach()
        average.update(net, step)
        got = dict(average.model.named_parameters())
        assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in expected), step
        copied = dict(average.model.named_buffers())
        assert all(torch.equal(copied[k], b) for k, b in net.named_buffers()), step


def test_the_gpu_settings_train_as_the_defaults_do() -> None:
    """What build_run turns on for CUDA, tried on the CPU: Inception-ResNet-v1 in channels-last
    layout gives the plain network's loss and gradients (in float64: in float32 the two
    summation orders differ by up to 5 % in the first layers' gradients, at batch 6), and
    the fused ADAM takes the plain ADAM's steps (three steps: the same losses)."""
    import torch.nn.functional as F

    from training.run_setup import make_optimizer

    torch.manual_seed(0)
    plain = build_model("inception_resnet_v1", 128, 0.8)
    images = torch.randn(6, 3, 80, 80)
    target = F.normalize(torch.randn(6, 128), dim=1)

    def loss_of(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return (1 - (F.normalize(net.train()(x), dim=1) * target.to(x.dtype)).sum(1)).mean()

    exact = copy.deepcopy(plain).double()
    fast = copy.deepcopy(exact).to(memory_format=torch.channels_last)
    wide = images.double()
    grads = []
    for net, x in ((exact, wide), (fast, wide.to(memory_format=torch.channels_last))):
        torch.manual_seed(1)  # the same dropout masks
        loss = loss_of(net, x)
        loss.backward()
        grads.append((loss.item(), {k: p.grad.clone() for k, p in net.named_parameters()}))
        net.zero_grad()
    (plain_loss, plain_grads), (fast_loss, fast_grads) = grads
    assert abs(plain_loss - fast_loss) < 1e-12
    for key, grad in plain_grads.items():
        assert torch.allclose(grad, fast_grads[key], rtol=1e-9, atol=1e-12), key

    runs = []
    for fused in (False, True):
        net = copy.deepcopy(plain)
        optimizer = make_optimizer("ADAM", net, 0.01, 1e-4, fused=fused)
        torch.manual_seed(1)
        losses = []
        for _ in range(3):
            loss = loss_of(net, images)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        runs.append(losses)
    assert np.allclose(runs[0], runs[1], atol=1e-5), runs
    assert runs[0][2] < runs[0][0]


def _tf1_steps(name: str, w: np.ndarray, grads: list[np.ndarray], lr: float) -> np.ndarray:
    """TensorFlow 1.x's update rules (training_ops), as the original's facenet.train set them
    up: AdamOptimizer(lr, 0.9, 0.999, 0.1), RMSPropOptimizer(lr, decay=0.9, momentum=0.9,
    epsilon=1.0), whose mean square starts at ones."""
    w, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    ms = np.ones_like(w)
    for t, g in enumerate(grads, 1):
        if name == "ADAM":
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            w -= lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 0.1)
        else:
            ms = 0.9 * ms + 0.1 * g * g
            m = 0.9 * m + lr * g / np.sqrt(ms + 1.0)
            w -= m
    return w


def _torch_steps(
    optimizer: torch.optim.Optimizer, w: torch.Tensor, grads: list[np.ndarray]
) -> None:
    for g in grads:
        optimizer.zero_grad()
        w.grad = torch.from_numpy(g.copy())
        optimizer.step()


@pytest.mark.parametrize(("name", "fused"), [("ADAM", False), ("ADAM", True), ("RMSPROP", False)])
def test_adam_and_rmsprop_step_as_tensorflow_1_did(name: str, fused: bool) -> None:
    """The same gradients give TF 1.x's weights, also across a resume from the optimizer's
    state (ADAM's epsilon depends on the steps taken). Before, torch's Adam added epsilon
    after the bias correction (its first step 29 times TF's with epsilon 0.1) and torch's
    RMSprop started at zeros with epsilon outside the root (15-30 % apart here)."""
    from training.run_setup import make_optimizer

    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(8, 16))
    grads = [rng.normal(scale=0.3, size=w0.shape) for _ in range(20)]
    expected = _tf1_steps(name, w0, grads, 0.01)

    net = torch.nn.Linear(16, 8, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(w0))
    first = make_optimizer(name, net, 0.01, 0.0, fused=fused)
    _torch_steps(first, net.weight, grads[:10])
    saved = copy.deepcopy(first.state_dict())
    resumed = make_optimizer(name, net, 0.01, 0.0, fused=fused)
    resumed.load_state_dict(saved)
    _torch_steps(resumed, net.weight, grads[10:])
    np.testing.assert_allclose(net.weight.detach().numpy(), expected, rtol=1e-9, atol=1e-12)


def _whole_module(path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), path)


def _truncated(path: Path) -> None:
    torch.save(torch.nn.Linear(64, 64).state_dict(), path)
    path.write_bytes(path.read_bytes()[:2000])


def _numpy_scalar(path: Path) -> None:
    torch.save({"model": {}, "options": {"lr": np.float64(0.1)}}, path)


@pytest.mark.parametrize(
    ("write", "says"),
    [
        (_whole_module, "holds Python objects besides tensors (torch.nn.modules.linear.Linear: "
         "a whole model saved with torch.save(model)?): save its state_dict() and use that"),
        (_truncated, "damaged or truncated (not a whole PyTorch file)"),
        (_numpy_scalar, "holds NumPy values besides tensors (numpy"),
    ],
)  # fmt: skip
def test_a_torch_file_it_cannot_read_says_why(tmp_path, write, says) -> None:
    from training.facenet_nets import ModelFileError, read_torch_file

    path = tmp_path / "x.pt"
    write(path)
    with pytest.raises(ModelFileError) as refused:
        read_torch_file(path)
    assert str(refused.value).startswith(f"{path}: {says}"), refused.value
    assert "weights_only" not in str(refused.value)  # no advice to load it unsafely
