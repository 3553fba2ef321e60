"""The torch backend on CUDA gives the CPU path's detections and embeddings."""

from __future__ import annotations

import pytest

from engines.mtcnn import MTCNN
from tests.conftest import MODELS
from tests.facenet_model import every_face
from tests.gpu import gpu_helpers as h

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("torch sees no CUDA device", allow_module_level=True)


@pytest.fixture(scope="module")
def programs(shared_data, tmp_path_factory):
    return h.mtcnn_with_programs(tmp_path_factory.mktemp("mtcnn"), shared_data)


@pytest.fixture(scope="module")
def cpu_detections(shared_data):
    return MTCNN.load(MODELS / "mtcnn", backend=h.CPU_REFERENCE, threads=8).detect(
        h.sample_images(shared_data)
    )


@pytest.mark.parametrize("cuda_graphs", [False, True])
@pytest.mark.parametrize("pipeline", ["host", "device"])
def test_mtcnn_on_cuda_matches_cpu(programs, cpu_detections, shared_data, cuda_graphs, pipeline):
    """host: the networks on CUDA, the rest on the host; device: the frames stay on CUDA
    (engines.torch_mtcnn, what MTCNN.load(backend="torch") gives)."""
    from engines.torch_backend import TorchEngine
    from engines.torch_mtcnn import DeviceMTCNN

    nets = {
        n: TorchEngine(programs / f"{n}.pt2", device="cuda", cuda_graphs=cuda_graphs)
        for n in ("pnet", "rnet", "onet")
    }
    detector = (DeviceMTCNN if pipeline == "device" else MTCNN)(**nets)
    got = detector.detect(h.sample_images(shared_data))
    assert not h.same_detections(cpu_detections, got)
    again = detector.detect(h.sample_images(shared_data))  # graphs replayed, not captured
    assert not h.same_detections(cpu_detections, again)


@pytest.fixture(scope="module")
def facenet(shared_data, tmp_path_factory):
    crops = h.face_crops_rgb(shared_data, 64)
    onnx_path = h.standin_facenet_files(tmp_path_factory.mktemp("facenet"), crops)
    x = h.to_input(crops)
    return onnx_path, x, h.cpu_embeddings(onnx_path, x)


@pytest.mark.parametrize(
    ("fp16", "cuda_graphs", "threshold"),
    [(False, False, 0.999), (False, True, 0.999), (True, False, 0.995), (True, True, 0.995)],
)
def test_facenet_embeddings_on_cuda_match_cpu(facenet, fp16, cuda_graphs, threshold):
    from engines.torch_backend import TorchEngine

    onnx_path, x, ref = facenet
    engine = TorchEngine(onnx_path, device="cuda", fp16=fp16, cuda_graphs=cuda_graphs)
    for batch in (x, x[:5]):  # a full and a padded (graph) batch
        got = engine.infer({"image": batch})["embedding"]
        assert got.shape == (len(batch), 512)
        assert h.min_cosine(ref[: len(batch)], got) >= threshold


@pytest.fixture(scope="module")
def facenet_program(shared_data, tmp_path_factory):
    """The test FaceNet (random weights) as ONNX + .pt2, as `train export --torch-program`."""
    from tests.facenet_model import build_test_model

    return build_test_model(tmp_path_factory.mktemp("facenet-pt2"), shared_data, True)


@pytest.mark.parametrize(
    ("fp16", "cuda_graphs", "threshold"), [(False, False, 0.999), (True, True, 0.995)]
)
def test_facenet_crops_cut_on_cuda_match_the_cpu_path(
    programs, facenet_program, cpu_detections, shared_data, fp16, cuda_graphs, threshold
):
    """engines.torch_facenet: crops cut from the frames on CUDA, then the network there,
    against the host's OpenCV crops on ONNX Runtime; and with the device detector first, the
    frames go to CUDA once for both."""
    from engines.base import ModelMetadata
    from engines.facenet import FaceNet
    from engines.torch_backend import TorchEngine
    from engines.torch_facenet import DeviceFaceNet
    from engines.torch_frames import DEVICE_FRAMES
    from engines.torch_mtcnn import DeviceMTCNN

    images = h.sample_images(shared_data)
    picks = every_face(images, cpu_detections)
    ref = FaceNet.load(facenet_program, threads=8).embed_picks(picks)
    engine = TorchEngine(facenet_program, device="cuda", fp16=fp16, cuda_graphs=cuda_graphs)
    device = DeviceFaceNet(engine, ModelMetadata.load(facenet_program))
    got = device.embed_picks(picks)
    assert len(ref) >= 8
    assert got.shape == ref.shape
    assert h.min_cosine(ref, got) >= threshold
    nets = {n: TorchEngine(programs / f"{n}.pt2", device="cuda") for n in ("pnet", "rnet", "onet")}
    uploads = DEVICE_FRAMES.uploads
    found = DeviceMTCNN(**nets).detect(images)
    assert len(device.embed_picks(every_face(images, found))) == sum(len(f) for f in found)
    assert DEVICE_FRAMES.uploads - uploads == len(images)
