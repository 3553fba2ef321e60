"""Importing the pretrained MTCNN weights and exporting them to ONNX (needs the train extra)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from engines.base import ModelMetadata  # noqa: E402
from engines.loader import load_engine  # noqa: E402
from tests.conftest import MODELS  # noqa: E402
from training.export_mtcnn import SPECS, export_all, real_inputs  # noqa: E402
from training.mtcnn_nets import load_net  # noqa: E402


@pytest.fixture(scope="module")
def exported(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mtcnn")
    images = [shared_data / "images" / n for n in ("obama.jpg", "two_people.jpg", "multiface.jpg")]
    diffs = export_all(shared_data / "weights" / "mtcnn", out, images)
    return out, diffs, images, shared_data


def test_pretrained_state_dicts_load_unchanged(shared_data):
    for spec in SPECS:
        state = torch.load(shared_data / "weights" / "mtcnn" / f"{spec.name}.pt", weights_only=True)
        net = load_net(spec.name, shared_data / "weights" / "mtcnn" / f"{spec.name}.pt")
        assert set(net.state_dict()) == set(state)


def test_export_matches_pytorch_on_real_faces(exported):
    out, diffs, _, _ = exported
    assert set(diffs) == {"pnet", "rnet", "onet"}
    assert max(diffs.values()) <= 1e-4
    for spec in SPECS:
        meta = ModelMetadata.load(out / f"{spec.name}.onnx")
        assert meta.kind == f"mtcnn-{spec.name}" and meta.channel_order == "RGB"
        assert meta.outputs == list(spec.outputs)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("which", ["committed", "just exported"])
def test_the_models_give_the_pytorch_networks_outputs(exported, batch, which):
    """The ONNX files (those in models/mtcnn, and those export_all just wrote, checked here
    apart from its own parity figures) on ONNX Runtime against the PyTorch networks."""
    out, _, images, shared = exported
    folder = MODELS / "mtcnn" if which == "committed" else out
    for spec in SPECS:
        x = real_inputs(spec, images)[:batch]
        onnx = load_engine(folder / f"{spec.name}.onnx").infer({"image": x})
        with torch.no_grad():
            net = load_net(spec.name, shared / "weights" / "mtcnn" / f"{spec.name}.pt")
            expected = net(torch.from_numpy(x))
        for name, value in zip(spec.outputs, expected, strict=True):
            assert np.abs(onnx[name] - value.numpy()).max() <= 1e-4


def test_pnet_takes_any_image_size(exported):
    out, _, _, _ = exported
    engine = load_engine(out / "pnet.onnx")
    for h, w in [(12, 12), (37, 101), (240, 320)]:
        result = engine.infer({"image": np.zeros((2, 3, h, w), np.float32)})
        assert result["prob"].shape == (2, 2, (h - 2 + 1) // 2 - 4, (w - 2 + 1) // 2 - 4)


def test_sidecar_is_plain_json(exported):
    out, _, _, _ = exported
    data = json.loads((out / "pnet.json").read_text())
    assert data["input_size_hw"] is None and data["mean"] == 127.5 and data["std"] == 128.0


def test_the_slice_pool_is_ceil_mode_max_pooling() -> None:
    """CeilMaxPool2x2 (what P-Net's torch program pools with) gives MaxPool2d(2, 2,
    ceil_mode=True)'s numbers exactly, on every parity of height and width, 1 px up."""
    from training.mtcnn_nets import CeilMaxPool2x2

    reference = torch.nn.MaxPool2d(2, 2, ceil_mode=True)
    generator = torch.Generator().manual_seed(0)
    for h in range(1, 8):
        for w in range(1, 8):
            x = torch.randn(2, 3, h, w, generator=generator)
            assert torch.equal(CeilMaxPool2x2()(x), reference(x)), (h, w)


def test_missing_parity_images_stop_it_before_anything_is_written(shared_data, tmp_path) -> None:
    from daemon.cli import main

    out = tmp_path / "mtcnn"
    weights = shared_data / "weights" / "mtcnn"
    argv = ["train", "export-mtcnn", "--weights-dir", str(weights), "--out-dir", str(out)]
    assert main([*argv, "--images", str(tmp_path / "nope.jpg")]) == 2
    assert not out.exists()


def test_a_failed_parity_check_leaves_the_models_as_they_were(
    shared_data, tmp_path, monkeypatch
) -> None:
    import training.export_mtcnn as export_mtcnn

    out = tmp_path / "mtcnn"
    out.mkdir()
    before = {f"{spec.name}{suffix}": b"earlier" for spec in SPECS for suffix in (".onnx", ".json")}
    for name, content in before.items():
        (out / name).write_bytes(content)
    monkeypatch.setattr(export_mtcnn, "PARITY_TOLERANCE", -1.0)  # every difference fails
    images = [shared_data / "images" / "obama.jpg"]
    with pytest.raises(RuntimeError, match="left as it was"):
        export_all(shared_data / "weights" / "mtcnn", out, images)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "nothing replaced or left"
