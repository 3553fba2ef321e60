"""Inception-ResNet-v1 (Szegedy et al. 2016) as FaceNet uses it.

Module and parameter names follow facenet-pytorch's ``InceptionResnetV1`` so that its
published state dicts (VGGFace2, CASIA-WebFace; embedding size 512) load with
``strict=True``. The embedding size, the dropout keep probability and an optional
classifier head (``logits``) are configurable.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from training.choices import MODEL_DEF_NAMES

logger = logging.getLogger(__name__)

BN_EPS = 0.001  # the TensorFlow value the published weights were trained with


class BasicConv2d(nn.Module):
    """Convolution (no bias) -> batch norm -> ReLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int],
        stride: int,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=0.1, affine=True)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _chain(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """Shared forward of the three residual block types: concat branches, 1x1 up, scaled add."""

    scale: float
    use_relu: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch0(x), self.branch1(x)]
        if hasattr(self, "branch2"):
            branches.append(self.branch2(x))
        out = self.conv2d(torch.cat(branches, 1)) * self.scale + x
        return self.relu(out) if self.use_relu else out


class Block35(_Residual):
    """Inception-ResNet-A (35x35 grid in the paper), 256 channels."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale, self.use_relu = scale, True
        self.branch0 = BasicConv2d(256, 32, 1, 1)
        self.branch1 = _chain(BasicConv2d(256, 32, 1, 1), BasicConv2d(32, 32, 3, 1, 1))
        self.branch2 = _chain(
            BasicConv2d(256, 32, 1, 1), BasicConv2d(32, 32, 3, 1, 1), BasicConv2d(32, 32, 3, 1, 1)
        )
        self.conv2d = nn.Conv2d(96, 256, 1, stride=1)
        self.relu = nn.ReLU(inplace=False)


class Block17(_Residual):
    """Inception-ResNet-B (17x17 grid), 896 channels."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale, self.use_relu = scale, True
        self.branch0 = BasicConv2d(896, 128, 1, 1)
        self.branch1 = _chain(
            BasicConv2d(896, 128, 1, 1),
            BasicConv2d(128, 128, (1, 7), 1, (0, 3)),
            BasicConv2d(128, 128, (7, 1), 1, (3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, 1, stride=1)
        self.relu = nn.ReLU(inplace=False)


class Block8(_Residual):
    """Inception-ResNet-C (8x8 grid), 1792 channels; the last one has no ReLU."""

    def __init__(self, scale: float = 1.0, no_relu: bool = False) -> None:
        super().__init__()
        self.scale, self.use_relu = scale, not no_relu
        self.branch0 = BasicConv2d(1792, 192, 1, 1)
        self.branch1 = _chain(
            BasicConv2d(1792, 192, 1, 1),
            BasicConv2d(192, 192, (1, 3), 1, (0, 1)),
            BasicConv2d(192, 192, (3, 1), 1, (1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, 1, stride=1)
        if self.use_relu:
            self.relu = nn.ReLU(inplace=False)


class Mixed_6a(nn.Module):
    """Reduction-A: 256 -> 896 channels, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, 2)
        self.branch1 = _chain(
            BasicConv2d(256, 192, 1, 1), BasicConv2d(192, 192, 3, 1, 1), BasicConv2d(192, 256, 3, 2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Mixed_7a(nn.Module):
    """Reduction-B: 896 -> 1792 channels, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _chain(BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 384, 3, 2))
        self.branch1 = _chain(BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 256, 3, 2))
        self.branch2 = _chain(
            BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 256, 3, 1, 1), BasicConv2d(256, 256, 3, 2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = (self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x))
        return torch.cat(parts, 1)


class InceptionResnetV1(nn.Module):
    """FaceNet's embedding network.

    ``forward`` returns L2-normalised embeddings (N, embedding_size), or, with
    ``classify=True``, the logits of the classifier head as facenet-pytorch does.
    ``features`` returns the embedding before normalisation (the "prelogits" after
    ``last_bn``), which softmax and center losses train on.
    Input: (N, 3, H, W) RGB, standardised, H and W >= 75 (160 for the published weights).
    """

    def __init__(
        self,
        embedding_size: int = 512,
        keep_probability: float = 0.4,
        num_classes: int | None = None,
        classify: bool = False,
    ) -> None:
        super().__init__()
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
        if not 0.0 < keep_probability <= 1.0:
            raise ValueError(f"keep_probability must be in (0, 1], got {keep_probability}")
        if classify and not num_classes:
            raise ValueError("classify=True needs num_classes")
        self.embedding_size = embedding_size
        self.classify = classify
        self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
        self.conv2d_2a = BasicConv2d(32, 32, 3, 1)
        self.conv2d_2b = BasicConv2d(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3, 1)
        self.conv2d_4b = BasicConv2d(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*[Block35(scale=0.17) for _ in range(5)])
        self.mixed_6a = Mixed_6a()
        self.repeat_2 = nn.Sequential(*[Block17(scale=0.10) for _ in range(10)])
        self.mixed_7a = Mixed_7a()
        self.repeat_3 = nn.Sequential(*[Block8(scale=0.20) for _ in range(5)])
        self.block8 = Block8(no_relu=True)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(1.0 - keep_probability)
        self.last_linear = nn.Linear(1792, embedding_size, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_size, eps=BN_EPS, momentum=0.1, affine=True)
        if num_classes:
            self.logits = nn.Linear(embedding_size, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings (N, embedding_size)."""
        x = self.maxpool_3a(self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x))))
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(x)))
        x = self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x))))
        x = self.avgpool_1a(self.block8(self.repeat_3(x)))
        x = self.dropout(x)
        return self.last_bn(self.last_linear(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.classify:
            return self.logits(x)
        return F.normalize(x, p=2, dim=1)


# "models.inception_resnet_v1": the original project's spelling
MODEL_DEFS = dict.fromkeys(MODEL_DEF_NAMES, InceptionResnetV1)


class NormalisedEmbedding(nn.Module):
    """An embedding network's inference graph: ``features`` then L2 normalisation (never the
    classifier). What both exporters (ONNX, torch.export) write."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net.features(x), p=2, dim=1)


def build_model(
    model_def: str = "inception_resnet_v1",
    embedding_size: int = 128,
    keep_probability: float = 1.0,
    num_classes: int | None = None,
) -> InceptionResnetV1:
    """Instantiate a network by its ``--model-def`` name."""
    try:
        factory = MODEL_DEFS[model_def]
    except KeyError:
        known = ", ".join(sorted(MODEL_DEFS))
        raise ValueError(f"unknown model_def {model_def!r}; expected one of {known}") from None
    return factory(
        embedding_size=embedding_size, keep_probability=keep_probability, num_classes=num_classes
    )


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names it."""


def read_torch_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only`` (no code in the file runs). A file it cannot read
    (another format, a damaged file, Python objects besides tensors) is one ValueError naming
    it: torch's own message (a bare ``KeyError: 101``, or advice to load the file unsafely)
    goes to the DEBUG log only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not its own
        logger.debug("%s: torch.load: %s: %s", path, type(exc).__name__, exc)
        raise ModelFileError(f"{path}: {_unreadable(exc)}") from None


def _unreadable(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, without torch's advice to load
    it unsafely: Python objects besides tensors (named), a damaged file, or another format."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if isinstance(exc, pickle.UnpicklingError) and found:
        name = found.group(1)
        if name.startswith("numpy"):
            return (
                f"holds NumPy values besides tensors ({name}): save them as tensors or Python "
                "numbers"
            )
        return (
            f"holds Python objects besides tensors ({name}: a whole model saved with "
            "torch.save(model)?): save its state_dict() and use that"
        )
    if isinstance(exc, EOFError) or "zip archive" in text or "truncated" in text:
        return "damaged or truncated (not a whole PyTorch file)"
    return "not a PyTorch checkpoint or state dict"


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    strict: bool = False,
    state: dict[str, torch.Tensor] | None = None,
) -> list[str]:
    """Load a state dict (a facenet-pytorch ``.pt`` or a facewatch checkpoint) into ``model``;
    ``state``, when given, is the file's, read elsewhere (the weights inside an exported ONNX
    model: ``training.export_facenet.student_state``).

    With ``strict=False`` tensors whose shape differs (a different embedding size or class
    count) are skipped; returns the names that were not loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained model not found")
    raw = read_torch_file(path) if state is None else state
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a state dict (a {type(raw).__name__})")
    if strict:
        model.load_state_dict(raw, strict=True)
        return []
    own = model.state_dict()
    usable = {k: v for k, v in raw.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    if len(usable) < len(own) // 2:
        raise ValueError(
            f"{path}: only {len(usable)} of this network's {len(own)} tensors are in it with "
            "the same name and shape: a state dict of another network?"
        )
    if skipped:
        logger.warning("%s: %d tensors not loaded (%s ...)", path, len(skipped), skipped[:3])
    return skipped
