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
from tests.facenet_model import every_face

torch = pytest.importorskip("torch")


@pytest.fixture
def exported(torch_mtcnn):
    """models/mtcnn copied to a temporary folder, with pnet/rnet/onet.pt2 beside the ONNX."""
    return torch_mtcnn


def test_programs_from_the_shipped_models_alone(tmp_path, shared_data, capsys):
    """A GPU box without facenet-pytorch's weights makes the MTCNN programs from the ONNX
    models that ship: the same weights, to the bit, as facenet-pytorch's state dicts."""
    from daemon.cli import main
    from training.onnx_weights import onnx_state

    for name in ("pnet", "rnet", "onet"):
        shipped = onnx_state(MODELS / "mtcnn" / f"{name}.onnx")
        original = torch.load(shared_data / "weights" / "mtcnn" / f"{name}.pt", weights_only=True)
        assert shipped.keys() == original.keys(), name
        assert all(torch.equal(shipped[k], original[k]) for k in original), name
        for suffix in (".onnx", ".json"):
            shutil.copy(MODELS / "mtcnn" / f"{name}{suffix}", tmp_path)
    models = [str(tmp_path / f"{name}.onnx") for name in ("pnet", "rnet", "onet")]
    assert main(["train", "torch-program", *models]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"wrote {tmp_path / name}.pt2" for name in ("pnet", "rnet", "onet")
    ]
    assert all(float(line.rsplit(" ", 1)[1]) <= 1e-5 for line in lines), lines
    assert main(["train", "torch-program", str(tmp_path / "absent.onnx")]) == 2
    assert "absent.onnx: no such model file" in capsys.readouterr().err


