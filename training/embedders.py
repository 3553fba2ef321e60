"""Turn face crops into embeddings with any model: a training checkpoint or an ONNX file.

Both take uint8 RGB crops (N, H, W, 3) and return L2-normalised float32 embeddings.
The ONNX path goes through ``engines.load_engine`` and takes its preprocessing from the
model's ``ModelMetadata`` sidecar; the checkpoint path from the options it was trained with.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from engines import ModelMetadata, load_engine
from engines.align import template_of
from engines.loader import cpu_precision
from training.checkpoint import load_model_file
from training.data import standardize

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    image_size: int
    alignment: str

    def embed_rgb(self, images: np.ndarray) -> np.ndarray: ...


def _fit_all(images: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Crops of exactly ``hw``: larger images are centre-cropped (as training's evaluation
    crop does), smaller ones resized up."""
    images = np.asarray(images)
    h, w = images.shape[1:3]
    if (h, w) == tuple(hw):
        return images
    if h >= hw[0] and w >= hw[1]:
        y0, x0 = (h - hw[0]) // 2, (w - hw[1]) // 2
        return images[:, y0 : y0 + hw[0], x0 : x0 + hw[1]]
    return np.stack(
        [cv2.resize(im, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR) for im in images]
    )


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class OnnxEmbedder:
    """An embedding model file (``*.onnx`` + sidecar) on an engine backend."""

    def __init__(
        self,
        model_path: str | Path,
        backend: str = "onnxruntime",
        threads: int = 0,
        precision: str = "fp32",
    ):
        self.meta = ModelMetadata.load(model_path)
        if self.meta.input_size_hw is None:
            raise ValueError(f"{model_path}: sidecar has no input_size_hw; not an embedding model")
        backend, precision = cpu_precision(backend, precision)  # as FaceNet.load
        self.engine = load_engine(model_path, backend=backend, threads=threads, precision=precision)
        self.input_name = self.engine.inputs[0].name
        self.output_name = self.engine.outputs[0].name
        self.image_size = int(self.meta.input_size_hw[0])
        self.alignment = str(self.meta.extra.get("alignment", "margin"))
        self.margin = int(self.meta.extra.get("margin", 32))
        self.template = template_of(self.meta.extra, self.image_size)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> the model's NCHW float32 input."""
        x = _fit_all(images, self.meta.input_size_hw)
        if self.meta.channel_order.upper() == "BGR":
            x = x[..., ::-1]
        if self.meta.extra.get("prewhiten"):
            x = standardize(x, "prewhiten")
        else:
            x = (x.astype(np.float32) - self.meta.mean) / self.meta.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def embed_rgb(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            feeds = {self.input_name: self.preprocess(images[start : start + batch_size])}
            out.append(self.engine.infer(feeds)[self.output_name])
        return _l2(np.concatenate(out))


class TorchEmbedder:
    """A network in PyTorch (a live model, or loaded from a training checkpoint)."""

    def __init__(
        self,
        model: torch.nn.Module,
        image_size: int,
        standardization: str = "fixed",
        device: torch.device | None = None,
        alignment: str = "margin",
        margin: int = 32,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.image_size = image_size
        self.standardization = standardization
        self.alignment = alignment
        self.margin = margin

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device | None = None) -> TorchEmbedder:
        ckpt = load_model_file(path)
        opts = ckpt.options
        return cls(
            ckpt.network(),
            int(opts["image_size"]),
            opts.get("standardization", "fixed"),
            device,
            ckpt.extra.get("alignment", "margin"),
            int(ckpt.extra.get("margin", 32)),
        )

    @torch.no_grad()
    def embed_rgb(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            chunk = _fit_all(images[start : start + batch_size], (self.image_size,) * 2)
            x = standardize(chunk, self.standardization).transpose(0, 3, 1, 2)
            emb = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
            out.append(emb.float().cpu().numpy())
        return _l2(np.concatenate(out))


def load_embedder(
    model: str | Path,
    threads: int = 0,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> Embedder:
    """An ONNX file (``.onnx``, in ``precision`` fp32 or bf16), or a training checkpoint or a
    facenet-pytorch state dict (anything else, fp32)."""
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model not found")
    if path.suffix.lower() == ".onnx":
        return OnnxEmbedder(path, threads=threads, precision=precision)
    if precision != "fp32":
        raise ValueError(f"{path}: --precision {precision} is for ONNX models")
    return TorchEmbedder.from_checkpoint(path, device)
