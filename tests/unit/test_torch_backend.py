"""The torch backend on the CPU: exported MTCNN programs give the default backend's detections."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from engines.base import EngineError
from engines.boxes import iou_matrix
from engines.images import read_image
from engines.mtcnn import MTCNN
from tests.conftest import MODELS, REPO

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def exported(shared_data, tmp_path_factory):
    """models/mtcnn copied to a temporary folder, with pnet/rnet/onet.pt2 beside the ONNX."""
    from training.export_torch import export_mtcnn

    folder = tmp_path_factory.mktemp("mtcnn")
    for name in ("pnet", "rnet", "onet"):
        for suffix in (".onnx", ".json"):
            shutil.copy(MODELS / "mtcnn" / f"{name}{suffix}", folder)
    diffs = export_mtcnn(shared_data / "weights" / "mtcnn", folder)
    return folder, diffs


def test_export_matches_onnx_runtime(exported):
    folder, diffs = exported
    assert set(diffs) == {"pnet", "rnet", "onet"}
    assert max(diffs.values()) <= 1e-4
    assert all((folder / f"{n}.pt2").is_file() for n in diffs)


def test_engine_specs_and_dynamic_shapes(exported):
    from engines.torch_backend import TorchEngine

    folder, _ = exported
    pnet = TorchEngine(folder / "pnet.onnx", device="cpu")
    assert [s.name for s in pnet.inputs] == ["image"]
    assert [s.name for s in pnet.outputs] == ["reg", "prob"]
    assert pnet.inputs[0].shape == (None, 3, None, None)
    for shape in [(1, 3, 12, 12), (5, 3, 13, 31), (2, 3, 100, 60)]:
        out = pnet.infer({"image": np.zeros(shape, np.float32)})
        assert out["prob"].shape[:2] == (shape[0], 2) and out["reg"].shape[1] == 4
    onet = TorchEngine(folder / "onet.pt2", device="cpu")
    assert onet.inputs[0].shape == (None, 3, 48, 48)
    out = onet.infer({"image": np.zeros((1, 3, 48, 48), np.float32)})
    assert out["landmarks"].shape == (1, 10)
    with pytest.raises(EngineError, match="missing inputs"):
        onet.infer({})


def test_mtcnn_on_torch_gives_the_default_backends_detections(exported, shared_data):
    folder, _ = exported
    image = read_image(str(shared_data / "images" / "multiface.jpg"))
    ours = MTCNN.load(folder, backend="torch", threads=2).detect([image])[0]
    ref = MTCNN.load(MODELS / "mtcnn", threads=2).detect([image])[0]
    assert len(ours) == len(ref) == 6
    assert np.all(iou_matrix(ref.bbox_xyxy, ours.bbox_xyxy).max(axis=1) >= 0.9)
    assert np.abs(np.sort(ours.score) - np.sort(ref.score)).max() < 1e-3


def test_missing_program_or_fp16_on_cpu_is_a_clear_error(tmp_path, exported):
    from engines.torch_backend import TorchEngine

    with pytest.raises(EngineError, match=r"x\.pt2: exported program not found"):
        TorchEngine(tmp_path / "x.onnx")
    folder, _ = exported
    with pytest.raises(EngineError, match="fp16 needs a CUDA device"):
        TorchEngine(folder / "rnet.onnx", device="cpu", fp16=True)
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(EngineError, match="cannot load the exported program"):
        TorchEngine(tmp_path / "bad.pt2", device="cpu")


def test_engines_stay_torch_free_until_the_torch_backend_is_chosen():
    code = (
        "import sys, engines, engines.build, engines.tensorrt, engines.torch_backend, "
        "engines.trt_build, daemon.engines_cli; print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "False"


def test_device_pipeline_gives_the_cpu_paths_faces_on_video_frames(exported, shared_data):
    """Frames on the torch engines' device (here the CPU): pyramid, P-Net cells, integral
    images, crops and networks there, boxes on the host: the same faces as the default path,
    for a batch of frames of two sizes and for the search around known faces."""
    import cv2

    from engines.detectors import load_detector
    from engines.torch_mtcnn import DeviceMTCNN

    folder, _ = exported
    capture = cv2.VideoCapture(str(shared_data / "videos" / "crowd_1080p.mp4"))
    crowd = [capture.read()[1] for _ in range(2)]
    capture.release()
    frames = [cv2.resize(f, (1280, 720), interpolation=cv2.INTER_AREA) for f in crowd]
    frames.append(read_image(str(shared_data / "images" / "multiface.jpg")))
    device = load_detector(folder, backend="torch", threads=2, border="clip")
    assert isinstance(device, DeviceMTCNN)
    cpu = MTCNN.load(MODELS / "mtcnn", threads=2, border="clip")
    found = cpu.detect(frames)
    assert sum(len(f) for f in found) > 20
    for ours, ref in zip(device.detect(frames), found, strict=True):
        assert len(ours) == len(ref)
        iou = iou_matrix(ref.bbox_xyxy, ours.bbox_xyxy)
        assert iou.max(axis=1).min() >= 0.9
        best = iou.argmax(axis=1)
        assert np.abs(ours.landmarks[best] - ref.landmarks).max() <= 2.0
    # two lanes: the largest levels cut into bands, which the device pipeline takes too
    laned = load_detector(folder, backend="torch", threads=2, lanes=2, border="clip")
    ours = laned.detect(frames[:1])[0]
    assert len(ours) == len(found[0])
    assert iou_matrix(found[0].bbox_xyxy, ours.bbox_xyxy).max(axis=1).min() >= 0.9
    priors = [found[0].bbox_xyxy, None, None]
    around = device.detect(frames, priors=priors)[0]
    assert len(around) == len(cpu.detect(frames, priors=priors)[0]) >= len(found[0]) - 2