def test_facenet_program_from_the_onnx_alone(test_model, tmp_path, capsys):
    """`facewatch train torch-program` on an exported FaceNet (as the shipped one will be):
    the checkpoint's weights read back bit for bit, also from an fp16 export, and a program
    that ONNX Runtime agrees with. An export with BatchNorm folded is refused, by name."""
    from daemon.cli import main
    from tests.facenet_model import reference_network
    from training.export_facenet import export_checkpoint, export_onnx
    from training.facenet_nets import NormalisedEmbedding, build_model
    from training.onnx_weights import load_onnx_weights

    reference = reference_network(test_model)
    fp32 = tmp_path / "fp32" / "facenet.onnx"
    fp32.parent.mkdir()
    for suffix in (".onnx", ".json"):
        shutil.copy(test_model.with_suffix(suffix), fp32.with_suffix(suffix))
    fp16, _ = export_checkpoint(test_model.parent / "random.pt", tmp_path / "fp16.onnx", fp16=True)
    for onnx_path, exact in ((fp32, True), (fp16, False)):
        net = build_model("inception_resnet_v1", 512, 1.0)
        load_onnx_weights(NormalisedEmbedding(net), onnx_path)
        got, want = net.state_dict(), reference.state_dict()
        for key in (k for k in want if not k.endswith("num_batches_tracked")):
            expected = want[key] if exact else want[key].half().float()
            assert torch.equal(got[key], expected), (onnx_path.name, key)
    # (the program of an fp16 export: test_dlib_net.py's, of the shipped model, which is one)
    assert main(["train", "torch-program", str(fp32)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split(":")[0] == f"wrote {fp32.with_suffix('.pt2')}"
    assert float(line.rsplit(" ", 1)[1]) <= 1e-5, line

    folded = tmp_path / "folded.onnx"
    ours = build_model("inception_resnet_v1", 512, 1.0)
    ours.load_state_dict(reference.state_dict())
    export_onnx(ours.eval(), folded, 160, fold_batchnorm=True)
    shutil.copy(test_model.with_suffix(".json"), folded.with_suffix(".json"))
    assert main(["train", "torch-program", str(folded)]) == 2
    assert "export with BatchNorm folded into the convolutions" in capsys.readouterr().err


def test_export_matches_onnx_runtime(exported):
    folder, diffs = exported
    assert set(diffs) == {"pnet", "rnet", "onet"}
    assert max(diffs.values()) <= 1e-4
    assert all((folder / f"{n}.pt2").is_file() for n in diffs)


def test_engine_specs_and_dynamic_shapes(exported):
    """P-Net's one program runs every pyramid level: odd and even heights and widths (it was
    exported at 64x80), down to 12x12, each as ONNX Runtime computes it."""
    from engines.ort import import_onnxruntime
    from engines.torch_backend import TorchEngine

    ort = import_onnxruntime()

    folder, _ = exported
    pnet = TorchEngine(folder / "pnet.onnx", device="cpu")
    assert [s.name for s in pnet.inputs] == ["image"]
    assert [s.name for s in pnet.outputs] == ["reg", "prob"]
    assert pnet.inputs[0].shape == (None, 3, None, None)
    session = ort.InferenceSession(str(folder / "pnet.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 12, 12), (5, 3, 13, 31), (2, 3, 100, 60), (1, 3, 57, 14), (3, 3, 23, 23)]:
        image = rng.uniform(-1, 1, shape).astype(np.float32)
        out = pnet.infer({"image": image})
        reg, prob = session.run(["reg", "prob"], {"image": image})
        assert out["prob"].shape == prob.shape and out["reg"].shape == reg.shape, shape
        assert np.abs(out["prob"] - prob).max() < 1e-5 and np.abs(out["reg"] - reg).max() < 1e-5
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
        "import sys, engines, engines.build, engines.plan_cache, engines.tensorrt, engines.torch_backend, "
        "engines.trt_build, daemon.engines_cli; print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=300,
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
    # a frame smaller than the smallest face has no pyramid: no faces, as on the host
    assert [len(f) for f in device.detect([np.zeros((15, 15, 3), np.uint8), frames[0]])] == [
        0,
        len(found[0]),
    ]
    priors = [found[0].bbox_xyxy, None, None]
    around = device.detect(frames, priors=priors)[0]
    assert len(around) == len(cpu.detect(frames, priors=priors)[0]) >= len(found[0]) - 2


# -- FaceNet on the device ---------------------------------------------------------------

DEVICE_COSINE = 0.9999  # the device crops and the host's differ by at most 1 in a few pixels


@pytest.fixture
def facenet_program(torch_facenet):
    """The random-weight test FaceNet exported with ``torch_program``: ONNX + .pt2."""
    return torch_facenet


@pytest.fixture(scope="module")
def faces(shared_data, detector):
    """Frames with faces of many sizes (a crowd at 1080p, photos) and their detections."""
    import cv2

    names = ["images/obama.jpg", "images/two_people.jpg", "images/multiface.jpg"]
    frames = [read_image(str(shared_data / name)) for name in names]
    capture = cv2.VideoCapture(str(shared_data / "videos" / "crowd_1080p.mp4"))
    frames.append(capture.read()[1])
    capture.release()
    found = detector.detect(frames)
    assert sum(len(f) for f in found) >= 15
    return frames, found


def _with_sidecar(model, folder, **extra):
    """The model's ONNX, program and sidecar copied to ``folder``, sidecar extras changed."""
    import json

    for suffix in (".onnx", ".pt2", ".json"):
        shutil.copy(model.with_suffix(suffix), folder)
    sidecar = folder / model.with_suffix(".json").name
    meta = json.loads(sidecar.read_text())
    meta["extra"].update(extra)
    sidecar.write_text(json.dumps(meta))
    return folder / model.name


@pytest.mark.parametrize("alignment", ["margin", "similarity"])
def test_device_crops_are_the_host_crops(facenet_program, faces, tmp_path, alignment):
    """The crops cut on the device (sampling grids over the uploaded frame) are the host's
    OpenCV crops: faces small and large, at the frame's edge, both alignments."""
    from engines.detectors import load_facenet
    from engines.facenet import FaceNet
    from engines.torch_facenet import DeviceFaceNet

    model = _with_sidecar(facenet_program, tmp_path, alignment=alignment)
    host = FaceNet.load(model, threads=2)
    device = load_facenet(model, backend="torch", threads=2)
    assert isinstance(device, DeviceFaceNet)
    frames, found = faces
    picks = every_face(frames, found)
    cut = device.crops(picks).permute(0, 2, 3, 1).flip(3).numpy()  # RGB NCHW -> BGR NHWC
    expected = np.concatenate([host.align(f, d, [k]) for f, d, k in picks])
    difference = np.abs(cut.astype(np.int16) - expected.astype(np.int16))
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.01


@pytest.mark.parametrize(
    "extra, flip",
    [({}, False), ({}, True), ({"prewhiten": True}, False), ({"alignment": "similarity"}, False)],
    ids=["margin", "flip", "prewhiten", "similarity"],
)
def test_device_facenet_gives_the_host_paths_embeddings(
    facenet_program, faces, tmp_path, extra, flip
):
    from engines.detectors import load_facenet
    from engines.facenet import FaceNet

    model = _with_sidecar(facenet_program, tmp_path, **extra)
    host = FaceNet.load(model, threads=2, flip=flip)
    device = load_facenet(model, backend="torch", threads=2, flip=flip, max_batch=8)
    assert device.model_id == host.model_id  # one gallery serves both
    picks = every_face(*faces)
    ours, ref = device.embed_picks(picks), host.embed_picks(picks)
    assert ours.shape == ref.shape == (len(picks), host.embedding_size)
    assert (ours * ref).sum(axis=1).min() >= DEVICE_COSINE
    assert device.embed_picks([]).shape == (0, host.embedding_size)


def test_a_batch_goes_to_the_device_once(exported, facenet_program, faces):
    """The device detector uploads each frame of a batch; FaceNet cuts its crops from that
    upload (no second copy), and the next batch uploads afresh, even into a reused array."""
    from engines.detectors import load_detector, load_facenet
    from engines.facenet import FaceNet
    from engines.torch_frames import DEVICE_FRAMES

    folder, _ = exported
    detector = load_detector(folder, backend="torch", threads=2)
    facenet = load_facenet(facenet_program, backend="torch", threads=2)
    frames = [f.copy() for f in faces[0]]
    before = DEVICE_FRAMES.uploads
    found = detector.detect(frames)
    first = facenet.embed_picks(every_face(frames, found))
    assert DEVICE_FRAMES.uploads - before == len(frames)
    frames[0][:] = frames[0][:, ::-1].copy()  # a buffer refilled: the photo mirrored
    refound = detector.detect(frames)
    again = facenet.embed_picks(every_face(frames, refound))
    assert DEVICE_FRAMES.uploads - before == 2 * len(frames)
    crowd = len(found[3])  # the last frame, unchanged: the same faces
    assert crowd and np.allclose(again[-crowd:], first[-crowd:], atol=1e-6)
    mirrored = every_face(frames[:1], refound[:1])  # the first frame: the new pixels
    host = FaceNet.load(facenet_program, threads=2).embed_picks(mirrored)
    assert (again[: len(mirrored)] * host).sum(axis=1).min() >= DEVICE_COSINE


def test_a_program_older_than_its_onnx_is_refused(facenet_program, tmp_path):
    """Re-exporting the ONNX alone must not leave the old weights running under its id."""
    from engines.torch_backend import TorchEngine
    from tests.facenet_model import build_test_model

    other = build_test_model(tmp_path / "other", None)  # other batch-norm statistics
    shutil.copy(facenet_program.with_suffix(".pt2"), other.with_suffix(".pt2"))
    with pytest.raises(EngineError, match=r"exported from another version of facenet\.onnx"):
        TorchEngine(other, device="cpu")


def test_an_int8_export_has_no_torch_program(facenet_program, tmp_path):
    from training.export_facenet import export_checkpoint

    crops = np.zeros((4, 160, 160, 3), np.uint8)
    with pytest.raises(ValueError, match="int8 model has no torch program"):
        export_checkpoint(
            facenet_program.parent / "random.pt",
            tmp_path / "x.onnx",
            crops,
            int8=True,
            torch_program=True,
        )
