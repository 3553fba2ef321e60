"""Import the pretrained MTCNN weights and export P-Net, R-Net and O-Net to ONNX.

Each network is written as ``<dir>/<name>.onnx`` with a ``ModelMetadata`` sidecar, then
ONNX Runtime is checked against PyTorch on real face crops (max abs diff <= 1e-4).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from engines.base import ModelMetadata
from training.mtcnn_nets import load_net

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4
MTCNN_SOURCE = (
    "Zhang et al., 'Joint Face Detection and Alignment using Multi-task Cascaded "
    "Convolutional Networks' (2016); weights converted by facenet-pytorch 2.6.0"
)


@dataclass(frozen=True)
class NetSpec:
    name: str
    input_hw: tuple[int, int] | None
    outputs: tuple[str, ...]


SPECS = (
    NetSpec("pnet", None, ("reg", "prob")),
    NetSpec("rnet", (24, 24), ("reg", "prob")),
    NetSpec("onet", (48, 48), ("reg", "landmarks", "prob")),
)


def _dynamic_axes(spec: NetSpec) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {"image": {0: "batch"}}
    if spec.input_hw is None:
        axes["image"].update({2: "height", 3: "width"})
        axes.update({out: {0: "batch", 2: "out_height", 3: "out_width"} for out in spec.outputs})
    else:
        axes.update({out: {0: "batch"} for out in spec.outputs})
    return axes


def export_net(spec: NetSpec, weights_dir: Path, out_dir: Path) -> Path:
    """Write one network to ONNX with its sidecar; returns the ONNX path."""
    weights = weights_dir / f"{spec.name}.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: MTCNN weights not found")
    net = load_net(spec.name, weights)
    hw = spec.input_hw or (64, 80)
    dummy = torch.zeros(1, 3, *hw)
    out_path = out_dir / f"{spec.name}.onnx"
    torch.onnx.export(
        net,
        (dummy,),
        str(out_path),
        input_names=["image"],
        output_names=list(spec.outputs),
        dynamic_axes=_dynamic_axes(spec),
        opset_version=OPSET,
        dynamo=False,
    )
    ModelMetadata(
        name=f"mtcnn-{spec.name}",
        kind=f"mtcnn-{spec.name}",
        input_size_hw=spec.input_hw,
        mean=127.5,
        std=128.0,
        channel_order="RGB",
        opset=OPSET,
        outputs=list(spec.outputs),
        training_data="WIDER FACE + CelebA (MTCNN authors)",
        source=MTCNN_SOURCE,
        license="MIT (facenet-pytorch), see models/mtcnn/LICENSE.facenet-pytorch.md",
    ).save(out_path)
    return out_path


def real_inputs(spec: NetSpec, images: list[Path], count: int = 8) -> np.ndarray:
    """Normalised real crops (or, for P-Net, a whole downscaled photo) as NCHW float32."""
    crops = []
    for path in images:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{path}: cannot read image for the parity check")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if spec.input_hw is None:
            crops.append(cv2.resize(rgb, (160, 120), interpolation=cv2.INTER_AREA))
            continue
        h, w = rgb.shape[:2]
        for k in range(count):
            side = min(h, w) // (k + 2)
            y0, x0 = (h - side) * k // count, (w - side) * k // count
            crop = rgb[y0 : y0 + side, x0 : x0 + side]
            crops.append(cv2.resize(crop, spec.input_hw[::-1], interpolation=cv2.INTER_AREA))
    batch = np.stack(crops).astype(np.float32)
    return np.ascontiguousarray(((batch - 127.5) / 128.0).transpose(0, 3, 1, 2))


def parity_check(spec: NetSpec, onnx_path: Path, weights_dir: Path, images: list[Path]) -> float:
    """Max abs difference between ONNX Runtime and PyTorch on real inputs."""
    from engines.ort import import_onnxruntime

    ort = import_onnxruntime()

    net = load_net(spec.name, weights_dir / f"{spec.name}.pt")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = real_inputs(spec, images)
    with torch.no_grad():
        expected = [t.numpy() for t in net(torch.from_numpy(x))]
    got = session.run(list(spec.outputs), {"image": x})
    return max(float(np.abs(e - g).max()) for e, g in zip(expected, got, strict=True))


def export_all(weights_dir: Path, out_dir: Path, images: list[Path]) -> dict[str, float]:
    """Export the three networks and check them; raises if any differs by more than 1e-4.
    The files are written aside and moved into ``out_dir`` only once all three passed: a
    failed export leaves the models there as they were."""
    unreadable = [str(p) for p in images if not Path(p).is_file()]
    if unreadable:  # before anything is written
        raise FileNotFoundError(f"parity images not found: {', '.join(unreadable)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    diffs = {}
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as scratch:
        for spec in SPECS:
            path = export_net(spec, weights_dir, Path(scratch))
            diffs[spec.name] = parity_check(spec, path, weights_dir, images)
            if diffs[spec.name] > PARITY_TOLERANCE:
                raise RuntimeError(
                    f"{spec.name}: ONNX Runtime differs from PyTorch by {diffs[spec.name]:.2e} "
                    f"(tolerance {PARITY_TOLERANCE:.0e}); {out_dir} is left as it was"
                )
        for written in sorted(Path(scratch).iterdir()):
            os.replace(written, out_dir / written.name)
            logger.info("wrote %s", out_dir / written.name)
    return diffs
