"""dlib's face recognition ResNet, read from dlib's own file (training/dlib_net.py), and the
shipped model made from it: dlib's descriptors, its chips, its torch program."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engines.base import EngineError, ModelMetadata
from engines.facenet import FaceNet
from engines.images import read_image

# (torch is imported by the tests that use it, or by the training code they call: the others,
# on the shipped ONNX model alone, run in the floor check's venv, which has no torch)


def test_the_network_gives_dlibs_own_descriptors(shared_data) -> None:
    """Where dlib is installed (training/teacher_dlib.py says how; not in CI): the module
    read from the .dat file gives dlib's descriptors of dlib's own chips."""
    torch = pytest.importorskip("torch")
    dlib = pytest.importorskip("dlib", reason="dlib is not installed (a separate venv)")
    from training.dlib_faces import DESCRIPTOR_MODEL, SHAPE_MODEL, DlibMissing, models_dir
    from training.dlib_net import read_dlib_net

    try:
        folder = models_dir()
    except DlibMissing as exc:
        pytest.skip(str(exc))
    facerec = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_MODEL))
    landmarks = dlib.shape_predictor(str(folder / SHAPE_MODEL))
    detector = dlib.get_frontal_face_detector()
    chips = []
    for name in ("obama.jpg", "biden.jpg", "two_people.jpg"):
        rgb = np.ascontiguousarray(read_image(str(shared_data / "images" / name))[..., ::-1])
        for box in detector(rgb, 1):
            chips.append(dlib.get_face_chip(rgb, landmarks(rgb, box), size=150, padding=0.25))
    assert len(chips) >= 4
    expected = np.array([np.array(facerec.compute_face_descriptor(c)) for c in chips])
    net = read_dlib_net(folder / DESCRIPTOR_MODEL).eval()
    with torch.no_grad():
        got = net(torch.from_numpy(np.stack(chips).astype(np.float32)).permute(0, 3, 1, 2))
    assert np.abs(got.numpy() - expected).max() < 1e-5


def test_the_shipped_model_gives_dlibs_descriptors_of_dlibs_chips(shipped_model) -> None:
    """Without dlib: dlib's own chips of the demo's faces and its descriptors of them
    (tests/golden/dlib_descriptors.npz, made by tests/golden/make_dlib_golden.py with dlib
    20) against the shipped ONNX model, whose output is the descriptor scaled to unit
    length (its weights are fp16: within 1e-3)."""
    from engines.loader import load_engine
    from tests.conftest import GOLDEN

    golden = np.load(GOLDEN / "dlib_descriptors.npz")
    assert len(golden["chips"]) >= 5
    engine = load_engine(shipped_model)
    chips = golden["chips"].astype(np.float32).transpose(0, 3, 1, 2)  # RGB, 0..255
    got = engine.infer({"image": chips})["embedding"]
    expected = golden["descriptors"] / np.linalg.norm(golden["descriptors"], axis=1, keepdims=True)
    assert np.abs(got - expected).max() < 1e-3


def test_a_file_that_is_not_dlibs_model_is_refused_by_name(tmp_path) -> None:
    pytest.importorskip("torch")
    from training.data import DataError
    from training.dlib_net import read_dlib_net

    bogus = tmp_path / "model.dat"
    bogus.write_bytes(b"\x01\x05con_4" + bytes(64))
    with pytest.raises(DataError, match=r"model\.dat: not dlib's face recognition ResNet"):
        read_dlib_net(bogus)
    with pytest.raises(DataError, match=r"missing\.dat: cannot read dlib's model"):
        read_dlib_net(tmp_path / "missing.dat")


def test_the_shipped_model_warps_faces_onto_its_own_template(
    shipped_model, shared_data, detector
) -> None:
    """The shipped model's crops put MTCNN's landmarks where its sidecar's template says
    (dlib's chip framing), not on the reference template of other models."""
    net = FaceNet.load(shipped_model, threads=2)
    template = np.asarray(ModelMetadata.load(shipped_model).extra["landmarks"])
    image = read_image(str(shared_data / "images" / "obama.jpg"))
    found = detector.detect([image])[0]
    crop = net.align(image, found, [0])[0]
    assert crop.shape == (150, 150, 3)
    again = detector.detect([crop])[0]
    assert len(again) == 1
    off = np.abs(np.asarray(again.landmarks[0]).reshape(5, 2) - template)
    # a least-squares fit of one face to the mean face: within a few pixels, the eyes best
    # (the reference template would put them 25 px lower)
    assert off.mean() < 3.5 and off[:2].max() < 3.5, off


def test_the_shipped_models_torch_program_is_made_from_its_onnx_alone(shipped_model, tmp_path):
    pytest.importorskip("torch")
    from training.export_facenet import torch_program_from_onnx

    for suffix in (".onnx", ".json"):
        shutil.copy(shipped_model.with_suffix(suffix), tmp_path / f"facenet{suffix}")
    made = torch_program_from_onnx(tmp_path / "facenet.onnx")
    assert made["max_abs_diff"] < 1e-5
    assert (tmp_path / made["file"]).is_file()


def test_a_sidecar_template_outside_the_input_is_refused(shipped_model, tmp_path) -> None:
    for suffix in (".onnx", ".json"):
        shutil.copy(shipped_model.with_suffix(suffix), tmp_path / f"m{suffix}")
    sidecar = json.loads((tmp_path / "m.json").read_text())
    sidecar["extra"]["landmarks"] = [[47, 44], [101, 44], [74, 78], [50, 101], [98, 400]]
    (tmp_path / "m.json").write_text(json.dumps(sidecar))
    with pytest.raises(EngineError, match=r"m\.json: sidecar landmarks .* inside the 150 px input"):
        FaceNet.load(tmp_path / "m.onnx")


def test_import_dlib_refuses_to_replace_a_model_and_names_a_missing_file(tmp_path, capsys):
    pytest.importorskip("torch")
    from daemon.cli import main

    existing = tmp_path / "facenet.onnx"
    existing.write_bytes(b"x")
    assert main(["train", "import-dlib", str(tmp_path / "x.dat"), "--out", str(existing)]) == 2
    assert "a model is there already" in capsys.readouterr().err
    out = tmp_path / "new.onnx"
    assert main(["train", "import-dlib", str(tmp_path / "x.dat"), "--out", str(out)]) == 2
    assert "x.dat: cannot read dlib's model" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()
