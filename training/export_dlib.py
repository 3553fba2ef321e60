"""`facewatch train import-dlib`: dlib's face recognition ResNet (training/dlib_net.py) written
as an ONNX embedding model the engines run, with its sidecar (its own landmark template) and
model card."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engines.base import ModelMetadata
from training.dlib_net import (
    ARCHITECTURE,
    CHIP_LANDMARKS,
    CHIP_SIZE,
    LICENSE,
    SOURCE,
    TRAINING_DATA,
    read_dlib_net,
)
from training.embedders import OnnxEmbedder
from training.export_facenet import FP16_TOLERANCE, OPSET, export_onnx
from training.export_precision import weights_to_fp16
from training.export_staging import staged
from training.model_card import model_card


def metadata(name: str = "dlib-resnet-v1") -> ModelMetadata:
    """The sidecar of the converted network: 150 px chips aligned on MTCNN's landmarks,
    pixels in 0..255 (the network subtracts dlib's means itself)."""
    return ModelMetadata(
        name=name,
        kind="facenet",
        input_size_hw=(CHIP_SIZE, CHIP_SIZE),
        mean=0.0,
        std=1.0,
        channel_order="RGB",
        opset=OPSET,
        embedding_size=128,
        outputs=["embedding"],
        training_data=TRAINING_DATA,
        source=SOURCE,
        license=LICENSE,
        extra={
            "architecture": ARCHITECTURE,
            "alignment": "similarity",
            "landmarks": CHIP_LANDMARKS,
            "distance": "squared euclidean on L2-normalised embeddings",
            "fp16_weights": True,
        },
    )


def export_dlib(dat_path: str | Path, out_path: str | Path, command: str) -> tuple[Path, float]:
    """Convert dlib's model file into ``out_path`` (fp16-stored ONNX, sidecar, model card),
    checked against the PyTorch module on random chips; returns (path, max abs diff)."""
    net = read_dlib_net(dat_path).eval()
    out_path = Path(out_path)
    meta = metadata()
    meta.extra["export_command"] = command
    chips = np.random.default_rng(0).integers(0, 256, (8, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    with torch.no_grad():
        x = torch.from_numpy(chips.astype(np.float32)).permute(0, 3, 1, 2)
        expected = F.normalize(net(x), dim=1).numpy()
    with staged(out_path) as work, warnings.catch_warnings():
        # the zero-padding of the pooled blocks is traced for 150 px chips, the only input
        warnings.filterwarnings(
            "ignore",
            category=torch.jit.TracerWarning,  # type: ignore[attr-defined]  # not in torch.jit.__all__
        )
        export_onnx(net, work, CHIP_SIZE)
        weights_to_fp16(work)
        meta.save(work)
        got = OnnxEmbedder(work).embed_rgb(chips)
        diff = float(np.abs(got - expected).max())
        if diff > FP16_TOLERANCE:
            raise ValueError(f"{out_path}: ONNX Runtime differs from PyTorch by {diff:.2e}")
        meta.extra["fp16_max_abs_diff"] = diff
        meta.save(work)
        work.with_suffix(".md").write_text(model_card(meta, out_path))
    return out_path, diff
