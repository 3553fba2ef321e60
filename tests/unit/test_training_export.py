"""`facewatch train export`: what it says and what it refuses, on real (tiny) exports."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

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
