"""The distillation route of the default model, small: photos aligned onto the shipped
model's own landmark template (``align --template``), that model rebuilt in PyTorch as the
teacher of each augmented batch (training/teacher.py), and a student whose export carries
the template, so that the daemon and ``validate --align`` frame faces as it was trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.align import align_similarity, template_of  # noqa: E402
from engines.base import ModelMetadata  # noqa: E402
from engines.images import read_image  # noqa: E402
from engines.mtcnn import MTCNN  # noqa: E402
from training.cli_facenet import main as cli  # noqa: E402

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[2]
TEACHER = REPO / "models" / "facenet" / "facenet.onnx"
CHIP, MARGIN, STUDENT = 170, 10, 160  # the crops; training's random 160 crops of them

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SHARED / "celeba").is_dir(), reason=f"shared data not found at {SHARED}"
    ),
]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    people = sorted(p for p in (SHARED / "celeba").iterdir() if len(list(p.iterdir())) >= 5)
    for person in people[:4]:
        (root / person.name).mkdir()
        for image in sorted(person.iterdir())[:5]:
            (root / person.name / image.name).symlink_to(image)
    return root


@pytest.fixture(scope="module")
def chips(raw: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chips")
    args = ["align", str(raw), str(out), "--image-size", str(CHIP), "--margin", str(MARGIN)]
    assert cli([*args, "--template", str(TEACHER), "--threads", "2"]) == 0
    return out


def test_template_crops_give_the_teacher_its_own_framing(raw: Path, chips: Path) -> None:
    """The teacher on a training crop (the central 160 of a 170 crop, resized to its 150)
    describes the face as the shipped model does on the daemon's own warp of the photo."""
    from training.data import crop_square, load_dataset, load_rgb
    from training.embedders import OnnxEmbedder
    from training.teacher import TorchTeacher

    settings = json.loads((chips / "alignment.json").read_text())
    meta = ModelMetadata.load(TEACHER)
    template = template_of(meta.extra, 150)
    assert settings["alignment"] == "similarity"
    want = template * (CHIP - MARGIN) / 150 + MARGIN / 2
    assert np.abs(np.asarray(settings["landmarks"]) - want).max() <= 0.005

    dataset = load_dataset(chips)
    teacher = TorchTeacher(TEACHER, dataset, STUDENT)
    teacher.net.to("cpu")
    embedder = OnnxEmbedder(TEACHER)
    detector = MTCNN.load(REPO / "models" / "mtcnn", threads=2)
    pairs = []
    for crop in sorted(chips.glob("*/*.png"))[:8]:
        photo = next((raw / crop.parent.name).glob(crop.stem + ".*"))
        found = detector.detect([read_image(str(photo))])[0]
        rgb = load_rgb(photo)
        main = int(np.argmax(found.score))  # celeba photos hold one face
        direct = embedder.embed_rgb(
            align_similarity(rgb, found.landmarks[main], 150, template)[None]
        )
        seen = crop_square(load_rgb(crop), STUDENT, None).transpose(2, 0, 1)[None].copy()
        ours = teacher._embed(torch.from_numpy(seen)).numpy()
        pairs.append(float((direct * ours).sum()))
    # the same face, framed the same: far above the 0.9 of two photos of one person
    assert min(pairs) >= 0.999, pairs


def test_a_student_distilled_on_template_crops_carries_the_template(
    chips: Path, tmp_path: Path
) -> None:
    from training.checkpoint import Checkpoint
    from training.embedders import OnnxEmbedder

    run = [
        "triplet", "--data-dir", str(chips), "--models-base-dir", str(tmp_path / "m"),
        "--logs-base-dir", str(tmp_path / "l"), "--run-name", "s", "--loss", "distill",
        "--teacher", str(TEACHER), "--image-size", str(STUDENT), "--random-crop",
        "--random-flip", "--random-rotate", "8", "--random-scale", "0.05", "--random-color",
        "0.2", "--batch-size", "6", "--epoch-size", "2", "--max-nrof-epochs", "1",
        "--embedding-size", "128", "--workers", "0", "--gpu", "cpu", "--seed", "3",
    ]  # fmt: skip
    assert cli(run) == 0
    ckpt = Checkpoint.load(tmp_path / "m" / "s" / "latest.pt")
    settings = json.loads((chips / "alignment.json").read_text())
    shift = (CHIP - STUDENT) // 2  # training's central crop
    assert ckpt.extra["alignment"] == "similarity"
    assert np.allclose(
        ckpt.extra["landmarks"], np.asarray(settings["landmarks"]) - shift, atol=0.01
    )
    onnx = tmp_path / "student.onnx"
    assert cli(["export", str(tmp_path / "m" / "s" / "latest.pt"), "--out", str(onnx)]) == 0
    student = OnnxEmbedder(onnx)
    assert student.alignment == "similarity" and student.template is not None
    assert np.allclose(student.template, ckpt.extra["landmarks"], atol=0.01)


def test_template_needs_a_model_with_one(raw: Path, tmp_path: Path, capsys) -> None:
    """A model without a landmark template (the reference-template kind) is refused by name."""
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(TEACHER.read_bytes())
    meta = json.loads(TEACHER.with_suffix(".json").read_text())
    del meta["extra"]["landmarks"]
    plain.with_suffix(".json").write_text(json.dumps(meta))
    code = cli(["align", str(raw), str(tmp_path / "out"), "--template", str(plain)])
    assert code != 0
    assert "plain.onnx: its sidecar has no landmark template" in capsys.readouterr().err
