"""`facewatch train export`: what it says and what it refuses, on real (tiny) exports."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from engines.base import ModelMetadata  # noqa: E402
from tests.face_folders import needs_shared, tiny_checkpoint  # noqa: E402
from training.cli_facenet import main as cli  # noqa: E402
from training.export_facenet import export_onnx  # noqa: E402


class _Tiny(nn.Module):
    """An embedding network in miniature (conv, batch norm), warning once as it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        warnings.warn("a warning of the network's own", UserWarning, stacklevel=1)
        return self.norm(self.conv(x)).mean(dim=(2, 3))


def test_export_silences_only_the_constant_folding_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(_Tiny().eval(), tmp_path / "tiny.onnx", image_size=8)
    messages = [str(w.message) for w in caught]
    assert (tmp_path / "tiny.onnx").is_file()
    assert not [m for m in messages if "constant folding" in m], messages
    assert "a warning of the network's own" in messages  # other warnings still show


@needs_shared
def test_export_writes_the_model_the_commands_read_and_keeps_one_there(
    tmp_path: Path, monkeypatch, capsys, caplog
) -> None:
    from engines.loader import default_facenet

    rough = {"nrof_pairs": 120, "accuracy_mean": 0.55, "accuracy_std": 0.1, "best_threshold": 1.23,
             "far_threshold": 0.87, "fold_accuracies": [0.5, 0.6], "val_mean": 0.0,
             "val_std": 0.0}  # fmt: skip
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt", lfw=rough)
    monkeypatch.setenv("FACEWATCH_MODELS", str(tmp_path / "models"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with caplog.at_level(logging.WARNING):
        assert cli(["export", str(checkpoint)]) == 0
    model = tmp_path / "models" / "facenet" / "facenet.onnx"
    assert model.is_file() and default_facenet() == model
    assert not (tmp_path / "elsewhere" / "models").exists()
    warned = [r.getMessage() for r in caplog.records if "LFW figures" in r.getMessage()]
    assert len(warned) == 1, warned  # a chance-level model's threshold from 120 pairs
    assert "from 120 pairs, not LFW's 6000; accuracy 0.550, below 0.7" in warned[0]
    assert "start at a threshold of 0.87 taken from them" in warned[0]  # enroll's: FAR 1e-3
    before = model.read_bytes()
    capsys.readouterr()
    assert cli(["export", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert f"--out {model}: a model is there already; galleries enrolled with it" in err
    assert model.read_bytes() == before
    assert cli(["export", str(checkpoint), "--force", "--name", "again"]) == 0
    assert ModelMetadata.load(model).name == "again"
    # --force with a check that fails: the model there stays as it was, every file of it
    import training.export_facenet as export_facenet

    files = {str(p): p.read_bytes() for p in model.parent.rglob("*") if p.is_file()}
    monkeypatch.setattr(export_facenet, "PARITY_TOLERANCE", -1.0)  # every parity check fails
    capsys.readouterr()
    assert cli(["export", str(checkpoint), "--force", "--name", "failed"]) == 2
    assert f"error: {model}: ONNX Runtime differs from PyTorch by" in capsys.readouterr().err
    assert {str(p): p.read_bytes() for p in model.parent.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in model.parent.iterdir()) == [  # nor a temp folder, nor a backup
        "facenet.json", "facenet.md", "facenet.onnx", "replaced"]  # fmt: skip
    assert len(list((model.parent / "replaced").iterdir())) == 1  # of the --force export


def test_export_writes_nothing_when_a_check_fails_or_out_is_a_folder(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import training.export_facenet as export_facenet

    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    monkeypatch.setattr(export_facenet, "PARITY_TOLERANCE", -1.0)  # every parity check fails
    out = tmp_path / "models" / "new.onnx"
    assert cli(["export", str(checkpoint), "--out", str(out)]) == 2
    assert "ONNX Runtime differs from PyTorch" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []
    folder = tmp_path / "x.onnx"
    folder.mkdir()
    for force in ([], ["--force"]):
        assert cli(["export", str(checkpoint), "--out", str(folder), *force]) == 2
        err = capsys.readouterr().err
        assert err == f"error: --out {folder}: a folder; name the model file (MODEL.onnx) in it\n"
    assert list(folder.iterdir()) == []


def _figures(accuracy: float, std: float, pairs: int = 6000) -> dict:
    return {"nrof_pairs": pairs, "accuracy_mean": accuracy, "accuracy_std": std,
            "best_threshold": 0.19, "far_threshold": 0.15, "fold_accuracies": [accuracy] * 2,
            "val_mean": 0.9, "val_std": 0.01}  # fmt: skip


def test_export_refuses_to_replace_a_better_model_and_keeps_the_one_it_replaces(
    tmp_path: Path, capsys, caplog
) -> None:
    import json
    import subprocess

    from engines.base import file_sha256

    good = tiny_checkpoint(tmp_path / "good.pt", lfw=_figures(0.987, 0.003))
    worse = tiny_checkpoint(tmp_path / "worse.pt", lfw=_figures(0.746, 0.02))
    model = tmp_path / "models" / "facenet.onnx"
    assert cli(["export", str(good), "--out", str(model)]) == 0
    # the .pt2 `--torch-program` writes beside it, kept and dropped with it (its making and
    # loading are tests/integration/test_training_e2e.py's: here only the file counts)
    model.with_suffix(".pt2").write_bytes(b"a torch program of facenet.onnx")
    report = model.parent / "lfw"  # `train validate --out-dir` of the model there
    report.mkdir()
    (report / "lfw.json").write_text(json.dumps({"model_sha256": file_sha256(model)}))
    files = {p.name: p.read_bytes() for p in model.parent.iterdir() if p.is_file()}
    capsys.readouterr()
    # clearly worse (74.6 % against 98.7 %): refused, nothing changed
    assert cli(["export", str(worse), "--out", str(model), "--force"]) == 2
    err = capsys.readouterr().err
    assert f"--out {model}: this model is clearly worse than the one there: LFW accuracy " \
           "0.746 ± 0.020 (6000 pairs) against 0.987 ± 0.003 (6000 pairs)" in err  # fmt: skip
    assert "--even-if-worse replaces it anyway" in err
    assert {p.name: p.read_bytes() for p in model.parent.iterdir() if p.is_file()} == files
    assert sorted(p.name for p in model.parent.iterdir() if p.is_dir()) == ["lfw"]
    # perfect on 80 pairs shows nothing against 98.7 % on 6000: refused alike
    lucky = tiny_checkpoint(tmp_path / "lucky.pt", lfw=_figures(1.0, 0.0, pairs=80))
    assert cli(["export", str(lucky), "--out", str(model), "--force"]) == 2
    err = capsys.readouterr().err
    assert "this model's LFW figures, 1.000 ± 0.000 (80 pairs), come from fewer pairs" in err
    assert {p.name: p.read_bytes() for p in model.parent.iterdir() if p.is_file()} == files
    # replaced on purpose: the old model, its torch program and its LFW report are kept
    with caplog.at_level(logging.WARNING):
        argv = ["export", str(worse), "--out", str(model), "--force", "--even-if-worse"]
        assert cli(argv) == 0
    assert ModelMetadata.load(model).lfw_accuracy == 0.746
    (kept,) = (model.parent / "replaced").iterdir()
    assert kept.name.startswith("facenet-")
    assert {p.name: p.read_bytes() for p in kept.iterdir() if p.is_file()} == files
    assert (kept / "lfw" / "lfw.json").is_file() and not report.exists()
    assert not model.with_suffix(".pt2").exists()  # the old model's, kept with it
    (said,) = [r.getMessage() for r in caplog.records if "the model it replaced" in r.getMessage()]
    assert f"{model}: the model it replaced is kept in {kept}; to put it back: mv {kept}/* " in said
    subprocess.run(said.split("to put it back: ")[1], shell=True, check=True, timeout=300)
    assert {p.name: p.read_bytes() for p in model.parent.iterdir() if p.is_file()} == files
    assert (model.parent / "lfw" / "lfw.json").is_file()
    # a better model, or one as good within the old figures' spread, replaces it plainly
    capsys.readouterr()
    better = tiny_checkpoint(tmp_path / "better.pt", lfw=_figures(0.980, 0.003))
    assert cli(["export", str(better), "--out", str(model), "--force"]) == 0
    assert len(list((model.parent / "replaced").iterdir())) == 2


@needs_shared
def test_export_warns_of_a_model_without_lfw_figures_and_of_one_that_collapsed(
    tmp_path: Path, shipped_model: Path, caplog
) -> None:
    """No LFW figures: new galleries would start at 1.1, no threshold of this model's; every
    face at one point (an untrained network): anyone would match anyone."""
    from tests.face_folders import SHARED
    from training.export_inputs import parity_crops
    from training.export_quality import warn_collapsed

    good = tiny_checkpoint(tmp_path / "good.pt", lfw=_figures(0.987, 0.003))
    untrained = tiny_checkpoint(tmp_path / "untrained.pt")  # no figures, and collapsed
    model = tmp_path / "models" / "facenet.onnx"
    faces = SHARED / "lfw" / "images"
    with caplog.at_level(logging.WARNING):
        assert cli(["export", str(good), "--out", str(model)]) == 0  # random pixels: unchecked
        assert not caplog.records
        argv = ["export", str(untrained), "--out", str(model), "--parity-images", str(faces)]
        assert cli([*argv, "--force"]) == 0
    said = [r.getMessage() for r in caplog.records]
    (unmeasured,) = [m for m in said if "has no LFW figures" in m]
    assert f"{model} has no LFW figures: how well it tells faces apart is unknown (the model " \
           "it replaced: LFW accuracy 0.987 ± 0.003 (6000 pairs)), and new galleries made with " \
           "it start at facewatch's default threshold 1.1 (the usual one of facenet-pytorch's " \
           "published weights, not one measured for this model" in unmeasured  # fmt: skip
    assert f"facewatch train validate {model} --align --lfw-dir DIR" in unmeasured
    (collapsed,) = [m for m in said if "nearly one point" in m]
    assert f"{model}: its embeddings of 16 --parity-images faces all lie within" in collapsed
    # the shipped model spreads the same faces far apart: no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        spread = warn_collapsed(shipped_model, parity_crops(faces, 16, 150))
    assert spread > 0.3 and not caplog.records
