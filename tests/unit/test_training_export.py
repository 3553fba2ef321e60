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

    files = {p.name: p.read_bytes() for p in model.parent.iterdir()}
    monkeypatch.setattr(export_facenet, "PARITY_TOLERANCE", -1.0)  # every parity check fails
    capsys.readouterr()
    assert cli(["export", str(checkpoint), "--force", "--name", "failed"]) == 2
    assert f"error: {model}: ONNX Runtime differs from PyTorch by" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in model.parent.iterdir()} == files  # nor a temp folder


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
