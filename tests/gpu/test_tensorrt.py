"""TensorRT plans built by engines.build give the CPU path's detections and embeddings."""

from __future__ import annotations

import pytest

from engines.build import BuildOptions
from engines.mtcnn import MTCNN
from engines.trt_build import build_engine
from tests.conftest import MODELS
from tests.gpu import gpu_helpers as h

pytest.importorskip(
    "tensorrt", reason="TensorRT is not installed (pip install from pypi.nvidia.com)"
)
pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")

RNET_BATCH = (1, 256, 4096)
ONET_BATCH = (1, 64, 1024)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("plans")


def build_mtcnn(cache, images, precision="fp32"):
    from engines.tensorrt import TensorRTEngine

    cams = tuple({im.shape[:2] for im in images})
    plans = {
        "pnet": build_engine(
            MODELS / "mtcnn" / "pnet.onnx",
            BuildOptions(precision, (1, 1, len(images)), cams),
            cache,
        ),
        "rnet": build_engine(
            MODELS / "mtcnn" / "rnet.onnx", BuildOptions(precision, RNET_BATCH), cache
        ),
        "onet": build_engine(
            MODELS / "mtcnn" / "onet.onnx", BuildOptions(precision, ONET_BATCH), cache
        ),
    }
    return MTCNN(**{n: TensorRTEngine(p) for n, p in plans.items()})


def test_mtcnn_plans_match_cpu(cache, shared_data):
    images = h.sample_images(shared_data)
    cpu = MTCNN.load(MODELS / "mtcnn", backend=h.CPU_REFERENCE, threads=8).detect(images)
    detector = build_mtcnn(cache, images)
    assert not h.same_detections(cpu, detector.detect(images))
    assert not h.same_detections(cpu, [detector.detect([im])[0] for im in images])


def test_plan_cache_is_reused(cache):
    options = BuildOptions("fp32", ONET_BATCH)
    first = build_engine(MODELS / "mtcnn" / "onet.onnx", options, cache)
    mtime = first.stat().st_mtime_ns
    assert build_engine(MODELS / "mtcnn" / "onet.onnx", options, cache) == first
    assert first.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(("precision", "threshold"), [("fp32", 0.999), ("fp16", 0.995)])
def test_facenet_plan_embeddings_match_cpu(cache, shared_data, tmp_path, precision, threshold):
    from engines.tensorrt import TensorRTEngine

    crops = h.face_crops_rgb(shared_data, 64)
    onnx_path = h.standin_facenet_files(tmp_path, crops)
    x = h.to_input(crops)
    plan = build_engine(onnx_path, BuildOptions(precision, (1, 64, 512)), cache)
    engine = TensorRTEngine(plan)
    got = engine.infer({"image": x})["embedding"]
    assert h.min_cosine(h.cpu_embeddings(onnx_path, x), got) >= threshold


def test_int8_calibration_builds_and_writes_its_cache(cache, shared_data):
    options = BuildOptions(
        "int8", (1, 8, 64), calib_dir=str(shared_data / "images"), calib_images=16
    )
    plan = build_engine(MODELS / "mtcnn" / "onet.onnx", options, cache)
    assert plan.is_file() and list(cache.glob("onet-*.calib"))
